//! The derived database (`derived.db`): segment membership and history live beside the record, survive the
//! move from the main database, and rows left behind by a crash between the two files are pruned.

use chrono::{TimeZone, Utc};
use kizuna_store::{Durability, MemberChange, SegmentTransitionRow, SqliteStore, Store, TransitionFilter};
use rusqlite::{Connection, params};
use serde_json::json;

fn transition(segment_id: i64, profile_id: u64, entered: bool) -> SegmentTransitionRow {
    SegmentTransitionRow {
        seq: 0,
        segment_id,
        segment: format!("segment-{segment_id}"),
        profile_id,
        entered,
        at: Utc.timestamp_millis_opt(1_700_000_000_000).single().expect("instant"),
        cause: json!({"kind": "events", "events": ["Order Completed"]}),
    }
}

/// What the segment engine writes to the membership snapshot for recorded transitions.
fn apply(store: &SqliteStore, rows: &[SegmentTransitionRow]) -> anyhow::Result<()> {
    let changes: Vec<MemberChange> = rows
        .iter()
        .map(|t| MemberChange { segment_id: t.segment_id, profile_id: t.profile_id, entered: t.entered, at: t.at })
        .collect();
    store.apply_segment_members(&changes, rows.iter().map(|t| t.seq).max())?;
    Ok(())
}

fn everything(store: &SqliteStore) -> anyhow::Result<Vec<(u64, i64, bool)>> {
    let filter = TransitionFilter { limit: 1_000, ..TransitionFilter::default() };
    Ok(store.segment_transitions(&filter)?.into_iter().map(|t| (t.profile_id, t.segment_id, t.entered)).collect())
}

fn members(store: &SqliteStore, segment_id: i64) -> anyhow::Result<Vec<u64>> {
    Ok(store.segment_members(segment_id, None, 1_000)?.into_iter().map(|(p, _)| p).collect())
}

/// The stored snapshot itself, without the history reads add to it.
fn snapshot(dir: &std::path::Path, segment_id: i64) -> anyhow::Result<Vec<u64>> {
    let conn = Connection::open(dir.join(SqliteStore::DERIVED_FILE_NAME))?;
    let mut stmt = conn.prepare("SELECT profile_id FROM segment_members WHERE segment_id = ?1 ORDER BY profile_id")?;
    let rows = stmt.query_map([segment_id], |r| r.get::<_, i64>(0))?;
    Ok(rows.map(|r| r.map(|p| p as u64)).collect::<Result<_, _>>()?)
}

fn applied_through(dir: &std::path::Path) -> anyhow::Result<i64> {
    let conn = Connection::open(dir.join(SqliteStore::DERIVED_FILE_NAME))?;
    Ok(conn.query_row("SELECT through_seq FROM segment_members_applied", [], |r| r.get(0))?)
}

fn add_profile(conn: &Connection, id: i64) -> anyhow::Result<()> {
    conn.execute("INSERT INTO profiles (id, state, created_at, updated_at) VALUES (?1, '{}', 0, 0)", [id])?;
    Ok(())
}

fn definition(identifier: &str) -> serde_json::Value {
    json!({"kind": "has_identifier", "identifier": identifier})
}

#[test]
fn membership_and_history_move_out_of_a_database_made_before_the_split() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        // The schema as migrations 1–3 left it, with membership and history in the main database.
        let conn = Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);",
        )?;
        for (version, sql) in [
            (1, include_str!("../migrations/0001_core.sql")),
            (2, include_str!("../migrations/0002_analytics.sql")),
            (3, include_str!("../migrations/0003_segments.sql")),
        ] {
            conn.execute_batch(sql)?;
            conn.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [version])?;
        }
        conn.execute(
            "INSERT INTO segments (id, name, description, definition, version, created_at, updated_at)
             VALUES (1, 'vip', '', '{}', 1, 0, 0)",
            [],
        )?;
        add_profile(&conn, 5)?;
        conn.execute("INSERT INTO segment_members VALUES (1, 5, 10)", [])?;
        for (seq, entered) in [(1, 1), (2, 0), (3, 1)] {
            conn.execute(
                "INSERT INTO segment_transitions VALUES (?1, 1, 'vip', 5, ?2, 10, '{\"kind\":\"definition\"}')",
                params![seq, entered],
            )?;
        }
    }
    let store = SqliteStore::open(dir.path(), Durability::Full)?;
    assert!(dir.path().join(SqliteStore::DERIVED_FILE_NAME).exists());
    assert_eq!(everything(&store)?, vec![(5, 1, true), (5, 1, false), (5, 1, true)]);
    assert_eq!(members(&store, 1)?, vec![5]);
    assert_eq!(store.profile_segments(5)?.len(), 1, "reads join the derived tables with the definitions");
    // New records continue the history's sequence.
    let mut more = vec![transition(1, 5, false)];
    assert_eq!(applied_through(dir.path())?, 3, "the moved membership is complete: nothing to replay");
    store.record_segment_transitions(&mut more)?;
    assert_eq!(more[0].seq, 4);
    assert!(members(&store, 1)?.is_empty(), "reads see the history the snapshot has not taken in yet");
    apply(&store, &more)?;
    assert!(members(&store, 1)?.is_empty());
    assert_eq!(applied_through(dir.path())?, 4);
    let main = Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
    let left: i64 = main.query_row(
        "SELECT COUNT(*) FROM sqlite_schema WHERE name IN ('segment_members', 'segment_transitions')",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(left, 0, "the old tables are gone from the main database");
    drop(store);
    // Opening again applies nothing twice.
    let store = SqliteStore::open(dir.path(), Durability::Full)?;
    assert_eq!(everything(&store)?.len(), 4);
    Ok(())
}

#[test]
fn rows_a_crash_left_behind_are_pruned_and_the_rest_kept() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path(), Durability::Full)?;
    let now = Utc::now();
    let kept = store.save_segment("kept", "", &definition("email"), now)?;
    let deleted = store.save_segment("deleted", "", &definition("phone"), now)?;
    let main = Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
    for profile in [1, 2] {
        add_profile(&main, profile)?;
    }
    // Profile 3 was merged away and profile 4 erased while the engine was down: the main database says so,
    // the derived one does not know yet. The second segment was deleted the same way.
    let mut rows = vec![
        transition(kept.id, 1, true),
        transition(kept.id, 2, true),
        transition(deleted.id, 2, true),
        transition(kept.id, 3, true),
        transition(kept.id, 4, true),
    ];
    store.record_segment_transitions(&mut rows)?;
    main.execute("INSERT INTO erasures (profile_id, identifiers, events, erased_at) VALUES (4, 1, 1, 0)", [])?;
    main.execute("DELETE FROM segments WHERE id = ?1", [deleted.id])?;

    let removed = store.prune_segment_members()?;
    assert_eq!(removed, 3, "the deleted segment's member and the two vanished people");
    assert_eq!(members(&store, kept.id)?, vec![1, 2]);
    assert!(members(&store, deleted.id)?.is_empty());
    let history: Vec<u64> = everything(&store)?.into_iter().map(|(p, _, _)| p).collect();
    assert_eq!(history, vec![1, 2, 2, 3], "the merged-away person's history stays; the erased one's goes");
    assert_eq!(store.prune_segment_members()?, 0);
    Ok(())
}

#[test]
fn deleting_a_segment_drops_its_members_but_keeps_its_history() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path(), Durability::Full)?;
    let segment = store.save_segment("vip", "", &definition("email"), Utc::now())?;
    let mut rows = [transition(segment.id, 9, true)];
    store.record_segment_transitions(&mut rows)?;
    apply(&store, &rows)?;
    assert_eq!(members(&store, segment.id)?, vec![9]);
    assert!(store.delete_segment("vip")?);
    assert!(!store.delete_segment("vip")?);
    assert!(members(&store, segment.id)?.is_empty());
    assert_eq!(everything(&store)?, vec![(9, segment.id, true)]);
    Ok(())
}

/// The snapshot is written a second or so behind the history; a crash in between leaves it behind, and
/// start-up applies the rest of the history to it in order.
#[test]
fn membership_catches_up_with_the_history_a_crash_left_unapplied() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let segment;
    {
        let store = SqliteStore::open(dir.path(), Durability::Full)?;
        segment = store.save_segment("vip", "", &definition("email"), Utc::now())?;
        let main = Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
        for profile in [1, 2, 3] {
            add_profile(&main, profile)?;
        }
        let mut rows = vec![
            transition(segment.id, 1, true),
            transition(segment.id, 2, true),
            transition(segment.id, 1, false),
            transition(segment.id, 3, true),
        ];
        store.record_segment_transitions(&mut rows)?;
        // Only the first two were written to the snapshot before the crash; reads add the rest of the history.
        apply(&store, &rows[..2])?;
        assert_eq!(snapshot(dir.path(), segment.id)?, vec![1, 2]);
        assert_eq!(members(&store, segment.id)?, vec![2, 3]);
    }
    let store = SqliteStore::open(dir.path(), Durability::Full)?;
    assert_eq!(store.prune_segment_members()?, 0, "nothing was stale");
    assert_eq!(snapshot(dir.path(), segment.id)?, vec![2, 3]);
    assert_eq!(members(&store, segment.id)?, vec![2, 3]);
    let mut loaded = Vec::new();
    store.load_segment_members(&mut |segment, profile| loaded.push((segment, profile)))?;
    loaded.sort_unstable();
    assert_eq!(loaded, vec![(segment.id, 2), (segment.id, 3)]);
    // Applied through the end: a second start replays nothing (an exit replayed over a re-entry would lose it).
    apply(&store, &[transition(segment.id, 1, true)])?;
    store.prune_segment_members()?;
    assert_eq!(members(&store, segment.id)?, vec![1, 2, 3]);
    Ok(())
}

/// Member listings and a person's segments are as current as the history, ahead of the snapshot: a flow started
/// by `Segment Entered` that checks `in segment` sees the person in it.
#[test]
fn reads_add_the_history_the_snapshot_has_not_taken_in() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path(), Durability::Full)?;
    let vip = store.save_segment("vip", "", &definition("email"), Utc::now())?;
    let buyers = store.save_segment("buyers", "", &definition("phone"), Utc::now())?;
    let mut written = vec![transition(vip.id, 1, true), transition(vip.id, 3, true), transition(vip.id, 5, true)];
    store.record_segment_transitions(&mut written)?;
    apply(&store, &written)?;
    let mut recent = vec![
        transition(vip.id, 3, false),
        transition(vip.id, 2, true),
        transition(vip.id, 7, true),
        transition(buyers.id, 2, true),
        transition(vip.id, 7, false),
        transition(vip.id, 7, true),
    ];
    store.record_segment_transitions(&mut recent)?;
    assert_eq!(snapshot(dir.path(), vip.id)?, vec![1, 3, 5]);
    assert_eq!(members(&store, vip.id)?, vec![1, 2, 5, 7]);
    // Page by page, a page's end is where the snapshot's rows end.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store.segment_members(vip.id, after, 1)?;
        let Some(last) = page.last().map(|(p, _)| *p) else { break };
        assert_eq!(page.len(), 1);
        paged.push(last);
        after = Some(last);
    }
    assert_eq!(paged, vec![1, 2, 5, 7]);
    let names = |profile| -> anyhow::Result<Vec<String>> {
        Ok(store.profile_segments(profile)?.into_iter().map(|(_, name, _)| name).collect())
    };
    assert_eq!(names(2)?, vec!["buyers", "vip"]);
    assert!(names(3)?.is_empty());
    assert_eq!(names(5)?, vec!["vip"]);
    Ok(())
}

/// An erasure deletes a person's history; the numbers of their records are not handed out again (the flows'
/// cursor and the snapshot's position are past them).
#[test]
fn history_positions_are_never_reused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path(), Durability::Full)?;
    let vip = store.save_segment("vip", "", &definition("email"), Utc::now())?;
    let mut rows = vec![transition(vip.id, 1, true), transition(vip.id, 9, true)];
    store.record_segment_transitions(&mut rows)?;
    apply(&store, &rows)?;
    store.forget_segment_profile(9)?;
    let mut next = vec![transition(vip.id, 4, true)];
    store.record_segment_transitions(&mut next)?;
    assert_eq!(next[0].seq, 3, "after 1 and 2, even though 2 was deleted");
    assert_eq!(members(&store, vip.id)?, vec![1, 4]);
    Ok(())
}
