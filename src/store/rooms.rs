//! Per-room state: membership of the agent (kept across leaving and coming back), the one
//! encrypted-room notice, settings.

use super::{Store, StoreError, now_ms};

impl Store {
    /// Records that the agent is (or is no longer) joined to the room; joining clears `left_at`.
    pub async fn room_set_joined(&self, room_id: &str, joined: bool) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rooms (room_id, joined, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id) DO UPDATE SET joined = excluded.joined, updated_at = excluded.updated_at, \
             left_at = CASE WHEN excluded.joined = 1 THEN NULL ELSE rooms.left_at END",
        )
        .bind(room_id)
        .bind(i64::from(joined))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The agent left or was removed from the room at `at_ms` (the leave event's time): it is no
    /// longer joined, and a backfill still reading its history stops. Its settings, board binding
    /// and history checkpoint are kept for when it is back.
    pub async fn room_left(&self, room_id: &str, at_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO rooms (room_id, joined, left_at, updated_at) VALUES ($1, 0, $2, $2) \
             ON CONFLICT (room_id) DO UPDATE SET joined = 0, left_at = excluded.left_at, updated_at = excluded.updated_at",
        )
        .bind(room_id)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE backfills SET done = 1, updated_at = $1 WHERE room_id = $2 AND done = 0")
            .bind(now_ms())
            .bind(room_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// When the agent last left the room, if it did since it last joined.
    pub async fn room_left_at(&self, room_id: &str) -> Result<Option<i64>, StoreError> {
        let v: Option<Option<i64>> = sqlx::query_scalar("SELECT left_at FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v.flatten())
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

    /// Whether `notice` was sent in the room (each is said once per room).
    pub async fn room_notice_sent(&self, room_id: &str, notice: RoomNotice) -> Result<bool, StoreError> {
        let sql = format!("SELECT {} FROM rooms WHERE room_id = $1", notice.column());
        let v: Option<i64> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(room_id).fetch_optional(&self.pool).await?;
        Ok(v == Some(1))
    }

    /// Marks the room encrypted and `notice` sent (called after the notice went out).
    pub async fn mark_room_notice_sent(&self, room_id: &str, notice: RoomNotice) -> Result<(), StoreError> {
        let column = notice.column();
        let sql = format!(
            "INSERT INTO rooms (room_id, encrypted, {column}, updated_at) VALUES ($1, 1, 1, $2) \
             ON CONFLICT (room_id) DO UPDATE SET encrypted = 1, {column} = 1, updated_at = excluded.updated_at"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id).bind(now_ms()).execute(&self.pool).await?;
        Ok(())
    }
}

/// The notices said once per encrypted room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomNotice {
    /// Encrypted messages cannot be read.
    CannotRead,
    /// Planka notices are not posted here.
    NoPlankaNotices,
}

impl RoomNotice {
    fn column(self) -> &'static str {
        match self {
            Self::CannotRead => "encrypted_notice_sent",
            Self::NoPlankaNotices => "planka_encrypted_notice_sent",
        }
    }
}
