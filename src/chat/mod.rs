//! Conversations with the agent: when it answers ([`addressed`]), what it sends the model
//! (`context`), and how the answer reaches the room (`stream`).

mod context;
mod stream;
mod trigger;

pub use context::{Turn, prompt, turns_from_history};
pub use trigger::{addressed, strip_address};

use crate::context::Context;
use crate::events::HandleError;
use ruma::events::room::message::OriginalRoomMessageEvent;

/// Answers `question` (asked in `trigger`) with the configured model, streamed into the room.
pub async fn answer(ctx: &Context, trigger: &OriginalRoomMessageEvent, question: &str) -> Result<(), HandleError> {
    let messages = context::build(ctx, trigger, question).await?;
    stream::answer(ctx, trigger, &messages).await
}
