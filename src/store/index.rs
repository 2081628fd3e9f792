//! The durable indexing queue: messages to store in the vector store, and redacted ones to remove
//! from it. The indexer takes due jobs in order and removes them only after Chroma accepted them,
//! so a crash or an outage of the embedder or Chroma loses nothing.

use super::{Store, StoreError, Text, now_ms};
use sqlx::AnyConnection;

/// What to do with one event's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOp {
    /// Store (or replace) the record with this text.
    Upsert { sender: String, ts: i64, thread_id: Option<String>, body: String },
    /// Remove the record (the event was redacted).
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexJob {
    pub event_id: String,
    pub room_id: String,
    pub op: IndexOp,
    /// Changes whenever the job is replaced; [`Store::index_done`] removes only the version it saw.
    pub rev: i64,
    pub attempts: i64,
}

type JobRow = (String, String, String, i64, Option<String>, String, i64, i64, i64);

fn job((event_id, room_id, sender, ts, thread_id, body, is_delete, rev, attempts): JobRow) -> IndexJob {
    let op = if is_delete != 0 { IndexOp::Delete } else { IndexOp::Upsert { sender, ts, thread_id, body } };
    IndexJob { event_id, room_id, op, rev, attempts }
}

/// A change to the queue, as an event handler decides it. The dispatcher writes a batch of them
/// in the same database transaction that removes their events from the inbox, so a change is
/// queued exactly when its event counts as handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexWrite {
    /// Store `body` as the record of `event_id`. An edit of a message still waiting replaces its
    /// text (keeping its sender and time); a pending delete is never undone.
    Upsert { event_id: String, room_id: String, sender: String, ts: i64, thread_id: Option<String>, body: String },
    /// Remove the record of `event_id`, replacing any pending upsert of it (a redacted message
    /// must not be stored after all).
    Delete { event_id: String, room_id: String },
}

impl IndexWrite {
    pub fn upsert(event_id: &str, room_id: &str, sender: &str, ts: i64, thread_id: Option<&str>, body: &str) -> Self {
        Self::Upsert {
            event_id: event_id.into(),
            room_id: room_id.into(),
            sender: sender.into(),
            ts,
            thread_id: thread_id.map(Into::into),
            body: body.into(),
        }
    }

    pub fn delete(event_id: &str, room_id: &str) -> Self {
        Self::Delete { event_id: event_id.into(), room_id: room_id.into() }
    }
}

/// Remembers, inside the caller's transaction, that `edit` replaced `original`'s text.
pub(super) async fn remember_edit(
    conn: &mut AnyConnection,
    edit: &str,
    original: &str,
    room_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO index_edits (edit_event_id, original_event_id, room_id, edited_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (edit_event_id) DO NOTHING",
    )
    .bind(Text(edit))
    .bind(Text(original))
    .bind(Text(room_id))
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// The message `edit` replaced the text of, if it is an indexed edit.
    pub async fn edit_original(&self, edit: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT original_event_id FROM index_edits WHERE edit_event_id = $1")
            .bind(Text(edit))
            .fetch_optional(&self.pool)
            .await?)
    }
}

/// Applies `write` inside the caller's transaction.
pub(super) async fn apply_write(conn: &mut AnyConnection, write: &IndexWrite) -> Result<(), StoreError> {
    match write {
        IndexWrite::Upsert { event_id, room_id, sender, ts, thread_id, body } => {
            sqlx::query(
                "INSERT INTO index_jobs (event_id, room_id, sender, ts, thread_id, body) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (event_id) DO UPDATE SET body = excluded.body, rev = index_jobs.rev + 1, attempts = 0, \
                 not_before = 0 WHERE index_jobs.is_delete = 0",
            )
            .bind(Text(event_id))
            .bind(Text(room_id))
            .bind(Text(sender))
            .bind(ts)
            .bind(thread_id.as_deref().map(Text))
            .bind(Text(body))
            .execute(&mut *conn)
            .await?;
        }
        IndexWrite::Delete { event_id, room_id } => {
            // Remembered, so a backfill that read the message before the redaction cannot requeue it.
            sqlx::query(
                "INSERT INTO index_redacted (event_id, room_id, redacted_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(Text(event_id))
            .bind(Text(room_id))
            .bind(now_ms())
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO index_jobs (event_id, room_id, sender, ts, body, is_delete) VALUES ($1, $2, '', 0, '', 1) \
                 ON CONFLICT (event_id) DO UPDATE SET is_delete = 1, body = '', rev = index_jobs.rev + 1, \
                 attempts = 0, not_before = 0",
            )
            .bind(Text(event_id))
            .bind(Text(room_id))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

impl Store {
    /// Queues `writes`, in order, in one transaction (for writes that come from no inbox event,
    /// such as the agent's own answers; handlers' writes go through [`Store::inbox_done`]).
    pub async fn index_write(&self, writes: &[IndexWrite]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for write in writes {
            apply_write(&mut tx, write).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` jobs whose back-off has passed, oldest first.
    pub async fn index_due(&self, limit: i64) -> Result<Vec<IndexJob>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as(
            "SELECT event_id, room_id, sender, ts, thread_id, body, is_delete, rev, attempts FROM index_jobs \
             WHERE not_before <= $1 ORDER BY seq LIMIT $2",
        )
        .bind(now_ms())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(job).collect())
    }

    /// Removes the jobs Chroma accepted, unless they were replaced meanwhile (then the newer
    /// version stays queued).
    pub async fn index_done(&self, jobs: &[IndexJob]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for j in jobs {
            sqlx::query("DELETE FROM index_jobs WHERE event_id = $1 AND rev = $2")
                .bind(&j.event_id)
                .bind(j.rev)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Puts failed jobs back until `not_before_ms`, counting the attempt.
    pub async fn index_retry_at(&self, jobs: &[IndexJob], not_before_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for j in jobs {
            sqlx::query(
                "UPDATE index_jobs SET attempts = attempts + 1, not_before = $1 WHERE event_id = $2 AND rev = $3",
            )
            .bind(not_before_ms)
            .bind(&j.event_id)
            .bind(j.rev)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Gives up on a job that was refused too often: it leaves the queue for `index_failures`.
    pub async fn index_fail(&self, job: &IndexJob, error: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let removed = sqlx::query("DELETE FROM index_jobs WHERE event_id = $1 AND rev = $2")
            .bind(Text(&job.event_id))
            .bind(job.rev)
            .execute(&mut *tx)
            .await?;
        // Replaced meanwhile (edited, redacted): the new version gets its own chances.
        if removed.rows_affected() > 0 {
            sqlx::query(
                "INSERT INTO index_failures (event_id, room_id, error, failed_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (event_id) DO UPDATE SET error = excluded.error, failed_at = excluded.failed_at",
            )
            .bind(Text(&job.event_id))
            .bind(Text(&job.room_id))
            .bind(Text(error))
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Messages of `room_id` given up on (see [`Store::index_fail`]).
    pub async fn index_failed(&self, room_id: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM index_failures WHERE room_id = $1")
            .bind(Text(room_id))
            .fetch_one(&self.pool)
            .await?)
    }

    /// Jobs waiting, due or backing off: of one room, or of all.
    pub async fn index_backlog(&self, room_id: Option<&str>) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM index_jobs WHERE $1 IS NULL OR room_id = $1")
            .bind(room_id.map(Text))
            .fetch_one(&self.pool)
            .await?)
    }
}
