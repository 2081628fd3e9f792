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
#[path = "support/stub_homeserver.rs"]
mod stub_homeserver;

use conclave_agent::config::Config;
use conclave_agent::service::serve;
use fake_llm::FakeLlm;
use serde_json::json;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let questions: usize = std::env::var("BENCH_QUESTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let stream_secs: u64 = std::env::var("BENCH_STREAM_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);

    let (hs_url, mut sent) = stub_homeserver::start().await;
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
    let db = format!("sqlite://{}/bench.db", dir.path().display());
    stub_homeserver::agent_joined(&db, (0..=questions).map(|n| format!("!room{n}"))).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(config, listener, async {
        let _ = stopped.await;
    }));
    stub_homeserver::wait_ready(&agent).await;
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
