//! Transaction ingest on loopback: concurrent `PUT /transactions` of 50 events each, durably
//! stored in SQLite (WAL, synchronous=FULL), while the dispatcher drains the inbox.
//! Also: the idle resident memory of the real `serve` binary.
//!
//! Run: `cargo bench --bench ingest` (env: BENCH_TXNS, BENCH_CONCURRENCY, BENCH_ROOMS).
//! `BENCH_METRICS=1`: each level measured with metrics off and on (`metrics.listen` set, so the
//! Prometheus recorder is installed), in alternating child processes, `BENCH_REPEAT` times each
//! (default 3), and the medians shown side by side.

// The ingest benchmark reads no sends; the chat benchmark does.
#[allow(dead_code)]
#[path = "support/serve_process.rs"]
mod serve_process;
#[path = "support/stub_homeserver.rs"]
mod stub_homeserver;

use conclave_agent::config::Config;
use conclave_agent::service::serve;
use conclave_agent::store::Store;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const EVENTS_PER_TXN: usize = 50;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `homeserver`: the stub's URL; the model, embeddings and Chroma servers are absent (answers
/// are not asked for; indexing jobs wait in their queue, as they would with Chroma down).
fn config_toml(db: &str, listen: &str, homeserver: &str) -> String {
    format!(
        "[homeserver]\nurl = \"{homeserver}\"\nserver_name = \"bench.local\"\n\
         [appservice]\nlisten = \"{listen}\"\nas_token = \"bench-as\"\nhs_token = \"bench-hs\"\n\
         [database]\nurl = \"sqlite://{db}\"\n"
    )
}

/// One level's figures.
struct Figures {
    events_per_s: f64,
    p50: Duration,
    p99: Duration,
    drain_per_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let txns = env_or("BENCH_TXNS", 2000);
    let rooms = env_or("BENCH_ROOMS", 20);
    let levels: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|_| vec![1, 4, 16]);
    let (homeserver, _sent) = stub_homeserver::start().await;
    println!(
        "ingest: {txns} txns x {EVENTS_PER_TXN} events per level, {rooms} rooms, SQLite (ingest commits synchronous=FULL)"
    );
    match std::env::var("BENCH_METRICS").as_deref() {
        Ok("1") => return compare_metrics(&levels),
        // One child of `compare_metrics`: one agent, its figures on one line each.
        Ok(mode @ ("off" | "on")) => {
            for f in run_agent(&homeserver, txns, rooms, &levels, mode == "on").await {
                println!("FIGURES {} {}", f.events_per_s, f.p50.as_secs_f64() * 1e3);
            }
            if mode == "on" {
                println!("RECORD {}", recording_cost().as_nanos());
            }
            return;
        }
        _ => {}
    }
    let figures = run_agent(&homeserver, txns, rooms, &levels, false).await;
    for (concurrency, f) in levels.iter().zip(&figures) {
        println!(
            "  concurrency {concurrency:>2}: {:>6.0} events/s acknowledged, ack p50 {:>6.2} ms, p99 {:>6.2} ms; \
             dispatcher drained the inbox at {:>6.0} events/s",
            f.events_per_s,
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3,
            f.drain_per_s,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    idle_rss(dir.path(), &homeserver).await;
}

/// Metrics off and on, each `BENCH_REPEAT` times (default 3), alternating, every run a process of
/// its own (a process cannot uninstall its recorder, and alternating spreads a busy machine's
/// noise over both); prints the medians side by side.
fn compare_metrics(levels: &[usize]) {
    let repeat = env_or("BENCH_REPEAT", 3).max(1);
    // [off, on] × run × level → (events/s, ack p50 ms)
    let mut runs: [Vec<Vec<(f64, f64)>>; 2] = [Vec::new(), Vec::new()];
    let mut costs = Vec::new();
    for _ in 0..repeat {
        for (i, mode) in ["off", "on"].into_iter().enumerate() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .env("BENCH_METRICS", mode)
                .stderr(std::process::Stdio::inherit())
                .output()
                .unwrap();
            assert!(out.status.success(), "the {mode} run failed");
            let figures = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("FIGURES "))
                .map(|l| {
                    let mut n = l.split(' ').map(|w| w.parse::<f64>().unwrap());
                    (n.next().unwrap(), n.next().unwrap())
                })
                .collect();
            runs[i].push(figures);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            costs.extend(stdout.lines().filter_map(|l| l.strip_prefix("RECORD ")?.parse::<f64>().ok()));
        }
    }
    println!(
        "recording the metrics of one {EVENTS_PER_TXN}-event transaction (ack path + dispatcher), alone: {:.1} µs (median)",
        median(costs) / 1e3
    );
    println!("metrics off vs on, medians of {repeat} alternating runs each:");
    for (l, concurrency) in levels.iter().enumerate() {
        let of = |i: usize, f: fn(&(f64, f64)) -> f64| median(runs[i].iter().map(|r| f(&r[l])).collect());
        let (rate_off, rate_on) = (of(0, |f| f.0), of(1, |f| f.0));
        let (p50_off, p50_on) = (of(0, |f| f.1), of(1, |f| f.1));
        println!(
            "  concurrency {concurrency:>2}: events/s off {rate_off:>6.0} on {rate_on:>6.0} ({:+.1} %); \
             ack p50 off {p50_off:>5.2} ms on {p50_on:>5.2} ms ({:+.1} %)",
            (rate_on / rate_off - 1.0) * 100.0,
            (p50_on / p50_off - 1.0) * 100.0,
        );
    }
}

/// What the metrics cost one transaction, measured alone (the recorder installed): what the ack
/// path records for it, and what the dispatcher records for its events.
fn recording_cost() -> Duration {
    use conclave_agent::telemetry;
    const N: u32 = 100_000;
    let start = Instant::now();
    for _ in 0..N {
        telemetry::transaction_received(EVENTS_PER_TXN, Duration::from_micros(500));
        for _ in 0..EVENTS_PER_TXN {
            telemetry::event_handled("m.room.message", true);
        }
    }
    start.elapsed() / N
}

/// One in-process agent on a fresh database, every level run against it.
async fn run_agent(homeserver: &str, txns: usize, rooms: usize, levels: &[usize], metrics: bool) -> Vec<Figures> {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let mut toml = config_toml(db.to_str().unwrap(), "127.0.0.1:0", homeserver);
    if metrics {
        toml.push_str("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    }
    let config = Config::from_toml(&toml).unwrap();
    stub_homeserver::agent_joined(&format!("sqlite://{}", db.display()), (0..rooms).map(|n| format!("!room{n}"))).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(config, listener, async {
        let _ = stopped.await;
    }));
    stub_homeserver::wait_ready(&url).await;
    let store = Store::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    let mut figures = Vec::new();
    for (level, &concurrency) in levels.iter().enumerate() {
        let bodies = Arc::new(bodies(level, txns, rooms));
        let start = Instant::now();
        let mut latencies = run_level(&url, &bodies, concurrency, level).await;
        let ingest = start.elapsed();
        while store.inbox_len().await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drained = start.elapsed();
        latencies.sort();
        let events = txns * EVENTS_PER_TXN;
        figures.push(Figures {
            events_per_s: events as f64 / ingest.as_secs_f64(),
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            drain_per_s: events as f64 / drained.as_secs_f64(),
        });
    }
    store.close().await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    figures
}

/// Transaction bodies, built before the clock starts so it measures the agent.
fn bodies(level: usize, txns: usize, rooms: usize) -> Vec<String> {
    (0..txns)
        .map(|t| {
            let events: Vec<_> = (0..EVENTS_PER_TXN)
                .map(|i| {
                    let n = t * EVENTS_PER_TXN + i;
                    json!({"type": "m.room.message", "room_id": format!("!room{}", n % rooms),
                           "event_id": format!("$e{level}-{n}"), "sender": format!("@user{}:bench.local", n % 7),
                           "origin_server_ts": 1_700_000_000_000u64 + n as u64,
                           "content": {"msgtype": "m.text", "body": format!("message number {n} about the build")}})
                })
                .collect();
            json!({"events": events}).to_string()
        })
        .collect()
}

/// Sends every body with `concurrency` requests in flight; returns each request's ack latency.
async fn run_level(url: &str, bodies: &Arc<Vec<String>>, concurrency: usize, level: usize) -> Vec<Duration> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, url, bodies, next) = (http.clone(), url.to_owned(), bodies.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let t = next.fetch_add(1, Ordering::Relaxed);
                if t >= bodies.len() {
                    return latencies;
                }
                let sent = Instant::now();
                let r = http
                    .put(format!("{url}/_matrix/app/v1/transactions/{level}-{t}"))
                    .bearer_auth("bench-hs")
                    .header("content-type", "application/json")
                    .body(bodies[t].clone())
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "txn {t}: {}", r.status());
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    latencies
}

/// Starts the real binary, lets it settle, and reads its resident set size.
async fn idle_rss(dir: &std::path::Path, homeserver: &str) {
    let port = serve_process::free_port();
    let config = dir.join("idle.toml");
    let db = dir.join("idle.db");
    std::fs::write(&config, config_toml(db.to_str().unwrap(), &format!("127.0.0.1:{port}"), homeserver)).unwrap();
    let mut child = serve_process::spawn_serve(&config);
    serve_process::wait_listening(port, &mut child).await;
    // Idle means after the startup work (migrations, registration checks) has finished.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = serve_process::status_kib(child.id(), "VmRSS");
    child.kill().unwrap();
    child.wait().unwrap();
    println!("idle serve: {rss} kB");
}
