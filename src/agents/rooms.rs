//! Rooms as agents name them (an id or an alias) and whether an agent may use one: its `rooms`
//! globs over the room id and the room's canonical and alternative aliases (set by the room's
//! admins, unlike the directory, where anyone can add an alias). Fails closed: a room whose
//! aliases cannot be read is judged by its id alone.

use super::{Agent, AgentError};
use crate::context::Context;
use crate::matrix::MatrixError;
use ruma::api::client as cs;
use ruma::{OwnedRoomId, RoomAliasId, RoomId};

/// The room `room` names: a room id (`!…`) as is, an alias (`#…`) through the directory.
pub async fn resolve(ctx: &Context, agent: &Agent, room: &str) -> Result<OwnedRoomId, AgentError> {
    let room = room.trim();
    if room.starts_with('!') {
        return RoomId::parse(room).map_err(|e| AgentError::Invalid(format!("{room:?} is not a room id: {e}")));
    }
    if !room.starts_with('#') {
        return Err(AgentError::Invalid(format!("{room:?} is not a room: give a room id (!…) or an alias (#…)")));
    }
    let alias = RoomAliasId::parse(room).map_err(|e| AgentError::Invalid(format!("{room:?} is not an alias: {e}")))?;
    if let Some(id) = ctx.agents.alias_rooms.get(&alias.to_string()) {
        return Ok(id);
    }
    let request = cs::alias::get_alias::v3::Request::new(alias.clone());
    match ctx.matrix.send(request, Some(&agent.user_id)).await {
        Ok(response) => {
            ctx.agents.alias_rooms.insert(alias.to_string(), response.room_id.clone());
            Ok(response.room_id)
        }
        Err(e) if e.errcode() == Some("M_NOT_FOUND") => {
            Err(AgentError::NotFound(format!("no room has the alias {alias}")))
        }
        Err(e) => Err(AgentError::matrix("resolving the alias")(e)),
    }
}

/// The room's canonical and alternative aliases, as its ghost (or else the agent user) can read
/// them; empty when neither can.
async fn aliases(ctx: &Context, agent: &Agent, room: &RoomId) -> Result<Vec<String>, MatrixError> {
    #[derive(serde::Deserialize)]
    struct CanonicalAlias {
        alias: Option<String>,
        #[serde(default)]
        alt_aliases: Vec<String>,
    }
    if let Some(aliases) = ctx.agents.room_aliases.get(&room.to_owned()) {
        return Ok(aliases);
    }
    let mut found = None;
    for user in [&*agent.user_id, ctx.namespace.sender()] {
        let request = cs::state::get_state_event_for_key::v3::Request::new(
            room.to_owned(),
            "m.room.canonical_alias".into(),
            String::new(),
        );
        match ctx.matrix.send(request, Some(user)).await {
            Ok(response) => {
                let content: Option<CanonicalAlias> = serde_json::from_str(response.event_or_content.get()).ok();
                found = Some(content.map(|c| c.alias.into_iter().chain(c.alt_aliases).collect()).unwrap_or_default());
                break;
            }
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => {
                found = Some(Vec::new());
                break;
            }
            Err(e) if e.is_transient() => return Err(e),
            // Not in the room: the other user may be.
            Err(_) => {}
        }
    }
    let aliases = found.unwrap_or_default();
    ctx.agents.room_aliases.insert(room.to_owned(), aliases.clone());
    Ok(aliases)
}

/// Whether `agent` may use `room`.
pub async fn may_use(ctx: &Context, agent: &Agent, room: &RoomId) -> Result<bool, MatrixError> {
    let policy = &agent.rooms;
    if policy.any_room() || policy.allows(room.as_str(), &[]) {
        return Ok(true);
    }
    if !policy.names_aliases() {
        return Ok(false);
    }
    Ok(policy.allows(room.as_str(), &aliases(ctx, agent, room).await?))
}

/// The room `room` names, if `agent` may use it; else 403 `M_FORBIDDEN`.
pub async fn usable(ctx: &Context, agent: &Agent, room: &str) -> Result<OwnedRoomId, AgentError> {
    let id = resolve(ctx, agent, room).await?;
    if !may_use(ctx, agent, &id).await.map_err(AgentError::matrix("reading the room's aliases"))? {
        return Err(AgentError::Forbidden(format!(
            "agent {} may not use {room} (its rooms are set by agents.{}.rooms in the agent's config)",
            agent.name, agent.name
        )));
    }
    Ok(id)
}

/// How many users are joined to `room`, as `agent`'s ghost (who is in it) sees.
pub async fn member_count(ctx: &Context, agent: &Agent, room: &RoomId) -> Result<usize, MatrixError> {
    if let Some(n) = ctx.agents.members.get(&room.to_owned()) {
        return Ok(n);
    }
    let n = ctx.matrix.joined_members(&agent.user_id, room).await?.len();
    ctx.agents.members.insert(room.to_owned(), n);
    Ok(n)
}

/// The rooms `agent`'s ghost is joined to, as the homeserver says, and may use (for search and
/// whoami).
pub async fn joined(ctx: &Context, agent: &Agent) -> Result<Vec<OwnedRoomId>, MatrixError> {
    let response = ctx.matrix.send(cs::membership::joined_rooms::v3::Request::new(), Some(&agent.user_id)).await?;
    let mut usable = Vec::new();
    for room in response.joined_rooms {
        if may_use(ctx, agent, &room).await? {
            usable.push(room);
        }
    }
    Ok(usable)
}
