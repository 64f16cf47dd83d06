//! Replay-protection keys: expired ones are pruned oldest first in bounded batches, from the front of the log
//! rather than by a scan of the whole table, and pruning never forgets a key that is still inside its window.
//! The keys survive a restart, a rolled-back transaction forgets its claims, and stores from before the log
//! keep their keys.

use kizuna_store::{Durability, SqliteStore, Store};
use rusqlite::Connection;

const NOW: i64 = 1_800_000_000_000;

#[test]
fn expired_keys_are_pruned_oldest_first_in_bounded_batches() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let mut writer = store.writer()?;
    let mut tx = writer.begin()?;
    for i in 0..5 {
        assert!(tx.claim_message(1, &format!("expired-{i}"), Some(NOW - 1_000 + i), NOW - 10_000)?);
    }
    assert!(tx.claim_message(1, "forever", None, NOW - 10_000)?);
    assert!(tx.claim_message(2, "live", Some(NOW + 60_000), NOW - 10_000)?);
    tx.commit()?;

    let mut pruned = Vec::new();
    for _ in 0..3 {
        let mut tx = writer.begin()?;
        pruned.push(tx.prune_dedup(NOW, 3)?);
        tx.commit()?;
    }
    assert_eq!(pruned, vec![3, 2, 0], "a full batch leaves the rest for the next one");

    let conn = Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
    let column = |sql: &str| -> anyhow::Result<Vec<String>> {
        Ok(conn.prepare(sql)?.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?)
    };
    assert_eq!(column("SELECT message_id FROM dedup")?, vec!["forever"], "a key without expiry stays");
    assert_eq!(column("SELECT message_id FROM dedup_log")?, vec!["live"], "a key still in its window stays");

    let mut tx = writer.begin()?;
    assert!(!tx.claim_message(2, "live", Some(NOW + 120_000), NOW)?, "a live key still rejects its replay");
    assert!(!tx.claim_message(1, "forever", Some(NOW + 120_000), NOW)?);
    assert!(tx.claim_message(1, "expired-0", Some(NOW + 120_000), NOW)?, "a pruned key can be claimed again");
    tx.commit()?;
    Ok(())
}

#[test]
fn pruning_reads_the_front_of_the_log_without_sorting() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    drop(SqliteStore::open(dir.path(), Durability::Process)?);
    let conn = Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT seq, source_id, message_id, expires_at FROM dedup_log ORDER BY seq LIMIT 10",
        )?
        .query_map([], |row| row.get::<_, String>(3))?
        .collect::<Result<_, _>>()?;
    assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "plan: {plan:?}");
    Ok(())
}

#[test]
fn claims_survive_a_restart_and_a_rollback_forgets_its_own() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let store = SqliteStore::open(dir.path(), Durability::Process)?;
        let mut writer = store.writer()?;
        let mut tx = writer.begin()?;
        for i in 0..3_000 {
            assert!(tx.claim_message(1, &format!("kept-{i}"), Some(NOW + 60_000), NOW)?);
        }
        assert!(!tx.claim_message(1, "kept-7", Some(NOW + 60_000), NOW)?, "a replay in the same transaction");
        assert!(tx.claim_message(2, "kept-7", Some(NOW + 60_000), NOW)?, "another source's key is its own");
        tx.commit()?;

        let mut tx = writer.begin()?;
        assert!(tx.claim_message(1, "rolled-back", Some(NOW + 60_000), NOW)?);
        drop(tx);
        let mut tx = writer.begin()?;
        assert!(tx.claim_message(1, "rolled-back", Some(NOW + 60_000), NOW)?, "the rollback took the claim with it");
        assert!(!tx.claim_message(1, "kept-2999", Some(NOW + 60_000), NOW)?, "committed keys are still known");
        drop(tx);
    }
    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let mut writer = store.writer()?;
    let mut tx = writer.begin()?;
    for i in (0..3_000).step_by(97) {
        assert!(!tx.claim_message(1, &format!("kept-{i}"), Some(NOW + 60_000), NOW)?, "kept-{i} after a restart");
    }
    assert!(!tx.claim_message(2, "kept-7", Some(NOW + 60_000), NOW)?);
    assert!(tx.claim_message(1, "rolled-back", Some(NOW + 60_000), NOW)?);
    assert!(tx.claim_message(1, "kept-0", Some(NOW + 120_000), NOW + 61_000)?, "an expired key can be claimed again");
    tx.commit()?;
    Ok(())
}

#[test]
fn keys_that_never_expire_are_found_from_a_claim_with_an_expiry() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let store = SqliteStore::open(dir.path(), Durability::Process)?;
        let mut writer = store.writer()?;
        let mut tx = writer.begin()?;
        assert!(tx.claim_message(5, "imported-order", None, NOW)?);
        assert!(!tx.claim_message(5, "imported-order", None, NOW)?);
        tx.commit()?;
    }
    // After a restart too: the source's never-expiring keys are looked up again.
    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let mut writer = store.writer()?;
    let mut tx = writer.begin()?;
    assert!(!tx.claim_message(5, "imported-order", Some(NOW + 60_000), NOW)?);
    assert!(!tx.claim_message(5, "imported-order", None, NOW)?);
    assert!(tx.claim_message(5, "live-order", Some(NOW + 60_000), NOW)?);
    assert!(!tx.claim_message(5, "live-order", None, NOW)?, "a live key is found by a claim without expiry");
    tx.commit()?;
    Ok(())
}

/// A store written before the log kept its keys with an expiry in `dedup`; migration 21 moves them to the log.
#[test]
fn keys_from_before_the_log_are_moved_into_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    drop(SqliteStore::open(dir.path(), Durability::Process)?);
    let conn = Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
    conn.execute_batch(&format!(
        "DROP TABLE dedup_log;
         DELETE FROM schema_migrations WHERE version = 21;
         CREATE INDEX dedup_by_expiry ON dedup(expires_at) WHERE expires_at IS NOT NULL;
         INSERT INTO dedup (source_id, message_id, expires_at) VALUES
             (1, 'old-live', {live}), (1, 'old-expired', {expired}), (1, 'old-forever', NULL);",
        live = NOW + 60_000,
        expired = NOW - 1,
    ))?;
    drop(conn);

    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let mut writer = store.writer()?;
    let mut tx = writer.begin()?;
    assert!(!tx.claim_message(1, "old-live", Some(NOW + 60_000), NOW)?);
    assert!(!tx.claim_message(1, "old-forever", Some(NOW + 60_000), NOW)?);
    assert_eq!(tx.prune_dedup(NOW, 10)?, 1, "the expired key is pruned from the log");
    assert!(tx.claim_message(1, "old-expired", Some(NOW + 60_000), NOW)?);
    tx.commit()?;
    Ok(())
}
