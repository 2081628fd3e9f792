//! `!search <query>`: the messages of this room nearest in meaning to the query. Only the asking
//! room is searched (invariant 4); found text is shown as quoted data, never acted on (invariant 8).
//! `!index on|off|status|backfill`: whether the room's messages are stored for search at all, how
//! far indexing got, and reading the room's earlier history in.

use crate::chat::date_utc;
use crate::commands::IndexChange;
use crate::context::Context;
use crate::events::HandleError;
use crate::rag::Scope;
use crate::strings;
use ruma::events::room::message::OriginalRoomMessageEvent;

/// Results shown.
const RESULTS: usize = 5;
/// Characters of a message shown in a result.
const SNIPPET_CHARS: usize = 200;

/// The reply to `!search`: the results, or why there are none.
pub async fn run(ctx: &Context, ev: &OriginalRoomMessageEvent, query: &str) -> String {
    match ctx.rag.search(ev.room_id.as_str(), query, RESULTS).await {
        Ok(hits) if hits.is_empty() => strings::search_found_nothing(),
        Ok(hits) => {
            let results: Vec<strings::SearchResult> = hits
                .iter()
                .map(|hit| strings::SearchResult {
                    sender: hit.meta.sender.clone(),
                    date: date_utc(hit.meta.ts),
                    snippet: crate::rag::indexer::truncate(&hit.document, SNIPPET_CHARS).to_owned(),
                    permalink: format!("https://matrix.to/#/{}/{}", hit.meta.room_id, hit.id),
                })
                .collect();
            strings::search_results(&results)
        }
        Err(e) => {
            tracing::warn!(error = %e, "search failed");
            strings::search_failed(&crate::error_text::chain(&e))
        }
    }
}

/// The reply to `!index`: switching and backfilling are for admins; anyone may see the status.
pub async fn index(ctx: &Context, ev: &OriginalRoomMessageEvent, change: IndexChange) -> Result<String, HandleError> {
    let room = ev.room_id.as_str();
    if change == IndexChange::Status {
        return status(ctx, ev).await;
    }
    if !ctx.access.is_admin(&ev.sender) {
        let what = match change {
            IndexChange::Backfill => "read this room's history into the index",
            _ => "switch indexing in this room",
        };
        return Ok(strings::admins_only(what));
    }
    let on = match change {
        IndexChange::Backfill => return backfill(ctx, ev).await,
        IndexChange::Status | IndexChange::On => true,
        IndexChange::Off => false,
    };
    let mut settings = ctx.store.room_settings(room).await?;
    settings.indexing = Some(on);
    ctx.store.set_room_settings(room, &settings).await?;
    Ok(strings::index_switched(on))
}

async fn status(ctx: &Context, ev: &OriginalRoomMessageEvent) -> Result<String, HandleError> {
    let room = ev.room_id.as_str();
    let stored = ctx.rag.chroma.count_in(&Scope::Room(room.to_owned())).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot count the room's records");
        crate::error_text::chain(&e)
    });
    Ok(strings::index_status(&strings::IndexStatus {
        on: ctx.indexing_on(&ev.room_id).await?,
        stored,
        backlog: ctx.store.index_backlog(Some(room)).await?,
        failed: ctx.store.index_failed(room).await?,
        backfill: ctx.store.backfill(room).await?,
    }))
}

/// Starts reading the room's history again from the newest event, unless a backfill is running.
async fn backfill(ctx: &Context, ev: &OriginalRoomMessageEvent) -> Result<String, HandleError> {
    let room = ev.room_id.as_str();
    if !ctx.indexing_on(&ev.room_id).await? {
        return Ok(strings::backfill_needs_indexing());
    }
    if let Some(running) = ctx.store.backfill(room).await?.filter(|b| !b.done) {
        return Ok(strings::backfill_running(&running));
    }
    let limit = i64::try_from(ctx.config.chroma.backfill_limit).unwrap_or(i64::MAX);
    ctx.store.backfill_start(room, limit, true).await?;
    Ok(strings::backfill_started(limit))
}
