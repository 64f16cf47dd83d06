-- Replay-protection keys with an expiry move to an append-only log, found through an index the writer keeps in
-- memory (kizuna-store/src/sqlite/replay_keys.rs). Keyed by message id, every live event dirtied a random page of
-- `dedup`, which the WAL and the checkpointer each wrote again: ~11 µs of server CPU per event with live traffic.
-- The log grows at its end and is pruned at its front. Keys that never expire (imported sources) stay in `dedup`.
CREATE TABLE dedup_log (
    seq         INTEGER PRIMARY KEY,
    source_id   INTEGER NOT NULL,
    message_id  TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
INSERT INTO dedup_log (source_id, message_id, expires_at)
    SELECT source_id, message_id, expires_at FROM dedup WHERE expires_at IS NOT NULL ORDER BY expires_at;
DELETE FROM dedup WHERE expires_at IS NOT NULL;
DROP INDEX dedup_by_expiry;
