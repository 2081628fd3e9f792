//! Messages and files as an agent's ghost — always its own ghost, in a room it may use. Markdown
//! is rendered with raw HTML escaped (invariant 11). A `txn` makes a send idempotent: the same txn
//! again answers with the first event, and a crash in between is covered by the homeserver's own
//! deduplication of the deterministic send txn id.

use super::{Agent, AgentError, rooms};
use crate::context::Context;
use crate::matrix::{ImageMeta, MatrixError, file_content, image_content, markdown, txn_id_for};
use ruma::events::relation::{Reply, Thread};
use ruma::events::room::message::{Relation, RoomMessageEventContent};
use ruma::events::{AnyMessageLikeEvent, AnyTimelineEvent, Mentions};
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedTransactionId, RoomId};

/// `POST /conclave/v1/messages`
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Post {
    pub room: String,
    /// Markdown.
    pub text: String,
    /// The thread's root event.
    #[serde(default)]
    pub thread: Option<String>,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub notice: bool,
    #[serde(default)]
    pub txn: Option<String>,
}

/// Longest text of one message (the homeserver refuses events over 64 KiB).
const MAX_TEXT: usize = 32 * 1024;

pub async fn post(ctx: &Context, agent: &Agent, post: &Post) -> Result<OwnedEventId, AgentError> {
    if post.text.trim().is_empty() {
        return Err(AgentError::Invalid("text is empty".into()));
    }
    if post.text.len() > MAX_TEXT {
        return Err(AgentError::Invalid(format!("text is longer than {MAX_TEXT} bytes: split it, or send a file")));
    }
    let room = rooms::usable(ctx, agent, &post.room).await?;
    if let Some(txn) = &post.txn
        && let Some((_, event_id)) = ctx.store.agent_send(&agent.name, txn).await?
    {
        return EventId::parse(event_id).map_err(|e| AgentError::Invalid(format!("stored event id: {e}")));
    }
    // The coding agent's own Markdown.
    let text = markdown::Md::untrusted_markdown(post.text.as_str());
    let mut content = markdown::content(&text, post.notice);
    let (relation, mentions) =
        relation(ctx, agent, &room, event_param("thread", &post.thread)?, event_param("reply_to", &post.reply_to)?)
            .await?;
    content.relates_to = relation;
    let content = content.add_mentions(mentions);
    let event_id = send(ctx, agent, &room, txn_id(agent, post.txn.as_deref()), &content).await?;
    if let Some(txn) = &post.txn {
        ctx.store.agent_send_remember(&agent.name, txn, room.as_str(), event_id.as_str()).await?;
    }
    Ok(event_id)
}

/// `POST /conclave/v1/files`: uploads `bytes` and shows them as `m.image` or `m.file`.
pub async fn file(
    ctx: &Context,
    agent: &Agent,
    room: &str,
    name: &str,
    thread: Option<&str>,
    mimetype: &str,
    bytes: Vec<u8>,
) -> Result<OwnedEventId, AgentError> {
    if bytes.is_empty() {
        return Err(AgentError::Invalid("the file is empty".into()));
    }
    let name = name.trim();
    if name.is_empty() || name.len() > 255 || name.contains(['/', '\\']) {
        return Err(AgentError::Invalid("name must be a file name (no path), 1 to 255 bytes".into()));
    }
    let room = rooms::usable(ctx, agent, room).await?;
    let thread = event_param("thread", &thread.map(str::to_owned))?;
    let size = bytes.len() as u64;
    let dimensions = image_size(&bytes);
    let url = ctx
        .matrix
        .upload(&agent.user_id, bytes, mimetype, name)
        .await
        .map_err(AgentError::matrix("uploading the file"))?;
    // An image (of a kind clients show) with its size; anything else a file to download.
    let mut content = match dimensions {
        Some((width, height)) if mimetype.starts_with("image/") => {
            image_content(url, name, name, &ImageMeta { width, height, mimetype: mimetype.to_owned(), size })
        }
        _ => file_content(url, name, mimetype, size),
    };
    content.relates_to = relation(ctx, agent, &room, thread, None).await?.0;
    send(ctx, agent, &room, txn_id(agent, None), &content).await
}

/// Width and height of an image, from its header bytes; `None` for anything else.
fn image_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let size = imagesize::blob_size(bytes).ok()?;
    Some((u32::try_from(size.width).ok()?, u32::try_from(size.height).ok()?))
}

/// The send txn id: derived from the agent's `txn` (so a retry is deduplicated by the homeserver
/// too), else fresh.
fn txn_id(agent: &Agent, txn: Option<&str>) -> OwnedTransactionId {
    match txn {
        Some(txn) => txn_id_for(&format!("agent {}", agent.name), txn),
        None => txn_id_for(&format!("agent {}", agent.name), &format!("once {:x}", rand::random::<u128>())),
    }
}

fn event_param(what: &str, value: &Option<String>) -> Result<Option<OwnedEventId>, AgentError> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| EventId::parse(v).map_err(|e| AgentError::Invalid(format!("{what} {v:?} is not an event id: {e}"))))
        .transpose()
}

/// Where a message goes: in `thread` (as a reply to `reply_to` there, if given), or a reply to
/// `reply_to` — which stays in that message's thread and mentions its sender.
async fn relation(
    ctx: &Context,
    agent: &Agent,
    room: &RoomId,
    thread: Option<OwnedEventId>,
    reply_to: Option<OwnedEventId>,
) -> Result<(Option<Relation<ruma::events::room::message::RoomMessageEventContentWithoutRelation>>, Mentions), AgentError>
{
    let Some(target) = reply_to else {
        return Ok((thread.map(|root| Relation::Thread(Thread::plain(root.clone(), root))), Mentions::new()));
    };
    let raw = ctx.matrix.event(&agent.user_id, room, &target).await.map_err(|e| match e.errcode() {
        Some("M_NOT_FOUND" | "M_FORBIDDEN") => {
            AgentError::NotFound(format!("reply_to {target}: no such event that {} can see in {room}", agent.user_id))
        }
        _ => AgentError::matrix("reading the message replied to")(e),
    })?;
    let (sender, target_thread) = match raw.deserialize() {
        Ok(AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(m))) => {
            let thread = m.as_original().and_then(|o| match &o.content.relates_to {
                Some(Relation::Thread(t)) => Some(t.event_id.clone()),
                _ => None,
            });
            (Some(m.sender().to_owned()), thread)
        }
        Ok(other) => (Some(other.sender().to_owned()), None),
        Err(_) => (None, None),
    };
    let mentions = Mentions::with_user_ids(sender.filter(|s| *s != agent.user_id));
    let relation = match thread.or(target_thread) {
        Some(root) => Relation::Thread(Thread::reply(root, target)),
        None => Relation::Reply(Reply::with_event_id(target)),
    };
    Ok((Some(relation), mentions))
}

/// Sends as the ghost. A ghost not yet in a room it may use joins it first (it can when it was
/// invited or the room is public); otherwise the refusal says to invite it.
pub(super) async fn send(
    ctx: &Context,
    agent: &Agent,
    room: &OwnedRoomId,
    txn: OwnedTransactionId,
    content: &RoomMessageEventContent,
) -> Result<OwnedEventId, AgentError> {
    let first = ctx.matrix.send_message(&agent.user_id, room, &txn, content).await;
    let event_id = match first {
        Err(e) if e.errcode() == Some("M_FORBIDDEN") => {
            join(ctx, agent, room).await?;
            ctx.matrix.send_message(&agent.user_id, room, &txn, content).await
        }
        other => other,
    }
    .map_err(|e| refused(agent, room, e))?;
    remember(ctx, agent, room, &event_id);
    Ok(event_id)
}

/// Notes a message the ghost sent, so replies to it reach the agent's inbox. The homeserver also
/// sends the ghost's event back (capture records it, before any later message of the room); this
/// records it sooner, off the answer's path.
pub(super) fn remember(ctx: &Context, agent: &Agent, room: &RoomId, event_id: &EventId) {
    let (store, name, room_id, id) = (ctx.store.clone(), agent.name.clone(), room.to_string(), event_id.to_string());
    tokio::spawn(async move {
        if let Err(e) = store.agent_message_remember(&name, &room_id, &id).await {
            tracing::warn!(error = %e, "cannot remember the ghost's message");
        }
    });
}

pub(super) async fn join(ctx: &Context, agent: &Agent, room: &OwnedRoomId) -> Result<(), AgentError> {
    ctx.matrix.join(&agent.user_id, room).await.map_err(|e| refused(agent, room, e))?;
    ctx.store.agent_room_set(&agent.name, room.as_str(), true).await?;
    tracing::info!(agent = %agent.name, room_id = %room, "ghost joined a room it may use");
    Ok(())
}

pub(super) fn refused(agent: &Agent, room: &RoomId, e: MatrixError) -> AgentError {
    match e.errcode() {
        Some("M_FORBIDDEN") => AgentError::Forbidden(format!(
            "{} is not in {room} and cannot join it: invite it to the room",
            agent.user_id
        )),
        _ => AgentError::matrix("sending the message")(e),
    }
}

#[cfg(test)]
mod tests {
    /// A 3×2 PNG's first bytes: signature, IHDR length and type, width, height.
    const PNG_3X2: &[u8] = &[
        0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 0, 3, 0, 0, 0, 2, 8,
        6, 0, 0, 0,
    ];

    #[test]
    fn images_are_measured_and_other_files_are_not() {
        assert_eq!(super::image_size(PNG_3X2), Some((3, 2)));
        assert_eq!(super::image_size(b"just text"), None);
    }
}
