//! What every handler shares: its error type, and the one way to answer a trigger (a notice in
//! reply, with a txn id derived from the trigger, so a replay is deduplicated by the homeserver).

use crate::context::Context;
use crate::matrix::markdown::Md;
use crate::matrix::{MatrixError, notice_reply, txn_id_for};
use crate::store::StoreError;
use ruma::events::room::message::OriginalRoomMessageEvent;
use ruma::{OwnedEventId, RoomId};

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug of ours (a state that should not occur); never worth retrying.
    #[error("internal error: {0}")]
    Unexpected(String),
}

impl HandleError {
    /// Worth retrying later: the homeserver or the database may come back.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Matrix(e) => e.is_transient(),
            Self::Store(_) => true,
            Self::Unexpected(_) => false,
        }
    }
}

/// Sends the one reply to `trigger`, as the agent user.
pub async fn reply_to(ctx: &Context, trigger: &OriginalRoomMessageEvent, markdown: &Md) -> Result<(), HandleError> {
    reply(ctx, trigger, "reply", markdown).await.map(drop)
}

/// A notice replying to `trigger`, as the agent user. `purpose` tells apart the replies to one
/// trigger: the send's txn id derives from both, so a replay is deduplicated by the homeserver.
pub async fn reply(
    ctx: &Context,
    trigger: &OriginalRoomMessageEvent,
    purpose: &str,
    markdown: &Md,
) -> Result<OwnedEventId, HandleError> {
    let txn = txn_id_for(trigger.event_id.as_str(), purpose);
    Ok(ctx
        .matrix
        .send_message(ctx.namespace.sender(), &trigger.room_id, &txn, &notice_reply(markdown, trigger))
        .await?)
}

/// A notice to the whole room (not a reply); `purpose` keys its txn id to the room.
pub async fn room_notice(ctx: &Context, room: &RoomId, purpose: &str, markdown: &Md) -> Result<(), HandleError> {
    let txn = txn_id_for(room.as_str(), purpose);
    let content = crate::matrix::notice(markdown);
    ctx.matrix.send_message(ctx.namespace.sender(), room, &txn, &content).await?;
    Ok(())
}
