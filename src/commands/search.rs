//! `!search <query>`: the messages of this room nearest in meaning to the query. Only the asking
//! room is searched (invariant 4); found text is shown as quoted data, never acted on (invariant 8).
//! `!index on|off|status`: whether the room's messages are stored for search at all.

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
    match ctx.rag.search(&Scope::Room(ev.room_id.to_string()), query, RESULTS).await {
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

/// The reply to `!index`: switching is for admins; anyone may see the status.
pub async fn index(ctx: &Context, ev: &OriginalRoomMessageEvent, change: IndexChange) -> Result<String, HandleError> {
    let room = ev.room_id.as_str();
    let on = match change {
        IndexChange::Status => {
            let on = ctx.indexing_on(&ev.room_id).await?;
            return Ok(strings::index_status(on, ctx.store.index_backlog(Some(room)).await?));
        }
        IndexChange::On => true,
        IndexChange::Off => false,
    };
    if !ctx.access.is_admin(&ev.sender) {
        return Ok(strings::admins_only("switch indexing in this room"));
    }
    let mut settings = ctx.store.room_settings(room).await?;
    settings.indexing = Some(on);
    ctx.store.set_room_settings(room, &settings).await?;
    Ok(strings::index_switched(on))
}
