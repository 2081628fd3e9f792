-- Coding agents (`[agents.<name>]`): their tokens, what their ghosts sent, their inboxes.

-- One live bearer token per agent: `token_id` is public (it is in the token), only a hash of the
-- secret part is kept. Rotation replaces the row, so the old token stops working at once.
CREATE TABLE agent_tokens (
    token_id    TEXT PRIMARY KEY NOT NULL,
    agent       TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Messages a ghost sent, so replies to them and threads on them reach its agent's inbox.
CREATE TABLE agent_messages (
    event_id TEXT PRIMARY KEY NOT NULL,
    agent    TEXT NOT NULL,
    room_id  TEXT NOT NULL,
    sent_at  BIGINT NOT NULL
);
CREATE INDEX agent_messages_sent ON agent_messages (sent_at);

-- What an agent's `txn` sent: the same txn again answers with the same event.
CREATE TABLE agent_sends (
    agent    TEXT NOT NULL,
    txn      TEXT NOT NULL,
    room_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    sent_at  BIGINT NOT NULL,
    PRIMARY KEY (agent, txn)
);
CREATE INDEX agent_sends_sent ON agent_sends (sent_at);

-- Rooms each ghost is joined to, from its membership events.
CREATE TABLE agent_rooms (
    agent      TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (agent, room_id)
);
CREATE INDEX agent_rooms_room ON agent_rooms (room_id);

-- Each agent's inbox: messages from humans addressed to its ghost, in arrival order. `seq` is the
-- cursor. Bounded per agent (agent_api.inbox_max): the oldest are dropped and counted in
-- agent_stats.
CREATE TABLE agent_inbox (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    agent     TEXT NOT NULL,
    room_id   TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    sender    TEXT NOT NULL,
    body      TEXT NOT NULL,
    thread_id TEXT,
    reply_to  TEXT,
    ts        BIGINT NOT NULL,
    UNIQUE (agent, event_id)
);
CREATE INDEX agent_inbox_agent ON agent_inbox (agent, seq);

CREATE TABLE agent_stats (
    agent        TEXT PRIMARY KEY NOT NULL,
    inbox_pruned BIGINT NOT NULL DEFAULT 0
);

-- Progress messages of the agents (`POST /conclave/v1/progress`): one message edited in place.
-- `text`/`state` are what was asked last; `finished` is set once the final state's edit landed,
-- so a restart completes a final edit that was still owed.
CREATE TABLE agent_progress (
    id         TEXT PRIMARY KEY NOT NULL,
    agent      TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    title      TEXT NOT NULL,
    text       TEXT NOT NULL,
    state      TEXT NOT NULL,
    finished   BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX agent_progress_owed ON agent_progress (finished, state);
