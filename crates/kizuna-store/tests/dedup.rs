//! Replay-protection keys: expired ones are pruned oldest first in bounded batches, through an index rather than
//! a scan of the whole table, and pruning never forgets a key that is still inside its window.

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
    let left: Vec<String> = conn
        .prepare("SELECT message_id FROM dedup ORDER BY message_id")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    assert_eq!(left, vec!["forever", "live"], "keys without expiry or still in their window stay");

    let mut tx = writer.begin()?;
    assert!(!tx.claim_message(2, "live", Some(NOW + 120_000), NOW)?, "a live key still rejects its replay");
    assert!(!tx.claim_message(1, "forever", Some(NOW + 120_000), NOW)?);
    assert!(tx.claim_message(1, "expired-0", Some(NOW + 120_000), NOW)?, "a pruned key can be claimed again");
    tx.commit()?;
    Ok(())
}

#[test]
fn pruning_reads_the_expiry_index_not_the_whole_table() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    drop(SqliteStore::open(dir.path(), Durability::Process)?);
    let conn = Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT source_id, message_id FROM dedup
             WHERE expires_at IS NOT NULL AND expires_at < ?1 ORDER BY expires_at LIMIT ?2",
        )?
        .query_map([NOW, 10], |row| row.get::<_, String>(3))?
        .collect::<Result<_, _>>()?;
    assert!(plan.iter().any(|step| step.contains("dedup_by_expiry")), "plan: {plan:?}");
    assert!(!plan.iter().any(|step| step.starts_with("SCAN dedup")), "plan: {plan:?}");
    Ok(())
}
