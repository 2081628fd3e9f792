//! The room lane: one inbox event → its effects. Membership (join/reject/forget), quick commands
//! answered at once, slow work (answers, Planka, search) queued as jobs, the encrypted-room notice,
//! indexing (messages, edits and redactions queued for the vector store; history read in on join),
//! cancels. Nothing here waits on a model, a crawl or a browser (invariant 9). Replies carry txn ids
//! derived from the triggering event, so a replay after a crash is deduplicated by the homeserver.

use crate::chat;
use crate::commands::{self, Invocation};
use crate::context::{CommandRate, Context};
use crate::handler::{self, HandleError};
use crate::store::{CancelTarget, InboxItem, IndexWrite, RoomNotice, RoomSettings, Write, now_ms};
use crate::strings;
use crate::syntax::{self, Command, IndexChange};
use ruma::events::room::encrypted::OriginalRoomEncryptedEvent;
use ruma::events::room::member::{MembershipState, OriginalRoomMemberEvent};
use ruma::events::room::message::{MessageType, OriginalRoomMessageEvent, Relation};
use ruma::events::room::redaction::{OriginalRoomRedactionEvent, RoomRedactionEvent};
use ruma::events::room::tombstone::OriginalRoomTombstoneEvent;
use ruma::events::{AnyMessageLikeEvent, AnyStateEvent, AnyTimelineEvent, MessageLikeEvent, StateEvent};
use ruma::{EventId, RoomId, UserId};

/// What handling one event decided: the writes that go with its removal from the inbox, and
/// whether that must be committed at once — the event had an effect others can see or queued work —
/// rather than together with the next events (plain messages only queue an index change).
#[derive(Debug, Default)]
pub struct Outcome {
    pub writes: Vec<Write>,
    pub flush: bool,
}

impl Outcome {
    /// Nothing happened outside the database.
    fn quiet(writes: impl IntoIterator<Item = Write>) -> Self {
        Self { writes: writes.into_iter().collect(), flush: false }
    }

    /// Something was sent, or work was queued.
    fn acted(writes: impl IntoIterator<Item = Write>) -> Self {
        Self { writes: writes.into_iter().collect(), flush: true }
    }
}

/// Handles one inbox event: quick decisions and replies here, slow work queued as a job.
#[tracing::instrument(skip_all, fields(room_id = %item.room_id, event_id = %item.event_id))]
pub async fn handle(ctx: &Context, item: &InboxItem) -> Result<Outcome, HandleError> {
    let event = match serde_json::from_str::<AnyTimelineEvent>(&item.event) {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an event that does not parse");
            return Ok(Outcome::default());
        }
    };
    let event_type = event.event_type().to_string();
    let outcome = handle_event(ctx, item, event).await;
    crate::telemetry::event_handled(&event_type, outcome.is_ok());
    outcome
}

async fn handle_event(ctx: &Context, item: &InboxItem, event: AnyTimelineEvent) -> Result<Outcome, HandleError> {
    match event {
        AnyTimelineEvent::State(AnyStateEvent::RoomMember(StateEvent::Original(ev))) => {
            membership(ctx, &ev).await.map(|()| Outcome::acted([]))
        }
        AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(MessageLikeEvent::Original(ev))) => {
            message(ctx, &ev, &item.event).await
        }
        AnyTimelineEvent::State(AnyStateEvent::RoomTombstone(StateEvent::Original(ev))) => {
            tombstone(ctx, &ev).await.map(|()| Outcome::acted([]))
        }
        AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomEncrypted(MessageLikeEvent::Original(ev))) => {
            encrypted(ctx, &ev).await.map(|()| Outcome::acted([]))
        }
        AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomRedaction(RoomRedactionEvent::Original(ev))) => {
            redaction(ctx, &ev).await
        }
        _ => Ok(Outcome::default()),
    }
}

/// Invites to our users are accepted from allowed users and rejected otherwise; our own joins
/// and leaves keep the room state current.
async fn membership(ctx: &Context, ev: &OriginalRoomMemberEvent) -> Result<(), HandleError> {
    ctx.forget_members(&ev.room_id);
    let Ok(target) = <&UserId>::try_from(ev.state_key.as_str()) else { return Ok(()) };
    if ctx.namespace.is_ghost(target) {
        return crate::agents::membership::on_member(ctx, ev).await;
    }
    if !ctx.namespace.is_ours(target) {
        return Ok(());
    }
    let room = &ev.room_id;
    let is_sender = target == ctx.namespace.sender();
    match ev.content.membership {
        MembershipState::Invite if ctx.access.is_user(&ev.sender) => {
            tracing::info!(inviter = %ev.sender, user = %target, "accepting invite");
            match ctx.matrix.join(target, room).await {
                Ok(()) if is_sender => joined(ctx, room).await?,
                Ok(()) => {}
                // The room is gone or the invite withdrawn: nothing to retry.
                Err(e) if !e.is_transient() => tracing::warn!(error = %e, "cannot join the room"),
                Err(e) => return Err(e.into()),
            }
        }
        MembershipState::Invite => {
            tracing::info!(inviter = %ev.sender, user = %target, "rejecting invite from a user not in access.users");
            if let Err(e) = ctx.matrix.leave(target, room).await {
                if e.is_transient() {
                    return Err(e.into());
                }
                tracing::warn!(error = %e, "cannot reject the invite");
            }
        }
        MembershipState::Join if is_sender => joined(ctx, room).await?,
        MembershipState::Leave | MembershipState::Ban if is_sender => {
            tracing::info!(by = %ev.sender, "left the room; its settings are kept for a return");
            ctx.store.room_left(room.as_str(), i64::from(ev.origin_server_ts.get())).await?;
        }
        _ => {}
    }
    Ok(())
}

/// The agent is in `room`: remember it, and read its earlier history into the index (once: the
/// join is seen both when accepting the invite and as the membership event).
async fn joined(ctx: &Context, room: &RoomId) -> Result<(), HandleError> {
    carry_over_from_predecessor(ctx, room).await?;
    // Back after leaving: only the history since then is new.
    let left_at = ctx.store.room_left_at(room.as_str()).await?;
    ctx.store.room_set_joined(room.as_str(), true).await?;
    let chroma = &ctx.config.chroma;
    if chroma.backfill_on_join && ctx.indexing_on(room).await? {
        let limit = i64::try_from(chroma.backfill_limit).unwrap_or(i64::MAX);
        match left_at {
            Some(left_at) if ctx.store.backfill(room.as_str()).await?.is_some() => {
                tracing::info!(limit, left_at, "back in the room: reading the history since the agent left");
                ctx.store.backfill_since(room.as_str(), limit, left_at).await?;
            }
            _ => {
                if ctx.store.backfill_start(room.as_str(), limit, false).await? {
                    tracing::info!(limit, "reading the room's history into the index");
                }
            }
        }
    }
    Ok(())
}

/// A room that replaces another (a room upgrade: its `m.room.create` names the predecessor) goes
/// on with the old room's settings and board, unless it has its own already.
async fn carry_over_from_predecessor(ctx: &Context, room: &RoomId) -> Result<(), HandleError> {
    let create = ctx.matrix.state_json(ctx.namespace.sender(), room, "m.room.create", "").await?;
    let Some(old) = create.as_ref().and_then(|c| c["predecessor"]["room_id"].as_str()) else { return Ok(()) };
    let (store, new) = (&ctx.store, room.as_str());
    let settings = store.room_settings(old).await?;
    if settings != RoomSettings::default() && store.room_settings(new).await? == RoomSettings::default() {
        store.set_room_settings(new, &settings).await?;
        tracing::info!(predecessor = old, "the upgraded room keeps the old room's settings");
    }
    if store.move_board_binding(old, new).await? {
        tracing::info!(predecessor = old, "the upgraded room keeps the old room's board");
    }
    Ok(())
}

/// The room was upgraded: the agent follows it into the replacement room when it may join it
/// (a public or restricted room; into an invite-only one, someone invites it, as Element offers
/// to). Only a tombstone from someone who may give commands is followed.
async fn tombstone(ctx: &Context, ev: &OriginalRoomTombstoneEvent) -> Result<(), HandleError> {
    let new = &ev.content.replacement_room;
    if !ctx.access.is_user(&ev.sender) {
        tracing::info!(by = %ev.sender, replacement = %new, "not following an upgrade by a user not in access.users");
        return Ok(());
    }
    match ctx.matrix.join(ctx.namespace.sender(), new).await {
        Ok(()) => {
            tracing::info!(replacement = %new, "the room was upgraded; following it");
            joined(ctx, new).await
        }
        Err(e) if !e.is_transient() => {
            tracing::warn!(replacement = %new, error = %e, "cannot join the upgraded room; an invite there brings me in");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn message(ctx: &Context, ev: &OriginalRoomMessageEvent, raw: &str) -> Result<Outcome, HandleError> {
    // Messages addressed to a coding agent's ghost go to its inbox (the ghosts' own are noted).
    crate::agents::inbox::capture(ctx, ev).await?;
    // A room only a ghost is in (a direct chat with it): nothing for @agent to answer or index.
    if !ctx.store.room_is_joined(ev.room_id.as_str()).await? {
        return Ok(Outcome::default());
    }
    // Never react to ourselves or to notices (other bots'), so no loops (invariant 2).
    if ctx.namespace.is_ours(&ev.sender) {
        return Ok(Outcome::default());
    }
    let MessageType::Text(text) = &ev.content.msgtype else { return Ok(Outcome::default()) };
    // An edit is not a new command; it re-indexes the message it edits.
    if let Some(Relation::Replacement(edit)) = &ev.content.relates_to {
        if let MessageType::Text(new) = &edit.new_content.msgtype
            && syntax::parse(&new.body).is_none()
            && let Some(original) = edited(ctx, ev, &edit.event_id).await?
        {
            let remembered = Write::Edit {
                edit: ev.event_id.to_string(),
                original: original.event_id.to_string(),
                room_id: ev.room_id.to_string(),
            };
            let indexed = index(ctx, &original, &new.body).await?;
            return Ok(Outcome::quiet(indexed.into_iter().chain([remembered])));
        }
        return Ok(Outcome::default());
    }
    let allowed = ctx.access.is_user(&ev.sender);
    let Some(command) = syntax::parse(&text.body) else {
        let indexed = index(ctx, ev, &text.body).await?;
        // Not a command: a question, if it is addressed to the agent (plain chatter is not).
        if allowed && let Some(question) = chat::addressed(ctx, ev, &text.body).await? {
            let job = chat::request(ctx, ev, raw, &question).await?;
            return Ok(Outcome::acted(indexed.into_iter().chain(job)));
        }
        return Ok(Outcome::quiet(indexed));
    };
    if !allowed {
        tracing::info!(sender = %ev.sender, "command from a user not in access.users");
        handler::reply_to(ctx, ev, &strings::not_allowed()).await?;
        return Ok(Outcome::acted([]));
    }
    match ctx.command_rate(&ev.sender) {
        CommandRate::Allowed => {}
        CommandRate::Refused { notice: true } => {
            tracing::info!(sender = %ev.sender, "commands over the per-person rate; telling them once");
            handler::reply_to(ctx, ev, &strings::commands_too_fast(ctx.config.access.commands_per_minute)).await?;
            return Ok(Outcome::acted([]));
        }
        // A flood: one notice a minute, no answers (invariant 3's exception).
        CommandRate::Refused { notice: false } => return Ok(Outcome::default()),
    }
    command_outcome(ctx, ev, raw, &command).await.map(Outcome::acted)
}

/// A command: answered at once when that needs no slow backend, else queued as a job.
async fn command_outcome(
    ctx: &Context,
    ev: &OriginalRoomMessageEvent,
    raw: &str,
    command: &Command,
) -> Result<Option<Write>, HandleError> {
    let reply = match command {
        Command::Ask { question } => return chat::request(ctx, ev, raw, question).await,
        Command::Browse { url, question } => {
            return crate::browse::request(ctx, ev, raw, url, question.as_deref()).await;
        }
        Command::Task(_)
        | Command::Board(_)
        | Command::Status
        | Command::Model { .. }
        | Command::Search { .. }
        | Command::Index(IndexChange::Status) => return commands::request(ctx, ev, raw).await,
        Command::Jobs => commands::jobs::list(ctx, ev).await?,
        Command::Cancel => {
            let (reply, cancel) = commands::jobs::cancel(ctx, ev).await?;
            handler::reply_to(ctx, ev, &reply).await?;
            return Ok(cancel);
        }
        Command::Prompt(change) => commands::llm::prompt(ctx, ev, change).await?,
        Command::Usage => commands::llm::usage(ctx, ev).await?,
        Command::Index(change) => commands::search::index(ctx, ev, *change).await?,
        _ => {
            let lag = now_ms() - i64::from(ev.origin_server_ts.get());
            commands::execute(command, &Invocation { lag_ms: (lag >= 0).then_some(lag) })
        }
    };
    handler::reply_to(ctx, ev, &reply).await?;
    Ok(None)
}

/// `body` as the text of message `ev` (its own, or an edit's) for the vector store, if its room
/// is indexed. Encrypted messages never get here: only their ciphertext reaches the agent.
async fn index(ctx: &Context, ev: &OriginalRoomMessageEvent, body: &str) -> Result<Option<Write>, HandleError> {
    if body.trim().is_empty() || !ctx.indexing_on(&ev.room_id).await? {
        return Ok(None);
    }
    let thread = match &ev.content.relates_to {
        Some(Relation::Thread(t)) => Some(t.event_id.as_str()),
        _ => None,
    };
    let ts = i64::from(ev.origin_server_ts.get());
    // Stored whole (an event is at most 64 KiB); the indexer embeds a bounded prefix.
    Ok(Some(IndexWrite::upsert(ev.event_id.as_str(), ev.room_id.as_str(), ev.sender.as_str(), ts, thread, body).into()))
}

/// The message an edit replaces, as the homeserver has it — `None` when the edit does not count:
/// from someone else than the original's sender (clients ignore those too), or of a message that
/// is redacted or gone (an edit must not bring it back).
async fn edited(
    ctx: &Context,
    edit: &OriginalRoomMessageEvent,
    original: &EventId,
) -> Result<Option<OriginalRoomMessageEvent>, HandleError> {
    let raw = match ctx.matrix.event(ctx.namespace.sender(), &edit.room_id, original).await {
        Ok(raw) => raw,
        Err(e) if !e.is_transient() => {
            tracing::debug!(error = %e, "the edited message cannot be read; the edit is not indexed");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    Ok(match raw.deserialize() {
        Ok(AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(MessageLikeEvent::Original(ev))))
            if ev.sender == edit.sender =>
        {
            Some(ev)
        }
        _ => None,
    })
}

/// A redacted message must stop being findable (its record is deleted), and work it asked for
/// stops (its job, if any, is cancelled). A redacted edit no longer counts: its original's record
/// goes back to what the message shows now (the latest edit left, else its own text).
async fn redaction(ctx: &Context, ev: &OriginalRoomRedactionEvent) -> Result<Outcome, HandleError> {
    // Room versions 11+ name the redacted event in the content, older ones beside it.
    let Some(redacts) = ev.content.redacts.as_ref().or(ev.redacts.as_ref()) else { return Ok(Outcome::default()) };
    let cancel = Write::Cancel { target: CancelTarget::Trigger(redacts.to_string()), by: ev.sender.to_string() };
    let mut writes = vec![IndexWrite::delete(redacts.as_str(), ev.room_id.as_str()).into(), cancel];
    if let Some(original) = ctx.store.edit_original(redacts.as_str()).await? {
        writes.extend(reindexed(ctx, &ev.room_id, &original).await?);
    }
    Ok(Outcome::acted(writes))
}

/// The record of `original` as the homeserver shows the message now; nothing when it is gone or
/// redacted itself.
async fn reindexed(ctx: &Context, room: &RoomId, original: &str) -> Result<Option<Write>, HandleError> {
    let Ok(original) = EventId::parse(original) else { return Ok(None) };
    let raw = match ctx.matrix.event(ctx.namespace.sender(), room, &original).await {
        Ok(raw) => raw,
        Err(e) if !e.is_transient() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let is_ours = |sender: &str| UserId::parse(sender).is_ok_and(|u| ctx.namespace.is_ours(&u));
    let Some(message) = crate::backfill::history_message(raw.json().get(), is_ours) else { return Ok(None) };
    if !ctx.indexing_on(room).await? {
        return Ok(None);
    }
    let m = message;
    Ok(Some(IndexWrite::upsert(&m.event_id, room.as_str(), &m.sender, m.ts, m.thread_id.as_deref(), &m.body).into()))
}

/// One notice per room that encrypted messages cannot be read yet — not one per message.
async fn encrypted(ctx: &Context, ev: &OriginalRoomEncryptedEvent) -> Result<(), HandleError> {
    if ctx.namespace.is_ours(&ev.sender)
        || ctx.store.room_notice_sent(ev.room_id.as_str(), RoomNotice::CannotRead).await?
    {
        return Ok(());
    }
    handler::room_notice(ctx, &ev.room_id, "encrypted-notice", &strings::encrypted_room_notice()).await?;
    // Marked only after sending: a crash in between replays with the same txn id (deduplicated).
    ctx.store.mark_room_notice_sent(ev.room_id.as_str(), RoomNotice::CannotRead).await?;
    Ok(())
}
