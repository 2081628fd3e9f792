//! What the workspace container needs from the agent, against a real Synapse and PostgreSQL:
//! `/ready` (the healthcheck and the startup waits read it) and `bootstrap` (the rooms of
//! `rooms.toml`, created once however often it runs).

mod common;

use common::agent::{Agent, Options};
use common::client::{User, enc};
use common::postgres::postgres;
use common::proxy::{Mode, Proxy};
use common::synapse::{Slot, synapse};
use common::{scratch_dir, wait_for};
use reqwest::Method;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

async fn ready(agent: &Agent) -> (u16, Value) {
    let r = reqwest::get(format!("{}/ready", agent.url)).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn wait_ready(agent: &Agent, want: u16) -> Value {
    wait_for(&format!("/ready to answer {want}"), Duration::from_secs(30), || async {
        let (status, body) = ready(agent).await;
        (status == want).then_some(body)
    })
    .await
}

#[tokio::test]
async fn ready_needs_the_database_and_the_homeserver() {
    let homeserver = Proxy::start(&synapse().url).await;
    let direct = postgres().fresh_database().await;
    // postgres://postgres@127.0.0.1:PORT/db → the same database through a proxy that can go down.
    let url = url::Url::parse(&direct).unwrap();
    let database = Proxy::start(&format!("127.0.0.1:{}", url.port().unwrap())).await;
    let mut proxied = url.clone();
    proxied.set_port(Some(url::Url::parse(&database.url).unwrap().port().unwrap())).unwrap();
    let options = Options {
        homeserver_url: Some(homeserver.url.clone()),
        database_url: Some(proxied.to_string()),
        ..Options::default()
    };
    let agent = Agent::start(synapse().slot(), options).await;

    let body = wait_ready(&agent, 200).await;
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(
        (body["checks"]["database"]["ok"].as_bool(), body["checks"]["homeserver"]["ok"].as_bool()),
        (Some(true), Some(true))
    );

    homeserver.set(Mode::Down);
    let body = wait_ready(&agent, 503).await;
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["reason"], "homeserver not answering", "{body}");
    assert_eq!(body["checks"]["homeserver"]["ok"], false);
    assert_eq!(body["checks"]["database"]["ok"], true);
    assert!(!body.to_string().contains("127.0.0.1"), "no internal address in the reason: {body}");
    let health = reqwest::get(format!("{}/health", agent.url)).await.unwrap();
    assert_eq!(health.status(), 200, "the process still serves: /health stays green");
    homeserver.set(Mode::Pass);
    wait_ready(&agent, 200).await;

    database.set(Mode::Down);
    let body = wait_ready(&agent, 503).await;
    assert_eq!(body["reason"], "database not answering", "{body}");
    assert_eq!(body["checks"]["homeserver"]["ok"], true);
    assert!(!body.to_string().contains("postgres"), "no database URL in the reason: {body}");
    database.set(Mode::Pass);
    wait_ready(&agent, 200).await;
}

/// Runs `conclave-agent bootstrap`; returns (exit code, stdout).
fn bootstrap(config: &Path, rooms: &Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_conclave-agent"))
        .arg("--config")
        .arg(config)
        .arg("bootstrap")
        .arg("--rooms")
        .arg(rooms)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// Everything a run could have changed in `room`: its state events and its timeline.
async fn snapshot(agent: &User, room: &str) -> (usize, usize) {
    let (_, state) = agent.request(Method::GET, &format!("/rooms/{}/state", enc(room)), None).await;
    (state.as_array().map_or(0, Vec::len), agent.timeline(room).await.len())
}

async fn resolve(user: &User, alias: &str) -> String {
    let (status, v) = user.request(Method::GET, &format!("/directory/room/{}", enc(alias)), None).await;
    assert_eq!(status, 200, "{alias}: {v}");
    v["room_id"].as_str().unwrap().to_owned()
}

async fn state(user: &User, room: &str, event_type: &str) -> (u16, Value) {
    user.request(Method::GET, &format!("/rooms/{}/state/{event_type}/", enc(room)), None).await
}

fn alias(slot: &Slot, name: &str) -> String {
    format!("#{}{name}:{}", slot.alias_prefix, common::synapse::SERVER_NAME)
}

#[tokio::test]
async fn bootstrap_creates_each_room_once_and_then_changes_nothing() {
    let slot = synapse().slot();
    let dir = scratch_dir("bootstrap");
    let config = dir.join("conclave.toml");
    let db = format!("sqlite://{}/agent.db", dir.display());
    // Only configured coding agents have ghosts: pi's joins the ops room.
    std::fs::write(&config, slot.config_toml(&synapse().url, &db, "[agents.pi]\n")).unwrap();
    let agent = User::appservice(&slot.as_token, &slot.user_id());
    let admin = User::register("admin").await;
    let guest = User::register("guest").await;
    let p = &slot.alias_prefix;

    // A room that already has its alias (made by the agent before, renamed since, no topic).
    let (status, made) = agent
        .request(
            Method::POST,
            "/createRoom",
            Some(serde_json::json!({"room_alias_name": format!("{p}pre"), "name": "Renamed by people", "preset": "private_chat"})),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    let pre_id = made["room_id"].as_str().unwrap().to_owned();

    let rooms = dir.join("rooms.toml");
    let (a, g) = (&admin.user_id, &guest.user_id);
    std::fs::write(
        &rooms,
        format!(
            r#"admins = ["{a}"]
[[rooms]]
alias = "{p}ops"
name = "Fleet Ops"
topic = "Operator commands"
encrypted = false
invite = ["{a}", "{g}"]
agents = ["pi"]
[[rooms]]
alias = "{p}secret"
name = "Secret"
encrypted = true
invite = ["{a}"]
[[rooms]]
alias = "{p}pre"
name = "Pre"
topic = "Set by bootstrap"
encrypted = false
invite = ["{g}"]
"#
        ),
    )
    .unwrap();

    let (code, out) = bootstrap(&config, &rooms);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "one line per room: {out}");
    assert!(lines[0].starts_with(&format!("{}  created", alias(&slot, "ops"))), "{out}");
    assert!(lines[1].starts_with(&format!("{}  created", alias(&slot, "secret"))), "{out}");
    assert!(lines[2].starts_with(&format!("{}  updated  {pre_id}", alias(&slot, "pre"))), "{out}");
    assert!(lines[2].contains("topic set") && lines[2].contains("name differs"), "{out}");

    let ops = resolve(&admin, &alias(&slot, "ops")).await;
    let secret = resolve(&admin, &alias(&slot, "secret")).await;
    assert_eq!(resolve(&admin, &alias(&slot, "pre")).await, pre_id, "the existing alias is reused");
    assert_eq!(agent.membership(&ops, &admin.user_id).await.as_deref(), Some("invite"));
    admin.join(&ops).await;
    admin.join(&secret).await;
    assert_eq!(state(&admin, &ops, "m.room.name").await.1["name"], "Fleet Ops");
    assert_eq!(state(&admin, &ops, "m.room.topic").await.1["topic"], "Operator commands");
    assert_eq!(state(&admin, &ops, "m.room.encryption").await.0, 404, "the fleet room stays unencrypted");
    assert_eq!(state(&admin, &secret, "m.room.encryption").await.1["algorithm"], "m.megolm.v1.aes-sha2");
    for room in [&ops, &secret] {
        let levels = state(&admin, room, "m.room.power_levels").await.1;
        assert_eq!(levels["users"][a.as_str()], 100, "{levels}");
    }
    assert_eq!(admin.membership(&ops, &slot.ghost_id("pi")).await.as_deref(), Some("join"), "the ghost joined");
    assert_eq!(admin.membership(&secret, &slot.ghost_id("pi")).await, None, "only where listed");
    assert_eq!(state(&agent, &pre_id, "m.room.name").await.1["name"], "Renamed by people", "people's name kept");
    assert_eq!(state(&agent, &pre_id, "m.room.topic").await.1["topic"], "Set by bootstrap");
    assert_eq!(agent.membership(&pre_id, g).await.as_deref(), Some("invite"), "{out}");

    // The guest comes and goes: a later boot does not invite them again.
    guest.join(&ops).await;
    guest.leave(&ops).await;
    let mut before = Vec::new();
    for room in [&ops, &secret, &pre_id] {
        before.push(snapshot(&agent, room).await);
    }
    let (_, joined) = agent.request(Method::GET, "/joined_rooms", None).await;

    let (code, out) = bootstrap(&config, &rooms);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("  unchanged  ")).count(), 3, "{out}");
    assert!(out.contains(&format!("{g} left; not invited again")), "{out}");
    for (room, was) in [&ops, &secret, &pre_id].into_iter().zip(before) {
        assert_eq!(snapshot(&agent, room).await, was, "the second run sent something to {room}");
    }
    assert_eq!(agent.request(Method::GET, "/joined_rooms", None).await.1, joined, "no second room");

    // Nobody else can take an alias of the agent's namespace first.
    let (status, v) = admin
        .request(Method::POST, "/createRoom", Some(serde_json::json!({"room_alias_name": format!("{p}squat")})))
        .await;
    assert_eq!((status, v["errcode"].as_str()), (400, Some("M_EXCLUSIVE")), "{v}");

    // A room the agent was put out of is a clear failure, and the others still run.
    let (status, made) = agent
        .request(Method::POST, "/createRoom", Some(serde_json::json!({"room_alias_name": format!("{p}closed")})))
        .await;
    assert_eq!(status, 200, "{made}");
    agent.leave(made["room_id"].as_str().unwrap()).await;
    let closed = dir.join("closed.toml");
    let text = std::fs::read_to_string(&rooms).unwrap();
    std::fs::write(&closed, format!("{text}[[rooms]]\nalias = \"{p}closed\"\nencrypted = false\n")).unwrap();
    let (code, out) = bootstrap(&config, &closed);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{}  FAILED", alias(&slot, "closed"))) && out.contains("invite"), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("  unchanged  ")).count(), 3, "{out}");
    assert!(!out.contains(&slot.as_token), "no token in the output");
}
