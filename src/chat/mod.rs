//! Conversations with the agent: when it answers ([`addressed`]), the lane's side of a question
//! ([`request`]: the per-user rate, then a [`Kind::Chat`] job), and the job's side ([`run_job`]):
//! what it sends the model (`context`) and how the answer reaches the room (`stream`).

mod context;
mod stream;
mod trigger;

pub use context::{Turn, turns_from_history};
pub use trigger::{addressed, strip_address};

use crate::context::Context;
use crate::handler::{self, HandleError};
use crate::jobs::{JobEnd, Kind, RunningJob};
use crate::matrix::markdown::Md;
use crate::store::Write;
use crate::strings;
use ruma::events::room::message::OriginalRoomMessageEvent;
use serde::{Deserialize, Serialize};

/// What a chat job answers.
#[derive(Debug, Serialize, Deserialize)]
struct Question {
    question: String,
}

/// `question` (asked in `trigger`, whose JSON is `raw`) becomes a job, unless the asker is over
/// their per-minute allowance (then the refusal is the one reply).
pub async fn request(
    ctx: &Context,
    trigger: &OriginalRoomMessageEvent,
    raw: &str,
    question: &str,
) -> Result<Option<Write>, HandleError> {
    if !ctx.allow_question(&trigger.sender) {
        let text = strings::rate_limited(ctx.config.llm.user_requests_per_minute);
        handler::reply(ctx, trigger, "rate-limited", &text).await?;
        return Ok(None);
    }
    let label = format!("answer to {}", trigger.sender.localpart());
    crate::jobs::enqueue(ctx, Kind::Chat, trigger, raw, &Question { question: question.to_owned() }, &label).await
}

/// Streams the room's model's answer to `messages` into the room as the job's result (for
/// features that build their own context, such as `!browse`).
pub async fn answer_with(ctx: &Context, job: &RunningJob, messages: &[crate::llm::Message]) -> JobEnd {
    answer_noting(ctx, job, messages, &Md::default()).await
}

/// [`answer_with`], with `note` shown under the answer.
async fn answer_noting(ctx: &Context, job: &RunningJob, messages: &[crate::llm::Message], note: &Md) -> JobEnd {
    let result = async {
        let settings = ctx.store.room_settings(job.trigger.room_id.as_str()).await?;
        let model = settings.model.as_deref().unwrap_or(&ctx.config.llm.chat_model);
        stream::answer(ctx, job, messages, model, note).await
    }
    .await;
    match result {
        Ok(end) => end,
        Err(e) => Err(e).into(),
    }
}

/// Answers the job's question with the room's model, streamed into the room.
pub async fn run_job(ctx: &Context, job: &RunningJob) -> JobEnd {
    let question: Question = match job.payload() {
        Ok(q) => q,
        Err(reason) => return JobEnd::Failed { reason, told: false },
    };
    let messages = async {
        let settings = ctx.store.room_settings(job.trigger.room_id.as_str()).await?;
        context::build(ctx, &job.trigger, &question.question, settings.prompt.as_deref()).await
    };
    match messages.await {
        Ok(built) => {
            let note = if built.question_cut { strings::question_cut() } else { Md::default() };
            answer_noting(ctx, job, &built.messages, &note).await
        }
        Err(e) => Err(e).into(),
    }
}
