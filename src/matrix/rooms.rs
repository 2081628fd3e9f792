//! Room administration as the agent: aliases, room creation, invites and raw state events (what
//! `bootstrap` needs; the room lane never creates rooms).

use super::StateEventFormat;
use super::{MatrixClient, MatrixError};
use ruma::api::client as cs;
use ruma::events::{AnyInitialStateEvent, AnyStateEventContent, StateEventType};
use ruma::serde::Raw;
use ruma::{EventId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};
use serde_json::Value;

/// A state event and the ones it replaced, newest first (`unsigned.replaces_state`), as far as
/// the reader may see them.
#[derive(Debug, Default)]
pub struct StateHistory {
    pub events: Vec<Value>,
    /// The chain reached its first event (or the state was never set); `false` when an earlier
    /// event was hidden from the reader or the depth ran out.
    pub complete: bool,
}

/// A room to create: `alias` is the localpart (`fleet-ops` for `#fleet-ops:<server>`).
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub alias: String,
    pub name: String,
    pub topic: String,
    /// Invite-only (`private_chat`) or public (`public_chat`).
    pub public: bool,
    pub encrypted: bool,
    pub invite: Vec<OwnedUserId>,
}

/// The `m.room.encryption` content Element sends.
pub fn encryption_content() -> Value {
    serde_json::json!({"algorithm": "m.megolm.v1.aes-sha2"})
}

impl MatrixClient {
    /// The room an alias points at; `None` when the alias does not exist.
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>, MatrixError> {
        match self.send(cs::alias::get_alias::v3::Request::new(alias.to_owned()), None).await {
            Ok(response) => Ok(Some(response.room_id)),
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a room as `creator`, with its alias, name, topic, encryption choice and invites.
    pub async fn create_room(&self, creator: &UserId, room: &NewRoom) -> Result<OwnedRoomId, MatrixError> {
        use cs::room::create_room::v3::{Request, RoomPreset};
        let mut request = Request::new();
        request.room_alias_name = Some(room.alias.clone());
        request.name = Some(room.name.clone()).filter(|n| !n.is_empty());
        request.topic = Some(room.topic.clone()).filter(|t| !t.is_empty());
        request.preset = Some(if room.public { RoomPreset::PublicChat } else { RoomPreset::PrivateChat });
        request.invite = room.invite.clone();
        if room.encrypted {
            let event =
                serde_json::json!({"type": "m.room.encryption", "state_key": "", "content": encryption_content()});
            let raw = Raw::<AnyInitialStateEvent>::from_json_string(event.to_string())
                .map_err(|e| MatrixError::Build(e.to_string()))?;
            request.initial_state = vec![raw];
        }
        Ok(self.send(request, Some(creator)).await?.room_id)
    }

    /// Invites `target` into `room` on behalf of `user`.
    pub async fn invite(&self, user: &UserId, room: &RoomId, target: &UserId) -> Result<(), MatrixError> {
        use cs::membership::invite_user::v3::{InviteUserId, Request};
        let request = Request::new(room.to_owned(), InviteUserId::new(target.to_owned()).into());
        self.send(request, Some(user)).await.map(drop)
    }

    /// The content of a state event as JSON; `None` when it is not set.
    pub async fn state_json(
        &self,
        user: &UserId,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Value>, MatrixError> {
        self.state_content(user, room, event_type, state_key).await
    }

    /// The state event `(event_type, state_key)` of `room` and up to `depth - 1` events it
    /// replaced, as `user` sees them. An earlier event `user` may not see ends the chain early.
    pub async fn state_history(
        &self,
        user: &UserId,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
        depth: usize,
    ) -> Result<StateHistory, MatrixError> {
        let Some(now) = self.state_raw(user, room, event_type, state_key, StateEventFormat::Event).await? else {
            return Ok(StateHistory { events: Vec::new(), complete: true });
        };
        let now: Value =
            serde_json::from_str(&now).map_err(|e| MatrixError::Response(format!("{event_type} state: {e}")))?;
        let mut history = StateHistory { events: vec![now], complete: false };
        while history.events.len() < depth {
            let last = history.events.last().unwrap_or(&Value::Null);
            let Some(earlier) = last["unsigned"]["replaces_state"].as_str() else {
                history.complete = true;
                break;
            };
            let Ok(earlier) = <&EventId>::try_from(earlier) else { break };
            match self.event(user, room, earlier).await {
                Ok(raw) => history.events.push(
                    raw.deserialize_as_unchecked()
                        .map_err(|e| MatrixError::Response(format!("an earlier {event_type} state: {e}")))?,
                ),
                // Not for the reader's eyes (or gone): what was seen is what is known.
                Err(e) if matches!(e.errcode(), Some("M_NOT_FOUND" | "M_FORBIDDEN")) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(history)
    }

    /// Sets a state event from JSON content.
    pub async fn set_state(
        &self,
        user: &UserId,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> Result<(), MatrixError> {
        let body = Raw::<AnyStateEventContent>::from_json_string(content.to_string())
            .map_err(|e| MatrixError::Build(e.to_string()))?;
        let request = cs::state::send_state_event::v3::Request::new_raw(
            room.to_owned(),
            StateEventType::from(event_type),
            state_key.to_owned(),
            body,
        );
        self.send(request, Some(user)).await.map(drop)
    }
}
