//! Where the followers of the store's change tables stand. Flows and messaging each follow `merges` and `erasures`
//! (and flows its trigger sources too) by position, in a table of their own shaped `(name PRIMARY KEY, position)`,
//! and move a position in the same transaction as what they applied for it, so a crash repeats nothing and skips
//! nothing.

use super::CachedSql;
use crate::StoreResult;
use rusqlite::{Connection, OptionalExtension, params};

/// The position in `merges` (its `id`).
pub(super) const MERGES: &str = "merges";
/// The position in `erasures` (its `rowid`).
pub(super) const ERASURES: &str = "erasures";

#[derive(Debug, Clone, Copy)]
pub(super) enum Follower {
    Flows,
    Messaging,
}

impl Follower {
    fn table(self) -> &'static str {
        match self {
            Follower::Flows => "flow_cursors",
            Follower::Messaging => "msg_cursors",
        }
    }

    /// `None` until the follower first saved this position.
    pub(super) fn position(self, conn: &Connection, name: &str) -> StoreResult<Option<i64>> {
        let sql = format!("SELECT position FROM {} WHERE name = ?1", self.table());
        Ok(conn.query_row_cached(&sql, [name], |r| r.get(0)).optional()?)
    }

    /// Saves positions; call inside the transaction that applied what they cover.
    pub(super) fn save<'a>(
        self,
        conn: &Connection,
        positions: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO {} (name, position) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            self.table()
        );
        let mut upsert = conn.prepare_cached(&sql)?;
        for (name, position) in positions {
            upsert.execute(params![name, position])?;
        }
        Ok(())
    }
}

/// Erasures after position `after`, oldest first, at most `limit`: `(position, erased profile)`.
pub(super) fn erasures_after(conn: &Connection, after: i64, limit: i64) -> StoreResult<Vec<(i64, i64)>> {
    Ok(conn
        .prepare_cached("SELECT rowid, profile_id FROM erasures WHERE rowid > ?1 ORDER BY rowid LIMIT ?2")?
        .query_map([after, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?)
}
