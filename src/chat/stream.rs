//! An answer reaches the room as it is generated: the typing notice while working, the first
//! message as soon as the first text arrives, then edits (`m.replace`) at most once per
//! `llm.edit_interval_ms`, and a last edit with the final text. When the primary server fails
//! before any text, the fallback (if configured) answers and says so; otherwise the failure is a
//! reply that names the server. A stream that breaks keeps what arrived and says it was cut.

use crate::context::Context;
use crate::handler::HandleError;
use crate::llm::{Delta, DeltaStream, LlmClient, LlmError, Message, Usage};
use crate::matrix::{notice_reply, txn_id_for};
use crate::store::{IndexWrite, now_ms};
use crate::strings;
use futures_util::StreamExt;
use ruma::events::room::message::{OriginalRoomMessageEvent, Relation};
use ruma::{EventId, OwnedEventId};
use std::time::{Duration, Instant};

/// How one attempt ended.
enum Attempt {
    /// Nothing reached the room: the next server may try.
    Failed(LlmError),
    /// Text reached the room (or the model had nothing to say).
    Answered,
}

pub async fn answer(
    ctx: &Context,
    trigger: &OriginalRoomMessageEvent,
    messages: &[Message],
    model: &str,
) -> Result<(), HandleError> {
    let me = ctx.namespace.sender();
    let room = &trigger.room_id;
    // The typing notice is a courtesy: its failure must not stop the answer.
    let _ = ctx.matrix.typing(me, room, Some(Duration::from_secs(ctx.config.llm.timeout_secs))).await;
    let result = answer_from_servers(ctx, trigger, messages, model).await;
    let _ = ctx.matrix.typing(me, room, None).await;
    result
}

async fn answer_from_servers(
    ctx: &Context,
    trigger: &OriginalRoomMessageEvent,
    messages: &[Message],
    model: &str,
) -> Result<(), HandleError> {
    let primary = (&ctx.llm, model, None);
    let fallback = ctx.fallback.as_ref().map(|f| (&f.client, f.model.as_str(), Some(f.model.as_str())));
    let servers: Vec<(&LlmClient, &str, Option<&str>)> = match fallback {
        Some(f) if ctx.primary_cooling_down() => vec![f],
        Some(f) => vec![primary, f],
        None => vec![primary],
    };
    let mut last_error = None;
    for (client, model, fallback_model) in servers {
        let max_tokens = (ctx.config.llm.max_tokens > 0).then_some(ctx.config.llm.max_tokens);
        let attempt = match client.chat_stream(model, messages, max_tokens).await {
            Ok(stream) => stream_to_room(ctx, trigger, messages, model, fallback_model, stream).await?,
            Err(e) => Attempt::Failed(e),
        };
        match attempt {
            Attempt::Answered => return Ok(()),
            Attempt::Failed(e) => {
                tracing::warn!(error = %e, model, "the model server failed");
                if fallback_model.is_none() && ctx.fallback.is_some() {
                    ctx.mark_primary_down();
                }
                last_error = Some(e);
            }
        }
    }
    let e = last_error.expect("at least one server was tried");
    // For an unknown model, say which ones exist.
    let available = match &e {
        LlmError::ModelNotFound { .. } => ctx.llm.models().await.ok(),
        _ => None,
    };
    send_reply(ctx, trigger, "answer-error", &strings::llm_failed(&e.to_string(), available.as_deref())).await
}

/// Streams one server's answer into the room.
async fn stream_to_room(
    ctx: &Context,
    trigger: &OriginalRoomMessageEvent,
    messages: &[Message],
    model: &str,
    fallback_model: Option<&str>,
    mut stream: DeltaStream,
) -> Result<Attempt, HandleError> {
    let me = ctx.namespace.sender();
    let room = &trigger.room_id;
    let trigger_id = trigger.event_id.as_str();
    let interval = Duration::from_millis(ctx.config.llm.edit_interval_ms);
    let footer = fallback_model.map(strings::answered_by_fallback).unwrap_or_default();

    let mut text = String::new();
    let mut shown = String::new();
    let mut posted: Option<OwnedEventId> = None;
    let mut last_edit = Instant::now();
    let mut edits = 0;
    let mut usage = None;
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(Delta::Text(t)) => {
                text.push_str(&t);
                let visible = format!("{}{footer}", text.trim());
                if text.trim().is_empty() {
                    continue;
                }
                match &posted {
                    None => {
                        let txn = txn_id_for(trigger_id, "answer");
                        posted = Some(ctx.matrix.send_message(me, room, &txn, &notice_reply(&visible, trigger)).await?);
                        shown = visible;
                        last_edit = Instant::now();
                    }
                    Some(first) if last_edit.elapsed() >= interval => {
                        edits += 1;
                        let txn = txn_id_for(trigger_id, &format!("answer-edit-{edits}"));
                        ctx.matrix.edit_message(me, room, &txn, first, &visible).await?;
                        shown = visible;
                        last_edit = Instant::now();
                    }
                    Some(_) => {}
                }
            }
            Ok(Delta::Usage(u)) => usage = Some(u),
            Ok(Delta::Finished(_)) => {}
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }

    let Some(first) = posted else {
        return match failure {
            Some(e) => Ok(Attempt::Failed(e)),
            None => {
                send_reply(ctx, trigger, "empty", &strings::empty_answer()).await?;
                Ok(Attempt::Answered)
            }
        };
    };
    let mut last = text.trim().to_owned();
    if let Some(e) = &failure {
        tracing::warn!(error = %e, "answer stream broke off");
        last.push_str(&strings::answer_cut(&e.to_string()));
    }
    last.push_str(&footer);
    if last != shown {
        let txn = txn_id_for(trigger_id, "answer-final");
        ctx.matrix.edit_message(me, room, &txn, &first, &last).await?;
    }
    record_usage(ctx, trigger, model, messages, &text, usage).await;
    if failure.is_none() {
        index_answer(ctx, trigger, &first, text.trim()).await;
    }
    Ok(Attempt::Answered)
}

/// A complete answer becomes part of the room's searchable history, under the id of the message
/// that shows it. Not worth failing (and so answering again) over: a miss is logged.
async fn index_answer(ctx: &Context, trigger: &OriginalRoomMessageEvent, answer_id: &EventId, text: &str) {
    let thread = match &trigger.content.relates_to {
        Some(Relation::Thread(t)) => Some(t.event_id.as_str()),
        _ => None,
    };
    let me = ctx.namespace.sender().as_str();
    match ctx.indexing_on(&trigger.room_id).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => return tracing::warn!(error = %e, "cannot tell whether the room is indexed"),
    }
    let write = IndexWrite::upsert(answer_id.as_str(), trigger.room_id.as_str(), me, now_ms(), thread, text);
    if let Err(e) = ctx.store.index_write(&[write]).await {
        tracing::warn!(error = %e, "cannot queue the answer for indexing");
    }
}

/// The ledger takes the server's counts, else an estimate (about four characters a token).
async fn record_usage(
    ctx: &Context,
    trigger: &OriginalRoomMessageEvent,
    model: &str,
    messages: &[Message],
    answer: &str,
    usage: Option<Usage>,
) {
    let estimate = |chars: usize| (chars / 4) as u64;
    let usage = usage.unwrap_or_else(|| Usage {
        prompt_tokens: estimate(messages.iter().map(|m| m.content.chars().count()).sum()),
        completion_tokens: estimate(answer.chars().count()),
    });
    let (prompt, completion) = (usage.prompt_tokens as i64, usage.completion_tokens as i64);
    let recorded =
        ctx.store.record_usage(trigger.room_id.as_str(), trigger.sender.as_str(), model, prompt, completion).await;
    if let Err(e) = recorded {
        // The answer is out; a missing ledger line must not make it look failed (and be retried).
        tracing::warn!(error = %e, "cannot record token use");
    }
}

pub async fn send_reply(
    ctx: &Context,
    trigger: &OriginalRoomMessageEvent,
    purpose: &str,
    text: &str,
) -> Result<(), HandleError> {
    crate::handler::reply(ctx, trigger, purpose, text).await.map(drop)
}
