-- Whether the room was told, once, that Planka notices are not posted there because it turned on
-- end-to-end encryption (the agent cannot encrypt yet, and will not post plaintext into it).
ALTER TABLE rooms ADD COLUMN planka_encrypted_notice_sent BIGINT NOT NULL DEFAULT 0;
