-- Planka: which board a room is bound to, and which cards came from which room.
CREATE TABLE board_bindings (
    room_id    TEXT PRIMARY KEY,
    board_id   TEXT NOT NULL,
    list_id    TEXT NOT NULL,
    bound_by   TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX board_bindings_board ON board_bindings (board_id);

-- A card as one room knows it: its short reference (#ref_no, per room) and, when the agent
-- created it there, the command and the agent's reply.
CREATE TABLE task_cards (
    room_id          TEXT NOT NULL,
    ref_no           BIGINT NOT NULL,
    card_id          TEXT NOT NULL,
    trigger_event_id TEXT,
    reply_event_id   TEXT,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (room_id, ref_no),
    UNIQUE (room_id, card_id)
);

-- The agent's messages about a card, so a reply to one of them can leave the card out.
CREATE TABLE task_messages (
    room_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    card_id  TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
