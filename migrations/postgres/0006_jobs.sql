-- Slow work (answers, Planka and search calls, later browsing, crawls and coding agents), taken
-- off the room lane. A job is written in the same db transaction that removes its trigger event
-- from the inbox, so the work is either queued or still to be decided, never lost or doubled
-- (one job per trigger). Workers claim queued jobs (counting an attempt), and a job interrupted
-- by a crash is queued again at the next start.
CREATE TABLE jobs (
    id               BIGSERIAL PRIMARY KEY,
    kind             TEXT NOT NULL,
    room_id          TEXT NOT NULL,
    trigger_event_id TEXT NOT NULL UNIQUE,
    sender           TEXT NOT NULL,
    -- The trigger event's JSON as the homeserver sent it, and what the job is to do.
    trigger_event    TEXT NOT NULL,
    payload          TEXT NOT NULL,
    -- What !jobs shows.
    label            TEXT NOT NULL,
    -- queued | running | done | failed | cancelled
    state            TEXT NOT NULL DEFAULT 'queued',
    attempts         BIGINT NOT NULL DEFAULT 0,
    not_before       BIGINT NOT NULL DEFAULT 0,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    cancelled_by     TEXT,
    -- The job's status message (edited in place) and its result message (e.g. the answer),
    -- so a job run again after a crash edits them instead of posting new ones.
    status_event_id  TEXT,
    result_event_id  TEXT,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
);
CREATE INDEX jobs_state_kind ON jobs (state, kind, id);
CREATE INDEX jobs_room ON jobs (room_id, state);
