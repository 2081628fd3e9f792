//! Planka writes made once across retries and crashes. Planka's writes are not idempotent, and a
//! crash (or a client giving up on a slow answer) can fall between Planka's answer and the agent's
//! record of it. So the intent is recorded before the write, keyed by what asked for it, and a try
//! that finds an earlier one looks for what that try made before writing again. The same rule
//! serves `!task` (keyed by the room and the command's event) and the coding agents' API (keyed
//! by the ghost and the request's `txn`).

use super::{Card, PlankaError, Tasks};
use crate::store::{Store, StoreError};

/// What asked for a Planka write: `scope` is the room of a command or the ghost of an API
/// request, `key` the command's event id or the request's `txn` (with what it writes).
#[derive(Debug, Clone, Copy)]
pub struct Intent<'a> {
    pub scope: &'a str,
    pub key: &'a str,
}

impl Intent<'_> {
    /// Records what the write made (a card's or a comment's id).
    async fn done(&self, store: &Store, made: &str) -> Result<(), StoreError> {
        store.planka_intent_done(self.scope, self.key, made).await
    }
}

/// The card `intent` made: one an earlier try made, else the one `create` makes now (recorded
/// for the next try). Without an intent, `create` alone.
pub async fn card_once<E: From<StoreError> + From<PlankaError>>(
    tasks: &Tasks,
    store: &Store,
    intent: Option<Intent<'_>>,
    board_id: &str,
    title: &str,
    create: impl Future<Output = Result<Card, E>>,
) -> Result<Card, E> {
    if let Some(intent) = intent
        && let Some(card) = card_made_before::<E>(tasks, store, intent, board_id, title).await?
    {
        return Ok(card);
    }
    let card = create.await?;
    tasks.touch(&card.id);
    if let Some(intent) = intent {
        intent.done(store, &card.id).await?;
    }
    Ok(card)
}

/// Posts `text` on the card unless an earlier try of `intent` did. Without an intent, posts it.
pub async fn comment_once<E: From<StoreError> + From<PlankaError>>(
    tasks: &Tasks,
    store: &Store,
    intent: Option<Intent<'_>>,
    card_id: &str,
    text: &str,
) -> Result<(), E> {
    if let Some(intent) = intent
        && comment_made_before::<E>(tasks, store, intent, card_id, text).await?
    {
        return Ok(());
    }
    let comment = tasks.client.comment(card_id, text).await?;
    tasks.touch(card_id);
    if let Some(intent) = intent {
        intent.done(store, &comment.id).await?;
    }
    Ok(())
}

/// The card an earlier try of `intent` made, if any; the intent is recorded here. A try that
/// lived recorded its card; otherwise the card is looked for on the board: by the agent, with
/// this title, known to no room.
async fn card_made_before<E: From<StoreError> + From<PlankaError>>(
    tasks: &Tasks,
    store: &Store,
    intent: Intent<'_>,
    board_id: &str,
    title: &str,
) -> Result<Option<Card>, E> {
    let earlier = store.planka_intent(intent.scope, intent.key).await?;
    if let Some(card_id) = earlier.result {
        return Ok(Some(tasks.client.card(&card_id).await?));
    }
    if !earlier.earlier {
        return Ok(None);
    }
    let me = tasks.my_id().await?;
    let board = tasks.client.board(board_id).await?;
    // Newest last in Planka's order; a stray older namesake is less likely than the latest.
    for card in board.cards.iter().rev().filter(|c| c.creator_user_id.as_deref() == Some(me) && c.name == title) {
        if !store.card_known(&card.id).await? {
            tracing::info!(card_id = %card.id, "a retried write found the card its first try made");
            intent.done(store, &card.id).await?;
            return Ok(Some(card.clone()));
        }
    }
    Ok(None)
}

/// Whether an earlier try of `intent` posted the comment already; the intent is recorded here.
/// Recorded, or found on the card: by the agent, this text, claimed by no other write.
async fn comment_made_before<E: From<StoreError> + From<PlankaError>>(
    tasks: &Tasks,
    store: &Store,
    intent: Intent<'_>,
    card_id: &str,
    text: &str,
) -> Result<bool, E> {
    let earlier = store.planka_intent(intent.scope, intent.key).await?;
    if earlier.result.is_some() {
        return Ok(true);
    }
    if !earlier.earlier {
        return Ok(false);
    }
    let me = tasks.my_id().await?;
    for comment in tasks.client.comments(card_id).await? {
        if comment.user_id == me && comment.text == text && !store.planka_result_claimed(&comment.id).await? {
            tracing::info!(comment_id = %comment.id, "a retried write found the comment its first try posted");
            intent.done(store, &comment.id).await?;
            return Ok(true);
        }
    }
    Ok(false)
}
