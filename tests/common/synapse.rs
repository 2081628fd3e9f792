//! One real Synapse per test binary, with a pool of appservice registrations ("slots"). Each test
//! takes a slot of its own: its own appservice id, tokens, user namespace and agent port, so
//! tests never share state and no test sees another's Synapse retry back-off.

use super::{free_port, http_ok, scratch_dir, spawn_watched, tools_dir};
use conclave_agent::config::Config;
use conclave_agent::registration::registration_yaml;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const SERVER_NAME: &str = "test.local";
const SLOTS: usize = 32;

/// One appservice registration known to Synapse.
#[derive(Clone, Debug)]
pub struct Slot {
    pub id: String,
    pub localpart: String,
    pub ghost_prefix: String,
    /// Room aliases `#<alias_prefix>…` are this slot's (an exclusive namespace).
    pub alias_prefix: String,
    pub port: u16,
    /// What the registration tells Synapse (normally http://127.0.0.1:<port>).
    pub url: String,
    pub as_token: String,
    pub hs_token: String,
}

impl Slot {
    pub fn user_id(&self) -> String {
        format!("@{}:{SERVER_NAME}", self.localpart)
    }

    pub fn ghost_id(&self, name: &str) -> String {
        format!("@{}{name}:{SERVER_NAME}", self.ghost_prefix)
    }

    /// The agent's config for this slot (the parts the registration fixes), plus `extra` TOML
    /// tables.
    pub fn config_toml(&self, homeserver_url: &str, database_url: &str, extra: &str) -> String {
        format!(
            "[homeserver]\nurl = \"{homeserver_url}\"\nserver_name = \"{SERVER_NAME}\"\ntimeout_secs = 10\n\
             [appservice]\nid = \"{id}\"\nlisten = \"127.0.0.1:{port}\"\nurl = \"{url}\"\n\
             as_token = \"{a}\"\nhs_token = \"{h}\"\nsender_localpart = \"{lp}\"\nghost_prefix = \"{gp}\"\n\
             alias_prefix = \"{ap}\"\n\
             [database]\nurl = \"{database_url}\"\n{extra}\n",
            id = self.id,
            port = self.port,
            url = self.url,
            a = self.as_token,
            h = self.hs_token,
            lp = self.localpart,
            gp = self.ghost_prefix,
            ap = self.alias_prefix,
        )
    }
}

pub struct Synapse {
    pub url: String,
    pub dir: PathBuf,
    port: u16,
    python: String,
    /// Times the server was started (each run logs to its own file).
    runs: AtomicUsize,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

static SYNAPSE: OnceLock<Synapse> = OnceLock::new();

/// The test binary's Synapse, started on first use.
pub fn synapse() -> &'static Synapse {
    SYNAPSE.get_or_init(Synapse::start)
}

impl Synapse {
    /// A slot no other test has used.
    pub fn slot(&self) -> Slot {
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        assert!(i < SLOTS - 1, "more than {} agent tests in one binary: raise SLOTS", SLOTS - 1);
        self.slots[i].clone()
    }

    /// The slot whose registration points at a port nobody listens on, for ping diagnostics.
    pub fn misrouted_slot(&self) -> Slot {
        self.slots[SLOTS - 1].clone()
    }

    fn start() -> Self {
        let python = std::env::var("CONCLAVE_SYNAPSE_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| tools_dir().join("synapse-venv/bin/python"));
        assert!(python.exists(), "no Synapse at {}: run scripts/setup.sh first", python.display());
        let python = python.to_str().unwrap().to_owned();
        let dir = scratch_dir("synapse");
        let d = dir.to_str().unwrap();
        let port = free_port();

        // From inside the data dir: the generated log config puts `homeserver.log` in the cwd.
        let generated = std::process::Command::new(&python)
            .current_dir(&dir)
            .args(["-m", "synapse.app.homeserver", "--server-name", SERVER_NAME])
            .args(["--config-path", &format!("{d}/homeserver.yaml"), "--data-directory", d])
            .args(["--generate-config", "--report-stats=no"])
            .output()
            .unwrap();
        assert!(
            generated.status.success(),
            "synapse --generate-config: {}",
            String::from_utf8_lossy(&generated.stderr)
        );

        let slots: Vec<Slot> = (0..SLOTS)
            .map(|i| {
                let port = free_port();
                let url = if i == SLOTS - 1 {
                    format!("http://127.0.0.1:{}", free_port()) // nobody will listen there
                } else {
                    format!("http://127.0.0.1:{port}")
                };
                Slot {
                    id: format!("conclave-test-{i}"),
                    localpart: format!("agent{i}"),
                    ghost_prefix: format!("agent{i}-"),
                    alias_prefix: format!("room{i}-"),
                    port,
                    url,
                    as_token: format!("as-token-{i}-{}", std::process::id()),
                    hs_token: format!("hs-token-{i}-{}", std::process::id()),
                }
            })
            .collect();
        let mut files = Vec::new();
        for slot in &slots {
            let config = Config::from_toml(&slot.config_toml("http://127.0.0.1:1", "sqlite://x.db", "")).unwrap();
            let path = format!("{d}/{}.yaml", slot.id);
            std::fs::write(&path, registration_yaml(&config).unwrap()).unwrap();
            files.push(format!("\"{path}\""));
        }
        let rate = "{per_second: 10000, burst_count: 10000}";
        let overrides = format!(
            "listeners:\n  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: false\n    x_forwarded: false\n    resources:\n      - names: [client]\n        compress: false\n\
             database:\n  name: sqlite3\n  args:\n    database: {d}/homeserver.db\n\
             app_service_config_files: [{files}]\n\
             trusted_key_servers: []\nsuppress_key_server_warning: true\n\
             enable_registration: true\nenable_registration_without_verification: true\n\
             rc_message: {rate}\nrc_registration: {rate}\nrc_joins: {{local: {rate}, remote: {rate}}}\n\
             rc_invites: {{per_room: {rate}, per_user: {rate}, per_issuer: {rate}}}\n\
             rc_login: {{address: {rate}, account: {rate}, failed_attempts: {rate}}}\n\
             rc_room_creation: {rate}\nrc_presence: {{per_user: {rate}}}\n",
            files = files.join(", "),
        );
        std::fs::write(format!("{d}/overrides.yaml"), overrides).unwrap();

        let url = format!("http://127.0.0.1:{port}");
        let synapse = Self { url, dir, port, python, slots, next: AtomicUsize::new(0), runs: AtomicUsize::new(0) };
        synapse.run();
        synapse
    }

    /// Starts the server process and waits until it answers.
    fn run(&self) {
        let d = self.dir.to_str().unwrap();
        let args = [
            "-m",
            "synapse.app.homeserver",
            "-c",
            &format!("{d}/homeserver.yaml"),
            "-c",
            &format!("{d}/overrides.yaml"),
        ];
        let out = self.dir.join(format!("synapse.{}.out", self.runs.fetch_add(1, Ordering::Relaxed)));
        spawn_watched(&self.python, &args, &out, None, Some(&self.dir.join("synapse.pid")));
        let deadline = Instant::now() + Duration::from_secs(90);
        while !http_ok(self.port, "/_matrix/client/versions") {
            assert!(
                Instant::now() < deadline,
                "Synapse did not start; see {} and {d}/homeserver.log:\n{}",
                out.display(),
                std::fs::read_to_string(&out).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops Synapse (SIGTERM, as an operator's restart does) and starts it again on the same data.
    /// Only for a test binary whose tests can all bear it.
    pub fn restart(&self) {
        let pid = std::fs::read_to_string(self.dir.join("synapse.pid")).unwrap().trim().to_owned();
        assert!(std::process::Command::new("kill").arg(&pid).status().unwrap().success(), "kill {pid}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "Synapse {pid} did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.run();
    }
}
