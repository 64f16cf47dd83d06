-- Analytics runs and the per-profile scores they produce (predictions, RFM). Scores are derived data: a run
-- rewrites them; the event log and profile states stay the source of truth.

CREATE TABLE analytics_runs (
    id          INTEGER PRIMARY KEY,
    trigger     TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    -- JSON: model fits (parameters, log-likelihood, data window), store metrics, funnel, RFM, distributions.
    report      TEXT,
    error       TEXT
);

CREATE TABLE profile_scores (
    profile_id  INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL,
    scores      TEXT NOT NULL
);
CREATE INDEX profile_scores_by_run ON profile_scores(run_id);
