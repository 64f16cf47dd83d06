-- The derived database (`derived.db` beside `kizuna.db`): data the engines can recompute from events and
-- profiles. It has a file of its own so that its writes never wait for the ingest writer's lock or fsync.
-- Reader connections attach it as `derived`, so queries can join it with the core tables.

-- Current membership: one row per (segment, person).
CREATE TABLE segment_members (
    segment_id  INTEGER NOT NULL,
    profile_id  INTEGER NOT NULL,
    since       INTEGER NOT NULL,
    PRIMARY KEY (segment_id, profile_id)
) WITHOUT ROWID;
CREATE INDEX segment_members_by_profile ON segment_members(profile_id);

-- Segment Entered / Segment Exited records, read by flows with a `seq` cursor.
CREATE TABLE segment_transitions (
    seq         INTEGER PRIMARY KEY,
    segment_id  INTEGER NOT NULL,
    segment     TEXT NOT NULL,
    profile_id  INTEGER NOT NULL,
    entered     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    -- JSON: why (events and their names, a profile change, time passing, a merge, a new definition…).
    cause       TEXT NOT NULL
);
CREATE INDEX segment_transitions_by_profile ON segment_transitions(profile_id, seq);
CREATE INDEX segment_transitions_by_segment ON segment_transitions(segment_id, seq);
