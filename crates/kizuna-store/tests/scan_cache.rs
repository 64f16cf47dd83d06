//! Reading a whole table (the start-up loads of segments, recommendations and identity) leaves the pooled reader
//! with a small page cache: each page is read once, and a server kept every page a scan had read for as long as
//! it ran (two readers holding 16 MB each on a 100k-profile store).
//!
//! One test in this file, so the C heap it measures is this test's alone.

use kizuna_profiles::{DataKind, ProfileState, TraitEntry};
use kizuna_store::{Durability, SqliteStore, Store};
use rusqlite::{Connection, params};

// Rust's allocations go to mimalloc, as in the server, so the C heap holds what SQLite allocated.
use kizuna_allocator as _;

const PROFILES: i64 = 4_000;

fn c_heap() -> i64 {
    kizuna_allocator::c_heap_in_use().map_or(0, |bytes| bytes as i64)
}

#[test]
fn a_scan_of_every_profile_leaves_the_reader_with_a_small_page_cache() -> anyhow::Result<()> {
    if kizuna_allocator::c_heap_in_use().is_none() {
        eprintln!("skipped: the C heap cannot be read on this platform");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    drop(SqliteStore::open(dir.path(), Durability::Process)?);
    {
        // ~2 KB of state a profile: 8 MB of table, far more than the scan cache and less than a reader's cache.
        let mut conn = Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
        let tx = conn.transaction()?;
        let mut state = ProfileState::default();
        let note = TraitEntry {
            value: "x".repeat(2_000).into(),
            set_at: chrono::DateTime::UNIX_EPOCH,
            source: "test".into(),
            data_kind: DataKind::FirstParty,
        };
        state.traits.insert("note".into(), note);
        let state = serde_json::to_string(&state)?;
        for id in 1..=PROFILES {
            tx.execute(
                "INSERT INTO profiles (id, state, created_at, updated_at) VALUES (?1, ?2, 0, 0)",
                params![id, state],
            )?;
        }
        tx.commit()?;
    }
    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    // The pooled reader exists and has prepared its statement before the baseline.
    store.scan_profile_data(None, 1)?;
    let before = c_heap();

    let mut after = None;
    let mut seen = 0;
    loop {
        let page = store.scan_profile_data(after, 500)?;
        let Some(last) = page.last() else { break };
        seen += page.len();
        after = Some(last.id);
    }
    assert_eq!(seen, PROFILES as usize);
    let grown = c_heap() - before;
    assert!(grown < 2 << 20, "the reader kept {grown} bytes after scanning {PROFILES} profiles");

    // The reader goes back to the pool and still answers after the scan.
    let profile = store.scan_profile_data(Some(41), 1)?;
    assert_eq!(profile.first().map(|p| p.id), Some(42));
    Ok(())
}
