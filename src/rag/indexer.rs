//! The indexer: takes due jobs from the durable queue in batches, embeds the messages, stores
//! them in Chroma (or removes redacted ones) and removes the jobs only after Chroma accepted them.
//!
//! When the embedder or Chroma is down, the jobs stay in the database and back off (bounded,
//! invariant 7); at most one batch is in memory at a time.

use crate::rag::{Rag, RagError, Record, RecordMeta};
use crate::store::{IndexJob, IndexOp, Store, StoreError, now_ms};
use std::time::Duration;
use tokio::sync::watch;

/// Jobs taken at once: a few embeddings requests' worth.
pub const BATCH: i64 = 64;
/// How long a partial batch waits for more messages (and how often an idle queue is looked at).
const LINGER: Duration = Duration::from_millis(500);
/// Back-off of a failed job: 1 s doubling up to 5 minutes.
const RETRY_BASE_MS: i64 = 1_000;
const RETRY_MAX_MS: i64 = 300_000;
/// Longest text stored and embedded, in characters: embedders cut (or refuse) long inputs anyway,
/// and a snippet is all search shows.
pub const MAX_CHARS: usize = 4_000;

/// Runs until `shutdown` turns true.
pub async fn run(store: Store, rag: Rag, mut shutdown: watch::Receiver<bool>) {
    loop {
        let full = match store.index_due(BATCH).await {
            Ok(jobs) if jobs.is_empty() => false,
            Ok(jobs) => {
                let full = jobs.len() as i64 == BATCH;
                if let Err(e) = index_batch(&store, &rag, jobs).await {
                    tracing::error!(error = %e, "cannot update the indexing queue");
                }
                full
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the indexing queue; retrying");
                false
            }
        };
        // A full batch means more are waiting: go on at once. Otherwise let messages gather.
        if full && !*shutdown.borrow() {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(LINGER) => {}
            _ = shutdown.changed() => break,
        }
    }
}

/// Applies one batch: upserts and deletes separately, so one side failing does not hold up the
/// other. Only a failure of the queue itself is returned; a backend failure reschedules the jobs.
pub async fn index_batch(store: &Store, rag: &Rag, jobs: Vec<IndexJob>) -> Result<(), StoreError> {
    let (deletes, upserts): (Vec<IndexJob>, Vec<IndexJob>) =
        jobs.into_iter().partition(|j| matches!(j.op, IndexOp::Delete));
    for group in [upserts, deletes] {
        if group.is_empty() {
            continue;
        }
        match apply(rag, &group).await {
            Ok(()) => store.index_done(&group).await?,
            // A refusal rather than an outage may be one bad message (too long, odd text): each
            // job alone, so only the bad one waits.
            Err(e) if !e.is_transient() && group.len() > 1 => {
                tracing::warn!(jobs = group.len(), error = %e, "a batch was refused; indexing its messages one by one");
                for job in group {
                    let job = std::slice::from_ref(&job);
                    match apply(rag, job).await {
                        Ok(()) => store.index_done(job).await?,
                        Err(e) => retry(store, job, &e).await?,
                    }
                }
            }
            Err(e) => retry(store, &group, &e).await?,
        }
    }
    Ok(())
}

/// Stores or removes `jobs` (all of one kind).
async fn apply(rag: &Rag, jobs: &[IndexJob]) -> Result<(), RagError> {
    match jobs.first().map(|j| &j.op) {
        Some(IndexOp::Delete) => delete(rag, jobs).await,
        Some(IndexOp::Upsert { .. }) => upsert(rag, jobs).await,
        None => Ok(()),
    }
}

async fn retry(store: &Store, jobs: &[IndexJob], error: &RagError) -> Result<(), StoreError> {
    let attempts = jobs.iter().map(|j| j.attempts).max().unwrap_or(0);
    let delay = (RETRY_BASE_MS << attempts.min(20)).min(RETRY_MAX_MS);
    tracing::warn!(jobs = jobs.len(), delay_ms = delay, error = %error, "indexing failed; will retry");
    store.index_retry_at(jobs, now_ms() + delay).await
}

async fn upsert(rag: &Rag, jobs: &[IndexJob]) -> Result<(), RagError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let texts: Vec<&str> = jobs
        .iter()
        .map(|j| match &j.op {
            IndexOp::Upsert { body, .. } => truncate(body, MAX_CHARS),
            IndexOp::Delete => "",
        })
        .collect();
    let vectors = rag.embed_documents(&texts).await?;
    let records: Vec<Record> = jobs
        .iter()
        .zip(texts)
        .zip(vectors)
        .filter_map(|((job, text), embedding)| match &job.op {
            IndexOp::Upsert { sender, ts, thread_id, .. } => Some(Record {
                id: job.event_id.clone(),
                embedding,
                document: text.to_owned(),
                meta: RecordMeta {
                    room_id: job.room_id.clone(),
                    sender: sender.clone(),
                    ts: *ts,
                    thread_id: thread_id.clone(),
                },
            }),
            IndexOp::Delete => None,
        })
        .collect();
    Ok(rag.chroma.upsert(&records).await?)
}

async fn delete(rag: &Rag, jobs: &[IndexJob]) -> Result<(), RagError> {
    let ids: Vec<&str> = jobs.iter().map(|j| j.event_id.as_str()).collect();
    Ok(rag.chroma.delete_ids(&ids).await?)
}

/// At most `max` characters of `text`, cut at a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    text.char_indices().nth(max).map_or(text, |(i, _)| &text[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        let cases = [("short", 10, "short"), ("exactly", 7, "exactly"), ("cut here", 3, "cut"), ("ééé", 2, "éé")];
        for (text, max, want) in cases {
            assert_eq!(truncate(text, max), want, "{text}");
        }
    }
}
