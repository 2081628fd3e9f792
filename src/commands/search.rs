//! `!search <query>`: the messages of this room nearest in meaning to the query. Only the asking
//! room is searched (invariant 4); found text is shown as quoted data, never acted on (invariant 8).

use crate::chat::date_utc;
use crate::context::Context;
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
