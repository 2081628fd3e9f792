//! Coding agents beside a real Synapse, on loopback, the CLI's process start included:
//! - `post` round trip: `conclave-agent post` started → its event readable on the homeserver
//!   (alice fetches it by id);
//! - inbox latency: alice's mention sent → printed by a waiting `conclave-agent inbox --wait 30`.
//!
//! Run: `cargo bench --bench agents` (env: BENCH_N, default 50 rounds of each).

#[path = "../tests/common/mod.rs"]
mod common;

use common::agent::{Agent, Options};
use common::client::{User, enc};
use common::synapse::synapse;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_conclave-agent");

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    assert!(!samples.is_empty());
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<46} n={:<4} p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap())
    );
}

/// The CLI with the agent's URL and `token`.
fn cli(url: &str, token: &str, state: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("CONCLAVE_AGENT_URL", url)
        .env("CONCLAVE_AGENT_TOKEN", token)
        .env("CONCLAVE_AGENT_STATE", state)
        .env_remove("CONCLAVE_ROOM")
        .env_remove("CONCLAVE_THREAD")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let agent = Agent::start(synapse().slot(), Options { extra: "[agents.pi]\n".into(), ..Options::default() }).await;
    let token = {
        let out = Command::new(BIN)
            .args(["--config", agent.config_path.to_str().unwrap(), "token", "--agent", "pi"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let alice = User::register("alice").await;
    let room = alice.group_room_with(&agent.user_id()).await;
    let ghost = agent.slot.ghost_id("pi");
    alice.invite(&room, &ghost).await;
    alice.wait_membership(&room, &ghost, "join").await;
    let state = agent.dir.join("bench.cursor").display().to_string();

    // Warm-up: the first send of a ghost and the page cache.
    for _ in 0..3 {
        let out = cli(&agent.url, &token, &state, &["post", "--room", &room, "warm-up"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    // Baselines, side by side: a process start of the same binary, a send by a human straight to
    // Synapse, and the API's post without the CLI.
    let mut starts = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let out = Command::new(BIN).arg("--version").output().unwrap();
        assert!(out.status.success());
        starts.push(started.elapsed());
    }
    let mut direct = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        alice.send_text(&room, &format!("direct {i}")).await;
        direct.push(started.elapsed());
    }
    let http = reqwest::Client::new();
    let mut api = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let r = http
            .post(format!("{}/conclave/v1/messages", agent.url))
            .bearer_auth(&token)
            .json(&json!({"room": room, "text": format!("api post {i}")}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        api.push(started.elapsed());
    }

    let (mut exits, mut visible) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let text = format!("bench post {i}");
        let started = Instant::now();
        let out = tokio::task::spawn_blocking({
            let (url, token, state, room) = (agent.url.clone(), token.clone(), state.clone(), room.clone());
            move || cli(&url, &token, &state, &["post", "--room", &room, &text]).output().unwrap()
        })
        .await
        .unwrap();
        exits.push(started.elapsed());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let event_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let (status, _) =
            alice.request(reqwest::Method::GET, &format!("/rooms/{}/event/{}", enc(&room), enc(&event_id)), None).await;
        assert_eq!(status, 200);
        visible.push(started.elapsed());
    }

    let mut delivered = Vec::with_capacity(n);
    // Start at the newest cursor, so each round's waiting inbox sees only its own mention.
    let out = cli(&agent.url, &token, &state, &["inbox"]).output().unwrap();
    assert!(out.status.success());
    for i in 0..n {
        let child = cli(&agent.url, &token, &state, &["inbox", "--wait", "30"]).spawn().unwrap();
        let waiter = tokio::task::spawn_blocking(move || {
            let out = child.wait_with_output().unwrap();
            (out, Instant::now())
        });
        // Long enough for the process to start and its request to be waiting.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let content = json!({"msgtype": "m.text", "body": format!("pi: bench question {i}"),
                             "m.mentions": {"user_ids": [ghost]}});
        let sent = Instant::now();
        alice.send(&room, "m.room.message", content).await;
        let (out, at) = waiter.await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let printed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(printed.lines().count(), 1, "round {i}: {printed:?}");
        delivered.push(at - sent);
    }

    println!("conclave-agent coding-agent API beside Synapse (loopback, CLI process start included)");
    report("baseline: process start (--version)", starts);
    report("baseline: human send straight to Synapse", direct);
    report("post: API request (no CLI)", api);
    report("post: CLI start -> CLI exit", exits);
    report("post: CLI start -> event readable on HS", visible);
    report("inbox: mention sent -> waiting inbox printed", delivered);
}
