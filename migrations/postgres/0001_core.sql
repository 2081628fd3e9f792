-- Transactions already acknowledged: a retried txn id has no second effect.
CREATE TABLE seen_txns (
    txn_id      TEXT PRIMARY KEY NOT NULL,
    received_at BIGINT NOT NULL
);

-- Durable inbox: events are appended in the same db transaction that remembers the txn id,
-- and deleted only after they were processed.
CREATE TABLE inbox (
    seq         BIGSERIAL PRIMARY KEY,
    room_id     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event       TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    not_before  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX inbox_room_seq ON inbox (room_id, seq);

-- Events that failed dispatch.max_attempts times, kept for an operator to look at.
CREATE TABLE dead_letters (
    seq       BIGINT PRIMARY KEY NOT NULL,
    room_id   TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    event     TEXT NOT NULL,
    error     TEXT NOT NULL,
    failed_at BIGINT NOT NULL
);

-- Per-room state the agent needs.
CREATE TABLE rooms (
    room_id               TEXT PRIMARY KEY NOT NULL,
    joined                BIGINT NOT NULL DEFAULT 0,
    encrypted             BIGINT NOT NULL DEFAULT 0,
    encrypted_notice_sent BIGINT NOT NULL DEFAULT 0,
    settings              TEXT NOT NULL DEFAULT '{}',
    updated_at            BIGINT NOT NULL
);

-- Finds rooms whose head event is backing off after a failure.
CREATE INDEX inbox_not_before ON inbox (not_before) WHERE not_before > 0;
