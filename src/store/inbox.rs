//! Seen transaction ids and the durable event inbox (invariant 1).

use super::{Store, StoreError, now_ms};
// Dynamic SQL here only ever adds numbered placeholders; values are always bound.
use sqlx::{AssertSqlSafe, FromRow};

/// An event as it enters the inbox.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub room_id: &'a str,
    pub event_id: &'a str,
    /// The event's JSON, exactly as the homeserver sent it.
    pub json: &'a str,
}

/// An event waiting in the inbox.
#[derive(Debug, Clone, FromRow)]
pub struct InboxItem {
    pub seq: i64,
    pub room_id: String,
    pub event_id: String,
    pub event: String,
    /// Dispatch attempts started so far (counted before each attempt, so a crash counts).
    pub attempts: i64,
}

/// Rows per statement: at most 4 parameters each stays far below both databases' limits.
const INSERT_CHUNK: usize = 200;

impl Store {
    /// Remembers `txn_id` and appends its events, in one database transaction.
    /// Returns `false` (and changes nothing) when the transaction was seen before.
    pub async fn ingest(&self, txn_id: &str, events: &[NewEvent<'_>]) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let inserted =
            sqlx::query("INSERT INTO seen_txns (txn_id, received_at) VALUES ($1, $2) ON CONFLICT (txn_id) DO NOTHING")
                .bind(txn_id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        for chunk in events.chunks(INSERT_CHUNK) {
            let mut sql = String::from("INSERT INTO inbox (room_id, event_id, event, received_at) VALUES ");
            for i in 0..chunk.len() {
                let n = i * 4;
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4));
            }
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for e in chunk {
                q = q.bind(e.room_id).bind(e.event_id).bind(e.json).bind(now);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The oldest waiting events, oldest first, leaving out every room whose head is backing off
    /// (a later event of that room must not overtake it).
    pub async fn inbox_claimable(&self, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
        Ok(sqlx::query_as::<_, InboxItem>(
            "SELECT seq, room_id, event_id, event, attempts FROM inbox \
             WHERE room_id NOT IN (SELECT room_id FROM inbox WHERE not_before > $1) \
             ORDER BY seq LIMIT $2",
        )
        .bind(now_ms())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Counts an attempt before it starts, so an event that crashes the process is not retried forever.
    pub async fn inbox_count_attempts(&self, seqs: &[i64]) -> Result<(), StoreError> {
        self.exec_for_seqs("UPDATE inbox SET attempts = attempts + 1 WHERE seq IN", seqs).await
    }

    /// The events were processed: they leave the inbox.
    pub async fn inbox_done(&self, seqs: &[i64]) -> Result<(), StoreError> {
        self.exec_for_seqs("DELETE FROM inbox WHERE seq IN", seqs).await
    }

    async fn exec_for_seqs(&self, statement: &str, seqs: &[i64]) -> Result<(), StoreError> {
        for chunk in seqs.chunks(INSERT_CHUNK) {
            let list = (1..=chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(",");
            let sql = format!("{statement} ({list})");
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for seq in chunk {
                q = q.bind(*seq);
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Keeps the event (and with it the rest of its room) waiting until `not_before_ms`.
    pub async fn inbox_retry_at(&self, seq: i64, not_before_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE inbox SET not_before = $1 WHERE seq = $2")
            .bind(not_before_ms)
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves an event that keeps failing out of the inbox, so its room can go on.
    pub async fn inbox_dead_letter(&self, seq: i64, error: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO dead_letters (seq, room_id, event_id, event, error, failed_at) \
             SELECT seq, room_id, event_id, event, $1, $2 FROM inbox WHERE seq = $3 \
             ON CONFLICT (seq) DO NOTHING",
        )
        .bind(error)
        .bind(now_ms())
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM inbox WHERE seq = $1").bind(seq).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn inbox_len(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM inbox").fetch_one(&self.pool).await?)
    }

    pub async fn dead_letter_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters").fetch_one(&self.pool).await?)
    }

    /// Forgets transaction ids older than `cutoff_ms`; the homeserver never retries that late.
    pub async fn prune_seen_txns(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM seen_txns WHERE received_at < $1")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
