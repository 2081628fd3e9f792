//! The CLI's one-shot operations: `init`, `registration`, `check` (its probes are [`crate::probe`]'s).

use crate::backfill::Request;
use crate::config::Config;
use crate::llm::LlmClient;
use crate::matrix::MatrixClient;
use crate::planka::{PlankaClient, PlankaError};
use crate::probe;
use crate::rag::Rag;
use crate::registration::registration_yaml;
use crate::secret::Secret;
use crate::store::Store;
use anyhow::{Context as _, bail};
use std::io::Write;
use std::path::Path;

/// Writes a file only the owner can read (it holds secrets, invariant 5).
pub fn write_secret_file(path: &Path, contents: &str, overwrite: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.exists() && !overwrite {
        bail!("{} exists; refusing to overwrite it (use --force)", path.display());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // `mode` applies only to new files; an overwritten one may have been wider.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// `init`: a starter config with fresh tokens.
pub fn init(out: &Path, server_name: &str, homeserver_url: &str, force: bool) -> anyhow::Result<()> {
    let text = format!(
        "[homeserver]\nurl = {url}\nserver_name = {name}\n[appservice]\nas_token = {a}\nhs_token = {h}\n\
         [agents.pi]\n[agents.claude]\ndisplay_name = \"Claude Code\"\n",
        url = toml_str(homeserver_url),
        name = toml_str(server_name),
        a = toml_str(Secret::random().expose()),
        h = toml_str(Secret::random().expose()),
    );
    // Validate (and fill in every default) before writing, so the file documents all keys.
    let config = Config::from_toml(&text)?;
    let header = "# conclave-agent configuration. Every key can be overridden by CONCLAVE_<SECTION>__<KEY>.\n\
                  # Holds secrets: keep it mode 0600.\n\n";
    write_secret_file(out, &format!("{header}{}", config.to_toml()), force)?;
    println!("wrote {} (mode 0600)", out.display());
    Ok(())
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// `registration`: the Synapse registration YAML, to a file (mode 0600) or stdout.
pub fn registration(config: &Config, out: Option<&Path>) -> anyhow::Result<()> {
    let yaml = registration_yaml(config)?;
    match out {
        Some(path) => {
            write_secret_file(path, &yaml, true)?;
            println!("wrote {} (mode 0600); list it in Synapse's app_service_config_files", path.display());
        }
        None => print!("{yaml}"),
    }
    Ok(())
}

/// `check`: every probe at once, one line each (`<name> <up|down|off> <N> ms <detail>`, with the
/// operator's details); `Ok(false)` when the homeserver or the database is down.
pub async fn check(config: &Config) -> anyhow::Result<bool> {
    let matrix = MatrixClient::new(&config.homeserver.url, config.appservice.as_token.clone(), probe::TIMEOUT)?;
    let llm = LlmClient::new(&config.llm.base_url, &config.llm.api_key, probe::TIMEOUT)?;
    let rag = Rag::from_config(config)?;
    let planka = match PlankaClient::new(&config.planka, probe::TIMEOUT) {
        Ok(client) => Some(client),
        Err(PlankaError::NotConfigured) => None,
        Err(e) => return Err(e.into()),
    };
    let browser = crate::browser::Browser::from_config(&config.browser).map_err(anyhow::Error::msg)?;
    let targets = probe::Targets {
        config,
        matrix: &matrix,
        database: probe::Database::Url(&config.database.url),
        llm: &llm,
        rag: &rag,
        planka: planka.as_ref(),
        browser: &browser,
    };
    let reports = probe::run(&targets).await;
    for report in reports.iter() {
        println!("{}", report.line(true));
    }
    Ok(probe::required_up(&reports))
}

/// `backfill`: asks the running agent (through the database) to read `room`'s history again.
pub async fn backfill(config: &Config, room: &str, limit: Option<u64>) -> anyhow::Result<()> {
    let room =
        ruma::RoomId::parse(room).map_err(|e| anyhow::anyhow!("{room:?} is not a room id like !abc:server: {e}"))?;
    if limit == Some(0) {
        bail!("--limit must be greater than 0");
    }
    let store = Store::connect(config.database.url.expose()).await?;
    let result = async {
        if !store.room_is_joined(room.as_str()).await? {
            bail!("the agent is not in {room}: invite it first (joining reads the history anyway)");
        }
        match crate::backfill::request(&store, config, room.as_str(), limit).await? {
            Request::IndexingOff => bail!("indexing is off in {room}: an admin can say `!index on` there"),
            Request::Running(b) => {
                println!("{room}: already reading its history ({} events read, {} messages queued)", b.fetched, b.queued)
            }
            Request::Started(limit) => println!(
                "{room}: the running agent reads up to {limit} events of history, newest first; `!index status` in the room shows how far it got"
            ),
        }
        Ok(())
    }
    .await;
    store.close().await;
    result
}

/// `dead-letters list`: one line per event set aside, oldest first.
pub async fn dead_letters_list(config: &Config) -> anyhow::Result<()> {
    let store = Store::connect(config.database.url.expose()).await?;
    let letters = store.dead_letters().await;
    store.close().await;
    let letters = letters?;
    if letters.is_empty() {
        eprintln!("no dead letters");
    }
    for d in letters {
        println!("{}\t{}\t{}\t{}\t{}", d.seq, d.room_id, d.event_id, crate::strings::date_utc(d.failed_at), d.error);
    }
    Ok(())
}

/// `dead-letters replay ID|--all`: back into the inbox, where the running agent takes them up.
pub async fn dead_letters_replay(config: &Config, seq: Option<i64>) -> anyhow::Result<()> {
    let store = Store::connect(config.database.url.expose()).await?;
    let replayed = store.dead_letters_replay(seq).await;
    store.close().await;
    match (replayed?, seq) {
        (0, Some(seq)) => bail!("no dead letter {seq} (`conclave-agent dead-letters list` shows them)"),
        (n, _) => eprintln!("{n} event(s) back in the inbox; the running agent handles them in a second or so"),
    }
    Ok(())
}
