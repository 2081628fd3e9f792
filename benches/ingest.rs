//! Transaction ingest on loopback: concurrent `PUT /transactions` of 50 events each, durably
//! stored in SQLite (WAL, synchronous=FULL), while the dispatcher drains the inbox.
//! Also: the idle resident memory of the real `serve` binary.
//!
//! Run: `cargo bench --bench ingest` (env: BENCH_TXNS, BENCH_CONCURRENCY, BENCH_ROOMS).

// The ingest benchmark reads no sends; the chat benchmark does.
#[allow(dead_code)]
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
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let (homeserver, _sent) = stub_homeserver::start().await;
    let config = Config::from_toml(&config_toml(db.to_str().unwrap(), "127.0.0.1:0", &homeserver)).unwrap();
    stub_homeserver::agent_joined(&format!("sqlite://{}", db.display()), (0..rooms).map(|n| format!("!room{n}"))).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(config, listener, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let store = Store::connect(&format!("sqlite://{}", db.display())).await.unwrap();

    println!(
        "ingest: {txns} txns x {EVENTS_PER_TXN} events per level, {rooms} rooms, SQLite (ingest commits synchronous=FULL)"
    );
    for (level, concurrency) in levels.into_iter().enumerate() {
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
        println!(
            "  concurrency {concurrency:>2}: {:>6.0} events/s acknowledged, ack p50 {:>6.2} ms, p99 {:>6.2} ms; \
             dispatcher drained the inbox at {:>6.0} events/s",
            events as f64 / ingest.as_secs_f64(),
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            events as f64 / drained.as_secs_f64(),
        );
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    idle_rss(dir.path(), &homeserver).await;
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
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.join("idle.toml");
    let db = dir.join("idle.db");
    std::fs::write(&config, config_toml(db.to_str().unwrap(), &format!("127.0.0.1:{port}"), homeserver)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_conclave-agent"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("RUST_LOG", "error")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss = status.lines().find(|l| l.starts_with("VmRSS")).unwrap_or("VmRSS: ?").to_owned();
    child.kill().unwrap();
    child.wait().unwrap();
    println!("idle serve: {}", rss.split_whitespace().skip(1).collect::<Vec<_>>().join(" "));
}
