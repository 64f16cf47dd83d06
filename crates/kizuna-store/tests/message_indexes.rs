//! The messaging queries that run per message at scale read indexes, not the table (query plans, so that an
//! index change that leaves them scanning fails here rather than in a benchmark at a million people).

use kizuna_store::{Durability, SqliteStore};
use rusqlite::Connection;

/// The plan with every parameter bound (to NULL), as the store prepares these statements.
fn plan(conn: &Connection, sql: &str) -> anyhow::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
    let unbound = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
    Ok(stmt.query_map(rusqlite::params_from_iter(unbound), |row| row.get::<_, String>(3))?.collect::<Result<_, _>>()?)
}

#[test]
fn frequency_caps_and_merges_read_the_sent_messages_index() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    drop(SqliteStore::open(dir.path(), Durability::Process)?);
    let conn = Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
    for sql in [
        // A frequency cap: one person's sends of a channel since a time.
        "SELECT sent_at FROM msg_messages WHERE profile_id = ?1 AND channel = ?2 AND sent_at >= ?3
           AND purpose = ?4 AND test = 0 AND state IN ('sending', 'sent', 'delivered')",
        // A merge moves the merged-away person's sent messages.
        "UPDATE msg_messages SET profile_id = ?2 WHERE profile_id = ?1 AND sent_at IS NOT NULL",
    ] {
        let steps = plan(&conn, sql)?;
        assert!(steps.iter().any(|s| s.contains("msg_messages_profile")), "{sql}: {steps:?}");
        assert!(!steps.iter().any(|s| s.starts_with("SCAN msg_messages")), "{sql}: {steps:?}");
    }
    // And messages still being sent, through the small index of those.
    let steps = plan(&conn, "UPDATE msg_messages SET profile_id = ?2 WHERE state = 'sending' AND profile_id = ?1")?;
    assert!(steps.iter().any(|s| s.contains("msg_messages_sending")), "{steps:?}");
    Ok(())
}

#[test]
fn merges_move_attributed_orders_through_an_index() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    drop(SqliteStore::open(dir.path(), Durability::Process)?);
    let conn = Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
    let steps = plan(&conn, "UPDATE msg_attributions SET profile_id = ?2 WHERE profile_id = ?1")?;
    assert!(steps.iter().any(|s| s.contains("msg_attributions_profile")), "{steps:?}");
    Ok(())
}
