//! The agent under test: a real `conclave-agent serve` process with its own config and data dir.

use super::scratch_dir;
use super::synapse::{Slot, synapse};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Agent {
    pub slot: Slot,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub url: String,
    /// The database it runs on (the Options' or its own SQLite file).
    pub database_url: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

/// How to run the agent; the defaults talk straight to the test Synapse on SQLite.
#[derive(Default)]
pub struct Options {
    /// Homeserver URL, e.g. a proxy's; default Synapse's.
    pub homeserver_url: Option<String>,
    /// Database URL; default a SQLite file in the agent's dir.
    pub database_url: Option<String>,
    /// Extra TOML tables (e.g. `[access]`).
    pub extra: String,
    /// Environment overrides (`CONCLAVE_…`).
    pub env: Vec<(String, String)>,
}

impl Agent {
    pub async fn start(slot: Slot, options: Options) -> Self {
        let dir = scratch_dir(&slot.id);
        let db = options.database_url.unwrap_or_else(|| format!("sqlite://{}/agent.db", dir.display()));
        let hs = options.homeserver_url.unwrap_or_else(|| synapse().url.clone());
        let config_path = dir.join("conclave.toml");
        std::fs::write(&config_path, slot.config_toml(&hs, &db, &options.extra)).unwrap();
        let url = format!("http://127.0.0.1:{}", slot.port);
        let mut agent = Self { slot, dir, config_path, url, database_url: db, env: options.env, child: None };
        agent.spawn().await;
        agent
    }

    /// Starts the process (again) with the same config and database.
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_conclave-agent"))
            .arg("--config")
            .arg(&self.config_path)
            .arg("serve")
            .env("RUST_LOG", "info,conclave_agent=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let http = reqwest::Client::new();
        let health = format!("{}/health", self.url);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("agent exited with {status}:\n{}", self.log());
            }
            if http.get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "agent not healthy after 30 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent running");
        Command::new("kill").arg(child.id().to_string()).status().unwrap();
        child.wait().unwrap()
    }

    pub fn user_id(&self) -> String {
        self.slot.user_id()
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The agent's store, opened beside it (SQLite in WAL mode takes a second connection).
    pub async fn store(&self) -> conclave_agent::store::Store {
        conclave_agent::store::Store::connect(&self.database_url).await.unwrap()
    }

    /// Events waiting in the agent's inbox, from `/health`.
    pub async fn inbox_len(&self) -> i64 {
        let v: serde_json::Value = reqwest::get(format!("{}/health", self.url)).await.unwrap().json().await.unwrap();
        v["inbox"].as_i64().unwrap()
    }

    /// A request to the agent as the homeserver would send it (with the slot's hs_token).
    pub fn as_homeserver(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().request(method, format!("{}{path}", self.url)).bearer_auth(&self.slot.hs_token)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- agent log ({}) ----\n{}", self.log_path().display(), self.log());
        }
    }
}
