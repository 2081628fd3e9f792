-- Token use per day (days since the Unix epoch, UTC), room, user and model.
CREATE TABLE usage (
    day               BIGINT NOT NULL,
    room_id           TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    model             TEXT NOT NULL,
    requests          BIGINT NOT NULL DEFAULT 0,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, room_id, user_id, model)
);
CREATE INDEX usage_user ON usage (user_id, day);
