-- Segments: definitions, current membership, and the history of Segment Entered / Segment Exited records that
-- flows consume (by `seq` cursor). Membership is derived data: the engine can rebuild it from events and
-- profile states at any time.

CREATE TABLE segments (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    -- JSON: the definition tree (the text syntax prints from it).
    definition  TEXT NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE segment_members (
    segment_id  INTEGER NOT NULL,
    profile_id  INTEGER NOT NULL,
    since       INTEGER NOT NULL,
    PRIMARY KEY (segment_id, profile_id)
);
CREATE INDEX segment_members_by_profile ON segment_members(profile_id);

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
