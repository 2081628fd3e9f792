-- Which message each indexed edit replaced: a redacted edit no longer counts, and its original's
-- record must go back to the text before it. Pruned with the index's other bookkeeping.
CREATE TABLE index_edits (
    edit_event_id     TEXT PRIMARY KEY NOT NULL,
    original_event_id TEXT NOT NULL,
    room_id           TEXT NOT NULL,
    edited_at         BIGINT NOT NULL
);
CREATE INDEX index_edits_at ON index_edits (edited_at);
