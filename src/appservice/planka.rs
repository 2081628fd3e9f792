//! `POST /conclave/v1/planka/webhook`: Planka's webhook deliveries become one short notice in each
//! room bound to the board.
//!
//! Planka sends each delivery once, with no signature and no retry: the bearer token is the only
//! proof of origin (checked in constant time), a lost delivery is simply missed, and a repeated
//! one is sent with the same txn ids (derived from the body), so the homeserver drops the copy.

use super::{ApiError, AppState, auth::bearer};
use crate::context::Context;
use crate::handler;
use crate::matrix::txn_id_for;
use crate::planka::webhook::{Delivery, notice};
use crate::store::RoomNotice;
use crate::strings;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use ruma::RoomId;
use ruma::events::room::message::RoomMessageEventContent;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Deliveries carry one card or comment with a few included names; anything bigger is not Planka.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// `POST /conclave/v1/planka/webhook`. The token is checked before the body's size or shape, so a
/// caller without it learns nothing about what the endpoint accepts.
pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let ctx = &state.context;
    let expected = &ctx.config.planka.webhook_token;
    if expected.is_empty() {
        tracing::warn!("a Planka webhook delivery arrived, but planka.webhook_token is not set: refusing it");
        return Err(ApiError::not_found("the Planka webhook is not enabled (planka.webhook_token is not set)"));
    }
    let token = bearer(&headers).ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", "missing webhook token (Authorization: Bearer …)")
    })?;
    if !expected.matches(&token) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", "wrong webhook token"));
    }
    let too_large = format!("a Planka delivery is at most {} KiB", MAX_BODY_BYTES / 1024);
    let body = body.map_err(|e| ApiError::body_rejected(&e, &too_large, "M_BAD_JSON"))?;
    let delivery: Delivery = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", format!("not a Planka delivery: {e}")))?;
    let Some(notice) = notice(&delivery) else {
        tracing::debug!(event = %delivery.event, "Planka delivery with nothing to tell");
        return Ok(Json(json!({ "notified": 0 })));
    };
    if let Some(tasks) = &ctx.tasks
        && tasks.is_own_change(notice.actor_id.as_deref(), notice.card_id.as_deref()).await
    {
        tracing::debug!(event = %delivery.event, "not echoing the agent's own change");
        return Ok(Json(json!({ "notified": 0 })));
    }
    let rooms =
        ctx.store.rooms_bound_to(&notice.board_id).await.map_err(|e| ApiError::internal("reading bindings", e))?;
    let card_url = match (&ctx.tasks, &notice.card_id) {
        (Some(tasks), Some(card)) => Some(tasks.client.card_url(card)),
        _ => None,
    };
    // Plain text: card names and comments are user data, never markup.
    let content = RoomMessageEventContent::notice_plain(strings::planka_notice(&notice.text, card_url.as_deref()));
    let delivery_id: String = Sha256::digest(&body).iter().take(16).map(|b| format!("{b:02x}")).collect();
    let mut notified = 0;
    for room in rooms {
        let Ok(room_id) = <&RoomId>::try_from(room.as_str()) else { continue };
        if !may_post_plaintext(ctx, room_id).await {
            continue;
        }
        let txn = txn_id_for(&delivery_id, &format!("planka-notice {room}"));
        match ctx.matrix.send_message(ctx.namespace.sender(), room_id, &txn, &content).await {
            Ok(event_id) => {
                notified += 1;
                if let Some(card) = &notice.card_id
                    && let Err(e) = ctx.store.remember_card_message(&room, event_id.as_str(), card).await
                {
                    tracing::warn!(error = %e, "cannot remember the notice's card");
                }
            }
            // One room failing must not keep the others from hearing about it.
            Err(e) => tracing::warn!(error = %e, room_id = %room, "cannot post a Planka notice"),
        }
    }
    tracing::info!(event = %delivery.event, notified, "Planka delivery handled");
    Ok(Json(json!({ "notified": notified })))
}

/// Whether a notice may go into `room` unencrypted: not into a room that turned on end-to-end
/// encryption after its board was bound (the agent cannot encrypt yet). When the homeserver
/// cannot say, nothing is posted (fail closed).
async fn may_post_plaintext(ctx: &Context, room: &RoomId) -> bool {
    match ctx.matrix.state_json(ctx.namespace.sender(), room, "m.room.encryption", "").await {
        Ok(None) => true,
        Ok(Some(_)) => {
            tracing::info!(room_id = %room, "not posting a Planka notice into an encrypted room");
            say_once_that_notices_stop(ctx, room).await;
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, room_id = %room, "cannot tell whether the room is encrypted; not posting");
            false
        }
    }
}

/// Tells an encrypted room, once, why its board's updates no longer arrive.
async fn say_once_that_notices_stop(ctx: &Context, room: &RoomId) {
    let once = RoomNotice::NoPlankaNotices;
    match ctx.store.room_notice_sent(room.as_str(), once).await {
        Ok(false) => {}
        Ok(true) => return,
        Err(e) => return tracing::warn!(error = %e, "cannot read the room's notices"),
    }
    let notice = strings::planka_notices_encrypted_room();
    if let Err(e) = handler::room_notice(ctx, room, "planka-encrypted-notice", &notice).await {
        return tracing::warn!(error = %e, room_id = %room, "cannot tell the room");
    }
    // Marked only after sending: a retry sends with the same txn id (deduplicated).
    if let Err(e) = ctx.store.mark_room_notice_sent(room.as_str(), once).await {
        tracing::warn!(error = %e, "cannot remember the notice");
    }
}
