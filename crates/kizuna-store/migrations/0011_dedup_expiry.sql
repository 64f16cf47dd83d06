-- Pruning expired replay-protection keys walked the whole table (millions of rows at 100k customers) inside the
-- writer's transaction, stalling ingestion and filling the writer's page cache. Keys expire in the order they
-- were written, so this index grows at its right edge and pruning reads only the expired front of it.
-- Keys that never expire (imported sources) are left out.
CREATE INDEX dedup_by_expiry ON dedup(expires_at) WHERE expires_at IS NOT NULL;
