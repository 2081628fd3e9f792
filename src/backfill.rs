//! Backfill: reads a room's history backwards with `/messages` (as the agent, so the homeserver's
//! history visibility decides what is readable), queues its messages for the indexer, and keeps a
//! checkpoint per page so a restart resumes. It starts when the agent joins a room and on
//! `!index backfill`.
//!
//! It never outruns the indexer: while the queue holds [`BACKLOG_CAP`] jobs, no page is read, so
//! an embedder or Chroma outage does not turn into an ever-growing queue.

use crate::backoff::Backoff;
use crate::config::Config;
use crate::context::Context;
use crate::store::{Backfill, BackfillPage, HistoryMessage, Store, StoreError, now_ms};
use ruma::RoomId;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Events asked for per page.
const PAGE: i64 = 100;
/// Queue length above which backfills wait for the indexer.
pub const BACKLOG_CAP: i64 = 2_000;
/// How often an idle (or throttled) backfill looks again.
const IDLE: Duration = Duration::from_secs(1);
/// Back-off of a page the homeserver could not serve: 2 s doubling up to 5 minutes.
const RETRY: Backoff = Backoff { base_ms: 2_000, max_ms: 300_000 };

/// Runs until `shutdown` turns true.
pub async fn run(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let busy = match step(&ctx).await {
            Ok(busy) => busy,
            Err(e) => {
                tracing::error!(error = %e, "cannot read or update backfills; retrying");
                false
            }
        };
        if *shutdown.borrow() {
            break;
        }
        if !busy {
            tokio::select! {
                _ = tokio::time::sleep(IDLE) => {}
                _ = shutdown.changed() => break,
            }
        }
    }
}

/// Reads one page of the backfill that waited longest; `false` when there was nothing to do (or
/// the indexer has enough queued).
pub async fn step(ctx: &Context) -> Result<bool, StoreError> {
    if ctx.store.index_backlog(None).await? >= BACKLOG_CAP {
        return Ok(false);
    }
    let Some(backfill) = ctx.store.backfill_due().await? else { return Ok(false) };
    let room_id = backfill.room_id.as_str();
    let Ok(room) = <&RoomId>::try_from(room_id) else {
        ctx.store.backfill_stop(room_id, "not a room id").await?;
        return Ok(true);
    };
    if !ctx.indexing_on(room).await? {
        ctx.store.backfill_stop(room_id, "indexing was turned off in the room").await?;
        return Ok(true);
    }
    let limit = PAGE.min(backfill.max_events - backfill.fetched).max(1);
    match ctx.matrix.messages(ctx.namespace.sender(), room, backfill.next_token.as_deref(), limit as u32).await {
        Ok((events, end)) => {
            let is_ours = |user: &str| <&ruma::UserId>::try_from(user).is_ok_and(|u| ctx.namespace.is_ours(u));
            let since = backfill.until_ts.unwrap_or(i64::MIN);
            let messages: Vec<HistoryMessage> = events
                .iter()
                .filter_map(|raw| history_message(raw.json().get(), is_ours))
                .filter(|m| m.ts >= since)
                .collect();
            // Pages run newest first: one that reaches before `until_ts` is the last one needed.
            let before = events.iter().filter(|raw| event_ts(raw.json().get()).is_some_and(|ts| ts < since)).count();
            let reached_the_start = before > 0;
            let events = (events.len() - before) as i64;
            let done = events + before as i64 == 0
                || end.is_none()
                || reached_the_start
                || backfill.fetched + events >= backfill.max_events;
            let page = BackfillPage { messages: &messages, events, next_token: end.as_deref(), done };
            ctx.store.backfill_page(room_id, &page).await?;
            if done {
                tracing::info!(
                    room_id,
                    read = backfill.fetched + events,
                    queued = backfill.queued + messages.len() as i64,
                    "backfill finished"
                );
            }
        }
        Err(e) if e.is_transient() => {
            let delay = retry_delay(&backfill);
            tracing::warn!(room_id, delay_ms = delay, error = %e, "cannot read the room's history; will retry");
            ctx.store.backfill_retry_at(room_id, now_ms() + delay, &e.public()).await?;
        }
        // Forbidden, or the room is gone: waiting will not help.
        Err(e) => {
            tracing::warn!(room_id, error = %e, "cannot read the room's history; backfill stopped");
            ctx.store.backfill_stop(room_id, &e.public()).await?;
        }
    }
    Ok(true)
}

/// What asking for a backfill (`!index backfill`, `conclave-agent backfill`) did.
#[derive(Debug)]
pub enum Request {
    /// Indexing is off in the room: there is nothing to read history into.
    IndexingOff,
    /// One is running already; it goes on.
    Running(Backfill),
    /// Reading starts again from the newest event, up to this many events.
    Started(i64),
}

/// Starts reading `room_id`'s history again from the newest event, unless one is running.
pub async fn request(store: &Store, config: &Config, room_id: &str, limit: Option<u64>) -> Result<Request, StoreError> {
    let settings = store.room_settings(room_id).await?;
    if !settings.indexing.unwrap_or(config.chroma.index_by_default) {
        return Ok(Request::IndexingOff);
    }
    if let Some(running) = store.backfill(room_id).await?.filter(|b| !b.done) {
        return Ok(Request::Running(running));
    }
    let limit = i64::try_from(limit.unwrap_or(config.chroma.backfill_limit)).unwrap_or(i64::MAX);
    store.backfill_start(room_id, limit, true).await?;
    Ok(Request::Started(limit))
}

fn retry_delay(backfill: &Backfill) -> i64 {
    RETRY.delay_ms(backfill.attempts)
}

/// The parts of a history event that decide whether and how it is indexed.
#[derive(Deserialize)]
struct HistoryEvent {
    #[serde(rename = "type")]
    kind: String,
    event_id: String,
    sender: String,
    origin_server_ts: i64,
    #[serde(default)]
    content: Value,
    #[serde(default)]
    unsigned: Value,
}

/// The message to index for one history event, by the live path's rules: text messages of
/// people (not our own users), not commands, not edits — an original carries its latest edit
/// (the homeserver bundles it), whose text is indexed instead. Redacted events have no body and
/// are skipped.
/// An event's `origin_server_ts`.
fn event_ts(json: &str) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Ts {
        origin_server_ts: i64,
    }
    serde_json::from_str::<Ts>(json).ok().map(|t| t.origin_server_ts)
}

pub fn history_message(json: &str, is_ours: impl Fn(&str) -> bool) -> Option<HistoryMessage> {
    let ev: HistoryEvent = serde_json::from_str(json).ok()?;
    if ev.kind != "m.room.message" || is_ours(&ev.sender) {
        return None;
    }
    let body = text_body(&ev.content)?;
    let relation = ev.content.get("m.relates_to");
    let rel_type = relation.and_then(|r| r.get("rel_type")).and_then(Value::as_str);
    if rel_type == Some("m.replace") || crate::syntax::parse(body).is_some() {
        return None;
    }
    let thread_id = match rel_type {
        Some("m.thread") => relation.and_then(|r| r.get("event_id")).and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    // Only the sender's own edits count, as clients show them; an edit into a command does not.
    let edited = ev
        .unsigned
        .get("m.relations")
        .and_then(|r| r.get("m.replace"))
        .filter(|edit| edit.get("sender").and_then(Value::as_str) == Some(ev.sender.as_str()))
        .and_then(|edit| text_body(edit.get("content")?.get("m.new_content")?))
        .filter(|text| crate::syntax::parse(text).is_none());
    Some(HistoryMessage {
        event_id: ev.event_id,
        sender: ev.sender,
        ts: ev.origin_server_ts,
        thread_id,
        body: edited.unwrap_or(body).to_owned(),
    })
}

/// The body of an `m.text` content, if it has any text.
fn text_body(content: &Value) -> Option<&str> {
    if content.get("msgtype").and_then(Value::as_str) != Some("m.text") {
        return None;
    }
    content.get("body").and_then(Value::as_str).filter(|b| !b.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(content: Value, unsigned: Value) -> String {
        json!({
            "type": "m.room.message", "event_id": "$e", "sender": "@alice:x", "origin_server_ts": 7,
            "room_id": "!r:x", "content": content, "unsigned": unsigned,
        })
        .to_string()
    }

    fn text(body: &str) -> Value {
        json!({ "msgtype": "m.text", "body": body })
    }

    fn edit_by(sender: &str, body: &str) -> Value {
        json!({ "m.relations": { "m.replace": {
            "type": "m.room.message", "event_id": "$edit", "sender": sender,
            "content": { "msgtype": "m.text", "body": format!("* {body}"), "m.new_content": text(body),
                         "m.relates_to": { "rel_type": "m.replace", "event_id": "$e" } },
        } } })
    }

    fn nobody(_: &str) -> bool {
        false
    }

    #[test]
    fn a_plain_message_is_indexed_with_its_metadata() {
        let m = history_message(&event(text("the deploy is at noon"), json!({})), nobody).unwrap();
        assert_eq!(
            m,
            HistoryMessage {
                event_id: "$e".into(),
                sender: "@alice:x".into(),
                ts: 7,
                thread_id: None,
                body: "the deploy is at noon".into()
            }
        );
    }

    #[test]
    fn a_threaded_message_names_its_thread() {
        let mut content = text("in a thread");
        content["m.relates_to"] = json!({ "rel_type": "m.thread", "event_id": "$root" });
        let m = history_message(&event(content, json!({})), nobody).unwrap();
        assert_eq!(m.thread_id.as_deref(), Some("$root"));
    }

    #[test]
    fn the_latest_edit_by_the_sender_replaces_the_text() {
        let m = history_message(&event(text("old"), edit_by("@alice:x", "new")), nobody).unwrap();
        assert_eq!(m.body, "new");
        // Someone else's "edit" is not shown by clients and does not count here either.
        let m = history_message(&event(text("old"), edit_by("@mallory:x", "new")), nobody).unwrap();
        assert_eq!(m.body, "old");
        // Edited into a command: the original text stays.
        let m = history_message(&event(text("old"), edit_by("@alice:x", "!ping")), nobody).unwrap();
        assert_eq!(m.body, "old");
    }

    #[test]
    fn what_the_live_path_skips_is_skipped() {
        let mut edit = text("* new");
        edit["m.relates_to"] = json!({ "rel_type": "m.replace", "event_id": "$x" });
        let skipped = [
            ("an edit event itself", event(edit, json!({}))),
            ("a command", event(text("!search deploy"), json!({}))),
            ("a notice", event(json!({ "msgtype": "m.notice", "body": "bot" }), json!({}))),
            ("an image", event(json!({ "msgtype": "m.image", "body": "a.png" }), json!({}))),
            ("a redacted message", event(json!({}), json!({ "redacted_because": {} }))),
            ("blank text", event(text("  "), json!({}))),
            (
                "not a message",
                json!({ "type": "m.room.topic", "event_id": "$t", "sender": "@a:x",
                "origin_server_ts": 1, "content": { "topic": "t" } })
                .to_string(),
            ),
            ("malformed", "{\"type\": 3}".to_owned()),
        ];
        for (what, json) in skipped {
            assert_eq!(history_message(&json, nobody), None, "{what}");
        }
        assert_eq!(history_message(&event(text("mine"), json!({})), |_| true), None, "our own users");
    }
}
