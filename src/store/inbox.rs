//! Seen transaction ids and the durable event inbox (invariant 1).

use super::ingest::{IngestJob, NewEvent};
use super::{Store, StoreError, Text, Write, index, jobs, now_ms};
// Dynamic SQL here only ever adds numbered placeholders; values are always bound.
use sqlx::{AssertSqlSafe, FromRow};
use tokio::sync::oneshot;

/// An event waiting in the inbox.
#[derive(Debug, Clone, FromRow)]
pub struct InboxItem {
    pub seq: i64,
    pub room_id: String,
    pub event_id: String,
    pub event: String,
    /// Tries so far: counted before a try starts when the event heads its room's batch (so an
    /// event that crashes the process is counted), and when a later one fails.
    pub attempts: i64,
}

/// An event set aside after failing too often.
#[derive(Debug, Clone, FromRow)]
pub struct DeadLetter {
    pub seq: i64,
    pub room_id: String,
    pub event_id: String,
    pub error: String,
    pub failed_at: i64,
}

/// Sequence numbers per `IN (…)` list.
const SEQ_CHUNK: usize = 1000;

/// `$1,$2,…,$n`
fn placeholders(n: usize) -> String {
    (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(",")
}

impl Store {
    /// Remembers the delivery (`txn_id` and a digest of its events) and appends its events, in one
    /// database transaction that is durable when this returns. Returns `false` (and changes
    /// nothing) when the same delivery was seen before: a retry. The same txn id with other events
    /// is a new delivery (invariant 1).
    ///
    /// Concurrent calls are written together by the ingest writer (group commit, `ingest.rs`): one
    /// commit, and on SQLite one fsync, for all of them.
    pub async fn ingest(&self, txn_id: &str, events: Vec<NewEvent>) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.ingest_queue.send(IngestJob::new(txn_id, events, reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// `(seq, room_id)` of the oldest waiting events, oldest first, leaving out the rooms in
    /// `skip` (being handled) and every room whose head is backing off (a later event must not
    /// overtake it). No event bodies: the caller picks, then [`Store::inbox_claim`]s.
    /// (`not_before > 0` is spelled out so the partial index applies; a bound `$1` alone scans.)
    pub async fn inbox_candidates(&self, skip: &[&str], limit: i64) -> Result<Vec<(i64, String)>, StoreError> {
        let skip_list = (3..3 + skip.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(",");
        let sql = format!(
            "SELECT seq, room_id FROM inbox \
             WHERE room_id NOT IN (SELECT room_id FROM inbox WHERE not_before > 0 AND not_before > $1) {} \
             ORDER BY seq LIMIT $2",
            if skip.is_empty() { String::new() } else { format!("AND room_id NOT IN ({skip_list})") }
        );
        let mut q = sqlx::query_as::<_, (i64, String)>(AssertSqlSafe(sql)).bind(now_ms()).bind(limit);
        for room in skip {
            q = q.bind(*room);
        }
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// The events, oldest first.
    pub async fn inbox_claim(&self, seqs: &[i64]) -> Result<Vec<InboxItem>, StoreError> {
        let mut items = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(SEQ_CHUNK) {
            let sql = format!(
                "SELECT seq, room_id, event_id, event, attempts FROM inbox WHERE seq IN ({})",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query_as::<_, InboxItem>(AssertSqlSafe(sql));
            for seq in chunk {
                q = q.bind(*seq);
            }
            items.extend(q.fetch_all(&self.pool).await?);
        }
        items.sort_by_key(|i| i.seq);
        Ok(items)
    }

    /// Counts a try of the event before it starts, durably; returns the tries so far.
    pub async fn inbox_attempt(&self, seq: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("UPDATE inbox SET attempts = attempts + 1 WHERE seq = $1 RETURNING attempts")
            .bind(seq)
            .fetch_one(&self.pool)
            .await?)
    }

    /// The events were handled: they leave the inbox, and what their handlers decided (index
    /// changes, jobs, cancels) is written, in one transaction (both or neither).
    pub async fn inbox_done(&self, seqs: &[i64], writes: &[Write]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for write in writes {
            match write {
                Write::Index(write) => index::apply_write(&mut tx, write).await?,
                Write::Edit { edit, original, room_id } => {
                    index::remember_edit(&mut tx, edit, original, room_id).await?
                }
                Write::Job(job) => jobs::insert(&mut tx, job).await?,
                Write::Cancel { target, by } => jobs::request_cancel(&mut tx, target, by).await?,
            }
        }
        for chunk in seqs.chunks(SEQ_CHUNK) {
            let sql = format!("DELETE FROM inbox WHERE seq IN ({})", placeholders(chunk.len()));
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for seq in chunk {
                q = q.bind(*seq);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Keeps the event (and with it the rest of its room) waiting until `not_before_ms`;
    /// `count` adds the failed try to its attempts (when it was not counted before it started).
    pub async fn inbox_retry_at(&self, seq: i64, not_before_ms: i64, count: bool) -> Result<(), StoreError> {
        sqlx::query("UPDATE inbox SET not_before = $1, attempts = attempts + $2 WHERE seq = $3")
            .bind(not_before_ms)
            .bind(i64::from(count))
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves an event that keeps failing out of the inbox, so its room can go on.
    pub async fn inbox_dead_letter(&self, seq: i64, error: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO dead_letters (seq, room_id, event_id, event, error, failed_at) \
             SELECT seq, room_id, event_id, event, $1, $2 FROM inbox WHERE seq = $3 \
             ON CONFLICT (seq) DO NOTHING",
        )
        .bind(Text(error))
        .bind(now_ms())
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM inbox WHERE seq = $1").bind(seq).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The events set aside, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(sqlx::query_as("SELECT seq, room_id, event_id, error, failed_at FROM dead_letters ORDER BY seq")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Puts dead letter `seq` (or all, with `None`) back at the end of the inbox, with its tries
    /// reset; returns how many.
    pub async fn dead_letters_replay(&self, seq: Option<i64>) -> Result<u64, StoreError> {
        // One letter, or all: `seq >= $2` with 0 takes every one (seqs start at 1).
        let (op, from) = match seq {
            Some(seq) => ("=", seq),
            None => (">=", 0),
        };
        let mut tx = self.begin().await?;
        let insert = format!(
            "INSERT INTO inbox (room_id, event_id, event, received_at) \
             SELECT room_id, event_id, event, $1 FROM dead_letters WHERE seq {op} $2 ORDER BY seq"
        );
        let moved =
            sqlx::query(AssertSqlSafe(insert)).bind(now_ms()).bind(from).execute(&mut *tx).await?.rows_affected();
        let delete = format!("DELETE FROM dead_letters WHERE seq {op} $1");
        sqlx::query(AssertSqlSafe(delete)).bind(from).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(moved)
    }

    pub async fn inbox_len(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM inbox").fetch_one(&self.pool).await?)
    }

    pub async fn dead_letter_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters").fetch_one(&self.pool).await?)
    }

    /// Forgets transaction ids older than `cutoff_ms`; the homeserver never retries that late.
    pub async fn prune_seen_txns(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM seen_deliveries WHERE received_at < $1")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
