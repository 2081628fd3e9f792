//! Backfills: reading a room's history (newest first) into the indexing queue, one page at a
//! time. A page's messages and the token of the next page are committed together, so a restart
//! resumes at the page it had reached.

use super::{Store, StoreError, Text, now_ms};

/// One room's backfill, as far as it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backfill {
    pub room_id: String,
    /// Where the next page starts; `None` before the first page.
    pub next_token: Option<String>,
    /// Events to read at most.
    pub max_events: i64,
    /// Events read so far (of any kind).
    pub fetched: i64,
    /// Messages queued for indexing so far.
    pub queued: i64,
    pub done: bool,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
    pub attempts: i64,
    /// Only events from this time on (Unix ms): a re-join reads what it missed, not all again.
    pub until_ts: Option<i64>,
}

/// A message read from history, to be indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryMessage {
    pub event_id: String,
    pub sender: String,
    pub ts: i64,
    pub thread_id: Option<String>,
    pub body: String,
}

/// What one page changes.
#[derive(Debug)]
pub struct BackfillPage<'a> {
    pub messages: &'a [HistoryMessage],
    /// Events the page held (messages or not).
    pub events: i64,
    pub next_token: Option<&'a str>,
    /// The history ends here, or `max_events` is reached.
    pub done: bool,
}

type BackfillRow = (String, Option<String>, i64, i64, i64, i64, Option<String>, i64, Option<i64>);

const COLUMNS: &str = "room_id, next_token, max_events, fetched, queued, done, error, attempts, until_ts";

fn backfill(
    (room_id, next_token, max_events, fetched, queued, done, error, attempts, until_ts): BackfillRow,
) -> Backfill {
    Backfill { room_id, next_token, max_events, fetched, queued, done: done != 0, error, attempts, until_ts }
}

impl Store {
    /// Starts reading `room_id`'s history, up to `max_events` events. With `restart`, a finished
    /// or running backfill starts again from the newest event; without, an existing one is kept
    /// (a replayed join must not start over). Returns whether a backfill was started.
    pub async fn backfill_start(&self, room_id: &str, max_events: i64, restart: bool) -> Result<bool, StoreError> {
        let on_conflict = if restart {
            "DO UPDATE SET next_token = NULL, max_events = excluded.max_events, fetched = 0, queued = 0, done = 0, \
             error = NULL, attempts = 0, not_before = 0, until_ts = NULL, updated_at = excluded.updated_at"
        } else {
            "DO NOTHING"
        };
        let sql = format!(
            "INSERT INTO backfills (room_id, max_events, updated_at) VALUES ($1, $2, $3) ON CONFLICT (room_id) {on_conflict}"
        );
        let result = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room_id)
            .bind(max_events)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Reads `room_id`'s history again from the newest event back to `until_ts` (the events the
    /// agent missed while it was out of the room), whatever was read before.
    pub async fn backfill_since(&self, room_id: &str, max_events: i64, until_ts: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO backfills (room_id, max_events, until_ts, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room_id) DO UPDATE SET next_token = NULL, max_events = excluded.max_events, fetched = 0, \
             queued = 0, done = 0, error = NULL, attempts = 0, not_before = 0, until_ts = excluded.until_ts, \
             updated_at = excluded.updated_at",
        )
        .bind(room_id)
        .bind(max_events)
        .bind(until_ts)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The backfill of one room, running or finished.
    pub async fn backfill(&self, room_id: &str) -> Result<Option<Backfill>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM backfills WHERE room_id = $1");
        let row: Option<BackfillRow> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(room_id).fetch_optional(&self.pool).await?;
        Ok(row.map(backfill))
    }

    /// The unfinished backfill that waited longest and is not backing off.
    pub async fn backfill_due(&self) -> Result<Option<Backfill>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM backfills WHERE done = 0 AND not_before <= $1 ORDER BY updated_at LIMIT 1");
        let row: Option<BackfillRow> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now_ms()).fetch_optional(&self.pool).await?;
        Ok(row.map(backfill))
    }

    /// Queues one page's messages and moves the backfill past the page, atomically. A message
    /// already queued keeps its job (the live path saw it, or a newer edit did: history comes
    /// newest first); a message known to be redacted is not queued.
    pub async fn backfill_page(&self, room_id: &str, page: &BackfillPage<'_>) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for m in page.messages {
            sqlx::query(
                "INSERT INTO index_jobs (event_id, room_id, sender, ts, thread_id, body) \
                 SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM index_redacted WHERE event_id = $1) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(Text(&m.event_id))
            .bind(room_id)
            .bind(Text(&m.sender))
            .bind(m.ts)
            .bind(m.thread_id.as_deref().map(Text))
            .bind(Text(&m.body))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE backfills SET next_token = $1, fetched = fetched + $2, queued = queued + $3, done = $4, \
             error = NULL, attempts = 0, not_before = 0, updated_at = $5 WHERE room_id = $6",
        )
        .bind(page.next_token.map(Text))
        .bind(page.events)
        .bind(page.messages.len() as i64)
        .bind(i64::from(page.done))
        .bind(now_ms())
        .bind(room_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The page could not be read for now: try again at `not_before_ms`.
    pub async fn backfill_retry_at(&self, room_id: &str, not_before_ms: i64, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE backfills SET attempts = attempts + 1, not_before = $1, error = $2, updated_at = $3 WHERE room_id = $4",
        )
        .bind(not_before_ms)
        .bind(Text(error))
        .bind(now_ms())
        .bind(room_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends a backfill early, saying why.
    pub async fn backfill_stop(&self, room_id: &str, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE backfills SET done = 1, error = $1, updated_at = $2 WHERE room_id = $3")
            .bind(Text(error))
            .bind(now_ms())
            .bind(room_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
