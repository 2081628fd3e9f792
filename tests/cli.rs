//! The command line contract: init, registration, config errors that name the key.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn agent(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conclave-agent"));
    cmd.args(args).env_remove("CONCLAVE_CONFIG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn init(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("conclave.toml");
    let out = agent(
        &[
            "init",
            "--server-name",
            "conclave.local",
            "--homeserver-url",
            "http://127.0.0.1:8008",
            "--out",
            path.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    path
}

#[test]
fn init_writes_a_private_valid_config_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = init(dir.path());
    assert_eq!(mode(&path), 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("server_name = \"conclave.local\""), "{text}");
    assert!(text.contains("[llm]") && text.contains("[chroma]"), "every section is written out:\n{text}");

    let again =
        agent(&["init", "--server-name", "x.y", "--homeserver-url", "http://h", "--out", path.to_str().unwrap()], &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "the file is untouched");

    let forced = agent(
        &["init", "--server-name", "x.y", "--homeserver-url", "http://h", "--out", path.to_str().unwrap(), "--force"],
        &[],
    );
    assert!(forced.status.success());
    let forced = std::fs::read_to_string(&path).unwrap();
    for key in ["as_token", "hs_token"] {
        let (old, new) = (token(&text, key), token(&forced, key));
        assert!(new.len() >= 32, "{key} is long and random: {new}");
        assert_ne!(old, new, "a fresh {key}");
    }
    assert_ne!(token(&forced, "as_token"), token(&forced, "hs_token"), "two different tokens");
}

/// The value of `key = "…"` in a config file.
fn token<'a>(toml: &'a str, key: &str) -> &'a str {
    let line = toml.lines().find(|l| l.starts_with(&format!("{key} ="))).unwrap_or_else(|| panic!("no {key}"));
    line.split('"').nth(1).unwrap()
}

#[test]
fn registration_is_derived_from_the_config_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let config = init(dir.path());
    let reg = dir.path().join("registration.yaml");
    let out = agent(&["--config", config.to_str().unwrap(), "registration", "--out", reg.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&reg), 0o600);
    let yaml = std::fs::read_to_string(&reg).unwrap();
    let toml = std::fs::read_to_string(&config).unwrap();
    let as_token = token(&toml, "as_token");
    assert!(yaml.contains(&format!("as_token: \"{as_token}\"")));
    assert!(yaml.contains(r#"regex: "^@agent:conclave\\.local$""#), "{yaml}");

    // Without --out it goes to stdout, and the config may come from $CONCLAVE_CONFIG.
    let out = agent(&["registration"], &[("CONCLAVE_CONFIG", config.to_str().unwrap())]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), yaml);
}

#[test]
fn bad_config_exits_2_naming_the_key_and_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let config = init(dir.path());
    let c = config.to_str().unwrap();

    // From an environment override.
    let out = agent(&["--config", c, "serve"], &[("CONCLAVE_APPSERVICE__LISTEN", "not-an-address")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("appservice.listen") && err.contains("CONCLAVE_APPSERVICE__LISTEN"), "{err}");

    // From the file.
    let text = std::fs::read_to_string(&config).unwrap().replace("[database]", "[database]\nbogus = 1");
    std::fs::write(&config, text).unwrap();
    let out = agent(&["--config", c, "check"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("database.bogus"));

    // A missing file says how to make one.
    let out = agent(&["--config", "/nonexistent/conclave.toml", "serve"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("conclave-agent init"));
}

#[test]
fn env_overrides_apply_and_secrets_stay_out_of_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = init(dir.path());
    let text = std::fs::read_to_string(&config).unwrap();
    let hs_token = text.lines().find(|l| l.starts_with("hs_token")).unwrap().split('"').nth(1).unwrap().to_owned();
    // Make as_token equal hs_token through the environment: the error names the key only.
    let out = agent(&["--config", config.to_str().unwrap(), "check"], &[("CONCLAVE_APPSERVICE__AS_TOKEN", &hs_token)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("appservice.hs_token"), "{err}");
    assert!(!err.contains(&hs_token), "a secret leaked into the error: {err}");
}

#[tokio::test]
async fn backfill_asks_the_running_agent_through_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = init(dir.path());
    let db = format!("sqlite://{}/agent.db", dir.path().display());
    let env = [("CONCLAVE_DATABASE__URL", db.as_str())];
    let run = |args: &[&str]| {
        let mut all = vec!["--config", config.to_str().unwrap(), "backfill"];
        all.extend_from_slice(args);
        agent(&all, &env)
    };
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let out = run(&["not-a-room"]);
    assert!(!out.status.success() && stderr(&out).contains("not a room id"), "{}", stderr(&out));
    let out = run(&["!r:conclave.local"]);
    assert!(!out.status.success() && stderr(&out).contains("invite it first"), "{}", stderr(&out));

    let store = conclave_agent::store::Store::connect(&db).await.unwrap();
    store.room_set_joined("!r:conclave.local", true).await.unwrap();
    let out = run(&["!r:conclave.local", "--limit", "500"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to 500 events"));
    let queued = store.backfill("!r:conclave.local").await.unwrap().unwrap();
    assert_eq!((queued.max_events, queued.done), (500, false));
    // Asking again while it runs keeps its progress.
    let out = run(&["!r:conclave.local"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already reading"));
    assert_eq!(store.backfill("!r:conclave.local").await.unwrap().unwrap().max_events, 500);
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_into_the_inbox() {
    use conclave_agent::store::{NewEvent, Store};
    let dir = tempfile::tempdir().unwrap();
    let config = init(dir.path());
    let db = format!("sqlite://{}/agent.db", dir.path().display());
    let env = [("CONCLAVE_DATABASE__URL", db.as_str())];
    let run = |args: &[&str]| {
        let mut all = vec!["--config", config.to_str().unwrap(), "dead-letters"];
        all.extend_from_slice(args);
        agent(&all, &env)
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();

    let store = Store::connect(&db).await.unwrap();
    let ev = |id: &str| NewEvent { room_id: "!r:conclave.local".into(), event_id: id.into(), json: "{}".into() };
    assert!(store.ingest("t1", vec![ev("$one"), ev("$two")]).await.unwrap());
    let seqs: Vec<i64> = store.inbox_candidates(&[], 10).await.unwrap().into_iter().map(|(s, _)| s).collect();
    store.inbox_dead_letter(seqs[0], "the handler panicked").await.unwrap();
    store.inbox_dead_letter(seqs[1], "gave up").await.unwrap();
    assert_eq!(store.inbox_len().await.unwrap(), 0);

    let out = run(&["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("$one") && listed.contains("the handler panicked"), "{listed}");

    let out = run(&["replay", "999999"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no dead letter 999999"));
    let out = run(&["replay", &seqs[0].to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!((store.inbox_len().await.unwrap(), store.dead_letter_count().await.unwrap()), (1, 1));
    let back = store.inbox_claim(&[store.inbox_candidates(&[], 10).await.unwrap()[0].0]).await.unwrap();
    assert_eq!((back[0].event_id.as_str(), back[0].attempts), ("$one", 0), "back with its tries reset");
    let out = run(&["replay", "--all"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!((store.inbox_len().await.unwrap(), store.dead_letter_count().await.unwrap()), (2, 0));
    assert_eq!(run(&["replay"]).status.code(), Some(2), "an id or --all is required");
}
