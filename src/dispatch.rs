//! Inbox → room lanes. Events of one room are handled in order, rooms concurrently up to
//! `dispatch.concurrency`. A lane only decides and writes (slow work becomes a job), so it is quick.
//!
//! An event leaves the inbox only after it was handled, so a crash replays it; handlers make
//! replays harmless (deterministic send txn ids, one job per trigger). Each room task commits its
//! own progress: right after any event with an effect others can see (a reply, a join, a job), and
//! in batches for plain messages, so a crash replays at most one visible effect per room.
//!
//! Tries are counted per event that runs: before it starts when it heads its room's batch (so an
//! event that crashes the process is counted and, after `dispatch.max_attempts`, set aside), and
//! when a later one fails. A batch whose head was tried before goes carefully — every event counted
//! and committed on its own — so a poison event becomes the head and is counted too.

use crate::backoff::Backoff;
use crate::config::Retention;
use crate::context::Context;
use crate::events;
use crate::store::{Cutoffs, InboxItem, StoreError, Write, now_ms, today};
use futures_util::FutureExt;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// Candidates looked at per claim, and events handed to one room task at most.
const CLAIM_CANDIDATES: i64 = 2048;
const PER_ROOM: usize = 256;
/// Plain messages committed together at most.
const COMMIT_EVERY: usize = 64;
/// Poll interval, for events whose back-off has passed (new events wake the loop at once).
const POLL: Duration = Duration::from_secs(1);
/// Back-off of a failed event: 1 s doubling up to 5 minutes.
const RETRY: Backoff = Backoff { base_ms: 1_000, max_ms: 300_000 };
/// Transaction records are kept this long; the homeserver retries for far less.
const SEEN_TXN_TTL_MS: i64 = 30 * 24 * 3600 * 1000;
/// How long shutdown waits for events being handled (each room task commits as it goes).
const DRAIN: Duration = Duration::from_secs(10);

/// Runs until `shutdown` turns true.
pub async fn run(ctx: Arc<Context>, signal: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let concurrency = ctx.config.dispatch.concurrency;
    let mut busy: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut rooms: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut tick = tokio::time::interval(POLL);
    let mut last_prune = 0;
    loop {
        if busy.len() < concurrency {
            match claim(&ctx, &busy, concurrency - busy.len()).await {
                Ok(batches) => {
                    for (room, items) in batches {
                        busy.insert(room.clone());
                        let task = tasks.spawn(handle_room(ctx.clone(), items));
                        rooms.insert(task.id(), room);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the inbox; retrying"),
            }
        }
        if now_ms() - last_prune > 3600 * 1000 {
            last_prune = now_ms();
            prune(&ctx).await;
        }
        tokio::select! {
            _ = signal.notified() => {}
            Some(ended) = tasks.join_next_with_id() => {
                let id = match ended {
                    Ok((id, ())) => id,
                    // handle_room catches handler panics; this is a bug in the lane itself. Only
                    // that room is freed; its events stay in the inbox.
                    Err(e) => {
                        tracing::error!(error = %e, "room task failed");
                        e.id()
                    }
                };
                if let Some(room) = rooms.remove(&id) {
                    busy.remove(&room);
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

/// The hourly clean-up of what only grows (`[retention]`; seen transactions after 30 days).
async fn prune(ctx: &Context) {
    match ctx.store.prune_seen_txns(now_ms() - SEEN_TXN_TTL_MS).await {
        Ok(n) if n > 0 => tracing::info!(pruned = n, "forgot old transaction ids"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot prune old transaction ids"),
    }
    let r = &ctx.config.retention;
    let cutoffs = Cutoffs {
        jobs_ms: Retention::cutoff_ms(r.jobs_days),
        dead_letters_ms: Retention::cutoff_ms(r.dead_letters_days),
        index_notes_ms: Retention::cutoff_ms(r.index_notes_days),
        task_messages_ms: Retention::cutoff_ms(r.task_messages_days),
        usage_day: today() - i64::try_from(r.usage_days).unwrap_or(i64::MAX / 2),
    };
    match ctx.store.prune(&cutoffs).await {
        Ok(removed) => {
            for (table, n) in removed.into_iter().filter(|(_, n)| *n > 0) {
                tracing::info!(table, pruned = n, "forgot old bookkeeping");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot prune old bookkeeping"),
    }
}

/// The next events per room, for at most `rooms` rooms that are not busy, oldest first.
async fn claim(
    ctx: &Context,
    busy: &HashSet<String>,
    rooms: usize,
) -> Result<Vec<(String, Vec<InboxItem>)>, crate::store::StoreError> {
    let skip: Vec<&str> = busy.iter().map(String::as_str).collect();
    let picked = pick(ctx.store.inbox_candidates(&skip, CLAIM_CANDIDATES).await?, rooms);
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

/// From candidates oldest first: the rooms of the oldest events, at most `rooms` of them, each
/// with at most [`PER_ROOM`] of its events in order (the bound on what one claim holds).
fn pick(candidates: Vec<(i64, String)>, rooms: usize) -> Vec<(String, Vec<i64>)> {
    let mut picked: Vec<(String, Vec<i64>)> = Vec::new();
    for (seq, room) in candidates {
        if let Some((_, seqs)) = picked.iter_mut().find(|(r, _)| *r == room) {
            if seqs.len() < PER_ROOM {
                seqs.push(seq);
            }
        } else if picked.len() < rooms {
            picked.push((room, vec![seq]));
        }
    }
    picked
}

/// Handled events not committed yet, and what they decided.
#[derive(Default)]
struct Pending {
    seqs: Vec<i64>,
    writes: Vec<Write>,
    /// Whether the writes hold jobs or cancels for the job workers.
    wakes_jobs: bool,
}

impl Pending {
    /// Removes the handled events from the inbox with their writes; on an error they stay in
    /// the inbox and are handled again later (carefully, each committed alone).
    async fn commit(&mut self, ctx: &Context) -> Result<(), StoreError> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        match ctx.store.inbox_done(&self.seqs, &self.writes).await {
            Ok(()) => {
                if self.wakes_jobs {
                    ctx.jobs_wake.notify_one();
                }
                *self = Self::default();
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, events = self.seqs.len(), "cannot remove handled events from the inbox");
                Err(e)
            }
        }
    }
}

/// Handles one room's events in order; stops at the first one that must wait.
async fn handle_room(ctx: Arc<Context>, items: Vec<InboxItem>) {
    let max_attempts = i64::from(ctx.config.dispatch.max_attempts);
    let careful = items.first().is_some_and(|head| head.attempts > 0);
    let mut pending = Pending::default();
    for (i, item) in items.iter().enumerate() {
        // Counted before it starts: the head of a batch, and every event of a careful one.
        let counted = i == 0 || careful;
        let mut attempt = item.attempts + 1;
        if counted {
            if pending.commit(&ctx).await.is_err() {
                return;
            }
            match ctx.store.inbox_attempt(item.seq).await {
                Ok(n) => attempt = n,
                Err(e) => return tracing::error!(error = %e, "cannot count an attempt; retrying later"),
            }
        }
        if attempt > max_attempts {
            dead_letter(&ctx, &mut pending, item, "gave up: the agent stopped while handling it too often").await;
            continue;
        }
        let outcome = AssertUnwindSafe(events::handle(&ctx, item)).catch_unwind().await;
        match outcome {
            Ok(Ok(outcome)) => {
                tracing::debug!(event_id = %item.event_id, attempt, "event handled");
                pending.seqs.push(item.seq);
                pending.wakes_jobs |= outcome.writes.iter().any(|w| !matches!(w, Write::Index(_)));
                pending.writes.extend(outcome.writes);
                let commit_now = outcome.flush || careful || pending.seqs.len() >= COMMIT_EVERY;
                if commit_now && let Err(e) = pending.commit(&ctx).await {
                    if careful {
                        // Alone in its commit, the event's own writes failed: that was its try.
                        pending = Pending::default();
                        let reason = format!("its changes could not be stored: {e}");
                        if attempt < max_attempts {
                            retry_later(&ctx, item, attempt, false, &reason).await;
                        } else {
                            dead_letter(&ctx, &mut pending, item, &reason).await;
                        }
                    }
                    return;
                }
            }
            Ok(Err(e)) if e.is_transient() && attempt < max_attempts => {
                if pending.commit(&ctx).await.is_ok() {
                    retry_later(&ctx, item, attempt, !counted, &e.to_string()).await;
                }
                return;
            }
            Ok(Err(e)) => dead_letter(&ctx, &mut pending, item, &e.to_string()).await,
            Err(_) => dead_letter(&ctx, &mut pending, item, "the handler panicked").await,
        }
    }
    // An error is logged, and the events stay in the inbox for the next, careful, round.
    let _ = pending.commit(&ctx).await;
}

/// Keeps a failed event (and its room after it) waiting for its back-off; `count` adds the try
/// to its attempts when it was not counted before it started.
async fn retry_later(ctx: &Context, item: &InboxItem, attempt: i64, count: bool, error: &str) {
    let delay = RETRY.delay_ms(attempt - 1);
    tracing::warn!(event_id = %item.event_id, attempt, delay_ms = delay, error, "event failed; will retry");
    if let Err(e) = ctx.store.inbox_retry_at(item.seq, now_ms() + delay, count).await {
        tracing::error!(error = %e, "cannot schedule the retry");
    }
}

/// Sets an event that keeps failing aside, so its room goes on (in order, after what was handled).
async fn dead_letter(ctx: &Context, pending: &mut Pending, item: &InboxItem, reason: &str) {
    if pending.commit(ctx).await.is_err() {
        return;
    }
    tracing::error!(event_id = %item.event_id, room_id = %item.room_id, reason, "giving up on an event");
    if let Err(e) = ctx.store.inbox_dead_letter(item.seq, reason).await {
        tracing::error!(error = %e, "cannot set the event aside");
    }
}

#[cfg(test)]
mod tests {
    use super::{PER_ROOM, pick};

    #[test]
    fn a_claim_holds_at_most_per_room_events_of_at_most_the_free_rooms_in_order() {
        // 300 events of !a interleaved with 10 of !b and 10 of !c, oldest first.
        let mut candidates = Vec::new();
        for seq in 0..320_i64 {
            let room = match seq % 32 {
                0 => "!b",
                1 => "!c",
                _ => "!a",
            };
            candidates.push((seq, room.to_owned()));
        }
        let picked = pick(candidates, 2);
        let rooms: Vec<&str> = picked.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(rooms, ["!b", "!c"], "the rooms of the oldest events, no more than asked");
        let picked = pick((0..300).map(|seq| (seq, "!a".to_owned())).collect(), 4);
        assert_eq!(picked.len(), 1);
        let seqs = &picked[0].1;
        assert_eq!(seqs.len(), PER_ROOM, "one room's claim is bounded");
        assert_eq!(*seqs, (0..PER_ROOM as i64).collect::<Vec<_>>(), "its oldest events, in order");
        assert!(pick(Vec::new(), 4).is_empty());
        assert!(pick(vec![(1, "!a".to_owned())], 0).is_empty(), "no free lane, nothing claimed");
    }
}
