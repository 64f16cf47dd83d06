-- Messaging follows merges and erasures from the store's own records (the `merges` and `erasures` tables), by
-- cursor, as flows do: a crash between a merge or an erasure and messaging hearing of it no longer leaves messages
-- under a profile that is gone.
CREATE TABLE msg_cursors (
    name      TEXT PRIMARY KEY,
    position  INTEGER NOT NULL
);
-- Merges start from now (until now messaging followed them as they happened); erasures from the beginning (until
-- now messaging did not follow them at all).
INSERT INTO msg_cursors (name, position) VALUES ('merges', (SELECT COALESCE(MAX(id), 0) FROM merges));
INSERT INTO msg_cursors (name, position) VALUES ('erasures', 0);

-- An erased person's messages stay as anonymous rows, so that sent, opened, clicked and earned figures of a
-- template or flow do not change: profile, address, context and reasons are cleared and `erased_at` is set, which
-- also stops an outcome that arrives later (a send in flight) from writing the address back.
ALTER TABLE msg_messages ADD COLUMN erased_at INTEGER;
-- Finding a person's messages at erasure: sent ones are in `msg_messages_profile`, queued ones in
-- `msg_messages_due`, those in flight in `msg_messages_sending`; this covers the rest (suppressed, dropped, failed
-- and bounced without being sent). The queue's path (queued → sending → sent) never writes it.
CREATE INDEX msg_messages_unsent_profile ON msg_messages (profile_id)
    WHERE sent_at IS NULL AND state NOT IN ('queued', 'deferred', 'sending');

-- The same for attributed orders, whose profile could not be cleared while the column was NOT NULL.
CREATE TABLE msg_attributions_v15 (
    order_id    TEXT PRIMARY KEY,
    profile_id  INTEGER,
    message_id  TEXT NOT NULL,
    touch       TEXT NOT NULL,
    revenue     REAL NOT NULL,
    currency    TEXT,
    at          INTEGER NOT NULL
);
INSERT INTO msg_attributions_v15 (order_id, profile_id, message_id, touch, revenue, currency, at)
    SELECT order_id, profile_id, message_id, touch, revenue, currency, at FROM msg_attributions;
DROP TABLE msg_attributions;
ALTER TABLE msg_attributions_v15 RENAME TO msg_attributions;
CREATE INDEX msg_attributions_message ON msg_attributions (message_id);
-- Merges move a person's attributed orders.
CREATE INDEX msg_attributions_profile ON msg_attributions (profile_id);
