//! `PUT /_matrix/app/v1/transactions/{txnId}`: events from the homeserver into the durable inbox.

use super::{ApiError, AppState, HomeserverAuth};
use crate::store::NewEvent;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use std::borrow::Cow;

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

/// `PUT /_matrix/app/v1/transactions/{txnId}`
///
/// Acknowledged (200 `{}`) only after the txn id and all its events are committed in one
/// database transaction; a txn id seen before is acknowledged with no second effect.
#[tracing::instrument(skip_all, fields(txn_id = %txn_id))]
pub async fn put_transaction(
    State(state): State<AppState>,
    _auth: HomeserverAuth,
    Path(txn_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = body.map_err(|e| ApiError::body_rejected(&e, "transaction body too large", "M_BAD_JSON"))?;
    let txn: Transaction = serde_json::from_slice(&body).map_err(|e| {
        let errcode = if e.is_data() { "M_BAD_JSON" } else { "M_NOT_JSON" };
        ApiError::new(StatusCode::BAD_REQUEST, errcode, format!("invalid transaction: {e}"))
    })?;
    let ephemeral = txn.ephemeral.or(txn.ephemeral_unstable).map_or(0, |v| v.len());

    let mut events = Vec::with_capacity(txn.events.len());
    for raw in &txn.events {
        match serde_json::from_str::<EventHead>(raw.get()) {
            Ok(head) => events.push(NewEvent {
                room_id: head.room_id.into_owned(),
                event_id: head.event_id.into_owned(),
                json: raw.get().to_owned(),
            }),
            // One malformed event must not block the homeserver's queue: skip it, keep the rest.
            Err(e) => tracing::warn!(error = %e, "skipping an event without room_id/event_id"),
        }
    }
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
