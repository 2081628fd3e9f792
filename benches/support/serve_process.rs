//! The real `conclave-agent serve` as a child process of a benchmark, and what `/proc` says of its
//! memory.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port free now, for a server's config (the server binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `child` answers `GET /health` on `port` (any status); panics if it exits first or
/// nothing answers within 30 s.
pub async fn wait_listening(port: u16, child: &mut Child) {
    let started = Instant::now();
    while reqwest::get(format!("http://127.0.0.1:{port}/health")).await.is_err() {
        assert!(child.try_wait().unwrap().is_none(), "the server on port {port} exited");
        assert!(started.elapsed() < Duration::from_secs(30), "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `serve` with `config`, logging only errors, to nowhere.
pub fn spawn_serve(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_conclave-agent"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("RUST_LOG", "error")
        .stderr(Stdio::null())
        .spawn()
        .expect("the agent binary starts")
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process exists");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of kB")
}
