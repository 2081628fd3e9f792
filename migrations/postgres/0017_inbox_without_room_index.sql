-- No query reads the inbox by room (the dispatcher's claim scans it in seq order; only COUNT(*)
-- used this index), and keeping it cost every ingested event an insert at its room's place: a
-- page written per room per commit. Without it SQLite ingest took 1.6x the events/s
-- (benches/wrk.rs).
DROP INDEX IF EXISTS inbox_room_seq;
