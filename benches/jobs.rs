//! Jobs: what slow work costs the rest of the agent, and what the queue costs a job.
//!
//! 1. `!ping` latency (transaction arrival → the pong's send reaching the homeserver), p50/p99,
//!    while 0, 10 and 50 slow answers (they never finish during the run) are running or queued,
//!    each in its own room.
//! 2. Job throughput with an instant model: questions spread over rooms, all answered (the final
//!    edit sent), in jobs/s; and one at a time, arrival → first visible message and → the job's
//!    last message, p50/p99 (compare the first with `cargo bench --bench chat` of a build before jobs,
//!    which answered in the lane).
//!
//! The homeserver is a stub that answers at once, so the figures are the agent's own work.
//! Run: `cargo bench --bench jobs` (env: BENCH_PINGS, BENCH_QUESTIONS, BENCH_LEVELS e.g. "0,10,50").

#[allow(dead_code)]
#[path = "../tests/common/fake_llm.rs"]
mod fake_llm;
#[path = "support/stub_homeserver.rs"]
mod stub_homeserver;

use conclave_agent::config::Config;
use conclave_agent::service::serve;
use fake_llm::FakeLlm;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use stub_homeserver::Sent;
use tokio::sync::mpsc::UnboundedReceiver;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Bench {
    http: reqwest::Client,
    agent: String,
    txn: u64,
}

impl Bench {
    fn message(room: &str, id: &str, sender: &str, body: &str) -> Value {
        json!({"type": "m.room.message", "room_id": room, "event_id": id, "sender": sender,
               "origin_server_ts": 1_700_000_000_000u64, "content": {"msgtype": "m.text", "body": body}})
    }

    async fn put(&mut self, events: Vec<Value>) {
        self.txn += 1;
        let response = self
            .http
            .put(format!("{}/_matrix/app/v1/transactions/b{}", self.agent, self.txn))
            .bearer_auth("bench-hs")
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
}

/// Waits for the send that replies to `id` (and is not an edit).
async fn reply_to(sent: &mut UnboundedReceiver<Sent>, id: &str) -> Instant {
    loop {
        let s = sent.recv().await.expect("the stub homeserver is running");
        if !s.edit && s.reply_to.as_deref() == Some(id) && !s.body.starts_with("Queued") {
            return s.at;
        }
    }
}

#[tokio::main]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
    let pings: usize = env_or("BENCH_PINGS", 200);
    let questions: usize = env_or("BENCH_QUESTIONS", 500);
    let levels: Vec<usize> = std::env::var("BENCH_LEVELS")
        .unwrap_or_else(|_| "0,10,50".into())
        .split(',')
        .filter_map(|l| l.trim().parse().ok())
        .collect();

    let (hs_url, mut sent) = stub_homeserver::start().await;
    let slow = FakeLlm::start().await;
    slow.set_reply(&(0..2000).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" "));
    slow.set_word_delay(Duration::from_millis(500));
    let instant = FakeLlm::start().await;
    instant.set_reply("Sure, here is a short answer.");
    instant.set_word_delay(Duration::ZERO);

    let dir = tempfile::tempdir().unwrap();
    let config = |llm: &str, db: &str| {
        Config::from_toml(&format!(
            "[homeserver]\nurl = \"{hs_url}\"\nserver_name = \"bench.local\"\n\
             [appservice]\nas_token = \"bench-as\"\nhs_token = \"bench-hs\"\n\
             [database]\nurl = \"sqlite://{}/{db}.db\"\n\
             [jobs]\nmax_queued_per_room = 100000\nmax_queued_per_user = 100000\n\
             [llm]\nbase_url = \"{llm}\"\nchat_model = \"llama3.1:8b\"\nuser_requests_per_minute = 0\n\
             [chroma]\nindex_by_default = false\n\
             [access]\ncommands_per_minute = 0\n",
            dir.path().display(),
        ))
        .unwrap()
    };
    // One user sends hundreds of commands here on purpose: no per-person rate.
    println!("jobs: stub homeserver, SQLite, llm.max_concurrent = 2 (default), access.commands_per_minute = 0");
    let rooms_of = |name: &str| {
        let mut rooms: Vec<String> = (0..50).flat_map(|i| [format!("!slow{i}"), format!("!r{i}")]).collect();
        rooms.extend(["!quiet".to_owned(), "!one".to_owned()]);
        (format!("sqlite://{}/{name}.db", dir.path().display()), rooms)
    };

    // 1. !ping while slow answers run or wait.
    for level in levels {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (db, rooms) = rooms_of(&format!("ping{level}"));
        stub_homeserver::agent_joined(&db, rooms).await;
        let server = tokio::spawn(serve(config(&slow.url, &format!("ping{level}")), listener, async {
            let _ = stopped.await;
        }));
        let mut bench = Bench { http: reqwest::Client::new(), agent, txn: 0 };
        stub_homeserver::wait_ready(&bench.agent).await;
        let slow_jobs: Vec<Value> = (0..level)
            .map(|i| {
                Bench::message(
                    &format!("!slow{i}"),
                    &format!("$slow{i}"),
                    "@alice:bench.local",
                    "!ask explain everything",
                )
            })
            .collect();
        if !slow_jobs.is_empty() {
            bench.put(slow_jobs).await;
        }
        // Every slow job has shown something (its answer streaming, or its queued status).
        let mut seen = HashSet::new();
        while seen.len() < level {
            let s = sent.recv().await.unwrap();
            if let Some(id) = s.reply_to {
                seen.insert(id);
            }
        }
        let mut latencies = Vec::with_capacity(pings);
        for n in 0..pings {
            let id = format!("$ping{level}-{n}");
            let start = Instant::now();
            bench.put(vec![Bench::message("!quiet", &id, "@bob:bench.local", "!ping")]).await;
            latencies.push(reply_to(&mut sent, &id).await - start);
        }
        latencies.sort();
        println!(
            "  !ping with {level:>2} slow answers running or queued: p50 {:.2} ms, p99 {:.2} ms ({pings} pings)",
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99))
        );
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        while sent.try_recv().is_ok() {}
    }

    // 2. Throughput and per-job cost with an instant model.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (db, rooms) = rooms_of("throughput");
    stub_homeserver::agent_joined(&db, rooms).await;
    let server = tokio::spawn(serve(config(&instant.url, "throughput"), listener, async {
        let _ = stopped.await;
    }));
    let mut bench = Bench { http: reqwest::Client::new(), agent, txn: 0 };
    stub_homeserver::wait_ready(&bench.agent).await;
    while sent.try_recv().is_ok() {}

    let rooms = 50;
    let start = Instant::now();
    for chunk in (0..questions).collect::<Vec<_>>().chunks(50) {
        let events = chunk
            .iter()
            .map(|n| Bench::message(&format!("!r{}", n % rooms), &format!("$t{n}"), "@alice:bench.local", "!ask quick"))
            .collect();
        bench.put(events).await;
    }
    let mut answered = HashSet::new();
    let mut last = start;
    while answered.len() < questions {
        let s = sent.recv().await.unwrap();
        if !s.edit
            && let Some(id) = s.reply_to
            && id.starts_with("$t")
            && !s.body.starts_with("Queued")
        {
            answered.insert(id);
            last = s.at;
        }
    }
    let span = (last - start).as_secs_f64();
    println!(
        "  {questions} questions over {rooms} rooms, instant model: all answered in {span:.2} s = {:.0} jobs/s",
        questions as f64 / span
    );
    stub_homeserver::wait_jobs_done(&db).await;
    while sent.try_recv().is_ok() {}

    let mut first = Vec::new();
    for n in 0..200 {
        let id = format!("$one{n}");
        let t0 = Instant::now();
        bench.put(vec![Bench::message("!one", &id, "@alice:bench.local", "!ask quick")]).await;
        first.push(reply_to(&mut sent, &id).await - t0);
        // The answer's last edit and the job's end before the next question.
        stub_homeserver::wait_jobs_done(&db).await;
        while sent.try_recv().is_ok() {}
    }
    first.sort();
    println!(
        "  one at a time: transaction arrival -> first visible message p50 {:.2} ms, p99 {:.2} ms (200 questions)",
        ms(percentile(&first, 0.50)),
        ms(percentile(&first, 0.99))
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
