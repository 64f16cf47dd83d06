//! How the store keeps identity links: by the id the resolver hands out, appended when new, moved to the time
//! the resolver gives, deleted by id; the links of stores written before migration 22 keep their rowids as ids.

use kizuna_identity::{IdKind, Identifier, Link, LinkId, OrderKey, StoredLink};
use kizuna_store::{Durability, IdentityRow, SqliteStore, Store};

fn stored(id: LinkId, values: &[&str], at_ms: i64) -> StoredLink {
    let identifiers = values.iter().map(|v| Identifier::new(IdKind::AnonymousId, *v)).collect();
    StoredLink {
        id,
        link: Link { identifiers, order: OrderKey { at_ms, message_id: format!("m{at_ms}") }, trusted: false },
    }
}

fn links(store: &SqliteStore) -> anyhow::Result<Vec<StoredLink>> {
    let mut out = Vec::new();
    store.load_identity(&mut |row| {
        if let IdentityRow::Link(link) = row {
            out.push(link);
        }
    })?;
    out.sort_by_key(|l| l.id);
    Ok(out)
}

fn write(
    store: &SqliteStore,
    change: impl FnOnce(&mut dyn kizuna_store::WriteTx) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut writer = store.writer()?;
    let mut tx = writer.begin()?;
    change(&mut *tx)?;
    tx.commit()?;
    Ok(())
}

#[test]
fn a_link_is_appended_moved_and_deleted_by_id() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    let (first, second) = (stored(1, &["a1", "a2"], 20), stored(2, &["a3", "a4"], 30));
    write(&store, |tx| {
        tx.store_link(&first)?;
        tx.store_link(&second)?;
        Ok(())
    })?;
    assert_eq!(links(&store)?, vec![first.clone(), second.clone()]);

    let earlier = stored(1, &["a1", "a2"], 10);
    write(&store, |tx| {
        tx.store_link(&earlier)?;
        Ok(())
    })?;
    assert_eq!(links(&store)?, vec![earlier.clone(), second.clone()], "the same row, at the earlier time");

    write(&store, |tx| Ok(tx.delete_links(&[1, 99])?))?;
    assert_eq!(links(&store)?, vec![second]);
    Ok(())
}

#[test]
fn migration_22_keys_the_links_written_before_it_by_their_rowids() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    drop(SqliteStore::open(dir.path(), Durability::Process)?);
    // The links table as builds before migration 22 made it, keyed by the text of its identifiers.
    let conn = rusqlite::Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
    conn.execute_batch(
        r#"DROP TABLE identity_links;
         CREATE TABLE identity_links (
             signature TEXT PRIMARY KEY, identifiers TEXT NOT NULL, at_ms INTEGER NOT NULL,
             message_id TEXT NOT NULL, trusted INTEGER NOT NULL);
         INSERT INTO identity_links VALUES
             ('u|anonymous_id:b', '[{"type":"anonymous_id","value":"b"}]', 7, 'm7', 0),
             ('u|anonymous_id:a', '[{"type":"anonymous_id","value":"a"}]', 5, 'm5', 0);
         DELETE FROM schema_migrations WHERE version = 22;"#,
    )?;
    drop(conn);

    let store = SqliteStore::open(dir.path(), Durability::Process)?;
    assert_eq!(links(&store)?, vec![stored(1, &["b"], 7), stored(2, &["a"], 5)]);
    let conn = rusqlite::Connection::open(dir.path().join(SqliteStore::FILE_NAME))?;
    let indexes: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'identity_links'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(indexes, 0, "no index on the text of the identifiers");
    Ok(())
}
