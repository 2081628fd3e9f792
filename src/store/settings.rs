//! Per-room settings (model, system prompt, indexing) and the token-use ledger.

use super::{Store, StoreError, Text, now_ms};
use serde::{Deserialize, Serialize};

/// What admins set per room; `None` means the configured default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Whether the room's messages go into the vector store (`!index on|off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexing: Option<bool>,
}

/// Token totals over some period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// Days since the Unix epoch (UTC), the ledger's unit.
pub fn today() -> i64 {
    now_ms().div_euclid(86_400_000)
}

impl Store {
    pub async fn room_settings(&self, room_id: &str) -> Result<RoomSettings, StoreError> {
        if let Some(settings) = self.settings.lock().expect("not poisoned").get(room_id) {
            return Ok(settings.clone());
        }
        let text: Option<String> = sqlx::query_scalar("SELECT settings FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        // A row written by a newer or older version that does not parse is treated as defaults.
        let settings: RoomSettings = text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        // A write that raced this read has put the newer value in already: keep that one.
        Ok(self.settings.lock().expect("not poisoned").entry(room_id.to_owned()).or_insert(settings).clone())
    }

    pub async fn set_room_settings(&self, room_id: &str, settings: &RoomSettings) -> Result<(), StoreError> {
        let text = serde_json::to_string(settings).expect("settings serialize");
        sqlx::query(
            "INSERT INTO rooms (room_id, settings, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
        )
        .bind(room_id)
        .bind(text)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.settings.lock().expect("not poisoned").insert(room_id.to_owned(), settings.clone());
        Ok(())
    }

    /// Adds one answer's tokens to today's ledger.
    pub async fn record_usage(
        &self,
        room_id: &str,
        user_id: &str,
        model: &str,
        prompt_tokens: i64,
        completion_tokens: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO usage (day, room_id, user_id, model, requests, prompt_tokens, completion_tokens) \
             VALUES ($1, $2, $3, $4, 1, $5, $6) \
             ON CONFLICT (day, room_id, user_id, model) DO UPDATE SET requests = usage.requests + 1, \
             prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens, \
             completion_tokens = usage.completion_tokens + excluded.completion_tokens",
        )
        .bind(today())
        .bind(room_id)
        .bind(user_id)
        .bind(Text(model))
        .bind(prompt_tokens)
        .bind(completion_tokens)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A room's totals since `from_day` (inclusive).
    pub async fn room_usage(&self, room_id: &str, from_day: i64) -> Result<UsageTotals, StoreError> {
        self.usage_where("room_id", room_id, from_day).await
    }

    /// A user's totals, over all rooms, since `from_day` (inclusive).
    pub async fn user_usage(&self, user_id: &str, from_day: i64) -> Result<UsageTotals, StoreError> {
        self.usage_where("user_id", user_id, from_day).await
    }

    async fn usage_where(&self, column: &'static str, value: &str, from_day: i64) -> Result<UsageTotals, StoreError> {
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT), CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) FROM usage WHERE {column} = $1 AND day >= $2"
        );
        let (requests, prompt_tokens, completion_tokens): (i64, i64, i64) =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(value).bind(from_day).fetch_one(&self.pool).await?;
        Ok(UsageTotals { requests, prompt_tokens, completion_tokens })
    }
}
