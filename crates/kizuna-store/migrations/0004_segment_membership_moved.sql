-- Segment membership and its history move to the derived database (see derived/0001_segment_membership.sql),
-- attached as `derived` while migrations run. OR IGNORE: if a crash split this migration's commit across the
-- two files, running it again must not fail on rows already copied.
INSERT OR IGNORE INTO derived.segment_members SELECT segment_id, profile_id, since FROM main.segment_members;
INSERT OR IGNORE INTO derived.segment_transitions
    SELECT seq, segment_id, segment, profile_id, entered, at, cause FROM main.segment_transitions;
DROP TABLE main.segment_members;
DROP TABLE main.segment_transitions;
