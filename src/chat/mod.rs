//! Conversations with the agent: when it answers ([`addressed`]), what it sends the model
//! (`context`), and how the answer reaches the room (`stream`), within the per-user rate and the
//! bound on answers generated at once.

mod context;
mod stream;
mod trigger;

pub use context::{Turn, turns_from_history};
pub use trigger::{addressed, strip_address};

use crate::context::Context;
use crate::handler::HandleError;
use crate::strings;
use ruma::events::room::message::OriginalRoomMessageEvent;

/// Answers `question` (asked in `trigger`) with the room's model, streamed into the room.
pub async fn answer(ctx: &Context, trigger: &OriginalRoomMessageEvent, question: &str) -> Result<(), HandleError> {
    if !ctx.allow_question(&trigger.sender) {
        let text = strings::rate_limited(ctx.config.llm.user_requests_per_minute);
        return stream::send_reply(ctx, trigger, "rate-limited", &text).await;
    }
    let settings = ctx.store.room_settings(trigger.room_id.as_str()).await?;
    let permit = match ctx.generations.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            stream::send_reply(ctx, trigger, "queued", &strings::queued()).await?;
            ctx.generations.clone().acquire_owned().await.expect("the semaphore is never closed")
        }
    };
    let messages = context::build(ctx, trigger, question, settings.prompt.as_deref()).await?;
    let model = settings.model.as_deref().unwrap_or(&ctx.config.llm.chat_model);
    let result = stream::answer(ctx, trigger, &messages, model).await;
    drop(permit);
    result
}
