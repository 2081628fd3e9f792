-- Rooms whose history is being read into the index, newest first. `next_token` is where the
-- next page starts (NULL: at the newest event). Each page's jobs and the new token are written in
-- one transaction, so a restart resumes where it stopped instead of starting over.
CREATE TABLE backfills (
    room_id    TEXT PRIMARY KEY NOT NULL,
    next_token TEXT,
    max_events BIGINT NOT NULL,
    fetched    BIGINT NOT NULL DEFAULT 0,
    queued     BIGINT NOT NULL DEFAULT 0,
    done       BIGINT NOT NULL DEFAULT 0,
    error      TEXT,
    attempts   BIGINT NOT NULL DEFAULT 0,
    not_before BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);

-- Events known to be redacted. A page of history read just before a redaction arrived must not
-- bring the message back into the index after its record was deleted.
CREATE TABLE index_redacted (
    event_id    TEXT PRIMARY KEY NOT NULL,
    room_id     TEXT NOT NULL,
    redacted_at BIGINT NOT NULL
);

-- Messages Chroma or the embedder refused again and again (not an outage: those wait). Kept for
-- `!index status` and an operator; the text is not kept.
CREATE TABLE index_failures (
    event_id  TEXT PRIMARY KEY NOT NULL,
    room_id   TEXT NOT NULL,
    error     TEXT NOT NULL,
    failed_at BIGINT NOT NULL
);
CREATE INDEX index_failures_room ON index_failures (room_id);
CREATE INDEX index_jobs_room ON index_jobs (room_id);
