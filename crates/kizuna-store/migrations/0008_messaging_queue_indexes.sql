-- The worker's queue read and the backlog count read only an index. Measured with 45,000 messages waiting (a
-- flow enrolling 1M people): each worker round of 200 sorted all 45,000 (`ORDER BY priority, due_at` over the
-- due_at index), and the backlog count read every row to check its state.
DROP INDEX msg_messages_due;
CREATE INDEX msg_messages_due ON msg_messages (due_at, state) WHERE state IN ('queued', 'deferred');
CREATE INDEX msg_messages_queue ON msg_messages (priority, due_at) WHERE state IN ('queued', 'deferred');
