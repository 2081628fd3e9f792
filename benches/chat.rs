//! Chat latency: from a transaction's arrival at the agent to the agent's first visible message
//! (its first `send` reaching the homeserver), with an instant model server; then the edit rate
//! while one answer streams for BENCH_STREAM_SECS (default 30) seconds.
//!
//! The homeserver here is a stub that answers at once and timestamps every send, so the figure
//! is the agent's own work (its homeserver calls included), not Synapse's.
//!
//! Run: `cargo bench --bench chat` (env: BENCH_QUESTIONS, BENCH_STREAM_SECS).

#[allow(dead_code)]
#[path = "../tests/common/fake_llm.rs"]
mod fake_llm;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use conclave_agent::config::Config;
use conclave_agent::service::serve;
use fake_llm::FakeLlm;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A send that reached the stub homeserver.
struct Sent {
    at: Instant,
    edit: bool,
}

#[derive(Clone)]
struct Stub {
    sent: mpsc::UnboundedSender<Sent>,
    counter: Arc<AtomicU64>,
}

/// Just enough of the client-server API for the agent's chat path.
async fn homeserver(State(stub): State<Stub>, request: Request) -> axum::response::Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    if method == Method::PUT && path.contains("/send/") {
        let at = Instant::now();
        let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap_or_default();
        let content: Value = serde_json::from_slice(&body).unwrap_or_default();
        let edit = content["m.relates_to"]["rel_type"] == "m.replace";
        let _ = stub.sent.send(Sent { at, edit });
        let n = stub.counter.fetch_add(1, Ordering::Relaxed);
        return Json(json!({"event_id": format!("$sent{n}")})).into_response();
    }
    if path.contains("/state/") {
        return (StatusCode::NOT_FOUND, Json(json!({"errcode": "M_NOT_FOUND", "error": "no such state"})))
            .into_response();
    }
    if path.ends_with("/messages") {
        return Json(json!({"chunk": [], "start": "s0"})).into_response();
    }
    if path.contains("/appservice/") {
        return Json(json!({"duration_ms": 1})).into_response();
    }
    Json(json!({})).into_response() // typing, display name
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let questions: usize = std::env::var("BENCH_QUESTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let stream_secs: u64 = std::env::var("BENCH_STREAM_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);

    let (tx, mut sent) = mpsc::unbounded_channel();
    let stub = Stub { sent: tx, counter: Arc::new(AtomicU64::new(0)) };
    let hs = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hs_url = format!("http://{}", hs.local_addr().unwrap());
    let hs = axum::serve::ListenerExt::tap_io(hs, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(hs, axum::Router::new().fallback(homeserver).with_state(stub)).await });
    let llm = FakeLlm::start().await;
    llm.set_reply("Sure, here is a short answer.");
    llm.set_word_delay(Duration::ZERO);

    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&format!(
        "[homeserver]\nurl = \"{hs_url}\"\nserver_name = \"bench.local\"\n\
         [appservice]\nas_token = \"bench-as\"\nhs_token = \"bench-hs\"\n\
         [database]\nurl = \"sqlite://{}/bench.db\"\n\
         [llm]\nbase_url = \"{}\"\nchat_model = \"llama3.1:8b\"\nuser_requests_per_minute = 0\n",
        dir.path().display(),
        llm.url
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(config, listener, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    while sent.try_recv().is_ok() {}

    let http = reqwest::Client::new();
    let ask = |n: usize| {
        let event = json!({"type": "m.room.message", "room_id": format!("!room{n}"), "event_id": format!("$q{n}"),
            "sender": "@alice:bench.local", "origin_server_ts": 1_700_000_000_000u64,
            "content": {"msgtype": "m.text", "body": "agent: give me a short answer",
                        "m.mentions": {"user_ids": ["@agent:bench.local"]}}});
        http.put(format!("{agent}/_matrix/app/v1/transactions/q{n}"))
            .bearer_auth("bench-hs")
            .json(&json!({"events": [event]}))
            .send()
    };

    // 1. Time to the first visible message.
    let mut latencies = Vec::with_capacity(questions);
    for n in 0..questions {
        let start = Instant::now();
        assert!(ask(n).await.unwrap().status().is_success());
        let first = loop {
            let s = sent.recv().await.unwrap();
            if !s.edit {
                break s.at;
            }
        };
        latencies.push(first - start);
        // Let the answer finish (its final edit) before the next question.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while sent.try_recv().is_ok() {}
    }
    latencies.sort();
    println!("chat: {questions} questions, one at a time, instant model server, stub homeserver");
    println!(
        "  transaction arrival -> first visible message: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );

    // 2. Edit rate while one answer streams for `stream_secs`.
    let words = stream_secs * 20;
    llm.set_reply(&(0..words).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" "));
    llm.set_word_delay(Duration::from_millis(50));
    let start = Instant::now();
    ask(questions).await.unwrap();
    let mut edits = 0;
    let mut last = start;
    while let Ok(Some(s)) = tokio::time::timeout(Duration::from_secs(5), sent.recv()).await {
        edits += usize::from(s.edit);
        last = s.at;
    }
    let span = (last - start).as_secs_f64();
    println!(
        "  a {span:.1} s stream ({words} words): {edits} edits, {:.2} edits/s (llm.edit_interval_ms = 1000)",
        edits as f64 / span
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
