//! The durable job queue: slow work decided in a room lane and done by workers (invariant 9).
//!
//! A job is created with its trigger's removal from the inbox ([`Store::inbox_done`]), at most one
//! per trigger. Workers claim jobs one at a time (counting an attempt), record the messages the job
//! posted, and finish it; a cancel is a flag the workers act on.

use super::{Store, StoreError, Text, now_ms};
use sqlx::{AnyConnection, FromRow};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "done" => Self::Done,
            "cancelled" => Self::Cancelled,
            _ => Self::Failed,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

/// A job as a room lane decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub kind: String,
    pub room_id: String,
    pub trigger_event_id: String,
    pub sender: String,
    /// The trigger event's JSON, as the homeserver sent it.
    pub trigger_event: String,
    /// What to do, as the job's kind reads it (JSON).
    pub payload: String,
    /// A short description for `!jobs`.
    pub label: String,
}

/// Which job a cancel is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelTarget {
    Id(i64),
    /// The job a trigger event started (its redaction cancels it).
    Trigger(String),
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub room_id: String,
    pub trigger_event_id: String,
    pub sender: String,
    pub trigger_event: String,
    pub payload: String,
    pub label: String,
    pub state: JobState,
    /// Claims so far, this one included.
    pub attempts: i64,
    pub not_before: i64,
    pub cancel_requested: bool,
    pub cancelled_by: Option<String>,
    pub status_event_id: Option<String>,
    pub result_event_id: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
}

#[derive(FromRow)]
struct Row {
    id: i64,
    kind: String,
    room_id: String,
    trigger_event_id: String,
    sender: String,
    trigger_event: String,
    payload: String,
    label: String,
    state: String,
    attempts: i64,
    not_before: i64,
    cancel_requested: i64,
    cancelled_by: Option<String>,
    status_event_id: Option<String>,
    result_event_id: Option<String>,
    error: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
}

impl From<Row> for Job {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            kind: r.kind,
            room_id: r.room_id,
            trigger_event_id: r.trigger_event_id,
            sender: r.sender,
            trigger_event: r.trigger_event,
            payload: r.payload,
            label: r.label,
            state: JobState::parse(&r.state),
            attempts: r.attempts,
            not_before: r.not_before,
            cancel_requested: r.cancel_requested != 0,
            cancelled_by: r.cancelled_by,
            status_event_id: r.status_event_id,
            result_event_id: r.result_event_id,
            error: r.error,
            created_at: r.created_at,
            started_at: r.started_at,
        }
    }
}

const COLUMNS: &str = "id, kind, room_id, trigger_event_id, sender, trigger_event, payload, label, state, attempts, \
     not_before, cancel_requested, cancelled_by, status_event_id, result_event_id, error, created_at, started_at";

/// Queued or running.
const ACTIVE: &str = "state IN ('queued', 'running')";

/// Adds `job` inside the caller's transaction; a trigger that has a job already (a replayed
/// event) adds nothing.
pub(super) async fn insert(conn: &mut AnyConnection, job: &NewJob) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO jobs (kind, room_id, trigger_event_id, sender, trigger_event, payload, label, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (trigger_event_id) DO NOTHING",
    )
    .bind(&job.kind)
    .bind(&job.room_id)
    .bind(&job.trigger_event_id)
    .bind(Text(&job.sender))
    .bind(Text(&job.trigger_event))
    .bind(Text(&job.payload))
    .bind(Text(&job.label))
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Asks for the job to be cancelled, inside the caller's transaction; a job already over is left
/// as it is.
pub(super) async fn request_cancel(
    conn: &mut AnyConnection,
    target: &CancelTarget,
    by: &str,
) -> Result<(), StoreError> {
    let query = match target {
        CancelTarget::Id(id) => sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, cancelled_by = $1 WHERE id = $2 AND state IN ('queued', 'running')",
        )
        .bind(by)
        .bind(*id),
        CancelTarget::Trigger(event_id) => sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, cancelled_by = $1 \
             WHERE trigger_event_id = $2 AND state IN ('queued', 'running')",
        )
        .bind(by)
        .bind(event_id.as_str()),
    };
    query.execute(&mut *conn).await?;
    Ok(())
}

impl Store {
    /// Jobs not yet over in `room`, and those `sender` asked for anywhere.
    pub async fn jobs_active_counts(&self, room_id: &str, sender: &str) -> Result<(i64, i64), StoreError> {
        let sql = format!(
            "SELECT COALESCE(SUM(CASE WHEN room_id = $1 THEN 1 ELSE 0 END), 0), \
                    COALESCE(SUM(CASE WHEN sender = $2 THEN 1 ELSE 0 END), 0) FROM jobs WHERE {ACTIVE}"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(room_id).bind(sender).fetch_one(&self.pool).await?)
    }

    /// Jobs not yet over, counted by kind and state (`queued`, `running`), for `!status` and
    /// the metrics.
    pub async fn jobs_depth(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let sql =
            format!("SELECT kind, state, COUNT(*) FROM jobs WHERE {ACTIVE} GROUP BY kind, state ORDER BY kind, state");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?)
    }

    /// After a crash: jobs that were running are queued again (their attempt stays counted).
    pub async fn jobs_recover(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query("UPDATE jobs SET state = 'queued' WHERE state = 'running'")
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Queued jobs of `kind`, oldest first, at most `limit`.
    pub async fn jobs_queued(&self, kind: &str, limit: i64) -> Result<Vec<Job>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE state = 'queued' AND kind = $1 ORDER BY id LIMIT $2");
        let rows: Vec<Row> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(kind).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(Job::from).collect())
    }

    /// Starts a queued job: counts the attempt and returns it; `None` when it is no longer queued.
    pub async fn job_claim(&self, id: i64) -> Result<Option<Job>, StoreError> {
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = $1 \
             WHERE id = $2 AND state = 'queued' RETURNING {COLUMNS}"
        );
        let row: Option<Row> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now_ms()).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(Job::from))
    }

    pub async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(Job::from))
    }

    /// Remembers the job's status message.
    pub async fn job_set_status_event(&self, id: i64, event_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET status_event_id = $1 WHERE id = $2")
            .bind(event_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Remembers the job's result message (e.g. the answer being streamed).
    pub async fn job_set_result_event(&self, id: i64, event_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET result_event_id = $1 WHERE id = $2")
            .bind(event_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The job is over.
    pub async fn job_finish(&self, id: i64, state: JobState, error: Option<&str>) -> Result<(), StoreError> {
        debug_assert!(state.is_final());
        sqlx::query("UPDATE jobs SET state = $1, error = $2, finished_at = $3 WHERE id = $4")
            .bind(state.as_str())
            .bind(error.map(Text))
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The job failed for a reason that may pass: it is queued again, not before `not_before_ms`.
    pub async fn job_retry_at(&self, id: i64, not_before_ms: i64, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET state = 'queued', not_before = $1, error = $2 WHERE id = $3 AND state = 'running'",
        )
        .bind(not_before_ms)
        .bind(Text(error))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A running job stopped by a graceful shutdown goes back to the queue; the attempt it was in
    /// does not count.
    pub async fn job_requeue(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET state = 'queued', attempts = attempts - 1 WHERE id = $1 AND state = 'running'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A queued job whose cancel was asked for is cancelled; `false` when it started meanwhile.
    pub async fn job_cancel_queued(&self, id: i64) -> Result<bool, StoreError> {
        Ok(sqlx::query("UPDATE jobs SET state = 'cancelled', finished_at = $1 WHERE id = $2 AND state = 'queued'")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1)
    }

    /// Jobs not yet over whose cancel was asked for.
    pub async fn jobs_cancel_requested(&self) -> Result<Vec<Job>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE cancel_requested = 1 AND {ACTIVE} ORDER BY id");
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(Job::from).collect())
    }

    /// `room`'s jobs not yet over, oldest first.
    pub async fn jobs_in_room(&self, room_id: &str) -> Result<Vec<Job>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE room_id = $1 AND {ACTIVE} ORDER BY id");
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(room_id).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(Job::from).collect())
    }

    /// The job of `room` that `event_id` started or that posted it (its status or result).
    pub async fn job_by_event(&self, room_id: &str, event_id: &str) -> Result<Option<Job>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE room_id = $1 \
             AND (trigger_event_id = $2 OR status_event_id = $2 OR result_event_id = $2) ORDER BY id DESC LIMIT 1"
        );
        let row: Option<Row> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(room_id).bind(event_id).fetch_optional(&self.pool).await?;
        Ok(row.map(Job::from))
    }

    /// `sender`'s newest job in `room` that is not over.
    pub async fn job_latest_of(&self, room_id: &str, sender: &str) -> Result<Option<Job>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE room_id = $1 AND sender = $2 AND {ACTIVE} ORDER BY id DESC LIMIT 1"
        );
        let row: Option<Row> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(room_id).bind(sender).fetch_optional(&self.pool).await?;
        Ok(row.map(Job::from))
    }

    /// Forgets jobs that ended before `cutoff_ms`.
    pub async fn jobs_prune(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND finished_at < $1")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
