-- Withdrawals owed to messaging: the runs a merge ended as duplicates (exit `merged`), whose sends still waiting
-- must not go. Written in the transaction that ends the runs and deleted once messaging has withdrawn their sends,
-- so a crash in between leaves the withdrawal to do at the next start instead of letting the sends go.
CREATE TABLE flow_withdrawals (
    run_id   INTEGER PRIMARY KEY,
    flow_id  INTEGER NOT NULL,
    reason   TEXT NOT NULL
);
