-- A delivery is a txn id together with a digest of its events: the same txn id with other events
-- (Synapse counts txn ids from 1 again after some restarts) is a new delivery, not a retry
-- (invariant 1). Rows remembered before this migration keep an empty digest.
CREATE TABLE seen_deliveries (
    txn_id      TEXT NOT NULL,
    digest      TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (txn_id, digest)
);
INSERT INTO seen_deliveries (txn_id, digest, received_at) SELECT txn_id, '', received_at FROM seen_txns;
DROP TABLE seen_txns;
