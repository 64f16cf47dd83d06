-- Current membership is a snapshot of the history that the segment engine writes in batches (the history is
-- written on every commit: flows wait for it). The position it is applied through: start-up applies the
-- history after it. A database from before holds membership applied through its whole history.
CREATE TABLE segment_members_applied (
    through_seq INTEGER NOT NULL
);
INSERT INTO segment_members_applied (through_seq) SELECT COALESCE(MAX(seq), 0) FROM segment_transitions;
