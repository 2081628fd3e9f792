-- A Planka write the agent is about to make for a command, recorded before the call: Planka's
-- writes are not idempotent, so a replay after a crash between Planka's answer and the agent's
-- record of it looks for what the first try made instead of writing again (hardening point 4).
-- `result` is the id of what was made (a comment's id), once known. Pruned with the jobs.
CREATE TABLE planka_intents (
    room_id          TEXT NOT NULL,
    trigger_event_id TEXT NOT NULL,
    started_at       BIGINT NOT NULL,
    result           TEXT,
    PRIMARY KEY (room_id, trigger_event_id)
);
CREATE INDEX planka_intents_result ON planka_intents (result);
CREATE INDEX planka_intents_started ON planka_intents (started_at);
-- Whether any room knows a card (a replay's search for the card its first try made).
CREATE INDEX task_cards_card ON task_cards (card_id);
