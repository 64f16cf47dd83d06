-- Recommendation placements: named configurations (strategy, rules, fallback) that storefronts, templates and
-- flows refer to by name. Counters and models are derived data, rebuilt from the event log at start-up.

CREATE TABLE recs_placements (
    name        TEXT PRIMARY KEY,
    -- JSON: the placement (strategy, rules, fallback, limit).
    definition  TEXT NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
