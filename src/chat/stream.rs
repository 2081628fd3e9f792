//! An answer reaches the room as it is generated: the typing notice while working, the first
//! message as soon as the first text arrives, then edits (`m.replace`, through [`Progress`]) at
//! most once per `llm.edit_interval_ms`, and a last edit with the final text. When the primary
//! server fails before any text, the fallback (if configured) answers and says so; otherwise the
//! failure is a reply that names the server. A stream that breaks keeps what arrived and says it
//! was cut; a cancel keeps it and says it was cancelled. A job run again after a crash streams into
//! the message the first run posted.

use crate::context::Context;
use crate::handler::HandleError;
use crate::jobs::{JobEnd, RunningJob};
use crate::llm::{Delta, DeltaStream, LlmClient, LlmError, Message, Usage};
use crate::matrix::markdown::{Md, md};
use crate::matrix::{notice_reply, txn_id_for};
use crate::progress::{Poster, Progress};
use crate::store::{IndexWrite, now_ms};
use crate::strings;
use futures_util::StreamExt;
use ruma::EventId;
use ruma::events::Mentions;
use ruma::events::room::message::{OriginalRoomMessageEvent, Relation};
use std::time::Duration;

/// How one attempt ended.
enum Attempt {
    /// Nothing reached the room: the next server may try.
    Failed(LlmError),
    /// Text reached the room (or the model had nothing to say).
    Answered,
    /// Stopped by a cancel; what arrived is shown as cancelled.
    Cancelled,
}

/// `note` (e.g. that the question was cut) is shown under the answer.
pub async fn answer(
    ctx: &Context,
    job: &RunningJob,
    messages: &[Message],
    model: &str,
    note: &Md,
) -> Result<JobEnd, HandleError> {
    let me = ctx.namespace.sender();
    let room = &job.trigger.room_id;
    // The typing notice is a courtesy: its failure must not stop the answer.
    let _ = ctx.matrix.typing(me, room, Some(Duration::from_secs(ctx.config.llm.timeout_secs))).await;
    let result = answer_from_servers(ctx, job, messages, model, note).await;
    let _ = ctx.matrix.typing(me, room, None).await;
    result
}

async fn answer_from_servers(
    ctx: &Context,
    job: &RunningJob,
    messages: &[Message],
    model: &str,
    note: &Md,
) -> Result<JobEnd, HandleError> {
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
        let started = tokio::select! {
            started = client.chat_stream(model, messages, max_tokens) => started,
            () = job.cancel.cancelled() => return Ok(JobEnd::Cancelled),
        };
        let attempt = match started {
            Ok(stream) => stream_to_room(ctx, job, messages, model, fallback_model, note, stream).await?,
            Err(e) => Attempt::Failed(e),
        };
        match attempt {
            Attempt::Answered => return Ok(JobEnd::Done),
            Attempt::Cancelled => return Ok(JobEnd::Cancelled),
            Attempt::Failed(e) => {
                tracing::warn!(error = %e, model, "the model server failed");
                crate::telemetry::model_error(model);
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
    let text = strings::llm_failed(&e.public(), available.as_deref());
    // A run after a crash whose answer message exists already says it there, not in a second one.
    match job.result_event() {
        Some(earlier) => {
            let txn = txn_id_for(job.trigger.event_id.as_str(), &format!("answer-error-{}", job.job.attempts));
            let mentions = Mentions::with_user_ids([job.trigger.sender.clone()]);
            ctx.matrix
                .edit_message(ctx.namespace.sender(), &job.trigger.room_id, &txn, &earlier, &text, Some(&mentions))
                .await?;
        }
        None => send_reply(ctx, &job.trigger, "answer-error", &text).await?,
    }
    Ok(JobEnd::Failed { reason: e.to_string(), told: true })
}

/// Streams one server's answer into the room: one message, edited as the text grows.
async fn stream_to_room(
    ctx: &Context,
    job: &RunningJob,
    messages: &[Message],
    model: &str,
    fallback_model: Option<&str>,
    note: &Md,
    mut stream: DeltaStream,
) -> Result<Attempt, HandleError> {
    let trigger = &job.trigger;
    let interval = Duration::from_millis(ctx.config.llm.edit_interval_ms);
    let mut footer = note.clone();
    if let Some(model) = fallback_model {
        footer.push(&strings::answered_by_fallback(model));
    }
    let poster = Poster {
        matrix: ctx.matrix.clone(),
        user: ctx.namespace.sender().to_owned(),
        room: trigger.room_id.clone(),
        mentions: Some(Mentions::with_user_ids([trigger.sender.clone()])),
    };

    let mut text = String::new();
    let mut shown: Option<Progress> = None;
    let mut usage = None;
    let mut failure = None;
    let mut cancelled = false;
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = job.cancel.cancelled() => {
                cancelled = true;
                break;
            }
        };
        let Some(item) = item else { break };
        match item {
            Ok(Delta::Text(t)) => {
                text.push_str(&t);
                if text.trim().is_empty() {
                    continue;
                }
                let visible = shown_answer(&text, &footer);
                match &shown {
                    Some(progress) => progress.update(visible),
                    None => shown = Some(first_message(ctx, job, poster.clone(), &visible, interval).await?),
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

    let Some(progress) = shown else {
        return match (cancelled, failure) {
            (true, _) => Ok(Attempt::Cancelled),
            (false, Some(e)) => Ok(Attempt::Failed(e)),
            (false, None) => {
                send_reply(ctx, trigger, "empty", &strings::empty_answer()).await?;
                Ok(Attempt::Answered)
            }
        };
    };
    let mut notes = match &failure {
        _ if cancelled => strings::answer_cancelled(),
        Some(e) => {
            tracing::warn!(error = %e, "answer stream broke off");
            strings::answer_cut(&e.public())
        }
        None => Md::default(),
    };
    notes.push(&footer);
    let first = progress.finish(shown_answer(&text, &notes)).await?;
    record_usage(ctx, trigger, model, messages, &text, usage).await;
    if cancelled {
        return Ok(Attempt::Cancelled);
    }
    if failure.is_none() {
        index_answer(ctx, trigger, &first, text.trim()).await;
    }
    Ok(Attempt::Answered)
}

/// What the room sees of an answer: the model's Markdown (the one place model output becomes
/// [`Md`]: it may format, while its raw HTML shows as text), then our notes under it.
fn shown_answer(answer: &str, notes: &Md) -> Md {
    md!("{}{}", Md::untrusted_markdown(answer.trim()), notes)
}

/// The answer's message: the one an earlier run of this job posted (after a crash), else a new
/// reply to the trigger, remembered with the job at once.
async fn first_message(
    ctx: &Context,
    job: &RunningJob,
    poster: Poster,
    text: &Md,
    interval: Duration,
) -> Result<Progress, HandleError> {
    if let Some(earlier) = job.result_event() {
        let progress = Progress::resume(poster, earlier, interval);
        progress.update(text.clone());
        return Ok(progress);
    }
    let txn = txn_id_for(job.trigger.event_id.as_str(), "answer");
    let progress = Progress::start(poster, &txn, &notice_reply(text, &job.trigger), text, interval).await?;
    job.set_result_event(ctx, progress.event_id()).await;
    Ok(progress)
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
    crate::telemetry::model_tokens(model, usage.prompt_tokens, usage.completion_tokens);
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
    text: &Md,
) -> Result<(), HandleError> {
    crate::handler::reply(ctx, trigger, purpose, text).await.map(drop)
}
