//! The real `conclave-agent serve` as a child process of a benchmark, and what `/proc` says of its
//! memory.

use std::path::Path;
use std::process::{Child, Command, Stdio};

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
