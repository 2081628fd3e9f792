//! The transaction endpoint side by side with mautrix-python's appservice handler (a no-op
//! event handler) under the same `wrk` load: 2 threads, 16 connections, 50-event transactions
//! with unique txn ids (benches/support/wrk_transactions.lua), in alternating rounds (ours,
//! theirs, ours, …). Ours is the release `conclave-agent serve` on SQLite (ingest commits
//! synchronous=FULL: each 200 is durable), against the stub homeserver; theirs answers after
//! parsing, in memory. Prints the medians of events/s and p99 of each, and the ratios.
//!
//! Manual, not in CI: needs `wrk` on PATH and a Python with `mautrix` and `aiohttp`
//! (`BENCH_MAUTRIX_PYTHON`, default `~/.cache/conclave/mautrix-venv/bin/python`; see README,
//! "Benchmarks"). Run: `cargo bench --bench wrk` (env: BENCH_ROUNDS=3, BENCH_SECS=10). With
//! `BENCH_INGEST_LIMIT=<path to the shared ingest-limit binary>` each round also loads the machine's
//! durable ceiling and the figures say ours as a fraction of it; with `BENCH_NODE_MODULES=<a
//! node_modules holding matrix-appservice>` each round also loads Node's matrix-appservice.

#[allow(dead_code)]
#[path = "support/serve_process.rs"]
mod serve_process;
#[allow(dead_code)]
#[path = "support/stub_homeserver.rs"]
mod stub_homeserver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const EVENTS_PER_TXN: f64 = 50.0;
const ROOMS: usize = 20;
const HS_TOKEN: &str = "bench-hs";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One wrk run's figures.
struct Round {
    events_per_s: f64,
    p99_ms: f64,
}

fn wrk(port: u16, secs: u64, run: &str, token: &str) -> Round {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/support/wrk_transactions.lua");
    let out = Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{secs}s"), "--latency", "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}"))
        .env("HS_TOKEN", token)
        .env("RUN_ID", run)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("WRK ")).unwrap_or_else(|| panic!("wrk said: {stdout}"));
    let n: Vec<f64> = line.split(' ').map(|w| w.parse().unwrap()).collect();
    let (requests, errors, seconds, p99_us) = (n[0], n[1], n[2], n[3]);
    assert!(errors == 0.0, "{errors} of {requests} requests failed in run {run}:\n{stdout}");
    Round { events_per_s: requests * EVENTS_PER_TXN / seconds, p99_ms: p99_us / 1e3 }
}

/// Ours: the release binary on a fresh SQLite database, its rooms joined.
async fn start_agent(dir: &Path, homeserver: &str) -> (Child, u16) {
    let port = serve_process::free_port();
    let db = dir.join("agent.db");
    let url = format!("sqlite://{}", db.display());
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[homeserver]\nurl = \"{homeserver}\"\nserver_name = \"bench.local\"\n\
             [appservice]\nlisten = \"127.0.0.1:{port}\"\nas_token = \"bench-as\"\nhs_token = \"{HS_TOKEN}\"\n\
             [database]\nurl = \"{url}\"\n"
        ),
    )
    .unwrap();
    stub_homeserver::agent_joined(&url, (0..ROOMS).map(|n| format!("!room{n}:bench.local"))).await;
    let mut child = serve_process::spawn_serve(&config);
    serve_process::wait_listening(port, &mut child).await;
    (child, port)
}

/// Theirs: mautrix-python's `AppService` with a no-op handler.
async fn start_mautrix(dir: &Path) -> (Child, u16) {
    let python = std::env::var("BENCH_MAUTRIX_PYTHON").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/conclave/mautrix-venv/bin/python")
    });
    let port = serve_process::free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/support/mautrix_appservice.py");
    let mut child = Command::new(&python)
        .arg(script)
        .arg(port.to_string())
        .arg(HS_TOKEN)
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts ({e}): pip install mautrix aiohttp", python.display()));
    serve_process::wait_listening(port, &mut child).await;
    (child, port)
}

/// The Node peer, if `BENCH_NODE_MODULES` names a `node_modules` holding `matrix-appservice`
/// (`npm install matrix-appservice@3`): its `AppService` with a no-op handler.
async fn start_node(dir: &Path) -> Option<(Child, u16)> {
    let modules = std::env::var("BENCH_NODE_MODULES").ok()?;
    let port = serve_process::free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/support/node_appservice.js");
    let mut child = Command::new("node")
        .arg(script)
        .arg(port.to_string())
        .arg(HS_TOKEN)
        .env("NODE_PATH", modules)
        .current_dir(dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("node starts ({e})"));
    serve_process::wait_listening(port, &mut child).await;
    Some((child, port))
}

/// The machine's ceiling, if `BENCH_INGEST_LIMIT` names the shared `ingest-limit` binary: the least
/// work a durable appservice can do (parse, one SQLite transaction per group, synchronous=FULL).
async fn start_ceiling(dir: &Path) -> Option<(Child, u16)> {
    let bin = std::env::var("BENCH_INGEST_LIMIT").ok()?;
    let port = serve_process::free_port();
    let mut child = Command::new(&bin)
        .args(["durable", &port.to_string()])
        .arg(dir.join("limit.sqlite3"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} starts ({e})"));
    serve_process::wait_listening(port, &mut child).await;
    Some((child, port))
}

/// Its fixed token.
const CEILING_TOKEN: &str = "hs-bench-token";

/// One peer's round: the load, the peer stopped, its figures printed.
fn load((mut peer, port): (Child, u16), secs: u64, run: &str, token: &str, name: &str) -> Round {
    let r = wrk(port, secs, run, token);
    peer.kill().unwrap();
    peer.wait().unwrap();
    println!("  {name}: {:>8.0} events/s, p99 {:>6.2} ms", r.events_per_s, r.p99_ms);
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let rounds = env_or("BENCH_ROUNDS", 3).max(1);
    let secs = env_or("BENCH_SECS", 10);
    let (homeserver, _sent) = stub_homeserver::start().await;
    println!("wrk -t2 -c16 -d{secs}s, 50-event transactions over {ROOMS} rooms, {rounds} alternating rounds each");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut ceiling = Vec::new();
    let mut node = Vec::new();
    for round in 0..rounds {
        // A fresh server each round, so no round runs on another's database or warm caches.
        let dir = tempfile::tempdir().unwrap();
        let (mut agent, port) = start_agent(dir.path(), &homeserver).await;
        let r = wrk(port, secs, &format!("ours{round}"), HS_TOKEN);
        agent.kill().unwrap();
        agent.wait().unwrap();
        let mib = |name: &str| std::fs::metadata(dir.path().join(name)).map_or(0, |m| m.len()) >> 20;
        println!(
            "  round {round} conclave-agent: {:>8.0} events/s, p99 {:>6.2} ms (database {} MiB, WAL {} MiB)",
            r.events_per_s,
            r.p99_ms,
            mib("agent.db"),
            mib("agent.db-wal")
        );
        ours.push(r);

        let peer = start_mautrix(dir.path()).await;
        theirs.push(load(peer, secs, &format!("theirs{round}"), HS_TOKEN, &format!("round {round} mautrix-python")));
        if let Some(peer) = start_node(dir.path()).await {
            node.push(load(
                peer,
                secs,
                &format!("node{round}"),
                HS_TOKEN,
                &format!("round {round} matrix-appservice (Node)"),
            ));
        }
        if let Some(limit) = start_ceiling(dir.path()).await {
            let name = format!("round {round} ingest-limit durable");
            ceiling.push(load(limit, secs, &format!("limit{round}"), CEILING_TOKEN, &name));
        }
    }
    let rate = |v: &[Round]| median(v.iter().map(|r| r.events_per_s).collect());
    let p99 = |v: &[Round]| median(v.iter().map(|r| r.p99_ms).collect());
    println!("medians of {rounds} rounds each:");
    println!("  conclave-agent (SQLite, durable): {:>8.0} events/s, p99 {:>6.2} ms", rate(&ours), p99(&ours));
    println!("  mautrix-python (no-op handler):   {:>8.0} events/s, p99 {:>6.2} ms", rate(&theirs), p99(&theirs));
    println!(
        "  ratio: {:.2}x the events/s (target >= 3), p99 {:.2} of theirs (target <= 0.5)",
        rate(&ours) / rate(&theirs),
        p99(&ours) / p99(&theirs)
    );
    if !node.is_empty() {
        println!("  matrix-appservice (Node, no-op):  {:>8.0} events/s, p99 {:>6.2} ms", rate(&node), p99(&node));
        println!("  ours / Node: {:.2}x events/s, p99 ratio {:.2}", rate(&ours) / rate(&node), p99(&ours) / p99(&node));
    }
    if !ceiling.is_empty() {
        println!("  ingest-limit (durable ceiling):   {:>8.0} events/s, p99 {:>6.2} ms", rate(&ceiling), p99(&ceiling));
        println!("  ours as a fraction of the durable ceiling: {:.2}", rate(&ours) / rate(&ceiling));
    }
}
