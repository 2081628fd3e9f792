//! One handler per route of the coding agents' API; the work is in [`crate::agents`].

use super::{Caller, JsonBody, raw_body};
use crate::agents::{AgentError, inbox, progress, rooms, send, tasks};
use crate::appservice::{ApiError, AppState};
use crate::rag::Scope;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// Results of one search.
const SEARCH_RESULTS: usize = 10;

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", e.body_text()))
}

/// `GET /conclave/v1/whoami` → `{agent, user_id, rooms}` (the rooms its ghost is joined to).
pub async fn whoami(State(state): State<AppState>, Caller(agent): Caller) -> Result<Json<Value>, ApiError> {
    let ctx = &state.context;
    let rooms = rooms::joined(ctx, &agent).await.map_err(AgentError::matrix("listing the ghost's rooms"))?;
    Ok(Json(json!({ "agent": agent.name, "user_id": agent.user_id, "rooms": rooms })))
}

/// `POST /conclave/v1/messages {room, text, thread?, reply_to?, notice?, txn?}` → `{event_id}`
pub async fn post_message(
    State(state): State<AppState>,
    Caller(agent): Caller,
    JsonBody(post): JsonBody<send::Post>,
) -> Result<Json<Value>, ApiError> {
    let event_id = send::post(&state.context, &agent, &post).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    wait: Option<u64>,
}

/// `GET /conclave/v1/inbox?after=CURSOR&wait=SECS` → `{messages, next, pruned}`; with `wait`,
/// answers as soon as one message is there (at most 60 s).
pub async fn inbox(
    State(state): State<AppState>,
    Caller(agent): Caller,
    q: Result<Query<InboxQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let after = match q.after.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        None => 0,
        Some(a) => a.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", "after must be a cursor from an earlier answer")
        })?,
    };
    let wait = Duration::from_secs(q.wait.unwrap_or(0)).min(inbox::MAX_WAIT);
    let ctx = &state.context;
    let rows = inbox::read(ctx, &agent, after, wait).await.map_err(AgentError::Store)?;
    let next = rows.last().map_or(after, |r| r.seq);
    let messages: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let mut m = json!({
                "cursor": r.seq.to_string(), "room": r.room_id, "event_id": r.event_id,
                "sender": r.sender, "text": r.body, "ts": r.ts,
            });
            if let Some(thread) = r.thread_id {
                m["thread"] = thread.into();
            }
            if let Some(reply_to) = r.reply_to {
                m["reply_to"] = reply_to.into();
            }
            m
        })
        .collect();
    let pruned = ctx.store.agent_inbox_pruned(&agent.name).await.map_err(AgentError::Store)?;
    Ok(Json(json!({ "messages": messages, "next": next.to_string(), "pruned": pruned })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    room: String,
    name: String,
    #[serde(default)]
    thread: Option<String>,
}

/// `POST /conclave/v1/files?room=R&name=N[&thread=E]` (the raw file; its type from
/// `Content-Type`) → `{event_id}`
pub async fn post_file(
    State(state): State<AppState>,
    Caller(agent): Caller,
    q: Result<Query<FileQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let body = raw_body(body)?;
    let mimetype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .filter(|v| v.contains('/'))
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let event_id =
        send::file(&state.context, &agent, &q.room, &q.name, q.thread.as_deref(), &mimetype, body.to_vec()).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    room: String,
    title: String,
    #[serde(default)]
    description: Option<String>,
    /// Makes a retry harmless: the same txn again is the same card.
    #[serde(default)]
    txn: Option<String>,
}

/// `POST /conclave/v1/tasks {room, title, description?, txn?}` → `{card_id, url, event_id}`
pub async fn task_create(
    State(state): State<AppState>,
    Caller(agent): Caller,
    JsonBody(task): JsonBody<NewTask>,
) -> Result<Json<tasks::Created>, ApiError> {
    let (description, txn) = (task.description.as_deref(), task.txn.as_deref());
    Ok(Json(tasks::create(&state.context, &agent, &task.room, &task.title, description, txn).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comment {
    text: String,
    /// Makes a retry harmless: the same txn again posts no second comment.
    #[serde(default)]
    txn: Option<String>,
}

/// `POST /conclave/v1/tasks/{card}/comments {text, txn?}` → `{card_id}`
pub async fn task_comment(
    State(state): State<AppState>,
    Caller(agent): Caller,
    Path(card): Path<String>,
    JsonBody(comment): JsonBody<Comment>,
) -> Result<Json<Value>, ApiError> {
    let card_id = tasks::comment(&state.context, &agent, &card, &comment.text, comment.txn.as_deref()).await?;
    Ok(Json(json!({ "card_id": card_id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Move {
    list: String,
}

/// `POST /conclave/v1/tasks/{card}/move {list}` → `{card_id, list}`
pub async fn task_move(
    State(state): State<AppState>,
    Caller(agent): Caller,
    Path(card): Path<String>,
    JsonBody(to): JsonBody<Move>,
) -> Result<Json<Value>, ApiError> {
    let (card, list) = tasks::move_to(&state.context, &agent, &card, &to.list).await?;
    Ok(Json(json!({ "card_id": card.id, "list": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    #[serde(default)]
    room: Option<String>,
    q: String,
}

/// `GET /conclave/v1/search?q=Q[&room=R]` → `{results}`: room history, only of rooms the ghost is
/// joined to (as the homeserver says) and may use; without `room`, all of them.
pub async fn search(
    State(state): State<AppState>,
    Caller(agent): Caller,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    if q.q.trim().is_empty() {
        return Err(AgentError::Invalid("q is empty".into()).into());
    }
    let ctx = &state.context;
    let joined = rooms::joined(ctx, &agent).await.map_err(AgentError::matrix("listing the ghost's rooms"))?;
    let scope = match q.room.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        Some(room) => {
            let room = rooms::usable(ctx, &agent, room).await?;
            if !joined.contains(&room) {
                return Err(
                    AgentError::Forbidden(format!("{} is not in {room}: invite it first", agent.user_id)).into()
                );
            }
            Scope::Room(room.to_string())
        }
        None => Scope::Rooms(joined.iter().map(ToString::to_string).collect()),
    };
    let hits = ctx
        .rag
        .search(&scope, q.q.trim(), SEARCH_RESULTS)
        .await
        .map_err(|e| AgentError::Search(crate::error_text::chain(&e)))?;
    // Room ids carry no server since room version 12: `via` says where to ask.
    let via = ctx.namespace.server_name();
    let results: Vec<Value> = hits
        .into_iter()
        .map(|h| {
            let mut r = json!({
                "room": h.meta.room_id, "event_id": h.id, "sender": h.meta.sender, "ts": h.meta.ts,
                "text": h.document, "distance": h.distance,
                "permalink": crate::matrix::permalink(&h.meta.room_id, &h.id, via.as_str()),
            });
            if let Some(thread) = h.meta.thread_id {
                r["thread"] = thread.into();
            }
            r
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

/// `GET /conclave/v1/kb/search?q=Q`: the knowledge base does not exist yet.
pub async fn kb_search(Caller(_agent): Caller) -> ApiError {
    ApiError::not_found("there is no knowledge base on this agent yet (it arrives with `!kb add`)")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProgress {
    room: String,
    #[serde(default)]
    thread: Option<String>,
    title: String,
}

/// `POST /conclave/v1/progress {room, thread?, title}` → `{id, event_id, state}`
pub async fn progress_start(
    State(state): State<AppState>,
    Caller(agent): Caller,
    JsonBody(p): JsonBody<NewProgress>,
) -> Result<Json<progress::Shown>, ApiError> {
    Ok(Json(progress::start(&state.context, &agent, &p.room, p.thread.as_deref(), &p.title).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressUpdate {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    state: Option<progress::State>,
}

/// `PUT /conclave/v1/progress/{id} {text?, state?: running|done|failed}` → `{id, event_id, state}`
pub async fn progress_update(
    State(state): State<AppState>,
    Caller(agent): Caller,
    Path(id): Path<String>,
    JsonBody(u): JsonBody<ProgressUpdate>,
) -> Result<Json<progress::Shown>, ApiError> {
    Ok(Json(progress::update(&state.context, &agent, &id, u.text.as_deref(), u.state).await?))
}
