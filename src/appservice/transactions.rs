//! `PUT /_matrix/app/v1/transactions/{txnId}`: events from the homeserver into the durable inbox.

use super::{ApiError, AppState, HomeserverAuth};
use crate::store::{EventJson, NewEvent};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Deserialize)]
struct Transaction<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    /// Typing, receipts, presence (MSC2409, and its unstable name). Accepted, not stored yet.
    #[serde(default)]
    ephemeral: Option<Vec<IgnoredAny>>,
    #[serde(default, rename = "de.sorunome.msc2409.ephemeral")]
    ephemeral_unstable: Option<Vec<IgnoredAny>>,
}

/// The fields every stored event must have; the rest stays raw. Borrowed unless written with
/// escapes (legal JSON, `\u0021` for `!`), which a `&str` could not hold.
#[derive(Deserialize)]
struct EventHead<'a> {
    #[serde(borrow)]
    room_id: Cow<'a, str>,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
}

/// Why a body is refused: it is not JSON text (`M_NOT_JSON`: a syntax error, or bytes that are
/// not UTF-8), or JSON of another shape than a transaction (`M_BAD_JSON`).
#[derive(Debug, thiserror::Error)]
pub enum NotATransaction {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a transaction: {0}")]
    BadJson(String),
}

impl NotATransaction {
    pub fn errcode(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "M_NOT_JSON",
            Self::BadJson(_) => "M_BAD_JSON",
        }
    }
}

/// A transaction body as the inbox takes it.
#[derive(Debug)]
pub struct ParsedTransaction {
    /// Its timeline events, in the order sent.
    pub events: Vec<NewEvent>,
    /// How many ephemeral events (typing, receipts, presence) came with it.
    pub ephemeral: usize,
}

/// Parses a `PUT /transactions` body: what the handler stores, and the entry point of the
/// `transaction_body` fuzz target (`fuzz/`). An error is a body that is not a transaction (the
/// handler answers 400); an event without `room_id`/`event_id` is skipped with a warning, since
/// one malformed event must not block the homeserver's queue.
pub fn parse_transaction(body: impl Into<Bytes>) -> Result<ParsedTransaction, NotATransaction> {
    let body = body.into();
    // JSON is UTF-8 throughout (RFC 8259); serde_json checks only the strings it keeps, so a body
    // with invalid bytes in a part it skips (found by fuzzing: in an ephemeral event) would pass.
    let text = std::str::from_utf8(&body).map_err(|e| NotATransaction::NotJson(e.to_string()))?;
    let txn: Transaction = serde_json::from_str(text).map_err(|e| match e.is_data() {
        true => NotATransaction::BadJson(e.to_string()),
        false => NotATransaction::NotJson(e.to_string()),
    })?;
    let ephemeral = txn.ephemeral.or(txn.ephemeral_unstable).map_or(0, |v| v.len());
    let mut events = Vec::with_capacity(txn.events.len());
    for raw in &txn.events {
        match serde_json::from_str::<EventHead>(raw.get()) {
            Ok(head) => events.push(NewEvent {
                room_id: head.room_id.into_owned(),
                event_id: head.event_id.into_owned(),
                json: EventJson::slice_of(&body, raw.get()),
            }),
            Err(e) => tracing::warn!(error = %e, "skipping an event without room_id/event_id"),
        }
    }
    Ok(ParsedTransaction { events, ephemeral })
}

/// Bytes of transaction bodies being read and parsed at once: two of the largest allowed. A body
/// and what is parsed from it take about twice its size until it is stored, so without a bound
/// four 31 MB transactions at once took 330 MiB; beyond the budget a request waits its turn
/// (the homeserver sends one transaction at a time anyway).
#[derive(Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    /// KiB per permit unit (semaphores count in u32), and the most one request takes.
    max_units: u32,
}

impl BodyBudget {
    pub fn new(max_body_bytes: usize) -> Self {
        let max_units = u32::try_from(max_body_bytes.div_ceil(1024)).unwrap_or(u32::MAX / 2).max(1);
        Self { permits: Arc::new(Semaphore::new(2 * max_units as usize)), max_units }
    }
}

/// Holds a share of the [`BodyBudget`] (by `Content-Length`, else the largest allowed) while the
/// request is read, parsed and stored.
pub async fn within_budget(State(budget): State<BodyBudget>, request: Request, next: Next) -> Response {
    let declared =
        content_length(request.headers()).map(|bytes| u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX));
    let units = declared.unwrap_or(budget.max_units).clamp(1, budget.max_units);
    let Ok(_permit) = budget.permits.acquire_many(units).await else {
        return ApiError::internal("the body budget is closed", "semaphore closed").into_response();
    };
    next.run(request).await
}

/// The whole body, read into one buffer of its declared size (collecting chunks and joining
/// them held it twice), refused beyond `max` bytes.
async fn read_body(body: Body, headers: &HeaderMap, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", "transaction body too large");
    let declared = content_length(headers);
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut buffer = BytesMut::with_capacity(declared.map_or(0, |n| n as usize));
    let mut body = body.into_data_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", format!("cannot read body: {e}")))?;
        if buffer.len() + chunk.len() > max {
            return Err(too_large());
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// `PUT /_matrix/app/v1/transactions/{txnId}`
///
/// Acknowledged (200 `{}`) only after the txn id and all its events are committed in one
/// database transaction; a txn id seen before is acknowledged with no second effect.
#[tracing::instrument(skip_all, fields(txn_id = %txn_id))]
pub async fn put_transaction(
    State(state): State<AppState>,
    _auth: HomeserverAuth,
    Path(txn_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = read_body(body, &headers, state.context.config.appservice.max_body_bytes).await?;
    let ParsedTransaction { events, ephemeral } = parse_transaction(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.errcode(), format!("invalid transaction: {e}")))?;
    if events.is_empty() {
        tracing::debug!(ephemeral, "transaction without timeline events");
        return Ok(Json(serde_json::json!({})));
    }
    let count = events.len();
    let started = std::time::Instant::now();
    let new = state
        .store
        .ingest(&txn_id, events)
        .await
        .map_err(|e| ApiError::internal("storing the transaction failed", e))?;
    crate::telemetry::transaction_received(count, started.elapsed());
    if new {
        tracing::debug!(events = count, ephemeral, "transaction stored");
        state.inbox_signal.notify_one();
    } else {
        tracing::info!("transaction seen before; acknowledged again without effect");
    }
    Ok(Json(serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use super::parse_transaction;

    #[test]
    fn parse_transaction_keeps_escaped_ids_skips_headless_events_and_counts_ephemeral() {
        let body = br#"{"events":[
            {"room_id":"\u0021r:x","event_id":"$a","type":"m.room.message"},
            {"type":"m.room.message"},
            {"room_id":"!r:x","event_id":"$b"}
        ],"de.sorunome.msc2409.ephemeral":[{"type":"m.typing"}]}"#;
        let parsed = parse_transaction(&body[..]).unwrap();
        let ids: Vec<_> = parsed.events.iter().map(|e| (e.room_id.as_str(), e.event_id.as_str())).collect();
        assert_eq!(ids, [("!r:x", "$a"), ("!r:x", "$b")]);
        assert!(parsed.events[0].json.text().unwrap().contains(r"\u0021r:x"), "the JSON is kept as sent");
        assert_eq!(parsed.ephemeral, 1);
    }

    #[test]
    fn parse_transaction_refuses_what_is_not_a_transaction() {
        for (name, body) in [
            ("not json", &b"{"[..]),
            ("no events", b"{}"),
            ("events not a list", br#"{"events":1}"#),
            // Found by fuzzing: invalid UTF-8 where nothing is kept was accepted.
            ("invalid UTF-8 in a skipped part", b"{\"events\":[],\"ephemeral\":[{\"type\":\"m.rece\x8dt\"}]}"),
        ] {
            assert!(parse_transaction(body).is_err(), "{name}");
        }
        let not_utf8 = parse_transaction(&b"{\"events\":[],\"x\":\"\xff\"}"[..]).unwrap_err();
        assert_eq!(not_utf8.errcode(), "M_NOT_JSON", "bytes that are not UTF-8 are not JSON text");
    }
}
