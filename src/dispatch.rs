//! Inbox → handlers. Events of one room are handled in order, rooms concurrently up to
//! `dispatch.concurrency`. An event leaves the inbox only after it was handled, so a crash
//! replays it; handlers make replays harmless (deterministic send txn ids).

use crate::context::Context;
use crate::events;
use crate::store::{InboxItem, IndexWrite, now_ms};
use futures_util::FutureExt;
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// Candidates looked at per claim, and events handed to one room task at most.
const CLAIM_CANDIDATES: i64 = 2048;
const PER_ROOM: usize = 256;
/// Poll interval, for events whose back-off has passed (new events wake the loop at once).
const POLL: Duration = Duration::from_secs(1);
/// Back-off of a failed event: 1 s doubling up to 5 minutes.
const RETRY_BASE_MS: i64 = 1_000;
const RETRY_MAX_MS: i64 = 300_000;
/// Transaction ids are remembered this long; the homeserver retries for far less.
const SEEN_TXN_TTL_MS: i64 = 30 * 24 * 3600 * 1000;
/// How long shutdown waits for events being handled.
const DRAIN: Duration = Duration::from_secs(10);

/// Runs until `shutdown` turns true.
pub async fn run(ctx: Arc<Context>, signal: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let concurrency = ctx.config.dispatch.concurrency;
    let mut busy: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<Handled> = JoinSet::new();
    let mut tick = tokio::time::interval(POLL);
    let mut last_prune = 0;
    loop {
        if busy.len() < concurrency {
            match claim(&ctx, &busy, concurrency - busy.len()).await {
                Ok(batches) => {
                    for (room, items) in batches {
                        busy.insert(room.clone());
                        tasks.spawn(handle_room(ctx.clone(), room, items));
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the inbox; retrying"),
            }
        }
        if now_ms() - last_prune > 3600 * 1000 {
            last_prune = now_ms();
            match ctx.store.prune_seen_txns(now_ms() - SEEN_TXN_TTL_MS).await {
                Ok(n) if n > 0 => tracing::info!(pruned = n, "forgot old transaction ids"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot prune old transaction ids"),
            }
        }
        tokio::select! {
            _ = signal.notified() => {}
            Some(first) = tasks.join_next() => {
                // Collect every room that finished meanwhile: one transaction for all of them.
                let (mut handled, mut writes) = (Vec::new(), Vec::new());
                let mut finished = Some(first);
                while let Some(result) = finished {
                    match result {
                        Ok(done) => {
                            busy.remove(&done.room);
                            handled.extend(done.seqs);
                            writes.extend(done.writes);
                        }
                        // handle_room catches handler panics; this is a bug in the loop itself.
                        Err(e) => {
                            tracing::error!(error = %e, "room task failed");
                            busy.clear();
                        }
                    }
                    finished = tasks.try_join_next();
                }
                if let Err(e) = ctx.store.inbox_done(&handled, &writes).await {
                    // They stay in the inbox and are handled again (their index changes decided
                    // anew); replies are deduplicated by txn id.
                    tracing::error!(error = %e, "cannot remove handled events from the inbox");
                }
            }
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
    }
    if !tasks.is_empty() {
        tracing::info!(rooms = tasks.len(), "waiting for events being handled");
        // Whatever does not finish stays in the inbox and is replayed at the next start.
        let _ = tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    }
}

/// The next events per room, for at most `rooms` rooms that are not busy, oldest first.
async fn claim(
    ctx: &Context,
    busy: &HashSet<String>,
    rooms: usize,
) -> Result<Vec<(String, Vec<InboxItem>)>, crate::store::StoreError> {
    let skip: Vec<&str> = busy.iter().map(String::as_str).collect();
    let mut picked: Vec<(String, Vec<i64>)> = Vec::new();
    for (seq, room) in ctx.store.inbox_candidates(&skip, CLAIM_CANDIDATES).await? {
        if let Some((_, seqs)) = picked.iter_mut().find(|(r, _)| *r == room) {
            if seqs.len() < PER_ROOM {
                seqs.push(seq);
            }
        } else if picked.len() < rooms {
            picked.push((room, vec![seq]));
        }
    }
    let seqs: Vec<i64> = picked.iter().flat_map(|(_, seqs)| seqs.iter().copied()).collect();
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let mut batches: Vec<(String, Vec<InboxItem>)> = picked.into_iter().map(|(room, _)| (room, Vec::new())).collect();
    for item in ctx.store.inbox_claim(&seqs).await? {
        if let Some((_, items)) = batches.iter_mut().find(|(room, _)| *room == item.room_id) {
            items.push(item);
        }
    }
    batches.retain(|(_, items)| !items.is_empty());
    Ok(batches)
}

/// What one room task got through.
struct Handled {
    room: String,
    /// The events handled (or set aside), for the loop to remove from the inbox…
    seqs: Vec<i64>,
    /// …together with the index changes they called for, in order.
    writes: Vec<IndexWrite>,
}

/// Handles one room's events in order; stops at the first one that must wait.
async fn handle_room(ctx: Arc<Context>, room: String, items: Vec<InboxItem>) -> Handled {
    let max_attempts = i64::from(ctx.config.dispatch.max_attempts);
    let mut done = Vec::with_capacity(items.len());
    let mut writes = Vec::new();
    for item in items {
        let attempt = item.attempts;
        if attempt > max_attempts {
            dead_letter(&ctx, &item, "gave up: the agent stopped while handling it too often").await;
            continue;
        }
        let outcome = AssertUnwindSafe(events::handle(&ctx, &item)).catch_unwind().await;
        match outcome {
            Ok(Ok(write)) => {
                tracing::debug!(event_id = %item.event_id, attempt, "event handled");
                done.push(item.seq);
                writes.extend(write);
            }
            Ok(Err(e)) if e.is_transient() && attempt < max_attempts => {
                let delay = (RETRY_BASE_MS << (attempt - 1).min(20)).min(RETRY_MAX_MS);
                tracing::warn!(event_id = %item.event_id, attempt, delay_ms = delay, error = %e, "event failed; will retry");
                if let Err(e) = ctx.store.inbox_retry_at(item.seq, now_ms() + delay).await {
                    tracing::error!(error = %e, "cannot schedule the retry");
                }
                break;
            }
            Ok(Err(e)) => dead_letter(&ctx, &item, &e.to_string()).await,
            Err(_) => dead_letter(&ctx, &item, "the handler panicked").await,
        }
    }
    Handled { room, seqs: done, writes }
}

async fn dead_letter(ctx: &Context, item: &InboxItem, reason: &str) {
    tracing::error!(event_id = %item.event_id, room_id = %item.room_id, reason, "giving up on an event");
    if let Err(e) = ctx.store.inbox_dead_letter(item.seq, reason).await {
        tracing::error!(error = %e, "cannot set the event aside");
    }
}
