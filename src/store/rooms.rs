//! Per-room state: membership of the agent, the one encrypted-room notice, settings.

use super::{Store, StoreError, now_ms};

impl Store {
    /// Records that the agent is (or is no longer) joined to the room.
    pub async fn room_set_joined(&self, room_id: &str, joined: bool) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rooms (room_id, joined, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id) DO UPDATE SET joined = excluded.joined, updated_at = excluded.updated_at",
        )
        .bind(room_id)
        .bind(i64::from(joined))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Drops everything known about a room the agent left or was removed from.
    pub async fn room_forget(&self, room_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM rooms WHERE room_id = $1").bind(room_id).execute(&self.pool).await?;
        self.settings.lock().expect("not poisoned").remove(room_id);
        // A room the agent left hears nothing more from Planka.
        sqlx::query("DELETE FROM board_bindings WHERE room_id = $1").bind(room_id).execute(&self.pool).await?;
        // Nor is its history read any further.
        sqlx::query("DELETE FROM backfills WHERE room_id = $1").bind(room_id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn room_is_joined(&self, room_id: &str) -> Result<bool, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT joined FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v == Some(1))
    }

    pub async fn joined_rooms(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT room_id FROM rooms WHERE joined = 1 ORDER BY room_id")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn encrypted_notice_sent(&self, room_id: &str) -> Result<bool, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT encrypted_notice_sent FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v == Some(1))
    }

    /// Marks the room encrypted and its notice sent (called after the notice went out).
    pub async fn mark_encrypted_notice_sent(&self, room_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rooms (room_id, encrypted, encrypted_notice_sent, updated_at) VALUES ($1, 1, 1, $2) \
             ON CONFLICT (room_id) DO UPDATE SET encrypted = 1, encrypted_notice_sent = 1, updated_at = excluded.updated_at",
        )
        .bind(room_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
