//! Replay protection on `(source, messageId)` for the ingest writer.
//!
//! Keys with an expiry (every live source) are appended to `dedup_log` and found through [`ReplayIndex`] in
//! memory; keys that never expire (imported sources, Kizuna's own events) stay in the `dedup` B-tree, where a
//! bulk import's person-ordered ids are cheap to insert. A source's keys are all of one kind, but a claim still
//! looks in both places whenever the source has ever had a key that never expires.

use super::replay_index::{IndexFull, ReplayIndex};
use crate::{StoreError, StoreResult};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

impl From<IndexFull> for StoreError {
    fn from(error: IndexFull) -> Self {
        StoreError::Invalid(error.to_string())
    }
}

pub struct ReplayKeys {
    index: ReplayIndex,
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
            hasher: RandomState::new(),
            forever_sources: HashSet::new(),
            stale: true,
            changed: false,
        }
    }
}

impl ReplayKeys {
    fn tag(&self, source_id: i64, message_id: &str) -> u32 {
        ReplayIndex::tag(self.hasher.hash_one((source_id, message_id)))
    }

    /// Reads the log into the index when it is not current (at start, after a rollback).
    pub fn ensure_loaded(&mut self, conn: &Connection) -> StoreResult<()> {
        if !self.stale {
            return Ok(());
        }
        let started = std::time::Instant::now();
        // The log is pruned only at its front, so its positions are (nearly) contiguous: their span sizes the table.
        let span: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq) - MIN(seq) + 1, 0) FROM dedup_log", [], |r| r.get(0))?;
        let mut index = ReplayIndex::with_room_for(usize::try_from(span).unwrap_or(0));
        // The whole log passing through the writer's own cache would leave it full of pages the writer does not
        // need (64 MB of resident memory after every start).
        super::through_scan_cache(conn, |conn| {
            let mut stmt = conn.prepare("SELECT seq, source_id, message_id FROM dedup_log ORDER BY seq")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let message_id = row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
                index.insert(self.tag(row.get(1)?, message_id), row.get(0)?)?;
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
        tracing::debug!(keys = index.len(), elapsed = ?started.elapsed(), "loaded the replay-protection keys");
        self.index = index;
        self.forever_sources = forever_sources;
        self.stale = false;
        self.changed = false;
        Ok(())
    }

    /// Claims `(source, message_id)` inside the caller's transaction; false when it is already claimed and not
    /// expired (a key expires when `now_ms` passes its `expires_at`; `None` never expires).
    pub fn claim(
        &mut self,
        conn: &Connection,
        source_id: i64,
        message_id: &str,
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let tag = self.tag(source_id, message_id);
        // Most keys have no candidate: the statement is looked up only for those that do.
        for seq in self.index.candidates(tag) {
            let live = conn
                .prepare_cached("SELECT source_id, message_id, expires_at FROM dedup_log WHERE seq = ?1")?
                .query_row([seq], |r| {
                    Ok(r.get::<_, i64>(0)? == source_id
                        && r.get_ref(1)?.as_str()? == message_id
                        && r.get::<_, i64>(2)? >= now_ms)
                })
                .optional()?;
            if live == Some(true) {
                return Ok(false);
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
                conn.prepare_cached("INSERT INTO dedup_log (source_id, message_id, expires_at) VALUES (?1, ?2, ?3)")?
                    .execute(params![source_id, message_id, expires_at])?;
                self.changed = true;
                self.index.insert(tag, conn.last_insert_rowid())?;
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
