//! A homeserver stub for the benchmarks: answers the agent's client-server calls at once and
//! reports every message send (with its arrival time), so a benchmark measures the agent, not
//! Synapse. Rooms have three members (the agent and two people): never a direct chat.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

/// A send that reached the stub homeserver.
#[allow(dead_code)] // each benchmark reads the fields it needs
pub struct Sent {
    pub at: Instant,
    pub edit: bool,
    /// The event it replies to, if any.
    pub reply_to: Option<String>,
    pub body: String,
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
        let reply_to = content["m.relates_to"]["m.in_reply_to"]["event_id"].as_str().map(str::to_owned);
        let body = content["body"].as_str().unwrap_or_default().to_owned();
        let _ = stub.sent.send(Sent { at, edit, reply_to, body });
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
    if path.ends_with("/joined_members") {
        let joined = json!({"@agent:bench.local": {}, "@alice:bench.local": {}, "@bob:bench.local": {}});
        return Json(json!({ "joined": joined })).into_response();
    }
    if path.ends_with("/_matrix/client/versions") {
        return Json(json!({"versions": ["v1.11"]})).into_response();
    }
    if path.contains("/appservice/") {
        return Json(json!({"duration_ms": 1})).into_response();
    }
    Json(json!({})).into_response() // typing, display name
}

/// Starts the stub; returns its URL and the stream of sends.
pub async fn start() -> (String, mpsc::UnboundedReceiver<Sent>) {
    let (tx, sent) = mpsc::unbounded_channel();
    let stub = Stub { sent: tx, counter: Arc::new(AtomicU64::new(0)) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(homeserver).with_state(stub)).await });
    (url, sent)
}

/// Marks `rooms` as rooms the agent is in (as its own join would), in the database at `url`
/// before the agent starts: the agent ignores rooms it is not in.
#[allow(dead_code)] // not every benchmark needs it
pub async fn agent_joined(url: &str, rooms: impl IntoIterator<Item = String>) {
    let store = conclave_agent::store::Store::connect(url).await.unwrap();
    for room in rooms {
        store.room_set_joined(&room, true).await.unwrap();
    }
    store.close().await;
}

/// Waits until the agent at `agent` answers `GET /ready` with 200 (its database and the stub
/// answer), in place of a fixed settle sleep; panics after 30 s.
#[allow(dead_code)] // not every benchmark needs it
pub async fn wait_ready(agent: &str) {
    let started = std::time::Instant::now();
    let ready = format!("{agent}/ready");
    while !reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success()) {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{agent} not ready after 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until no job in the database at `url` is queued or running (their last edits are sent
/// before a job ends); panics after 60 s.
#[allow(dead_code)] // not every benchmark needs it
pub async fn wait_jobs_done(url: &str) {
    let store = conclave_agent::store::Store::connect(url).await.unwrap();
    let started = std::time::Instant::now();
    while !store.jobs_depth().await.unwrap().is_empty() {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "jobs still active after 60 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    store.close().await;
}
