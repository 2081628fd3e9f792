//! `!search <query>`: the messages of this room nearest in meaning to the query.
//! `!search --all <query>`: the same over every room the asker is joined to right now, as the
//! homeserver says — never a room they are not in (invariant 4). Found text is shown as quoted
//! data, never acted on (invariant 8).
//! `!index on|off|status|backfill`: whether the room's messages are stored for search at all, how
//! far indexing got, and reading the room's earlier history in.

use crate::backfill;
use crate::context::Context;
use crate::handler::HandleError;
use crate::matrix::MatrixError;
use crate::matrix::markdown::Md;
use crate::rag::indexer::truncate;
use crate::rag::{Hit, RagError, Scope};
use crate::strings;
use crate::strings::date_utc;
use crate::syntax::IndexChange;
use crate::visibility;
use futures_util::StreamExt;
use ruma::events::room::message::OriginalRoomMessageEvent;
use ruma::{OwnedRoomId, RoomId};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

/// Results shown.
const RESULTS: usize = 5;
/// Characters of a message shown in a result.
const SNIPPET_CHARS: usize = 200;
/// Rooms `!search --all` considers at most: each costs the homeserver one membership lookup per
/// search. The asking room is always among them.
const MAX_ROOMS: usize = 200;
/// Membership lookups in flight at once, so one search cannot flood the homeserver.
const CHECKS_AT_ONCE: usize = 8;
/// How long naming the rooms of the results may take; after it, rooms are shown by id.
const NAMES_DEADLINE: Duration = Duration::from_secs(2);
/// Characters of a room name shown.
const ROOM_NAME_CHARS: usize = 60;

/// The reply to `!search`: the results from this room, or why there are none.
pub async fn run(ctx: &Context, ev: &OriginalRoomMessageEvent, query: &str) -> Md {
    // Only what the asker may read of the room's history (invariant 4).
    let scope = match visibility::seen_room(&ctx.matrix, ctx.namespace.sender(), &ev.room_id, &ev.sender).await {
        Ok(seen) => Scope::Seen(seen.into_iter().collect()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask the homeserver what the asker may read");
            return strings::search_visibility_unknown(&e.public());
        }
    };
    match ctx.rag.search(&scope, query, RESULTS).await {
        Ok(hits) if hits.is_empty() => strings::search_found_nothing(),
        Ok(hits) => strings::search_results(&results(ctx, &hits, None)),
        Err(e) => search_failed(&e),
    }
}

/// The reply to `!search --all`: results from the rooms the asker and the agent are both joined
/// to. Fails closed: a room whose membership the homeserver does not confirm is not searched.
pub async fn run_all(ctx: &Context, ev: &OriginalRoomMessageEvent, query: &str) -> Result<Md, HandleError> {
    let (candidates, not_considered) = candidates(ctx.store.joined_rooms().await?, &ev.room_id);
    let (me, asker) = (ctx.namespace.sender(), &ev.sender);
    let seen = |room: OwnedRoomId| async move { visibility::seen_room(&ctx.matrix, me, &room, asker).await };
    let joined = match joined_rooms(candidates, seen).await {
        Ok(joined) => joined,
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask the homeserver which rooms the asker is in");
            return Ok(strings::search_all_unreachable(&e.public()));
        }
    };
    tracing::debug!(
        rooms = joined.rooms.len(),
        unchecked = joined.unchecked,
        not_considered,
        "searching the asker's rooms"
    );
    let coverage =
        strings::Coverage { searched: joined.rooms.len(), unchecked: joined.unchecked, not_considered, cap: MAX_ROOMS };
    let scope = Scope::Seen(joined.rooms);
    Ok(match ctx.rag.search(&scope, query, RESULTS).await {
        Ok(hits) if hits.is_empty() => strings::search_all_found_nothing(&coverage),
        Ok(hits) => strings::search_all_results(&results(ctx, &hits, Some(&room_names(ctx, &hits).await)), &coverage),
        Err(e) => search_failed(&e),
    })
}

fn search_failed(e: &RagError) -> Md {
    tracing::warn!(error = %e, "search failed");
    strings::search_failed(&e.public())
}

/// The hits as shown; with `names`, each labelled with its room (its name if known, else its id).
fn results(ctx: &Context, hits: &[Hit], names: Option<&HashMap<String, String>>) -> Vec<strings::SearchResult> {
    hits.iter()
        .map(|hit| strings::SearchResult {
            room: names.map(|n| n.get(&hit.meta.room_id).unwrap_or(&hit.meta.room_id).clone()),
            sender: hit.meta.sender.clone(),
            date: date_utc(hit.meta.ts),
            snippet: truncate(&hit.document, SNIPPET_CHARS).to_owned(),
            permalink: crate::matrix::permalink(&hit.meta.room_id, &hit.id, &ctx.config.homeserver.server_name),
        })
        .collect()
}

/// The rooms to ask about, the asking room first (so it is searched however many rooms the
/// agent is in), at most [`MAX_ROOMS`]; and how many rooms were left beyond that.
fn candidates(mut rooms: Vec<String>, asking: &RoomId) -> (Vec<OwnedRoomId>, usize) {
    if let Some(i) = rooms.iter().position(|r| r == asking.as_str()) {
        rooms[..=i].rotate_right(1);
    }
    let not_considered = rooms.len().saturating_sub(MAX_ROOMS);
    rooms.truncate(MAX_ROOMS);
    (rooms.iter().filter_map(|r| RoomId::parse(r).ok()).collect(), not_considered)
}

/// What the membership lookups found.
#[derive(Debug)]
struct Joined<T> {
    /// What the lookup said of each room where the asker's membership is `join`, in no particular
    /// order.
    rooms: Vec<T>,
    /// Rooms left out because their lookup failed.
    unchecked: usize,
}

/// Asks `lookup` about every candidate, [`CHECKS_AT_ONCE`] at a time: `Some` for a room the asker
/// is joined to. A failed lookup leaves its room out (fail closed); a homeserver that cannot be
/// reached or does not answer ends the whole search with that error, since every other lookup
/// would fail the same way.
async fn joined_rooms<T, F, Fut>(candidates: Vec<OwnedRoomId>, lookup: F) -> Result<Joined<T>, MatrixError>
where
    F: Fn(OwnedRoomId) -> Fut,
    Fut: Future<Output = Result<Option<T>, MatrixError>>,
{
    let mut answers = futures_util::stream::iter(candidates)
        .map(|room| {
            let answer = lookup(room.clone());
            async move { (room, answer.await) }
        })
        .buffer_unordered(CHECKS_AT_ONCE);
    let mut joined = Joined { rooms: Vec::new(), unchecked: 0 };
    while let Some((room, answer)) = answers.next().await {
        match answer {
            Ok(Some(found)) => joined.rooms.push(found),
            Ok(None) => {}
            Err(e @ (MatrixError::Unreachable { .. } | MatrixError::Timeout(_))) => return Err(e),
            Err(e) => {
                tracing::debug!(room = %room, error = %e, "membership unknown; the room is left out");
                joined.unchecked += 1;
            }
        }
    }
    Ok(joined)
}

/// The names of the rooms among `hits` that have one, if the homeserver tells them in time.
async fn room_names(ctx: &Context, hits: &[Hit]) -> HashMap<String, String> {
    let mut rooms: Vec<&str> = hits.iter().map(|h| h.meta.room_id.as_str()).collect();
    rooms.sort_unstable();
    rooms.dedup();
    let me = ctx.namespace.sender();
    let lookups = rooms.into_iter().filter_map(|r| RoomId::parse(r).ok()).map(|room| async move {
        let name = ctx.matrix.state_field(me, &room, "m.room.name", "name").await.ok().flatten()?;
        let name = truncate(name.trim(), ROOM_NAME_CHARS);
        (!name.is_empty()).then(|| (room.to_string(), name.to_owned()))
    });
    match tokio::time::timeout(NAMES_DEADLINE, futures_util::future::join_all(lookups)).await {
        Ok(names) => names.into_iter().flatten().collect(),
        Err(_) => HashMap::new(),
    }
}

/// The reply to `!index`: switching and backfilling are for admins; anyone may see the status.
pub async fn index(ctx: &Context, ev: &OriginalRoomMessageEvent, change: IndexChange) -> Result<Md, HandleError> {
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

async fn status(ctx: &Context, ev: &OriginalRoomMessageEvent) -> Result<Md, HandleError> {
    let room = ev.room_id.as_str();
    let stored = ctx.rag.chroma.count_in(&Scope::Room(room.to_owned())).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot count the room's records");
        e.public()
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
async fn backfill(ctx: &Context, ev: &OriginalRoomMessageEvent) -> Result<Md, HandleError> {
    Ok(match backfill::request(&ctx.store, &ctx.config, ev.room_id.as_str(), None).await? {
        backfill::Request::IndexingOff => strings::backfill_needs_indexing(),
        backfill::Request::Running(running) => strings::backfill_running(&running),
        backfill::Request::Started(limit) => strings::backfill_started(limit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn room(n: usize) -> String {
        format!("!r{n}:x.y")
    }

    #[test]
    fn candidates_put_the_asking_room_first_and_stop_at_the_cap() {
        let asking = RoomId::parse(room(MAX_ROOMS + 5)).unwrap();
        let all: Vec<String> = (0..MAX_ROOMS + 10).map(room).collect();
        let (rooms, not_considered) = candidates(all, &asking);
        assert_eq!(rooms.len(), MAX_ROOMS);
        assert_eq!(not_considered, 10);
        assert_eq!(rooms[0], asking);
        assert_eq!(rooms[1].as_str(), room(0));

        let (rooms, not_considered) = candidates(vec![room(1), "not a room".into(), room(2)], &asking);
        assert_eq!(rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>(), [room(1), room(2)]);
        assert_eq!(not_considered, 0);
    }

    fn refused(errcode: &str) -> MatrixError {
        MatrixError::Api { status: 403, errcode: errcode.into(), message: String::new() }
    }

    #[tokio::test]
    async fn only_rooms_confirmed_joined_are_searched() {
        let answers = |r: &str| match r {
            "!joined:x.y" | "!also:x.y" => Ok(Some(r.to_owned())),
            "!left:x.y" => Ok(None),
            "!forbidden:x.y" => Err(refused("M_FORBIDDEN")),
            "!broken:x.y" => Err(MatrixError::Api { status: 500, errcode: "M_UNKNOWN".into(), message: String::new() }),
            _ => Err(MatrixError::Response("garbled".into())),
        };
        let candidates: Vec<OwnedRoomId> =
            ["!joined:x.y", "!left:x.y", "!forbidden:x.y", "!broken:x.y", "!odd:x.y", "!also:x.y"]
                .iter()
                .map(|r| RoomId::parse(*r).unwrap())
                .collect();
        let joined = joined_rooms(candidates, |r| async move { answers(r.as_str()) }).await.unwrap();
        let mut rooms = joined.rooms;
        rooms.sort_unstable();
        assert_eq!(rooms, ["!also:x.y", "!joined:x.y"]);
        assert_eq!(joined.unchecked, 3);
    }

    #[tokio::test]
    async fn an_unreachable_homeserver_fails_the_search() {
        let candidates: Vec<OwnedRoomId> = (0..20).map(|n| RoomId::parse(room(n)).unwrap()).collect();
        let asked = AtomicUsize::new(0);
        let err = joined_rooms(candidates, |_| {
            asked.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<Option<()>, _>(MatrixError::Unreachable { url: "http://hs".into(), reason: "refused".into() })
            }
        })
        .await
        .unwrap_err();
        assert!(matches!(err, MatrixError::Unreachable { .. }), "{err}");
        assert!(asked.load(Ordering::SeqCst) < 20, "it stops asking once the homeserver is known down");
        let err = joined_rooms(vec![RoomId::parse(room(1)).unwrap()], |_| async {
            Err::<Option<()>, _>(MatrixError::Timeout(Duration::from_secs(1)))
        })
        .await
        .unwrap_err();
        assert!(matches!(err, MatrixError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn lookups_run_a_bounded_number_at_once() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let candidates: Vec<OwnedRoomId> = (0..50).map(|n| RoomId::parse(room(n)).unwrap()).collect();
        let joined = joined_rooms(candidates, |_| {
            let (in_flight, most) = (in_flight.clone(), most.clone());
            async move {
                most.fetch_max(in_flight.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(Some(()))
            }
        })
        .await
        .unwrap();
        assert_eq!(joined.rooms.len(), 50);
        assert_eq!(most.load(Ordering::SeqCst), CHECKS_AT_ONCE);
    }
}
