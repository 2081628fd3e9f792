//! Real Chroma servers (`chroma run` from the RAG venv): one shared per test binary, where each
//! test takes a collection of its own, and separate instances a test can stop and restart on the
//! same port and data directory.

use super::{free_port, http_ok, scratch_dir, spawn_watched, tools_dir};
use conclave_agent::config;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a Chroma may take to answer its first heartbeat (about 1 s when idle; CI is slower).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The `chroma` CLI, from `$CONCLAVE_CHROMA` or the venv `scripts/setup.sh` installs.
pub fn chroma_bin() -> String {
    let bin =
        std::env::var("CONCLAVE_CHROMA").map(PathBuf::from).unwrap_or_else(|_| tools_dir().join("rag-venv/bin/chroma"));
    assert!(bin.exists(), "no Chroma at {}: run scripts/setup.sh first", bin.display());
    bin.to_str().unwrap().to_owned()
}

pub struct Chroma {
    pub url: String,
    pub dir: PathBuf,
    // Never dropped (a static): the watchdog ends the server with the test binary.
    server: ChromaInstance,
    next: AtomicUsize,
}

static CHROMA: OnceLock<Chroma> = OnceLock::new();

/// The test binary's shared Chroma, started on first use.
pub fn chroma() -> &'static Chroma {
    CHROMA.get_or_init(|| {
        let server = ChromaInstance::start();
        Chroma { url: server.url.clone(), dir: server.dir.clone(), server, next: AtomicUsize::new(0) }
    })
}

impl Chroma {
    /// A client config naming a collection no other test uses.
    pub fn config(&self, name: &str) -> config::Chroma {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        config_for(&self.url, &format!("t{n}_{name}"))
    }

    /// The server's process id (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }
}

/// A client config for the Chroma at `url` and collection `collection`.
pub fn config_for(url: &str, collection: &str) -> config::Chroma {
    config::Chroma { url: url.to_owned(), collection: collection.to_owned(), ..config::Chroma::default() }
}

/// A Chroma of its own, which the test can stop and start again with the same port and data.
/// Dropping it stops it.
pub struct ChromaInstance {
    pub url: String,
    pub port: u16,
    pub dir: PathBuf,
    pidfile: PathBuf,
    starts: usize,
}

impl ChromaInstance {
    pub fn start() -> Self {
        let dir = scratch_dir("chroma");
        let port = free_port();
        let mut instance =
            Self { url: format!("http://127.0.0.1:{port}"), port, pidfile: dir.join("chroma.pid"), dir, starts: 0 };
        instance.launch();
        instance
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s) and waits until its port is closed.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid() else { return };
        let _ = std::fs::remove_file(&self.pidfile);
        signal(pid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            if Instant::now() > deadline {
                signal(pid, "KILL");
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "Chroma on port {} did not stop", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on the same port and data directory; waits for the heartbeat.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pidfile).ok()?.trim().parse().ok()
    }

    fn launch(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("chroma.{}.out", self.starts));
        let data = self.dir.join("data");
        let port = self.port.to_string();
        spawn_watched(
            &chroma_bin(),
            &["run", "--path", data.to_str().unwrap(), "--host", "127.0.0.1", "--port", &port],
            &log,
            None,
            Some(&self.pidfile),
        );
        let deadline = Instant::now() + START_TIMEOUT;
        while !http_ok(self.port, "/api/v2/heartbeat") {
            assert!(
                Instant::now() < deadline,
                "Chroma did not start on port {}; see {}:\n{}",
                self.port,
                log.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ChromaInstance {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

/// An exited child not yet reaped by its watchdog still has a /proc entry.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}
