-- Messages waiting to be stored in (or removed from) the vector store. One job per event: a
-- later edit replaces the pending text, a redaction turns any pending job into a delete. A job
-- is removed only after Chroma accepted it; `rev` tells the indexer whether the job changed
-- while it was working on it.
CREATE TABLE index_jobs (
    seq        BIGSERIAL PRIMARY KEY,
    event_id   TEXT NOT NULL UNIQUE,
    room_id    TEXT NOT NULL,
    sender     TEXT NOT NULL,
    ts         BIGINT NOT NULL,
    thread_id  TEXT,
    body       TEXT NOT NULL,
    is_delete  BIGINT NOT NULL DEFAULT 0,
    rev        BIGINT NOT NULL DEFAULT 0,
    attempts   BIGINT NOT NULL DEFAULT 0,
    not_before BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX index_jobs_due ON index_jobs (not_before, seq);
