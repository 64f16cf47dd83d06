//! Replay protection on `(source, messageId)` for the ingest writer.
//!
//! Keys with an expiry (every live source) are appended to `dedup_log` and found through [`ReplayIndex`] in
//! memory for the newest keys, and through [`FrozenRun`]s (a filter in memory, the keys in a file) for the older
//! ones; keys that never expire (imported sources, and Kizuna's own events before 2026-12-06, which keep none
//! since) stay in the `dedup` B-tree, where a bulk import's person-ordered ids are cheap to insert. A source's keys
//! are all of one kind, but a claim still looks in both places whenever the source has ever had a key that never
//! expires.

use super::replay_index::{IndexFull, ReplayIndex};
use super::replay_runs::FrozenRun;
use crate::{StoreError, StoreResult};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};

impl From<IndexFull> for StoreError {
    fn from(error: IndexFull) -> Self {
        StoreError::Invalid(error.to_string())
    }
}

/// The in-memory table is frozen into a run when it holds this share of the window's keys (or
/// [`MIN_RUN_KEYS`]): memory stays ~1/16 of the table's 9–14 bytes a key plus the filters' 9 bits, and a window
/// that fills at a steady rate ends up in about this many runs, each one filter probe per claim.
const RUNS_IN_WINDOW: usize = 16;
/// ~3 MB of table: below this, freezing would only add runs for little memory.
const MIN_RUN_KEYS: usize = 1 << 18;

pub struct ReplayKeys {
    /// The newest keys.
    index: ReplayIndex,
    /// Older keys, oldest first; each run's rows all lie below the table's.
    runs: Vec<FrozenRun>,
    frozen_keys: usize,
    min_run_keys: usize,
    /// While the log is read at start: how many keys it holds, so that runs are sized for the whole window at
    /// once (sized by the running count, a restart made ~16·ln(keys/4M) more runs than steady traffic does).
    loading: usize,
    /// Where the runs' unnamed files go: beside the database.
    run_dir: PathBuf,
    /// Seeded per process, so that nobody can pick message ids that pile onto one slot run.
    hasher: RandomState,
    /// Sources with keys in `dedup` (never expiring): a claim of theirs also looks there.
    forever_sources: HashSet<i64>,
    /// The index does not match the log (a transaction that changed it rolled back): rebuilt before the next one.
    stale: bool,
    /// The open transaction changed the index.
    changed: bool,
}

impl Default for ReplayKeys {
    fn default() -> Self {
        Self {
            index: ReplayIndex::default(),
            runs: Vec::new(),
            frozen_keys: 0,
            min_run_keys: MIN_RUN_KEYS,
            loading: 0,
            run_dir: std::env::temp_dir(),
            hasher: RandomState::new(),
            forever_sources: HashSet::new(),
            stale: true,
            changed: false,
        }
    }
}

/// Appends a claimed key to the log; [`ReplayKeys::claim`] runs it through the statement its transaction holds.
pub(super) const CLAIM_SQL: &str = "INSERT INTO dedup_log (source_id, message_id, expires_at) VALUES (?1, ?2, ?3)";

impl ReplayKeys {
    fn tag(&self, source_id: i64, message_id: &str) -> u32 {
        ReplayIndex::tag(self.hasher.hash_one((source_id, message_id)))
    }

    /// Keys per run: a share of the keys in the window, at least `min_run_keys`.
    fn run_keys(&self, keys: usize) -> usize {
        (keys.max(self.loading) / RUNS_IN_WINDOW).max(self.min_run_keys)
    }

    /// Adds a claimed key, freezing the table into a run when it is full.
    fn remember(&mut self, tag: u32, seq: i64) -> StoreResult<()> {
        self.index.insert(tag, seq)?;
        let keys = self.frozen_keys + self.index.len();
        if self.index.len() >= self.run_keys(keys) {
            let started = std::time::Instant::now();
            let room = self.run_keys(keys);
            let full = std::mem::replace(&mut self.index, ReplayIndex::with_room_for(room));
            let base = full.base();
            let run = FrozenRun::write(&self.run_dir, &full.into_sorted_slots(), base)?;
            self.frozen_keys += run.len();
            tracing::debug!(keys = run.len(), runs = self.runs.len() + 1, elapsed = ?started.elapsed(), "froze replay keys");
            self.runs.push(run);
        }
        Ok(())
    }

    /// Reads the log into the index when it is not current (at start, after a rollback).
    pub fn ensure_loaded(&mut self, conn: &Connection) -> StoreResult<()> {
        if !self.stale {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.run_dir = conn
            .path()
            .and_then(|path| Path::new(path).parent())
            .filter(|dir| !dir.as_os_str().is_empty())
            .map_or_else(std::env::temp_dir, Path::to_path_buf);
        // The log is pruned only at its front, so its positions are (nearly) contiguous: their span sizes the table.
        let span: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq) - MIN(seq) + 1, 0) FROM dedup_log", [], |r| r.get(0))?;
        let span = usize::try_from(span).unwrap_or(0);
        self.runs.clear();
        self.frozen_keys = 0;
        self.loading = span;
        self.index = ReplayIndex::with_room_for(span.min(self.run_keys(span)));
        // The whole log passing through the writer's own cache would leave it full of pages the writer does not
        // need (64 MB of resident memory after every start).
        super::through_scan_cache(conn, |conn| {
            let mut stmt = conn.prepare("SELECT seq, source_id, message_id FROM dedup_log ORDER BY seq")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let message_id = row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
                self.remember(self.tag(row.get(1)?, message_id), row.get(0)?)?;
            }
            Ok(())
        })?;
        // One index seek per source, not a scan of what may be millions of imported keys.
        let mut forever_sources = HashSet::new();
        let mut after = i64::MIN;
        let mut next = conn.prepare("SELECT source_id FROM dedup WHERE source_id > ?1 ORDER BY source_id LIMIT 1")?;
        while let Some(source) = next.query_row([after], |r| r.get::<_, i64>(0)).optional()? {
            forever_sources.insert(source);
            after = source;
        }
        tracing::debug!(
            keys = self.frozen_keys + self.index.len(),
            runs = self.runs.len(),
            elapsed = ?started.elapsed(),
            "loaded the replay-protection keys"
        );
        self.forever_sources = forever_sources;
        self.loading = 0;
        self.stale = false;
        self.changed = false;
        Ok(())
    }

    /// Claims `(source, message_id)` inside the caller's transaction; false when it is already claimed and not
    /// expired (a key expires when `now_ms` passes its `expires_at`; `None` never expires).
    /// `insert` is the transaction's [`CLAIM_SQL`] statement.
    pub fn claim(
        &mut self,
        conn: &Connection,
        insert: &mut rusqlite::Statement<'_>,
        source_id: i64,
        message_id: &str,
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let tag = self.tag(source_id, message_id);
        // Most keys have no candidate: the statement is looked up only for those that do.
        let holds = |seq: i64| -> StoreResult<bool> {
            let live = conn
                .prepare_cached("SELECT source_id, message_id, expires_at FROM dedup_log WHERE seq = ?1")?
                .query_row([seq], |r| {
                    Ok(r.get::<_, i64>(0)? == source_id
                        && r.get_ref(1)?.as_str()? == message_id
                        && r.get::<_, i64>(2)? >= now_ms)
                })
                .optional()?;
            Ok(live == Some(true))
        };
        for seq in self.index.candidates(tag) {
            if holds(seq)? {
                return Ok(false);
            }
        }
        // A replay is most often of a recent message.
        for run in self.runs.iter().rev() {
            for seq in run.candidates(tag)? {
                if holds(seq)? {
                    return Ok(false);
                }
            }
        }
        match expires_at_ms {
            Some(expires_at) => {
                if self.forever_sources.contains(&source_id) {
                    let kept = conn
                        .prepare_cached("SELECT 1 FROM dedup WHERE source_id = ?1 AND message_id = ?2")?
                        .query_row(params![source_id, message_id], |_| Ok(()))
                        .optional()?;
                    if kept.is_some() {
                        return Ok(false);
                    }
                }
                insert.execute(params![source_id, message_id, expires_at])?;
                self.changed = true;
                self.remember(tag, conn.last_insert_rowid())?;
                Ok(true)
            }
            None => {
                self.forever_sources.insert(source_id);
                let inserted = conn
                    .prepare_cached(
                        "INSERT INTO dedup (source_id, message_id, expires_at) VALUES (?1, ?2, NULL)
                         ON CONFLICT (source_id, message_id) DO NOTHING",
                    )?
                    .execute(params![source_id, message_id])?;
                Ok(inserted > 0)
            }
        }
    }

    /// Deletes up to `limit` expired keys from the front of the log. It stops at the first key still in its
    /// window: keys expire in the order they were claimed unless the window was shortened, and then a later key
    /// waits at most the difference.
    pub fn prune(&mut self, conn: &Connection, now_ms: i64, limit: usize) -> StoreResult<usize> {
        let mut front =
            conn.prepare_cached("SELECT seq, source_id, message_id, expires_at FROM dedup_log ORDER BY seq LIMIT ?1")?;
        let mut rows = front.query([limit as i64])?;
        let mut last = None;
        let mut pruned = 0;
        while let Some(row) = rows.next()? {
            if row.get::<_, i64>(3)? >= now_ms {
                break;
            }
            let seq: i64 = row.get(0)?;
            let tag = self.tag(row.get(1)?, row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?);
            self.changed = true;
            self.index.remove(tag, seq);
            last = Some(seq);
            pruned += 1;
        }
        drop(rows);
        if let Some(last) = last {
            conn.prepare_cached("DELETE FROM dedup_log WHERE seq <= ?1")?.execute([last])?;
            // A rollback makes the keys stale, and the rebuild brings dropped runs back from the log.
            let before = self.runs.len();
            self.runs.retain(|run| run.last_seq() > last);
            if self.runs.len() != before {
                self.frozen_keys = self.runs.iter().map(FrozenRun::len).sum();
            }
        }
        Ok(pruned)
    }

    /// The open transaction ended: committed, or rolled back (then the index is rebuilt if it changed).
    pub fn finish(&mut self, committed: bool) {
        if self.changed && !committed {
            self.stale = true;
        }
        self.changed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> anyhow::Result<(Connection, ReplayKeys)> {
        let conn = Connection::open(dir.join("replay.db"))?;
        // The two tables as the migrations leave them (the full schema needs the derived database too).
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS dedup (source_id INTEGER NOT NULL, message_id TEXT NOT NULL,
                 expires_at INTEGER, PRIMARY KEY (source_id, message_id)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS dedup_log (seq INTEGER PRIMARY KEY, source_id INTEGER NOT NULL,
                 message_id TEXT NOT NULL, expires_at INTEGER NOT NULL);",
        )?;
        let mut keys = ReplayKeys { min_run_keys: 100, ..ReplayKeys::default() };
        keys.ensure_loaded(&conn)?;
        Ok((conn, keys))
    }

    fn claim(keys: &mut ReplayKeys, conn: &Connection, i: i64, now_ms: i64) -> anyhow::Result<bool> {
        let mut insert = conn.prepare_cached(CLAIM_SQL)?;
        Ok(keys.claim(conn, &mut insert, 1, &format!("m{i}"), Some(1000 + i), now_ms)?)
    }

    #[test]
    fn frozen_keys_are_found_after_a_restart_and_dropped_whole_when_pruned() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (conn, mut keys) = open(dir.path())?;
        for i in 0..1000 {
            assert!(claim(&mut keys, &conn, i, 0)?);
        }
        keys.finish(true);
        assert!(keys.runs.len() >= 5, "{} runs", keys.runs.len());
        assert!(keys.index.len() < 100);
        assert_eq!(keys.frozen_keys + keys.index.len(), 1000);
        for i in 0..1000 {
            assert!(!claim(&mut keys, &conn, i, 0)?, "m{i} claimed twice");
        }

        let (conn, mut keys) = open(dir.path())?;
        assert_eq!(keys.frozen_keys + keys.index.len(), 1000);
        assert!(keys.runs.len() >= 5);
        for i in 0..1000 {
            assert!(!claim(&mut keys, &conn, i, 0)?, "m{i} claimed twice after a restart");
        }

        let runs = keys.runs.len();
        assert_eq!(keys.prune(&conn, 1500, 10_000)?, 500);
        keys.finish(true);
        assert!(keys.runs.len() < runs, "no run was dropped");
        assert!(keys.runs.iter().all(|run| run.last_seq() > 500));
        for i in 0..1000 {
            assert_eq!(claim(&mut keys, &conn, i, 1500)?, i < 500, "m{i} after the prune");
        }
        Ok(())
    }

    #[test]
    fn a_restart_sizes_its_runs_for_the_whole_window() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (conn, mut keys) = open(dir.path())?;
        for i in 0..4000 {
            assert!(claim(&mut keys, &conn, i, 0)?);
        }
        keys.finish(true);
        // Live, the first runs were sized for a small window.
        assert!(keys.runs.len() > RUNS_IN_WINDOW + 1, "{} runs while live", keys.runs.len());
        let (conn, mut keys) = open(dir.path())?;
        assert!(keys.runs.len() <= RUNS_IN_WINDOW + 1, "{} runs after a restart", keys.runs.len());
        assert_eq!(keys.frozen_keys + keys.index.len(), 4000);
        assert!(!claim(&mut keys, &conn, 3999, 0)?);
        assert!(claim(&mut keys, &conn, 4000, 0)?);
        Ok(())
    }

    #[test]
    fn a_rollback_forgets_claims_that_were_already_frozen() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (conn, mut keys) = open(dir.path())?;
        for i in 0..150 {
            assert!(claim(&mut keys, &conn, i, 0)?);
        }
        keys.finish(true);
        let tx = conn.unchecked_transaction()?;
        for i in 150..600 {
            assert!(claim(&mut keys, &tx, i, 0)?);
        }
        assert!(keys.frozen_keys > 150, "the transaction's claims were not frozen");
        tx.rollback()?;
        keys.finish(false);
        keys.ensure_loaded(&conn)?;
        for i in 0..600 {
            assert_eq!(claim(&mut keys, &conn, i, 0)?, i >= 150, "m{i} after the rollback");
        }
        Ok(())
    }
}
