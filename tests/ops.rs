//! Operating the agent, against the real servers: `check` with every backend up and then each one
//! stopped in turn, `!status` in a room on the real Synapse, and `/metrics` counted exactly and
//! read with a Prometheus text parser. (`/ready` flipping with the homeserver and the database is
//! `tests/workspace.rs` `ready_needs_the_database_and_the_homeserver`.)

mod common;

use common::agent::{Agent, Options};
use common::chroma::ChromaInstance;
use common::client::User;
use common::embedder::{MODEL as EMBED_MODEL, embedder};
use common::fake_llm::{FakeLlm, MODELS};
use common::fake_planka::FakePlanka;
use common::proxy::{Mode, Proxy};
use common::synapse::synapse;
use common::{free_port, scratch_dir, wait_for};
use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// Every backend of one agent, all real or faithful fakes, all up.
struct Backends {
    llm: FakeLlm,
    chroma: ChromaInstance,
    planka: FakePlanka,
    planka_key: String,
}

impl Backends {
    async fn start() -> Self {
        let llm = FakeLlm::start().await;
        let planka = FakePlanka::start().await;
        let bot = planka.add_user("conclave-bot", "Conclave Agent", None, true);
        let planka_key = planka.add_api_key(&bot);
        Self { llm, chroma: ChromaInstance::start(), planka, planka_key }
    }

    /// The config tables that point the agent at them; the coding agent `sh` exists, `ghost`'s
    /// command does not.
    fn toml(&self, llm_url: &str) -> String {
        format!(
            "[llm]\nbase_url = \"{llm_url}\"\nchat_model = \"{chat}\"\nembedding_base_url = \"{embed}\"\n\
             embedding_model = \"{EMBED_MODEL}\"\n[chroma]\nurl = \"{chroma}\"\ncollection = \"ops\"\n\
             [planka]\nurl = \"{planka}\"\napi_key = \"{key}\"\n\
             [agents.sh]\ncommand = [\"sh\", \"-c\", \"true\"]\n\
             [agents.ghost]\ncommand = [\"no-such-coding-agent-here\"]\n",
            chat = MODELS[0],
            embed = embedder().base_url,
            chroma = self.chroma.url,
            planka = self.planka.url,
            key = self.planka_key,
        )
    }
}

/// Runs `check` (without blocking the fakes served by this test's runtime); returns (exit code,
/// stdout, how long it took).
async fn check(config: &Path, env: &[(&str, &str)]) -> (i32, String, Duration) {
    let start = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave-agent"))
        .arg("--config")
        .arg(config)
        .arg("check")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout, start.elapsed())
}

/// The state word of probe `name`'s line (`<name> <state> <N> ms <detail>`), checking the shape.
fn state_of<'a>(stdout: &'a str, name: &str) -> &'a str {
    let line = stdout
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("no line for {name} in\n{stdout}"));
    let words: Vec<&str> = line.splitn(5, ' ').collect();
    assert!(words.len() == 5 && words[2].parse::<u64>().is_ok() && words[3] == "ms", "bad line shape: {line}");
    words[1]
}

const NAMES: [&str; 9] =
    ["homeserver", "database", "llm", "embedder", "chroma", "planka", "browser", "agent:ghost", "agent:sh"];

#[tokio::test]
async fn check_shows_every_backend_and_each_stopped_one_as_down() {
    let mut backends = Backends::start().await;
    // The model server behind a proxy that can swallow requests: a server that never answers.
    let llm_proxy = Proxy::start(&backends.llm.url.replace("http://", "").replace("/v1", "")).await;
    let slot = synapse().slot();
    let dir = scratch_dir("check");
    let config = dir.join("conclave.toml");
    let db = format!("sqlite://{}/agent.db", dir.display());
    let llm_url = format!("{}/v1", llm_proxy.url);
    std::fs::write(&config, slot.config_toml(&synapse().url, &db, &backends.toml(&llm_url))).unwrap();

    let (code, out, _) = check(&config, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), NAMES.len(), "one line per backend:\n{out}");
    for name in NAMES {
        let want = if name == "agent:ghost" { "down" } else { "up" };
        assert_eq!(state_of(&out, name), want, "{name} in\n{out}");
    }
    assert!(out.contains("dimension 384"), "the embedder's dimension is shown:\n{out}");
    assert!(out.contains("registration loaded") || out.contains("as_token accepted"), "{out}");
    assert!(!out.contains(&backends.planka_key) && !out.contains(&slot.as_token), "no secret printed:\n{out}");

    // Each optional backend stopped in turn: its line says down, the exit code stays 0.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let optional = [
        ("embedder", "CONCLAVE_LLM__EMBEDDING_BASE_URL", format!("{closed}/v1")),
        ("planka", "CONCLAVE_PLANKA__URL", closed.clone()),
        ("browser", "CONCLAVE_BROWSER__CHROMIUM_PATH", "/nonexistent/chromium".to_owned()),
    ];
    for (name, key, value) in &optional {
        let (code, out, _) = check(&config, &[(key, value)]).await;
        assert_eq!((code, state_of(&out, name)), (0, "down"), "{name} stopped:\n{out}");
        let others_up = NAMES.iter().filter(|n| *n != name && **n != "agent:ghost").all(|n| state_of(&out, n) == "up");
        assert!(others_up, "only {name} turns down:\n{out}");
    }
    backends.chroma.stop();
    let (code, out, _) = check(&config, &[]).await;
    assert_eq!((code, state_of(&out, "chroma")), (0, "down"), "{out}");
    backends.chroma.restart();

    // A model server that takes the request and never answers: down within the probe's timeout.
    llm_proxy.set(Mode::Blackhole);
    let (code, out, took) = check(&config, &[]).await;
    assert_eq!((code, state_of(&out, "llm")), (0, "down"), "{out}");
    assert!(out.contains("no answer within 5 s"), "{out}");
    assert!(took < Duration::from_secs(12), "check took {took:?}");
    llm_proxy.set(Mode::Pass);

    // The required ones: exit 1.
    let (code, out, took) = check(&config, &[("CONCLAVE_HOMESERVER__URL", &closed)]).await;
    assert_eq!((code, state_of(&out, "homeserver")), (1, "down"), "{out}");
    assert!(took < Duration::from_secs(12), "check took {took:?}");
    let (code, out, _) = check(&config, &[("CONCLAVE_DATABASE__URL", "sqlite:///proc/no-such-dir/agent.db")]).await;
    assert_eq!((code, state_of(&out, "database")), (1, "down"), "{out}");
    let (code, out, _) = check(&config, &[("CONCLAVE_APPSERVICE__AS_TOKEN", "not-registered")]).await;
    assert_eq!((code, state_of(&out, "homeserver")), (1, "down"), "a registration not loaded:\n{out}");
    assert!(!out.contains("not-registered"), "{out}");

    // Not configured is `off`, never left out.
    let (code, out, _) = check(&config, &[("CONCLAVE_PLANKA__API_KEY", "")]).await;
    assert_eq!((code, state_of(&out, "planka")), (0, "off"), "{out}");
}

/// The text of the agent's reply to `event_id` that contains `marker`.
async fn reply_with(alice: &User, room: &str, agent: &str, event_id: &str, marker: &str) -> String {
    wait_for(&format!("a reply with {marker:?}"), Duration::from_secs(60), || async {
        alice.replies_to(room, agent, event_id).await.into_iter().find_map(|r| {
            let body = r["content"]["body"].as_str()?.to_owned();
            body.contains(marker).then_some(body)
        })
    })
    .await
}

#[tokio::test]
async fn status_in_a_room_shows_a_down_backend_the_queues_and_addresses_only_to_admins() {
    let backends = Backends::start().await;
    let alice = User::register("alice").await;
    let admin = User::register("admin").await;
    // The model server is down: a port nobody listens on.
    let closed = format!("http://127.0.0.1:{}/v1", free_port());
    let extra = format!("{}[access]\nadmins = [\"{}\"]\n", backends.toml(&closed), admin.user_id);
    let agent = Agent::start(synapse().slot(), Options { extra, ..Options::default() }).await;
    let room = alice.room_with(&agent.user_id()).await;
    alice.invite(&room, &admin.user_id).await;
    admin.join(&room).await;

    let asked = alice.send_text(&room, "!status").await;
    let status = reply_with(&alice, &room, &agent.user_id(), &asked, "Queues:").await;
    for (name, state) in [("homeserver", "up"), ("database", "up"), ("llm", "down"), ("chroma", "up"), ("planka", "up")]
    {
        assert!(status.contains(&format!("{name} {state} ")), "{name} {state} in\n{status}");
    }
    assert!(status.contains("agent:ghost down"), "{status}");
    assert!(status.contains("inbox ") && status.contains("dead letters 0"), "{status}");
    assert!(status.contains(env!("CARGO_PKG_VERSION")) && status.contains(", up "), "{status}");
    assert!(!status.contains("127.0.0.1") && !status.contains("http://"), "no address for a non-admin:\n{status}");

    let asked = admin.send_text(&room, "!status").await;
    let status = reply_with(&admin, &room, &agent.user_id(), &asked, "Queues:").await;
    assert!(status.contains(&closed), "an admin sees where the model server is:\n{status}");
    assert!(!status.contains(&backends.planka_key) && !status.contains(&agent.slot.as_token), "{status}");
}

/// One scrape of `/metrics`, parsed as Prometheus text.
async fn scrape(url: &str) -> prometheus_parse::Scrape {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

/// The value of `metric` with `labels` (0 when not recorded yet; a histogram gives its count).
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => panic!("{metric} is a summary"),
        })
        .sum()
}

#[tokio::test]
async fn metrics_count_a_burst_of_transactions_exactly_on_their_own_listener() {
    let port = free_port();
    let extra = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let agent = Agent::start(synapse().slot(), Options { extra, ..Options::default() }).await;
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let r = reqwest::get(format!("{}/metrics", agent.url)).await.unwrap();
    assert_eq!(r.status(), 404, "the appservice port does not serve metrics");

    let before = scrape(&metrics_url).await;
    let (txns, per_txn) = (25, 4);
    let room = "!ops-metrics:test.local";
    for t in 0..txns {
        let events: Vec<_> = (0..per_txn)
            .map(|e| {
                json!({"type": "m.room.message", "room_id": room, "event_id": format!("$ops-{t}-{e}"),
                       "sender": "@someone:test.local", "origin_server_ts": 1,
                       "content": {"msgtype": "m.text", "body": "hello"}})
            })
            .collect();
        let r = agent
            .as_homeserver(Method::PUT, &format!("/_matrix/app/v1/transactions/ops-{t}"))
            .json(&json!({"events": events}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let after = scrape(&metrics_url).await;
    let moved = |metric: &str| value(&after, metric, &[]) - value(&before, metric, &[]);
    assert_eq!(moved("conclave_transactions_received_total"), f64::from(txns));
    assert_eq!(moved("conclave_events_received_total"), f64::from(txns * per_txn));
    assert_eq!(moved("conclave_ingest_duration_seconds_count"), f64::from(txns), "one ingest timing per transaction");

    // The dispatcher handles every event; the inbox gauge drains to 0.
    let handled = [("type", "m.room.message")];
    let want = value(&before, "conclave_events_handled_total", &handled) + f64::from(txns * per_txn);
    let last = wait_for("every event handled", Duration::from_secs(60), || async {
        let s = scrape(&metrics_url).await;
        (value(&s, "conclave_events_handled_total", &handled) >= want && value(&s, "conclave_inbox_depth", &[]) == 0.0)
            .then_some(s)
    })
    .await;
    assert_eq!(value(&last, "conclave_events_handled_total", &handled), want, "exactly once each");
    for sample in &last.samples {
        for (k, v) in sample.labels.iter() {
            assert!(!v.contains(room) && !v.contains("@someone"), "{} has a room or user id in {k}", sample.metric);
        }
    }
    let homeserver_calls = last.samples.iter().filter(|s| s.metric == "conclave_homeserver_calls_total").count();
    assert!(homeserver_calls > 0, "homeserver calls are counted by endpoint");
}

#[tokio::test]
async fn json_logs_carry_the_room_and_event_of_a_handled_event_and_no_secret() {
    let extra = "[logging]\nformat = \"json\"\n".to_owned();
    let agent = Agent::start(synapse().slot(), Options { extra, ..Options::default() }).await;
    let (room, event) = ("!ops-logs:test.local", "$ops-logs-1");
    // Its head (room, event id) is fine, so it is stored; its content is not, so handling it logs.
    let bad = json!({"type": "m.room.message", "room_id": room, "event_id": event, "sender": "@x:test.local",
                     "origin_server_ts": 1, "content": 5});
    let r = agent
        .as_homeserver(Method::PUT, "/_matrix/app/v1/transactions/ops-logs")
        .json(&json!({"events": [bad]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = wait_for("the handling's log line", Duration::from_secs(30), || async {
        agent.log().lines().find(|l| l.contains("does not parse")).map(str::to_owned)
    })
    .await;
    let record: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let spans = record["spans"].as_array().unwrap_or_else(|| panic!("no span list: {line}"));
    assert!(spans.iter().any(|s| s["room_id"] == room && s["event_id"] == event), "{line}");
    let log = agent.log();
    for l in log.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
    for secret in [&agent.slot.as_token, &agent.slot.hs_token] {
        assert!(!log.contains(secret.as_str()), "a token is in the log");
    }
}
