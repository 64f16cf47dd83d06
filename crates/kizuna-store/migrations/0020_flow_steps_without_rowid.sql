-- A step row was written three times: the table row, the index SQLite keeps for the primary key (run_id, visit) of a
-- table with rowids, and `flow_steps_flow`. Keyed by its primary key, the row is stored once in that key's b-tree:
-- every timer that fires writes one b-tree fewer, and the store holds each step once instead of twice.
CREATE TABLE flow_steps_v20 (
    run_id      INTEGER NOT NULL,
    visit       INTEGER NOT NULL,
    flow_id     INTEGER NOT NULL,
    step        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    action      TEXT,
    at          INTEGER NOT NULL,
    PRIMARY KEY (run_id, visit)
) WITHOUT ROWID;
INSERT INTO flow_steps_v20 (run_id, visit, flow_id, step, kind, outcome, action, at)
    SELECT run_id, visit, flow_id, step, kind, outcome, action, at FROM flow_steps ORDER BY run_id, visit;
DROP TABLE flow_steps;
ALTER TABLE flow_steps_v20 RENAME TO flow_steps;
CREATE INDEX flow_steps_flow ON flow_steps(flow_id, step);
