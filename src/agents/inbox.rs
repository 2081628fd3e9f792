//! What people say to a coding agent, kept until it reads it: messages that mention its ghost,
//! are written in a direct chat with it, reply to one of its messages, or are in a thread it
//! started — only from humans (never from our own users, any ghost, or notices, invariant 2), only
//! in rooms the ghost is joined to and the agent may use. Durable and ordered (the row's `seq` is
//! the cursor), bounded per agent, long-polled.

use super::{Agent, rooms};
use crate::chat::strip_address;
use crate::context::Context;
use crate::handler::HandleError;
use crate::store::{AgentInboxRow, StoreError};
use ruma::events::room::message::{MessageType, OriginalRoomMessageEvent, Relation};
use std::time::Duration;

/// Messages returned by one inbox read at most.
pub const PAGE: i64 = 100;
/// The longest a long poll waits.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Files `ev` into the inbox of every agent it is addressed to, and remembers the ghosts' own
/// messages (replies to them are addressed to their agent). Called for every `m.room.message`,
/// before the agent's own-user check. Idempotent: a replayed event is stored once.
pub async fn capture(ctx: &Context, ev: &OriginalRoomMessageEvent) -> Result<(), HandleError> {
    let agents = &ctx.agents;
    if agents.is_empty() {
        return Ok(());
    }
    if let Some(agent) = agents.by_user(&ev.sender) {
        ctx.store.agent_message_remember(&agent.name, ev.room_id.as_str(), ev.event_id.as_str()).await?;
        return Ok(());
    }
    if ctx.namespace.is_ours(&ev.sender) {
        return Ok(());
    }
    let body = match &ev.content.msgtype {
        MessageType::Text(t) => &t.body,
        MessageType::Emote(e) => &e.body,
        // Notices are what bots send; files have no text to act on.
        _ => return Ok(()),
    };
    let (thread, reply_to) = match &ev.content.relates_to {
        Some(Relation::Thread(t)) => {
            let reply = t.in_reply_to.as_ref().filter(|_| !t.is_falling_back).map(|r| r.event_id.to_string());
            (Some(t.event_id.to_string()), reply)
        }
        Some(Relation::Reply(r)) => (None, Some(r.in_reply_to.event_id.to_string())),
        // An edit is not a new message.
        Some(Relation::Replacement(_)) => return Ok(()),
        _ => (None, None),
    };
    let present = ctx.store.agents_in_room(ev.room_id.as_str()).await?;
    if present.is_empty() {
        return Ok(());
    }
    let room = ev.room_id.as_str();
    let owner = |id: Option<String>| async move {
        match id {
            Some(id) => ctx.store.agent_message_owner(room, &id).await,
            None => Ok::<_, StoreError>(None),
        }
    };
    let (thread_owner, reply_owner) = (owner(thread.clone()).await?, owner(reply_to.clone()).await?);
    for name in present {
        let Some(agent) = agents.get(&name) else { continue };
        let addressed = thread_owner.as_deref() == Some(name.as_str())
            || reply_owner.as_deref() == Some(name.as_str())
            || mentions(agent, ev, body)
            || is_direct(ctx, agent, ev).await?;
        if !addressed || !rooms::may_use(ctx, agent, &ev.room_id).await? {
            continue;
        }
        let row = AgentInboxRow {
            seq: 0,
            agent: name.clone(),
            room_id: room.to_owned(),
            event_id: ev.event_id.to_string(),
            sender: ev.sender.to_string(),
            body: body.clone(),
            thread_id: thread.clone(),
            reply_to: reply_to.clone(),
            ts: i64::from(ev.origin_server_ts.get()),
        };
        if ctx.store.agent_inbox_append(&row, agents.inbox_max).await? {
            tracing::debug!(agent = %name, "message filed in the agent's inbox");
            if let Some(signal) = agents.inbox_signal(&name) {
                signal.notify_waiters();
            }
        }
    }
    Ok(())
}

/// A mention: `m.mentions` (a pill), the ghost's user id in the text, or the text starting with
/// its name (`pi: …`).
fn mentions(agent: &Agent, ev: &OriginalRoomMessageEvent, body: &str) -> bool {
    ev.content.mentions.as_ref().is_some_and(|m| m.user_ids.contains(&agent.user_id))
        || body.contains(agent.user_id.as_str())
        || strip_address(body, agent.user_id.localpart(), &agent.display_name).is_some()
        || strip_address(body, &agent.name, &agent.display_name).is_some()
}

/// A direct chat: the ghost and the sender alone in the room.
async fn is_direct(ctx: &Context, agent: &Agent, ev: &OriginalRoomMessageEvent) -> Result<bool, HandleError> {
    match rooms::member_count(ctx, agent, &ev.room_id).await {
        Ok(n) => Ok(n == 2),
        Err(e) if e.is_transient() => Err(e.into()),
        // The ghost's view of the room is gone (it left meanwhile): not its chat.
        Err(_) => Ok(false),
    }
}

/// `agent`'s messages after cursor `after`; when there are none, waits up to `wait` for one.
pub async fn read(ctx: &Context, agent: &Agent, after: i64, wait: Duration) -> Result<Vec<AgentInboxRow>, StoreError> {
    let signal = ctx.agents.inbox_signal(&agent.name).cloned();
    let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
    loop {
        // Listening before reading: a message stored in between still wakes us.
        let notified = signal.as_ref().map(|s| s.notified());
        let mut notified = std::pin::pin!(notified);
        if let Some(n) = notified.as_mut().as_pin_mut() {
            n.enable();
        }
        let rows = ctx.store.agent_inbox_after(&agent.name, after, PAGE).await?;
        if !rows.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(rows);
        }
        match notified.as_pin_mut() {
            Some(n) => {
                if tokio::time::timeout_at(deadline, n).await.is_err() {
                    return Ok(Vec::new());
                }
            }
            None => return Ok(Vec::new()),
        }
    }
}
