//! Planka cards for coding agents, on the board bound to a room they may use (the same bindings
//! and client as `!task`). A new card is announced in the room by the ghost, linking to it, and a
//! reply to that message can name the card (`!task done` in reply). Comments and moves reach only
//! cards on boards bound to one of the agent's rooms.

use super::{Agent, AgentError, rooms, send};
use crate::context::Context;
use crate::matrix::{markdown, txn_id_for};
use crate::planka::Tasks;
use crate::planka::replay::{self, Intent};
use crate::planka::{Card, PlankaError};
use crate::strings;

/// A card made: its id and the link humans open.
#[derive(Debug, serde::Serialize)]
pub struct Created {
    pub card_id: String,
    pub url: String,
    /// The ghost's message about it in the room.
    pub event_id: String,
}

fn planka(ctx: &Context) -> Result<&Tasks, AgentError> {
    ctx.tasks.as_ref().ok_or_else(|| AgentError::NotFound("Planka is not configured on this agent ([planka])".into()))
}

/// `POST /conclave/v1/tasks`. With a `txn`, a retry makes no second card (also when the first try
/// was cut off between Planka's answer and ours): it finds the card and answers as the first did.
pub async fn create(
    ctx: &Context,
    agent: &Agent,
    room: &str,
    title: &str,
    description: Option<&str>,
    txn: Option<&str>,
) -> Result<Created, AgentError> {
    let title = title.trim();
    if title.is_empty() {
        return Err(AgentError::Invalid("title is empty".into()));
    }
    let tasks = planka(ctx)?;
    let room = rooms::usable(ctx, agent, room).await?;
    let binding = ctx.store.board_binding(room.as_str()).await?.ok_or_else(|| {
        AgentError::NotFound(format!("{room} has no Planka board: an admin binds one there with `!board bind`"))
    })?;
    let description = description.map(str::trim).filter(|d| !d.is_empty());
    let key = txn.map(|txn| format!("card {txn}"));
    let intent = key.as_deref().map(|key| Intent { scope: agent.user_id.as_str(), key });
    let create = async { Ok(tasks.client.create_card(&binding.list_id, title, description).await?) };
    let card = replay::card_once::<AgentError>(tasks, &ctx.store, intent, &binding.board_id, title, create).await?;
    let url = tasks.client.card_url(&card.id);
    let reference = ctx.store.remember_card(room.as_str(), &card.id, None).await?;
    let content = markdown::content(&strings::card_created(reference, &card.name, &url), true);
    let txn = txn_id_for(&format!("agent {}", agent.name), &format!("card {}", card.id));
    let event_id = send::send(ctx, agent, &room, txn, &content).await?;
    ctx.store.remember_card_message(room.as_str(), event_id.as_str(), &card.id).await?;
    Ok(Created { card_id: card.id, url, event_id: event_id.to_string() })
}

/// `POST /conclave/v1/tasks/{card}/comments`. With a `txn`, a retry posts no second comment.
pub async fn comment(
    ctx: &Context,
    agent: &Agent,
    card: &str,
    text: &str,
    txn: Option<&str>,
) -> Result<String, AgentError> {
    if text.trim().is_empty() {
        return Err(AgentError::Invalid("text is empty".into()));
    }
    let tasks = planka(ctx)?;
    let card = reachable_card(ctx, tasks, agent, card).await?;
    let text = strings::planka_comment(text, agent.user_id.as_str());
    let key = txn.map(|txn| format!("comment {txn}"));
    let intent = key.as_deref().map(|key| Intent { scope: agent.user_id.as_str(), key });
    replay::comment_once::<AgentError>(tasks, &ctx.store, intent, &card.id, &text).await?;
    Ok(card.id)
}

/// `POST /conclave/v1/tasks/{card}/move`: to the list of the card's board named `list` (any case)
/// or with that id. Returns the card and the list's name.
pub async fn move_to(ctx: &Context, agent: &Agent, card: &str, list: &str) -> Result<(Card, String), AgentError> {
    let tasks = planka(ctx)?;
    let card = reachable_card(ctx, tasks, agent, card).await?;
    let board = tasks.client.board(&card.board_id).await?;
    let wanted = list.trim();
    let target = board
        .lists
        .iter()
        .find(|l| l.id == wanted || l.name == wanted)
        .or_else(|| board.lists.iter().find(|l| l.name.to_lowercase() == wanted.to_lowercase()))
        .ok_or_else(|| {
            let names: Vec<&str> = board.lists.iter().map(|l| l.name.as_str()).collect();
            AgentError::NotFound(format!("no list {wanted:?} on the card's board; its lists: {}", names.join(", ")))
        })?;
    let moved = tasks.client.move_card(&card.id, &target.id).await?;
    tasks.touch(&card.id);
    Ok((moved, target.name.clone()))
}

/// The card `card` names (an id or a card link), if it is on a board bound to a room the agent
/// may use.
async fn reachable_card(ctx: &Context, tasks: &Tasks, agent: &Agent, card: &str) -> Result<Card, AgentError> {
    let id = card.trim().trim_end_matches('/').rsplit('/').next().unwrap_or_default();
    if id.is_empty() {
        return Err(AgentError::Invalid("no card id".into()));
    }
    let card = match tasks.client.card(id).await {
        Ok(card) => card,
        Err(PlankaError::NotFound { .. }) => return Err(AgentError::NotFound(format!("no Planka card {id:?}"))),
        Err(e) => return Err(e.into()),
    };
    for room in ctx.store.rooms_bound_to(&card.board_id).await? {
        let Ok(room) = ruma::RoomId::parse(&room) else { continue };
        if rooms::may_use(ctx, agent, &room).await.map_err(AgentError::matrix("reading the room's aliases"))? {
            return Ok(card);
        }
    }
    Err(AgentError::Forbidden(format!("card {id} is on a board no room of agent {} is bound to", agent.name)))
}
