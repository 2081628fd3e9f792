-- Which message each indexed edit replaced: a redacted edit no longer counts, and its original's
-- record must go back to the text before it. Pruned with the index's other bookkeeping.
CREATE TABLE index_edits (
    edit_event_id     TEXT PRIMARY KEY NOT NULL,
    original_event_id TEXT NOT NULL,
    room_id           TEXT NOT NULL,
    edited_at         BIGINT NOT NULL
);
CREATE INDEX index_edits_at ON index_edits (edited_at);

-- A room the agent left keeps its settings, board and history checkpoint: `left_at` tells a
-- re-join to read only the history since then.
ALTER TABLE rooms ADD COLUMN left_at BIGINT;
ALTER TABLE backfills ADD COLUMN until_ts BIGINT;

-- The agent's messages about cards are pruned by age.
ALTER TABLE task_messages ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0;
UPDATE task_messages SET created_at = (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT;
CREATE INDEX task_messages_created ON task_messages (created_at);
CREATE INDEX dead_letters_failed ON dead_letters (failed_at);
CREATE INDEX index_redacted_at ON index_redacted (redacted_at);
CREATE INDEX index_failures_at ON index_failures (failed_at);
