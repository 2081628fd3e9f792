//! The ghosts' accounts and rooms: registered and named at start; an invite is accepted only for
//! a configured agent, from a user in `access.users`, into a room its `rooms` globs allow —
//! anything else is rejected, so nobody can make a ghost join where its agent may not post.

use super::Agent;
use crate::context::Context;
use crate::handler::HandleError;
use crate::matrix::MatrixError;
use ruma::events::room::member::{MembershipState, OriginalRoomMemberEvent};
use ruma::{RoomId, UserId};
use std::path::Path;

/// A membership event whose target is a ghost (`ctx.namespace.is_ghost`). Called by the event
/// handler instead of its own membership logic for ghosts.
pub async fn on_member(ctx: &Context, ev: &OriginalRoomMemberEvent) -> Result<(), HandleError> {
    let Ok(target) = <&UserId>::try_from(ev.state_key.as_str()) else { return Ok(()) };
    let room = &ev.room_id;
    ctx.agents.forget_members(room);
    let agent = ctx.agents.by_user(target);
    match (&ev.content.membership, agent) {
        (MembershipState::Invite, Some(agent)) => {
            let aliases = invite_aliases(ev);
            let reason = if !ctx.access.is_user(&ev.sender) {
                Some("the inviter is not in access.users")
            } else if !(agent.rooms.any_room() || agent.rooms.allows(room.as_str(), &aliases)) {
                Some("the room is not in the agent's rooms")
            } else {
                None
            };
            match reason {
                Some(reason) => reject(ctx, target, room, &ev.sender, reason).await,
                None => {
                    tracing::info!(inviter = %ev.sender, ghost = %target, "ghost accepting invite");
                    match ctx.matrix.join(target, room).await {
                        Ok(()) => Ok(ctx.store.agent_room_set(&agent.name, room.as_str(), true).await?),
                        Err(e) if e.is_transient() => Err(e.into()),
                        Err(e) => {
                            tracing::warn!(error = %e, ghost = %target, "the ghost cannot join the room");
                            Ok(())
                        }
                    }
                }
            }
        }
        // No account exists for it (the user query refuses to make one): nothing to reject with.
        (MembershipState::Invite, None) => {
            tracing::info!(inviter = %ev.sender, ghost = %target, "invite of a ghost no [agents.<name>] configures; ignored");
            Ok(())
        }
        (MembershipState::Join, Some(agent)) => Ok(ctx.store.agent_room_set(&agent.name, room.as_str(), true).await?),
        (MembershipState::Leave | MembershipState::Ban, Some(agent)) => {
            Ok(ctx.store.agent_room_set(&agent.name, room.as_str(), false).await?)
        }
        _ => Ok(()),
    }
}

async fn reject(
    ctx: &Context,
    ghost: &UserId,
    room: &RoomId,
    inviter: &UserId,
    reason: &str,
) -> Result<(), HandleError> {
    tracing::info!(%inviter, %ghost, reason, "ghost rejecting invite");
    match ctx.matrix.leave(ghost, room).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_transient() => Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot reject the invite");
            Ok(())
        }
    }
}

/// The room's aliases from the stripped state the homeserver sends with an invite (the invitee
/// cannot read the room's state before joining).
fn invite_aliases(ev: &OriginalRoomMemberEvent) -> Vec<String> {
    let mut aliases = Vec::new();
    for raw in &ev.unsigned.invite_room_state {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(raw.json().get()) else { continue };
        if v["type"] != "m.room.canonical_alias" {
            continue;
        }
        let content = &v["content"];
        aliases.extend(content["alias"].as_str().map(str::to_owned));
        if let Some(alt) = content["alt_aliases"].as_array() {
            aliases.extend(alt.iter().filter_map(|a| a.as_str()).map(str::to_owned));
        }
    }
    aliases
}

/// At start: every configured ghost registered, with its display name (and avatar).
pub async fn announce(ctx: &Context) {
    for agent in ctx.agents.all() {
        if let Err(e) = present(ctx, agent).await {
            tracing::warn!(agent = %agent.name, error = %e, "cannot set up the coding agent's ghost user");
        }
    }
}

async fn present(ctx: &Context, agent: &Agent) -> Result<(), MatrixError> {
    ctx.matrix.ensure_registered(agent.user_id.localpart()).await?;
    ctx.matrix.set_display_name(&agent.user_id, &agent.display_name).await?;
    let Some(avatar) = &agent.avatar else { return Ok(()) };
    let url = if avatar.starts_with("mxc://") {
        ruma::OwnedMxcUri::from(avatar.as_str())
    } else {
        let path = match &ctx.config.dir {
            Some(dir) => dir.join(avatar),
            None => Path::new(avatar).to_owned(),
        };
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(agent = %agent.name, path = %path.display(), error = %e, "cannot read the avatar file");
                return Ok(());
            }
        };
        let mimetype = match imagesize::image_type(&bytes) {
            Ok(imagesize::ImageType::Png) => "image/png",
            Ok(imagesize::ImageType::Jpeg) => "image/jpeg",
            Ok(imagesize::ImageType::Gif) => "image/gif",
            Ok(imagesize::ImageType::Webp) => "image/webp",
            _ => {
                tracing::warn!(agent = %agent.name, path = %path.display(), "the avatar is not a PNG, JPEG, GIF or WebP image");
                return Ok(());
            }
        };
        ctx.matrix.upload(&agent.user_id, bytes, mimetype, "avatar").await?
    };
    #[allow(deprecated)] // the per-field endpoint every homeserver has
    let request = ruma::api::client::profile::set_avatar_url::v3::Request::new(agent.user_id.clone(), Some(url));
    ctx.matrix.send(request, Some(&agent.user_id)).await.map(drop)
}
