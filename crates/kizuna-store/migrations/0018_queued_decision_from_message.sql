-- Queueing a message wrote a decision row ('queued by flow …') that repeats the message row: its creation time
-- and its flow or campaign. A flow round queueing thousands of sends wrote a row and an index entry for each.
-- The decision log now makes that first entry from the message row, so the rows written before are removed: a
-- message's first decision row was always its queueing, written in the transaction that created the message.
DELETE FROM msg_decisions
WHERE state = 'queued'
  AND rowid IN (SELECT MIN(rowid) FROM msg_decisions GROUP BY message_id);
