//! Memory of `serve` under big transactions (issue 18 point 4): the real binary, a stub homeserver,
//! SQLite. Peak RSS while one transaction of ~BENCH_MB MB is acknowledged, then while four arrive
//! at once; then RSS after ten of them once the inbox has drained, sampled for a minute. The
//! target: peak under 2× the body bytes in flight + 30 MB, and back under 40 MB within a minute.
//!
//! Run: `cargo bench --bench memory` (env: BENCH_MB, default 31; BENCH_SETTLE_SECS, default 60).

#[path = "support/serve_process.rs"]
mod serve_process;
#[path = "support/stub_homeserver.rs"]
mod stub_homeserver;

use serde_json::json;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `VmRSS` or `VmHWM` of `pid`, in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    serve_process::status_kib(pid, field) as f64 / 1024.0
}

/// Resets the peak (`VmHWM`) to the current RSS (Linux ≥ 4.0).
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// One transaction body of about `mb` MB: messages of ~300 bytes over 20 rooms.
fn body(mb: usize, tag: &str) -> String {
    let text = "lorem ipsum dolor sit amet ".repeat(8);
    let mut events = Vec::new();
    let mut size = 0;
    let mut n = 0;
    while size < mb * 1_000_000 {
        let event = json!({"type": "m.room.message", "room_id": format!("!room{}:bench.local", n % 20),
            "event_id": format!("${tag}-{n}"), "sender": "@alice:bench.local", "origin_server_ts": 1_700_000_000_000u64,
            "content": {"msgtype": "m.text", "body": format!("{text}{n}")}});
        size += event.to_string().len() + 1;
        events.push(event);
        n += 1;
    }
    json!({ "events": events }).to_string()
}

#[tokio::main]
async fn main() {
    let mb = env_or("BENCH_MB", 31);
    let settle = env_or("BENCH_SETTLE_SECS", 60);
    let (homeserver, _sent) = stub_homeserver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = serve_process::free_port();
    let config = dir.path().join("memory.toml");
    std::fs::write(
        &config,
        format!(
            "[homeserver]\nurl = \"{homeserver}\"\nserver_name = \"bench.local\"\n\
             [appservice]\nlisten = \"127.0.0.1:{port}\"\nas_token = \"bench-as\"\nhs_token = \"bench-hs\"\n\
             [database]\nurl = \"sqlite://{}/memory.db\"\n[chroma]\nindex_by_default = false\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = serve_process::spawn_serve(&config);
    let pid = child.id();
    let agent = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(600)).build().unwrap();
    serve_process::wait_listening(port, &mut child).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = status_mib(pid, "VmRSS");
    let put = |txn: String, body: String| {
        let request = http.put(format!("{agent}/_matrix/app/v1/transactions/{txn}")).bearer_auth("bench-hs").body(body);
        async move {
            let status = request.send().await.unwrap().status();
            assert_eq!(status, 200, "transaction {txn}");
        }
    };
    let inbox = || async {
        let health: serde_json::Value = http.get(format!("{agent}/health")).send().await.unwrap().json().await.unwrap();
        health["inbox"].as_i64().unwrap()
    };
    let drained = || async {
        while inbox().await > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let one = body(mb, "one");
    let bytes = one.len() as f64 / (1024.0 * 1024.0);
    println!("memory: a transaction of {bytes:.1} MiB ({mb} MB of ~300-byte messages); idle RSS {idle:.1} MiB");

    reset_peak(pid);
    put("one".into(), one).await;
    let peak = status_mib(pid, "VmHWM");
    println!("  one transaction:    peak {peak:.1} MiB; target < 2 × {bytes:.1} + 30 = {:.1} MiB", 2.0 * bytes + 30.0);
    drained().await;

    reset_peak(pid);
    let bodies: Vec<String> = (0..4).map(|i| body(mb, &format!("four{i}"))).collect();
    let puts: Vec<_> = bodies.into_iter().enumerate().map(|(i, b)| put(format!("four{i}"), b)).collect();
    futures_util::future::join_all(puts).await;
    let peak = status_mib(pid, "VmHWM");
    println!(
        "  four at once:       peak {peak:.1} MiB; target < 2 × {:.1} + 30 = {:.1} MiB",
        4.0 * bytes,
        8.0 * bytes + 30.0
    );
    drained().await;

    for i in 0..10 {
        put(format!("ten{i}"), body(mb * 2 / 3, &format!("ten{i}"))).await;
    }
    drained().await;
    let start = Instant::now();
    let after = status_mib(pid, "VmRSS");
    let mut under = None;
    while start.elapsed() < Duration::from_secs(settle as u64) {
        if under.is_none() && status_mib(pid, "VmRSS") < 40.0 {
            under = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled = status_mib(pid, "VmRSS");
    println!(
        "  after ten of {} MB, inbox drained: RSS {after:.1} MiB, {settled:.1} MiB {settle} s later; under 40 MiB {}",
        mb * 2 / 3,
        under.map_or("never".to_owned(), |t| format!("after {:.1} s", t.as_secs_f64()))
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
