-- Identity links keyed by an id the resolver hands out in increasing order (kizuna-identity's `StoredLink`),
-- instead of by the text of their identifiers. A new link is appended; a change finds its row by id. Keyed by
-- signature, every new link was written at a random place in a text index: 10% of the WAL under live traffic.
-- The existing rows keep their rowids as ids, so the resolver goes on from the highest.
CREATE TABLE identity_links_by_id (
    id          INTEGER PRIMARY KEY,
    identifiers TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    message_id  TEXT NOT NULL,
    trusted     INTEGER NOT NULL
);
INSERT INTO identity_links_by_id (id, identifiers, at_ms, message_id, trusted)
    SELECT rowid, identifiers, at_ms, message_id, trusted FROM identity_links ORDER BY rowid;
DROP TABLE identity_links;
ALTER TABLE identity_links_by_id RENAME TO identity_links;
