//! `!task` and `!board`: Planka cards from chat (execution; the words are in [`crate::syntax::task`]).
//!
//! Every command ends in exactly one reply (invariant 3): Planka failures and unknown cards or
//! lists become a reply that says what failed and what to do. A room only ever reaches the board
//! bound to it, and its short references (`#12`) are its own (invariant 4).

use crate::context::Context;
use crate::handler::{self, HandleError};
use crate::matrix::markdown::Md;
use crate::planka::replay::{self, Intent};
use crate::planka::{BoardView, Card, List, ListKind, PlankaError, Tasks};
use crate::store::{Binding, StoreError};
use crate::strings;
use crate::syntax::Command;
use crate::syntax::task::{BoardCommand, BoardRef, CardRef, TaskCommand};
use ruma::EventId;
use ruma::events::room::message::{OriginalRoomMessageEvent, Relation};

/// Cards shown by `!task list` without a list name, and with one.
const LIST_ALL_LIMIT: usize = 30;
const LIST_ONE_LIMIT: usize = 50;

/// What a command answers, and the card the answer is about (so replies to it can name it).
struct Reply {
    text: Md,
    card: Option<String>,
}

impl Reply {
    fn about(card: &Card, text: Md) -> Self {
        Self { text, card: Some(card.id.clone()) }
    }
}

/// Why a command could not be done.
enum Failure {
    /// Planka failed; the reply names it and the cause.
    Planka(PlankaError),
    /// The command cannot be done as asked; the reply says why and what to do.
    Refused(Md),
    /// The store or the homeserver failed: worth retrying the whole event.
    Handle(HandleError),
}

impl From<PlankaError> for Failure {
    fn from(e: PlankaError) -> Self {
        Self::Planka(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Handle(e.into())
    }
}

type Outcome<T> = Result<T, Failure>;

/// Runs a `!task` or `!board` command and sends its one reply.
pub async fn run(ctx: &Context, ev: &OriginalRoomMessageEvent, command: &Command) -> Result<(), HandleError> {
    let outcome = match (&ctx.tasks, command) {
        (None, _) => Err(Failure::Refused(strings::planka_not_configured())),
        (Some(tasks), Command::Task(task)) => run_task(ctx, tasks, ev, task).await,
        (Some(tasks), Command::Board(board)) => run_board(ctx, tasks, ev, board).await,
        (Some(_), _) => Err(Failure::Refused(strings::planka_not_configured())),
    };
    let reply = match outcome {
        Ok(reply) => reply,
        Err(Failure::Refused(text)) => Reply { text, card: None },
        Err(Failure::Planka(e)) => {
            tracing::warn!(error = %e, "Planka call failed");
            Reply { text: strings::planka_failed(&e.public()), card: None }
        }
        Err(Failure::Handle(e)) => return Err(e),
    };
    let event_id = handler::reply(ctx, ev, "reply", &reply.text).await?;
    if let Some(card) = reply.card {
        ctx.store.remember_card_message(ev.room_id.as_str(), event_id.as_str(), &card).await?;
    }
    Ok(())
}

async fn run_task(ctx: &Context, tasks: &Tasks, ev: &OriginalRoomMessageEvent, task: &TaskCommand) -> Outcome<Reply> {
    let room = ev.room_id.as_str();
    let binding = ctx.store.board_binding(room).await?.ok_or_else(|| Failure::Refused(strings::board_unbound()))?;
    let client = &tasks.client;
    match task {
        TaskCommand::Create { title } => {
            let trigger = ev.event_id.as_str();
            let intent = Intent { scope: room, key: trigger };
            let card = match ctx.store.card_by_trigger(room, trigger).await? {
                Some(known) => client.card(&known.card_id).await?,
                None => {
                    let create = async {
                        let description = match replied_to(ev) {
                            Some(target) => Some(describe(ctx, ev, target).await),
                            None => None,
                        };
                        Ok(client.create_card(&binding.list_id, title, description.as_deref()).await?)
                    };
                    replay::card_once::<Failure>(tasks, &ctx.store, Some(intent), &binding.board_id, title, create)
                        .await?
                }
            };
            let reference = ctx.store.remember_card(room, &card.id, Some(trigger)).await?;
            Ok(Reply::about(&card, strings::card_created(reference, &card.name, &client.card_url(&card.id))))
        }
        TaskCommand::List { list } => {
            let board = client.board(&binding.board_id).await?;
            let (lists, limit) = match list {
                Some(name) => (vec![find_list(&board, name)?], LIST_ONE_LIMIT),
                None => (board.lists.iter().collect(), LIST_ALL_LIMIT),
            };
            let mut shown = Vec::new();
            let (mut count, mut more) = (0, 0);
            for list in lists {
                let mut lines = Vec::new();
                for card in board.cards_in(&list.id) {
                    if count == limit {
                        more += 1;
                        continue;
                    }
                    count += 1;
                    let reference = ctx.store.remember_card(room, &card.id, None).await?;
                    lines.push(strings::card_line(reference, &card.name, card.is_closed));
                }
                shown.push((list.name.clone(), lines));
            }
            Ok(Reply { text: strings::cards_listed(&shown, more), card: None })
        }
        TaskCommand::Show { card } => {
            let (card, reference) = resolve_card(ctx, tasks, ev, &binding, card.as_ref()).await?;
            let board = client.board(&binding.board_id).await?;
            let list = board.list(&card.list_id).map_or("?", |l| l.name.as_str());
            let url = client.card_url(&card.id);
            let text =
                strings::card_shown(reference, &card.name, list, card.is_closed, card.description.as_deref(), &url);
            Ok(Reply::about(&card, text))
        }
        TaskCommand::Move { card, list } => {
            let (card, reference) = resolve_card(ctx, tasks, ev, &binding, card.as_ref()).await?;
            let board = client.board(&binding.board_id).await?;
            let list = find_list(&board, list)?;
            let moved = client.move_card(&card.id, &list.id).await?;
            tasks.touch(&card.id);
            Ok(Reply::about(&moved, strings::card_moved(reference, &moved.name, &list.name)))
        }
        TaskCommand::Done { card } => {
            let (card, reference) = resolve_card(ctx, tasks, ev, &binding, card.as_ref()).await?;
            let board = client.board(&binding.board_id).await?;
            let done = board
                .lists
                .iter()
                .find(|l| l.kind == ListKind::Closed)
                .or_else(|| board.lists.iter().find(|l| l.name.eq_ignore_ascii_case("done")))
                .ok_or_else(|| Failure::Refused(strings::no_done_list(&list_names(&board))))?;
            let moved = client.move_card(&card.id, &done.id).await?;
            tasks.touch(&card.id);
            Ok(Reply::about(&moved, strings::card_done(reference, &moved.name, &done.name)))
        }
        TaskCommand::Comment { card, text } => {
            let (card, reference) = resolve_card(ctx, tasks, ev, &binding, card.as_ref()).await?;
            let text = strings::planka_comment(text, ev.sender.as_str());
            let intent = Intent { scope: room, key: ev.event_id.as_str() };
            replay::comment_once::<Failure>(tasks, &ctx.store, Some(intent), &card.id, &text).await?;
            Ok(Reply::about(&card, strings::card_commented(reference, &card.name)))
        }
        TaskCommand::Assign { card, user } => {
            let (card, reference) = resolve_card(ctx, tasks, ev, &binding, card.as_ref()).await?;
            let board = client.board(&binding.board_id).await?;
            // A Matrix user (`@alice:server`) is matched by their localpart: to a Planka username,
            // else to the part of a Planka email before the `@` (the agent cannot see Matrix
            // users' emails). A bare name is a Planka username or email.
            let (wanted, matrix_user) = match user.strip_prefix('@') {
                Some(id) => (id.split(':').next().unwrap_or_default(), true),
                None => (user.as_str(), false),
            };
            let same = |a: Option<&str>| a.is_some_and(|a| a.eq_ignore_ascii_case(wanted));
            let email_matches = |email: Option<&str>| match (email, matrix_user) {
                (Some(e), true) => same(e.split('@').next()),
                (e, false) => same(e),
                _ => false,
            };
            let member = board
                .users
                .iter()
                .find(|u| same(u.username.as_deref()))
                .or_else(|| board.users.iter().find(|u| email_matches(u.email.as_deref())))
                .ok_or_else(|| {
                    let names: Vec<String> = board.users.iter().filter_map(|u| u.username.clone()).collect();
                    Failure::Refused(strings::planka_user_unknown(wanted, &names))
                })?;
            client.add_card_member(&card.id, &member.id).await?;
            tasks.touch(&card.id);
            let username = member.username.clone().unwrap_or_default();
            Ok(Reply::about(&card, strings::card_assigned(reference, &card.name, &username)))
        }
    }
}

async fn run_board(
    ctx: &Context,
    tasks: &Tasks,
    ev: &OriginalRoomMessageEvent,
    command: &BoardCommand,
) -> Outcome<Reply> {
    let client = &tasks.client;
    let room = ev.room_id.as_str();
    match command {
        BoardCommand::Show => {
            let binding =
                ctx.store.board_binding(room).await?.ok_or_else(|| Failure::Refused(strings::board_unbound()))?;
            let board = client.board(&binding.board_id).await?;
            let list = board.list(&binding.list_id).map_or("?", |l| l.name.as_str());
            let text = strings::board_shown(&board.board.name, &client.board_url(&binding.board_id), list);
            Ok(Reply { text, card: None })
        }
        BoardCommand::Bind { board, list } => {
            if !ctx.access.is_admin(&ev.sender) {
                return Err(Failure::Refused(strings::bind_admins_only()));
            }
            let (board_id, wanted) = match board {
                BoardRef::Id(id) => (Some(id.clone()), id),
                BoardRef::Path(path) => (client.find_board(path).await?.map(|b| b.id), path),
            };
            let view = match board_id {
                Some(id) => match client.board(&id).await {
                    Ok(view) => Some(view),
                    Err(PlankaError::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                },
                None => None,
            };
            let Some(view) = view else {
                let names = client
                    .projects_with_boards()
                    .await?
                    .iter()
                    .flat_map(|p| p.boards.iter().map(move |b| format!("{}/{}", p.project.name, b.name)))
                    .collect::<Vec<_>>();
                return Err(Failure::Refused(strings::board_not_found(wanted, &names)));
            };
            let default = match list {
                Some(name) => find_list(&view, name)?,
                None => view
                    .lists
                    .iter()
                    .find(|l| l.kind == ListKind::Active)
                    .ok_or_else(|| Failure::Refused(strings::board_has_no_lists(&view.board.name)))?,
            };
            ctx.store.bind_board(room, &view.board.id, &default.id, ev.sender.as_str()).await?;
            tracing::info!(board_id = %view.board.id, by = %ev.sender, "room bound to a Planka board");
            let text = strings::board_bound(&view.board.name, &client.board_url(&view.board.id), &default.name);
            Ok(Reply { text, card: None })
        }
    }
}

/// The card a command names, or the card of the agent's message it replies to; only cards on
/// the room's board, so one room cannot reach another's cards. Gives the room's reference too.
async fn resolve_card(
    ctx: &Context,
    tasks: &Tasks,
    ev: &OriginalRoomMessageEvent,
    binding: &Binding,
    card: Option<&CardRef>,
) -> Outcome<(Card, i64)> {
    let room = ev.room_id.as_str();
    let unknown = |wanted: Md| async move {
        let recent: Vec<i64> = match ctx.store.recent_cards(room, 5).await {
            Ok(cards) => cards.iter().map(|c| c.ref_no).collect(),
            Err(e) => return Failure::from(e),
        };
        Failure::Refused(strings::card_unknown(&wanted, &recent))
    };
    let card_id = match card {
        Some(CardRef::Short(n)) => match ctx.store.card_by_ref(room, *n).await? {
            Some(known) => known.card_id,
            None => return Err(unknown(strings::card_ref(*n)).await),
        },
        Some(CardRef::Id(id)) => id.clone(),
        None => {
            let target = replied_to(ev).ok_or_else(|| Failure::Refused(strings::card_needed()))?;
            ctx.store
                .card_of_message(room, target.as_str())
                .await?
                .ok_or_else(|| Failure::Refused(strings::card_needed()))?
        }
    };
    let card = match tasks.client.card(&card_id).await {
        Ok(card) => card,
        Err(PlankaError::NotFound { .. }) => return Err(unknown(Md::code(&card_id)).await),
        Err(e) => return Err(e.into()),
    };
    if card.board_id != binding.board_id {
        return Err(Failure::Refused(strings::card_on_another_board()));
    }
    let reference = ctx.store.remember_card(room, &card.id, None).await?;
    Ok((card, reference))
}

/// A list of the board by name, ignoring case; the refusal lists the names there are.
fn find_list<'a>(board: &'a BoardView, name: &str) -> Outcome<&'a List> {
    let name = name.trim();
    board
        .lists
        .iter()
        .find(|l| l.name == name)
        .or_else(|| board.lists.iter().find(|l| l.name.to_lowercase() == name.to_lowercase()))
        .ok_or_else(|| Failure::Refused(strings::list_not_found(name, &list_names(board))))
}

fn list_names(board: &BoardView) -> Vec<String> {
    board.lists.iter().map(|l| l.name.clone()).collect()
}

/// The event the command replies to: a plain reply, or a reply inside a thread (not the
/// thread's fallback, which points at the latest message, not one the sender chose).
fn replied_to(ev: &OriginalRoomMessageEvent) -> Option<&EventId> {
    match ev.content.relates_to.as_ref()? {
        Relation::Reply(reply) => Some(&reply.in_reply_to.event_id),
        Relation::Thread(thread) if !thread.is_falling_back => thread.in_reply_to.as_ref().map(|r| &*r.event_id),
        _ => None,
    }
}

/// The description of a card made in reply to a message: its text and a permalink. When the
/// message cannot be read, the permalink alone still leads there.
async fn describe(ctx: &Context, ev: &OriginalRoomMessageEvent, target: &EventId) -> String {
    let permalink = crate::matrix::permalink(ev.room_id.as_str(), target.as_str(), &ctx.config.homeserver.server_name);
    let event = match ctx.matrix.event(ctx.namespace.sender(), &ev.room_id, target).await {
        Ok(raw) => serde_json::from_str::<serde_json::Value>(raw.json().get()).ok(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the replied-to message");
            None
        }
    };
    let body = event.as_ref().and_then(|e| e["content"]["body"].as_str()).unwrap_or_default();
    let sender = event.as_ref().and_then(|e| e["sender"].as_str()).unwrap_or("someone");
    strings::card_description(body.trim(), sender, &permalink)
}
