-- The queue had two indexes over the same rows (the messages waiting): `msg_messages_queue` (priority, due_at),
-- which the worker reads, and `msg_messages_due` (due_at, state) for the backlog count and for finding a
-- person's waiting messages. Every message entered both when queued and left both when claimed: four b-tree
-- writes where two do. One index remains; it holds `state` so that the backlog count, which reads it one
-- priority at a time, needs no table row (SQLite does not count a partial index's condition as covered).
DROP INDEX msg_messages_due;
DROP INDEX msg_messages_queue;
CREATE INDEX msg_messages_queue ON msg_messages (priority, due_at, state) WHERE state IN ('queued', 'deferred');
