-- Flows: versioned definitions, one row per person's run (its state and timer), the path each run took, and
-- the cursors the engine reads the event log and segment history by. Times are integer milliseconds.

CREATE TABLE flows (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL,            -- draft | active | paused
    version      INTEGER NOT NULL,         -- the latest saved version
    live_version INTEGER,                  -- the version new entrants get (set when activated)
    -- Positions of the event log and the segment history at activation: only what comes after triggers.
    since_event_seq      INTEGER NOT NULL DEFAULT 0,
    since_transition_seq INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE flow_versions (
    flow_id     INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    definition  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (flow_id, version)
);

CREATE TABLE flow_runs (
    id          INTEGER PRIMARY KEY,
    flow_id     INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    profile_id  INTEGER NOT NULL,
    status      TEXT NOT NULL,             -- active | waiting | holdout | completed | exited
    step        TEXT,
    due_at      INTEGER,                   -- the run's timer; NULL once it ended
    entered_at  INTEGER NOT NULL,
    trigger     TEXT NOT NULL,
    visits      INTEGER NOT NULL,
    arm         TEXT,
    holdout     INTEGER NOT NULL,
    goal_until  INTEGER,
    converted_at INTEGER,
    revenue     REAL NOT NULL,
    exit_reason TEXT,
    ended_at    INTEGER,
    updated_at  INTEGER NOT NULL
);
-- The scheduler wakes exactly the runs that are due.
CREATE INDEX flow_runs_due ON flow_runs(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX flow_runs_profile ON flow_runs(profile_id, flow_id);
CREATE INDEX flow_runs_flow ON flow_runs(flow_id, status);

CREATE TABLE flow_steps (
    run_id      INTEGER NOT NULL,
    visit       INTEGER NOT NULL,
    flow_id     INTEGER NOT NULL,
    step        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    action      TEXT,
    at          INTEGER NOT NULL,
    PRIMARY KEY (run_id, visit)
);
CREATE INDEX flow_steps_flow ON flow_steps(flow_id, step);

CREATE TABLE flow_cursors (
    name        TEXT PRIMARY KEY,
    position    INTEGER NOT NULL
);
