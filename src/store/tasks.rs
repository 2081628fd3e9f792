//! Planka bindings and the card memory: which board a room is bound to, the short per-room
//! references (`#12`) of cards, and the agent's messages about each card.

use super::{Store, StoreError, now_ms};

/// A room's board, and the list new cards go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub room_id: String,
    pub board_id: String,
    pub list_id: String,
}

/// A card as one room knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCard {
    pub room_id: String,
    /// Shown as `#ref_no`; unique within the room only.
    pub ref_no: i64,
    pub card_id: String,
    /// The `!task` command that created the card, when the agent created it in this room.
    pub trigger_event_id: Option<String>,
    pub reply_event_id: Option<String>,
    pub created_at: i64,
}

type CardRow = (String, i64, String, Option<String>, Option<String>, i64);

fn card((room_id, ref_no, card_id, trigger_event_id, reply_event_id, created_at): CardRow) -> TaskCard {
    TaskCard { room_id, ref_no, card_id, trigger_event_id, reply_event_id, created_at }
}

/// A Planka write about to be made for a command (see migration 0015).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlankaIntent {
    /// An earlier try of the same command got as far as the call: Planka may have done it.
    pub earlier: bool,
    /// What the earlier try made, when it lived to record it.
    pub result: Option<String>,
}

const CARD_COLUMNS: &str = "room_id, ref_no, card_id, trigger_event_id, reply_event_id, created_at";

impl Store {
    pub async fn bind_board(&self, room_id: &str, board_id: &str, list_id: &str, by: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO board_bindings (room_id, board_id, list_id, bound_by, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (room_id) DO UPDATE SET board_id = excluded.board_id, list_id = excluded.list_id, \
             bound_by = excluded.bound_by, updated_at = excluded.updated_at",
        )
        .bind(room_id)
        .bind(board_id)
        .bind(list_id)
        .bind(by)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Moves `from`'s board binding to `to` (a room upgrade), unless `to` has one of its own;
    /// whether it moved.
    pub async fn move_board_binding(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        let moved = sqlx::query(
            "UPDATE board_bindings SET room_id = $2, updated_at = $3 WHERE room_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM board_bindings WHERE room_id = $2)",
        )
        .bind(from)
        .bind(to)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(moved.rows_affected() > 0)
    }

    pub async fn board_binding(&self, room_id: &str) -> Result<Option<Binding>, StoreError> {
        let row: Option<(String, String, String)> =
            sqlx::query_as("SELECT room_id, board_id, list_id FROM board_bindings WHERE room_id = $1")
                .bind(room_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(room_id, board_id, list_id)| Binding { room_id, board_id, list_id }))
    }

    /// The rooms that hear about changes on `board_id`.
    pub async fn rooms_bound_to(&self, board_id: &str) -> Result<Vec<String>, StoreError> {
        // Only rooms the agent is in: a room it left keeps its binding for when it is back.
        Ok(sqlx::query_scalar(
            "SELECT b.room_id FROM board_bindings b JOIN rooms r ON r.room_id = b.room_id \
             WHERE b.board_id = $1 AND r.joined = 1 ORDER BY b.room_id",
        )
        .bind(board_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The room's reference for `card_id`, given the next free one if the room has none yet.
    /// `trigger` is the command that created the card, when the agent did. Idempotent.
    pub async fn remember_card(&self, room_id: &str, card_id: &str, trigger: Option<&str>) -> Result<i64, StoreError> {
        if let Some(known) = self.card_by_id(room_id, card_id).await? {
            return Ok(known.ref_no);
        }
        // Commands of one room run one at a time, so MAX + 1 does not race with itself; the
        // primary key would refuse a duplicate anyway.
        sqlx::query(
            "INSERT INTO task_cards (room_id, ref_no, card_id, trigger_event_id, created_at) \
             SELECT $1, COALESCE(MAX(ref_no), 0) + 1, $2, $3, $4 FROM task_cards WHERE room_id = $1 \
             ON CONFLICT (room_id, card_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(card_id)
        .bind(trigger)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let known = self.card_by_id(room_id, card_id).await?;
        known.map(|c| c.ref_no).ok_or_else(|| StoreError::Write("card reference not stored".into()))
    }

    pub async fn card_by_ref(&self, room_id: &str, ref_no: i64) -> Result<Option<TaskCard>, StoreError> {
        let sql = format!("SELECT {CARD_COLUMNS} FROM task_cards WHERE room_id = $1 AND ref_no = $2");
        let row: Option<CardRow> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(room_id).bind(ref_no).fetch_optional(&self.pool).await?;
        Ok(row.map(card))
    }

    pub async fn card_by_id(&self, room_id: &str, card_id: &str) -> Result<Option<TaskCard>, StoreError> {
        let sql = format!("SELECT {CARD_COLUMNS} FROM task_cards WHERE room_id = $1 AND card_id = $2");
        let row: Option<CardRow> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(room_id).bind(card_id).fetch_optional(&self.pool).await?;
        Ok(row.map(card))
    }

    /// The card a `!task` command created, so a replayed command does not create a second one.
    pub async fn card_by_trigger(&self, room_id: &str, trigger: &str) -> Result<Option<TaskCard>, StoreError> {
        let sql = format!("SELECT {CARD_COLUMNS} FROM task_cards WHERE room_id = $1 AND trigger_event_id = $2");
        let row: Option<CardRow> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(room_id).bind(trigger).fetch_optional(&self.pool).await?;
        Ok(row.map(card))
    }

    /// The room's most recent references, newest first.
    pub async fn recent_cards(&self, room_id: &str, limit: i64) -> Result<Vec<TaskCard>, StoreError> {
        let sql = format!("SELECT {CARD_COLUMNS} FROM task_cards WHERE room_id = $1 ORDER BY ref_no DESC LIMIT $2");
        let rows: Vec<CardRow> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(room_id).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(card).collect())
    }

    /// Records one of the agent's messages about `card_id`; the first one after creating the card
    /// is its reply.
    pub async fn remember_card_message(&self, room_id: &str, event_id: &str, card_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO task_messages (room_id, event_id, card_id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room_id, event_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(event_id)
        .bind(card_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "UPDATE task_cards SET reply_event_id = $3 \
             WHERE room_id = $1 AND card_id = $2 AND reply_event_id IS NULL AND trigger_event_id IS NOT NULL",
        )
        .bind(room_id)
        .bind(card_id)
        .bind(event_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The card one of the agent's messages in `room_id` was about.
    pub async fn card_of_message(&self, room_id: &str, event_id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT card_id FROM task_messages WHERE room_id = $1 AND event_id = $2")
            .bind(room_id)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Records that `trigger` is about to write to Planka, and tells whether a try before did.
    pub async fn planka_intent(&self, room_id: &str, trigger: &str) -> Result<PlankaIntent, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO planka_intents (room_id, trigger_event_id, started_at) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id, trigger_event_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(trigger)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        let result: Option<String> =
            sqlx::query_scalar("SELECT result FROM planka_intents WHERE room_id = $1 AND trigger_event_id = $2")
                .bind(room_id)
                .bind(trigger)
                .fetch_one(&self.pool)
                .await?;
        Ok(PlankaIntent { earlier: inserted == 0, result })
    }

    /// Records what `trigger`'s Planka write made.
    pub async fn planka_intent_done(&self, room_id: &str, trigger: &str, result: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE planka_intents SET result = $3 WHERE room_id = $1 AND trigger_event_id = $2")
            .bind(room_id)
            .bind(trigger)
            .bind(result)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether some command already counts `result` as what it made.
    pub async fn planka_result_claimed(&self, result: &str) -> Result<bool, StoreError> {
        self.any_row("SELECT COUNT(*) FROM planka_intents WHERE result = $1", result).await
    }

    /// Whether any room knows `card_id`.
    pub async fn card_known(&self, card_id: &str) -> Result<bool, StoreError> {
        self.any_row("SELECT COUNT(*) FROM task_cards WHERE card_id = $1", card_id).await
    }

    /// Whether `count_sql` (a `COUNT(*)` with one parameter) counts any row for `value`.
    async fn any_row(&self, count_sql: &'static str, value: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(count_sql).bind(value).fetch_one(&self.pool).await?;
        Ok(n > 0)
    }
}
