//! Forgetting the agent's own bookkeeping once it is old (the hourly clean-up; `[retention]`).

use super::{Store, StoreError};

/// Everything older than these (Unix ms; usage by day) goes.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    pub jobs_ms: i64,
    pub dead_letters_ms: i64,
    pub index_notes_ms: i64,
    pub task_messages_ms: i64,
    /// Days since the Unix epoch.
    pub usage_day: i64,
}

/// Table, time column and cutoff of each age-pruned table.
fn rules(c: &Cutoffs) -> [(&'static str, &'static str, i64); 7] {
    [
        ("dead_letters", "DELETE FROM dead_letters WHERE failed_at < $1", c.dead_letters_ms),
        ("index_redacted", "DELETE FROM index_redacted WHERE redacted_at < $1", c.index_notes_ms),
        ("index_failures", "DELETE FROM index_failures WHERE failed_at < $1", c.index_notes_ms),
        ("index_edits", "DELETE FROM index_edits WHERE edited_at < $1", c.index_notes_ms),
        ("task_messages", "DELETE FROM task_messages WHERE created_at < $1", c.task_messages_ms),
        ("usage", "DELETE FROM usage WHERE day < $1", c.usage_day),
        // A command is replayed within hours at most; its intent is kept as long as its job.
        ("planka_intents", "DELETE FROM planka_intents WHERE started_at < $1", c.jobs_ms),
    ]
}

impl Store {
    /// Deletes what is older than `cutoffs`; returns the rows removed per table.
    pub async fn prune(&self, cutoffs: &Cutoffs) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let mut removed = vec![("jobs", self.jobs_prune(cutoffs.jobs_ms).await?)];
        for (table, sql, cutoff) in rules(cutoffs) {
            removed.push((table, sqlx::query(sql).bind(cutoff).execute(&self.pool).await?.rows_affected()));
        }
        Ok(removed)
    }
}
