-- A database from before the derived split had its membership and history moved into derived.db by migration 4,
-- after derived migration 2 recorded an empty history as applied through 0: the moved membership is complete.
UPDATE derived.segment_members_applied
   SET through_seq = MAX(through_seq, (SELECT COALESCE(MAX(seq), 0) FROM derived.segment_transitions));
