//! Coding agents' state: token hashes, the ghosts' own messages and joined rooms, idempotent
//! sends, and the per-agent inbox (durable, ordered, bounded).

use super::{Store, StoreError, Text, now_ms};
use sqlx::{AssertSqlSafe, FromRow};

/// A stored token: its agent and the hash of its secret part.
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub agent: String,
    pub secret_hash: String,
}

/// A message waiting in an agent's inbox.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AgentInboxRow {
    /// The cursor: increases with every message stored.
    pub seq: i64,
    pub agent: String,
    pub room_id: String,
    pub event_id: String,
    pub sender: String,
    pub body: String,
    pub thread_id: Option<String>,
    pub reply_to: Option<String>,
    pub ts: i64,
}

/// What storing a token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStored {
    /// The new token is the agent's only one (any old one is gone).
    Stored,
    /// The agent has a token and no rotation was asked for: nothing changed.
    Exists,
}

/// A progress message of an agent.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AgentProgressRow {
    pub id: String,
    pub agent: String,
    pub room_id: String,
    pub event_id: String,
    pub title: String,
    pub text: String,
    /// `running`, `done` or `failed`.
    pub state: String,
}

const PROGRESS_COLUMNS: &str = "id, agent, room_id, event_id, title, text, state";

const INBOX_COLUMNS: &str = "seq, agent, room_id, event_id, sender, body, thread_id, reply_to, ts";

impl Store {
    /// Stores `agent`'s new token; with `rotate`, in the same transaction as removing its old one,
    /// so there is no moment with two (or none).
    pub async fn agent_token_store(
        &self,
        agent: &str,
        token_id: &str,
        secret_hash: &str,
        rotate: bool,
    ) -> Result<TokenStored, StoreError> {
        let mut tx = self.begin().await?;
        let existing: Option<String> = sqlx::query_scalar("SELECT token_id FROM agent_tokens WHERE agent = $1")
            .bind(agent)
            .fetch_optional(&mut *tx)
            .await?;
        if existing.is_some() && !rotate {
            return Ok(TokenStored::Exists);
        }
        sqlx::query("DELETE FROM agent_tokens WHERE agent = $1").bind(agent).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO agent_tokens (token_id, agent, secret_hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(token_id)
            .bind(agent)
            .bind(secret_hash)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(TokenStored::Stored)
    }

    pub async fn agent_token(&self, token_id: &str) -> Result<Option<StoredToken>, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT agent, secret_hash FROM agent_tokens WHERE token_id = $1")
                .bind(token_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(agent, secret_hash)| StoredToken { agent, secret_hash }))
    }

    /// Records a message `agent`'s ghost sent. Idempotent.
    pub async fn agent_message_remember(&self, agent: &str, room_id: &str, event_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_messages (event_id, agent, room_id, sent_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(agent)
        .bind(room_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The agent whose ghost sent `event_id` in `room_id`, if one did.
    pub async fn agent_message_owner(&self, room_id: &str, event_id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT agent FROM agent_messages WHERE event_id = $1 AND room_id = $2")
            .bind(event_id)
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The event `agent` sent for its `txn`, if it sent one.
    pub async fn agent_send(&self, agent: &str, txn: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT room_id, event_id FROM agent_sends WHERE agent = $1 AND txn = $2")
            .bind(agent)
            .bind(txn)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Records what `agent`'s `txn` sent; the first record wins.
    pub async fn agent_send_remember(
        &self,
        agent: &str,
        txn: &str,
        room_id: &str,
        event_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_sends (agent, txn, room_id, event_id, sent_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (agent, txn) DO NOTHING",
        )
        .bind(agent)
        .bind(txn)
        .bind(room_id)
        .bind(event_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records whether `agent`'s ghost is joined to `room_id`.
    pub async fn agent_room_set(&self, agent: &str, room_id: &str, joined: bool) -> Result<(), StoreError> {
        if joined {
            sqlx::query(
                "INSERT INTO agent_rooms (agent, room_id, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (agent, room_id) DO UPDATE SET updated_at = excluded.updated_at",
            )
            .bind(agent)
            .bind(room_id)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        } else {
            sqlx::query("DELETE FROM agent_rooms WHERE agent = $1 AND room_id = $2")
                .bind(agent)
                .bind(room_id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The agents whose ghosts are joined to `room_id`.
    pub async fn agents_in_room(&self, room_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT agent FROM agent_rooms WHERE room_id = $1 ORDER BY agent")
            .bind(room_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The rooms `agent`'s ghost is joined to.
    pub async fn agent_rooms(&self, agent: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT room_id FROM agent_rooms WHERE agent = $1 ORDER BY room_id")
            .bind(agent)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Appends one message to `row.agent`'s inbox (once per event: a replayed event is not stored
    /// twice) and drops the oldest beyond `max`, counting them. Returns whether it was new.
    pub async fn agent_inbox_append(&self, row: &AgentInboxRow, max: u64) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO agent_inbox (agent, room_id, event_id, sender, body, thread_id, reply_to, ts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (agent, event_id) DO NOTHING",
        )
        .bind(&row.agent)
        .bind(&row.room_id)
        .bind(&row.event_id)
        .bind(Text(&row.sender))
        .bind(Text(&row.body))
        .bind(&row.thread_id)
        .bind(&row.reply_to)
        .bind(row.ts)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if inserted {
            // The newest `max` stay; the rest go, oldest first.
            let pruned = sqlx::query(
                "DELETE FROM agent_inbox WHERE agent = $1 AND seq <= \
                 (SELECT seq FROM agent_inbox WHERE agent = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2)",
            )
            .bind(&row.agent)
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if pruned > 0 {
                sqlx::query(
                    "INSERT INTO agent_stats (agent, inbox_pruned) VALUES ($1, $2) \
                     ON CONFLICT (agent) DO UPDATE SET inbox_pruned = agent_stats.inbox_pruned + excluded.inbox_pruned",
                )
                .bind(&row.agent)
                .bind(pruned as i64)
                .execute(&mut *tx)
                .await?;
                tracing::warn!(agent = %row.agent, pruned, "agent inbox full: dropped its oldest messages");
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// `agent`'s inbox messages after cursor `after`, oldest first, at most `limit`.
    pub async fn agent_inbox_after(
        &self,
        agent: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AgentInboxRow>, StoreError> {
        let sql =
            format!("SELECT {INBOX_COLUMNS} FROM agent_inbox WHERE agent = $1 AND seq > $2 ORDER BY seq LIMIT $3");
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(agent).bind(after).bind(limit).fetch_all(&self.pool).await?)
    }

    /// How many of `agent`'s inbox messages were dropped because the inbox was full, ever.
    pub async fn agent_inbox_pruned(&self, agent: &str) -> Result<i64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar("SELECT inbox_pruned FROM agent_stats WHERE agent = $1")
            .bind(agent)
            .fetch_optional(&self.pool)
            .await?;
        Ok(n.unwrap_or(0))
    }

    /// Forgets ghost messages and txn records older than `before` (ms): replies to a month-old
    /// message no longer reach the inbox, and a month-old txn may be reused.
    pub async fn agent_prune_before(&self, before: i64) -> Result<u64, StoreError> {
        let a = sqlx::query("DELETE FROM agent_messages WHERE sent_at < $1").bind(before).execute(&self.pool).await?;
        let b = sqlx::query("DELETE FROM agent_sends WHERE sent_at < $1").bind(before).execute(&self.pool).await?;
        Ok(a.rows_affected() + b.rows_affected())
    }

    pub async fn agent_progress_insert(&self, row: &AgentProgressRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_progress (id, agent, room_id, event_id, title, text, state, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(&row.id)
        .bind(&row.agent)
        .bind(&row.room_id)
        .bind(&row.event_id)
        .bind(Text(&row.title))
        .bind(Text(&row.text))
        .bind(&row.state)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn agent_progress(&self, id: &str) -> Result<Option<AgentProgressRow>, StoreError> {
        let sql = format!("SELECT {PROGRESS_COLUMNS} FROM agent_progress WHERE id = $1");
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?)
    }

    /// Records the new text and state of a running progress message; `false` (and no change) when
    /// it is not running any more.
    pub async fn agent_progress_set(&self, id: &str, text: &str, state: &str) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE agent_progress SET text = $2, state = $3, updated_at = $4 WHERE id = $1 AND state = 'running'",
        )
        .bind(id)
        .bind(Text(text))
        .bind(state)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// The final state's edit landed.
    pub async fn agent_progress_finished(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE agent_progress SET finished = 1 WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Progress messages in a final state whose final edit has not landed (the agent stopped first).
    pub async fn agent_progress_owed(&self) -> Result<Vec<AgentProgressRow>, StoreError> {
        let sql = format!(
            "SELECT {PROGRESS_COLUMNS} FROM agent_progress WHERE finished = 0 AND state <> 'running' ORDER BY created_at"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql)).fetch_all(&self.pool).await?)
    }
}
