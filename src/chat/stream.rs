//! An answer reaches the room as it is generated: the typing notice while working, the first
//! message as soon as the first text arrives, then edits (`m.replace`) at most once per
//! `llm.edit_interval_ms`, and a last edit with the final text. Failures become a reply that
//! names the server; a stream that breaks keeps what arrived and says it was cut.

use crate::context::Context;
use crate::events::HandleError;
use crate::llm::{Delta, LlmError, Message};
use crate::matrix::{notice_reply, txn_id_for};
use crate::strings;
use futures_util::StreamExt;
use ruma::events::room::message::OriginalRoomMessageEvent;
use std::time::{Duration, Instant};

pub async fn answer(
    ctx: &Context,
    trigger: &OriginalRoomMessageEvent,
    messages: &[Message],
) -> Result<(), HandleError> {
    let me = ctx.namespace.sender();
    let room = &trigger.room_id;
    let trigger_id = trigger.event_id.as_str();
    let interval = Duration::from_millis(ctx.config.llm.edit_interval_ms);
    // The typing notice is a courtesy: its failure must not stop the answer.
    let _ = ctx.matrix.typing(me, room, Some(Duration::from_secs(ctx.config.llm.timeout_secs))).await;

    let model = ctx.config.llm.chat_model.as_str();
    let max_tokens = (ctx.config.llm.max_tokens > 0).then_some(ctx.config.llm.max_tokens);
    let mut stream = match ctx.llm.chat_stream(model, messages, max_tokens).await {
        Ok(stream) => stream,
        Err(e) => {
            let _ = ctx.matrix.typing(me, room, None).await;
            return reply_failure(ctx, trigger, &e).await;
        }
    };

    let mut text = String::new();
    let mut shown = String::new();
    let mut posted = None;
    let mut last_edit = Instant::now();
    let mut edits = 0;
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(Delta::Text(t)) => {
                text.push_str(&t);
                let visible = text.trim();
                if visible.is_empty() {
                    continue;
                }
                match &posted {
                    None => {
                        let txn = txn_id_for(trigger_id, "answer");
                        posted = Some(ctx.matrix.send_message(me, room, &txn, &notice_reply(visible, trigger)).await?);
                        shown = visible.to_owned();
                        last_edit = Instant::now();
                    }
                    Some(first) if last_edit.elapsed() >= interval => {
                        edits += 1;
                        let txn = txn_id_for(trigger_id, &format!("answer-edit-{edits}"));
                        ctx.matrix.edit_message(me, room, &txn, first, visible).await?;
                        shown = visible.to_owned();
                        last_edit = Instant::now();
                    }
                    Some(_) => {}
                }
            }
            Ok(Delta::Usage(_) | Delta::Finished(_)) => {}
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let _ = ctx.matrix.typing(me, room, None).await;

    let Some(first) = posted else {
        return match failure {
            Some(e) => reply_failure(ctx, trigger, &e).await,
            None => send_reply(ctx, trigger, "empty", &strings::empty_answer()).await,
        };
    };
    let mut last = text.trim().to_owned();
    if let Some(e) = &failure {
        tracing::warn!(error = %e, "answer stream broke off");
        last.push_str(&strings::answer_cut(&e.to_string()));
    }
    if last != shown {
        let txn = txn_id_for(trigger_id, "answer-final");
        ctx.matrix.edit_message(me, room, &txn, &first, &last).await?;
    }
    Ok(())
}

async fn reply_failure(ctx: &Context, trigger: &OriginalRoomMessageEvent, e: &LlmError) -> Result<(), HandleError> {
    tracing::warn!(error = %e, "cannot get an answer");
    // For an unknown model, say which ones exist.
    let available = match e {
        LlmError::ModelNotFound { .. } => ctx.llm.models().await.ok(),
        _ => None,
    };
    send_reply(ctx, trigger, "answer-error", &strings::llm_failed(&e.to_string(), available.as_deref())).await
}

async fn send_reply(
    ctx: &Context,
    trigger: &OriginalRoomMessageEvent,
    purpose: &str,
    text: &str,
) -> Result<(), HandleError> {
    let txn = txn_id_for(trigger.event_id.as_str(), purpose);
    ctx.matrix.send_message(ctx.namespace.sender(), &trigger.room_id, &txn, &notice_reply(text, trigger)).await?;
    Ok(())
}
