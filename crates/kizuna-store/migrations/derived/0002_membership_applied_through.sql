-- Current membership is a snapshot of the history that the segment engine writes in batches (the history is
-- written on every commit: flows wait for it). The position it is applied through: start-up applies the history
-- after it, and reads of membership add it on top. A database from before holds membership applied through its
-- whole history.
CREATE TABLE segment_members_applied (
    through_seq INTEGER NOT NULL
);
INSERT INTO segment_members_applied (through_seq) SELECT COALESCE(MAX(seq), 0) FROM segment_transitions;

-- History positions are never reused (AUTOINCREMENT): erasing the person with the newest records used to hand
-- their numbers to the next records, behind the flows' cursor and the snapshot's position.
CREATE TABLE segment_transitions_v2 (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    segment_id  INTEGER NOT NULL,
    segment     TEXT NOT NULL,
    profile_id  INTEGER NOT NULL,
    entered     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    -- JSON: why (events and their names, a profile change, time passing, a merge, a new definition…).
    cause       TEXT NOT NULL
);
INSERT INTO segment_transitions_v2 (seq, segment_id, segment, profile_id, entered, at, cause)
    SELECT seq, segment_id, segment, profile_id, entered, at, cause FROM segment_transitions;
DROP TABLE segment_transitions;
ALTER TABLE segment_transitions_v2 RENAME TO segment_transitions;
CREATE INDEX segment_transitions_by_profile ON segment_transitions(profile_id, seq);
CREATE INDEX segment_transitions_by_segment ON segment_transitions(segment_id, seq);
