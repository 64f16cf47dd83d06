use crate::{
    AnalyticsRun, ApiKey, Counts, EventFilter, IdentityRow, MemberChange, NewEvent, RunOutcome, ScannedEvent,
    ScannedProfile, SegmentTransitionRow, Source, Store, StoreError, StoreResult, StoreWriter, StoredEvent,
    StoredPlacement, StoredProfile, StoredSegment, Syncer, TransitionFilter, WriteTx,
};
use chrono::{DateTime, TimeZone, Utc};
use kizuna_catalog::Product;
use kizuna_identity::{ConflictRecord, IdKind, Identifier, Link, LinkId, MergeRecord, OrderKey, ProfileId, StoredLink};
use kizuna_profiles::{DataKind, ProfileState};
use kizuna_types::telemetry::Telemetry;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Runs `f` with the connection's page cache shrunk to [`SCAN_CACHE_KIB`], then gives the cache its size back:
/// a whole table read through a full-size cache leaves it holding pages nobody needs (setting the small size also
/// frees what the cache held beyond it).
fn through_scan_cache<T>(conn: &Connection, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
    let cache_kib: i64 = conn.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
    conn.pragma_update(None, "cache_size", -SCAN_CACHE_KIB)?;
    let result = f(conn);
    conn.pragma_update(None, "cache_size", cache_kib)?;
    result
}

/// Versioned migrations, applied in order; each runs once and is recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_core.sql")),
    (2, include_str!("../migrations/0002_analytics.sql")),
    (3, include_str!("../migrations/0003_segments.sql")),
    (4, include_str!("../migrations/0004_segment_membership_moved.sql")),
    (5, include_str!("../migrations/0005_recommendations.sql")),
    (6, include_str!("../migrations/0006_messaging.sql")),
    (7, include_str!("../migrations/0007_flows.sql")),
    (8, include_str!("../migrations/0008_messaging_queue_indexes.sql")),
    (9, include_str!("../migrations/0009_admin.sql")),
    (10, include_str!("../migrations/0010_identities_covering.sql")),
    (11, include_str!("../migrations/0011_dedup_expiry.sql")),
    (12, include_str!("../migrations/0012_membership_applied_after_move.sql")),
    // 13 is retired: commit 8cac109 used it for an index change that the next commit reverted (a store opened by
    // that build records 13 as applied); 14 replaces that index either way.
    (14, include_str!("../migrations/0014_messages_profile_index_sent.sql")),
    (15, include_str!("../migrations/0015_messaging_follows_erasures.sql")),
    (16, include_str!("../migrations/0016_flow_withdrawals.sql")),
    (17, include_str!("../migrations/0017_one_queue_index.sql")),
    (18, include_str!("../migrations/0018_queued_decision_from_message.sql")),
    (19, include_str!("../migrations/0019_unsent_index_without_in_list.sql")),
    (20, include_str!("../migrations/0020_flow_steps_without_rowid.sql")),
    (21, include_str!("../migrations/0021_replay_keys_log.sql")),
    (22, include_str!("../migrations/0022_identity_links_by_id.sql")),
    (23, include_str!("../migrations/0023_body_dictionaries.sql")),
];

/// Migrations of the derived database, numbered on their own.
const DERIVED_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/derived/0001_segment_membership.sql")),
    (2, include_str!("../migrations/derived/0002_membership_applied_through.sql")),
];

mod admins;
mod cursors;
mod flows;
mod messages;
mod replay_index;
mod replay_keys;
mod replay_runs;
mod segments;

/// How hard a commit pushes data to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Nothing is acknowledged before it is fsynced: survives power loss. The ingest writer's commits are
    /// fsynced by a second thread (see [`StoreWriter::syncer`]), so readers can see a commit a few milliseconds
    /// before it is durable; what acts on ingested data follows the pipeline's feed, which is published only
    /// after the fsync.
    Full,
    /// Leave flushing to the OS: survives a killed process, not a power cut.
    Process,
}

/// The embedded store: two SQLite databases in WAL mode inside the data directory — `kizuna.db`, the record
/// (events, identities, profiles, definitions), and `derived.db`, what engines recompute from it (segment
/// membership and its history). Reader connections see both (the derived one attached as `derived`); each
/// file has its own writers, so a burst of segment transitions never waits for an ingest commit.
pub struct SqliteStore {
    path: PathBuf,
    derived_path: PathBuf,
    durability: Durability,
    readers: Mutex<Vec<Connection>>,
    /// The connection for writes to the main database outside the ingest writer (administration, analytics
    /// scores, segment definitions), opened once: opening one per write costs more than most of these writes.
    side_writer: Mutex<Option<(Connection, std::sync::Arc<Checkpointer>)>>,
    /// The one background checkpointer of the main database, shared by the ingest writer and the side writer
    /// while either is open.
    main_checkpointer: Mutex<std::sync::Weak<Checkpointer>>,
    /// The connection to the derived database: its commits do not wait for an fsync (after a power cut the
    /// segment engine recomputes membership at start-up and records what changed).
    derived_writer: Mutex<Option<(Connection, Checkpointer)>>,
}

/// Busy handler for every connection: retry every 200 µs for up to 10 s. SQLite's own handler backs off in
/// steps of up to 100 ms, so a writer held back by a checkpoint for 1 ms could sleep 10–20 ms (measured as
/// the ingest p99 tripling once checkpoints began restarting the WAL).
fn wait_for_lock(attempts: i32) -> bool {
    let started = std::time::Instant::now();
    let again = poll_lock(attempts, 50_000);
    LOCK_WAITS.with(|w| {
        let mut waits = w.get();
        waits.sqlite += started.elapsed();
        w.set(waits);
    });
    again
}

thread_local! {
    static LOCK_WAITS: std::cell::Cell<LockWaits> = const { std::cell::Cell::new(LockWaits::ZERO) };
}

/// How long the calling thread has waited for write locks since it started: for tracing where a slow round's time
/// went (compare two readings around it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockWaits {
    /// For the flows-and-messaging writer connection, while another of its users held it.
    pub side_writer: std::time::Duration,
    /// For SQLite's write lock on a database (another connection writing, or a checkpoint restarting the WAL).
    pub sqlite: std::time::Duration,
}

impl LockWaits {
    pub const ZERO: Self = Self { side_writer: std::time::Duration::ZERO, sqlite: std::time::Duration::ZERO };

    pub fn on_this_thread() -> Self {
        LOCK_WAITS.with(std::cell::Cell::get)
    }

    /// What was waited since `earlier` (a reading on the same thread).
    pub fn since(self, earlier: Self) -> Self {
        Self { side_writer: self.side_writer - earlier.side_writer, sqlite: self.sqlite - earlier.sqlite }
    }

    pub fn add(&mut self, other: Self) {
        self.side_writer += other.side_writer;
        self.sqlite += other.sqlite;
    }
}

/// One more look in 200 µs, unless `attempts` reached `limit` (then SQLite returns SQLITE_BUSY).
fn poll_lock(attempts: i32, limit: i32) -> bool {
    if attempts >= limit {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_micros(200));
    true
}

/// Every statement through the connection's statement cache: the engines run the same few statements
/// thousands of times a second, and parsing them again each time measured ~8% of a flow round's CPU.
pub(crate) trait CachedSql {
    fn query_row_cached<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
}

impl CachedSql for Connection {
    fn query_row_cached<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}

/// Busy handler of the checkpointers: retry every 200 µs for up to 100 ms, then give up until the next
/// interval. A restarting checkpoint holds the write lock while it waits for readers to leave the WAL; with
/// SQLite's own handler it slept 1, 2, 5, 10… ms between looks, and every writer waited out those sleeps too.
/// Short patience: behind one long read (an export, an analytics query) it must not hold writers back for long.
fn wait_for_checkpoint(attempts: i32) -> bool {
    poll_lock(attempts, 500)
}

/// Opens one of the store's files in WAL mode; `page_size` takes effect only when the file is created.
/// `wal_limit_bytes` is the size a writer truncates the WAL file back to when it starts it over: a burst that
/// outran the checkpoints (a segment build recording 1M transitions while flows read them left a 2.1 GB WAL)
/// would otherwise keep its disk space for as long as the process runs.
fn open_connection(
    path: &Path,
    read_only: bool,
    page_size: i64,
    synchronous: &str,
    wal_limit_bytes: i64,
) -> StoreResult<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    // Each commit's WAL frames reach the file in one write instead of two per page (see `kizuna_sqlite_wal`).
    let vfs = kizuna_sqlite_wal::register().map_err(StoreError::Invalid)?;
    static PAGE_CACHE_CHECKED: std::sync::Once = std::sync::Once::new();
    PAGE_CACHE_CHECKED.call_once(|| {
        if let Err(reason) = kizuna_sqlite_wal::page_cache_wrapped() {
            tracing::warn!(%reason, "SQLite's page cache is not wrapped: commits walk the writer's whole cache");
        }
    });
    let mut conn = Connection::open_with_flags_and_vfs(path, flags, vfs)?;
    conn.busy_handler(Some(wait_for_lock))?;
    conn.set_prepared_statement_cache_capacity(128);
    // Plans that do not depend on the values bound: otherwise SQLite 3.54 re-prepares a cached statement
    // whenever a new value is bound to a parameter that the planner looked at (a `LIMIT ?`, a `priority = ?`
    // on an index), even without statistics to use it — messaging's read of due messages was parsed and
    // planned again on every round (5% of the 5,000-profile flows benchmark's instructions, callgrind).
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    if !read_only {
        conn.pragma_update(None, "page_size", page_size)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "journal_size_limit", wal_limit_bytes)?;
    }
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "cache_size", -CONNECTION_CACHE_KIB)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

/// Each connection's page cache (KiB) unless it says otherwise.
const CONNECTION_CACHE_KIB: i64 = 16_384;
/// The page cache (KiB) of a reader while it reads a whole table: each page is read once, so a bigger cache
/// only keeps pages no other query wants (start-up scans left two readers holding 16 MB each).
const SCAN_CACHE_KIB: i64 = 256;

/// Follows merges from `id` to the profile that holds it now (`None`: erased, or never existed).
fn live_profile(conn: &Connection, id: ProfileId) -> StoreResult<Option<ProfileId>> {
    let mut current = id as i64;
    for _ in 0..64 {
        let exists: i64 =
            conn.query_row_cached("SELECT COUNT(*) FROM profiles WHERE id = ?1", [current], |r| r.get(0))?;
        if exists > 0 {
            return Ok(Some(current as ProfileId));
        }
        let next: Option<i64> = conn
            .query_row_cached(
                "SELECT into_profile FROM merges WHERE from_profile = ?1 ORDER BY id DESC LIMIT 1",
                [current],
                |r| r.get(0),
            )
            .optional()?;
        match next {
            Some(next) => current = next,
            None => return Ok(None),
        }
    }
    Ok(None)
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn random_token(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let body: String = (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}{body}")
}

fn data_kind_name(kind: DataKind) -> &'static str {
    match kind {
        DataKind::ZeroParty => "zero_party",
        DataKind::FirstParty => "first_party",
        DataKind::SecondParty => "second_party",
        DataKind::ThirdParty => "third_party",
        DataKind::Imported => "imported",
    }
}

impl SqliteStore {
    pub const FILE_NAME: &'static str = "kizuna.db";
    pub const DERIVED_FILE_NAME: &'static str = "derived.db";

    /// Opens (creating if needed) the store in `data_dir` and applies pending migrations.
    pub fn open(data_dir: &Path, durability: Durability) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(Self::FILE_NAME);
        let derived_path = data_dir.join(Self::DERIVED_FILE_NAME);
        let store = Self {
            path,
            derived_path,
            durability,
            readers: Mutex::new(Vec::new()),
            side_writer: Mutex::new(None),
            main_checkpointer: Mutex::new(std::sync::Weak::new()),
            derived_writer: Mutex::new(None),
        };
        // The derived database first: a main migration may move data into it.
        migrate(&mut store.connect_derived()?, DERIVED_MIGRATIONS)?;
        let mut conn = store.connect(false)?;
        store.attach_derived(&conn)?;
        migrate(&mut conn, MIGRATIONS)?;
        load_body_dictionaries(&conn)?;
        Ok(store)
    }

    /// Attaches the derived database as `derived`. Only on connections that never open a write transaction on
    /// the main database while they hold it: `BEGIN IMMEDIATE` takes the write lock of every attached file.
    fn attach_derived(&self, conn: &Connection) -> StoreResult<()> {
        conn.execute_cached("ATTACH DATABASE ?1 AS derived", [self.derived_path.to_string_lossy()])?;
        Ok(())
    }

    fn connect_derived(&self) -> StoreResult<Connection> {
        // Smaller pages than the main database: a commit of transitions dirties a few rows in each of many
        // index pages, and every dirty page is written whole to the WAL.
        open_connection(
            &self.derived_path,
            false,
            4096,
            "NORMAL",
            Checkpointer::wal_limit_bytes(Checkpointer::DERIVED_RESTART_AFTER_FRAMES, 4096),
        )
    }

    fn connect(&self, read_only: bool) -> StoreResult<Connection> {
        let sync = match self.durability {
            Durability::Full => "FULL",
            Durability::Process => "NORMAL",
        };
        // 8 KiB pages measured ~10% faster ingest than 4 KiB.
        open_connection(
            &self.path,
            read_only,
            8192,
            sync,
            Checkpointer::wal_limit_bytes(Checkpointer::MAIN_RESTART_AFTER_FRAMES, 8192),
        )
    }

    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let conn = match self.readers.lock().pop() {
            Some(conn) => conn,
            None => {
                let conn = self.connect(true)?;
                self.attach_derived(&conn)?;
                conn
            }
        };
        // One read transaction around all of `f`'s statements: a read of several parts (a profile and its
        // identifiers, a page of runs and their steps) sees one snapshot, never half of a commit. (Tried for
        // speed too — a connection keeps its page cache within a transaction — and measured no change in a
        // batch of 8,000 point reads.)
        // Cached statements: `execute_batch` would parse BEGIN and COMMIT again on every read.
        conn.execute_cached("BEGIN", [])?;
        let result = f(&conn);
        let ended = conn.execute_cached(if result.is_ok() { "COMMIT" } else { "ROLLBACK" }, []);
        // A connection whose transaction could not end would hand its old snapshot to the next reader.
        if ended.is_ok() || conn.is_autocommit() {
            let mut pool = self.readers.lock();
            if pool.len() < 8 {
                pool.push(conn);
            }
        }
        let value = result?;
        ended?;
        Ok(value)
    }

    /// [`Self::with_reader`] for reading a whole table (page by page or at once) through a small page cache;
    /// setting it also frees what the connection's cache held beyond it.
    fn with_scan_reader<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        self.with_reader(|conn| through_scan_cache(conn, f))
    }

    fn with_writer<T>(&self, f: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        let asked = std::time::Instant::now();
        let mut slot = self.side_writer.lock();
        LOCK_WAITS.with(|w| {
            let mut waits = w.get();
            waits.side_writer += asked.elapsed();
            w.set(waits);
        });
        let (conn, _) = match slot.as_mut() {
            Some(writer) => writer,
            None => {
                let mut conn = self.connect(false)?;
                // Write transactions take the write lock when they begin. A deferred one that reads first and
                // writes after fails at once with "database is locked" (SQLITE_BUSY_SNAPSHOT, which no busy
                // handler can wait out) when another writer or a restarting checkpoint moved the WAL on in
                // between — measured: saving a template right after loading 1M profiles.
                conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
                // The flow engine and messaging commit here thousands of times a minute; an automatic
                // checkpoint ran inline in whichever commit crossed the threshold (13% of their CPU, and a
                // stall) — the background checkpointer does it instead.
                conn.pragma_update(None, "wal_autocheckpoint", 0)?;
                // Their rounds write pages spread over per-person indexes (a message's profile, a run's
                // profile) that outgrow 16 MB at a million people, so this gets the ingest writer's cache. The
                // 1M flows benchmark showed no difference either way (BENCHMARKS.md, 2026-12-02): kept as the
                // cheaper guess, not a measured gain.
                conn.pragma_update(None, "cache_size", -65_536)?;
                let checkpointer = self.main_checkpointer()?;
                slot.insert((conn, checkpointer))
            }
        };
        f(conn)
    }

    fn main_checkpointer(&self) -> StoreResult<std::sync::Arc<Checkpointer>> {
        let mut shared = self.main_checkpointer.lock();
        if let Some(running) = shared.upgrade() {
            return Ok(running);
        }
        let started = std::sync::Arc::new(Checkpointer::start(
            self.connect(false)?,
            "kizuna-checkpoint",
            "main",
            Checkpointer::MAIN_RESTART_AFTER_FRAMES,
        )?);
        *shared = std::sync::Arc::downgrade(&started);
        Ok(started)
    }

    fn with_derived_writer<T>(&self, f: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        let mut slot = self.derived_writer.lock();
        let (conn, _) = match slot.as_mut() {
            Some(writer) => writer,
            None => {
                // As on the ingest writer: checkpoints done inline stall the commit that triggers them.
                let mut conn = self.connect_derived()?;
                conn.pragma_update(None, "wal_autocheckpoint", 0)?;
                conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
                let checkpointer = Checkpointer::start(
                    self.connect_derived()?,
                    "kizuna-derived-ck",
                    "derived",
                    Checkpointer::DERIVED_RESTART_AFTER_FRAMES,
                )?;
                slot.insert((conn, checkpointer))
            }
        };
        f(conn)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn migrate(conn: &mut Connection, migrations: &[(i64, &str)]) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS main.schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    for (version, sql) in migrations {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let applied: bool =
            tx.query_row_cached("SELECT COUNT(*) FROM main.schema_migrations WHERE version = ?1", [version], |r| {
                r.get::<_, i64>(0)
            })? > 0;
        if !applied {
            tx.execute_batch(sql)?;
            tx.execute_cached(
                "INSERT INTO main.schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, ms(Utc::now())],
            )?;
            tracing::info!(version, "applied schema migration");
        }
        tx.commit()?;
    }
    Ok(())
}

/// An analytics run from the columns `id, trigger, status, started_at, finished_at, error`, without its report.
fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AnalyticsRun> {
    Ok(AnalyticsRun {
        id: r.get(0)?,
        trigger: r.get(1)?,
        status: r.get(2)?,
        started_at: from_ms(r.get(3)?),
        finished_at: r.get::<_, Option<i64>>(4)?.map(from_ms),
        error: r.get(5)?,
        report: None,
    })
}

/// [`run_from_row`] plus the report text in column 6.
fn run_with_report(r: &rusqlite::Row<'_>) -> rusqlite::Result<(AnalyticsRun, Option<String>)> {
    Ok((run_from_row(r)?, r.get(6)?))
}

fn source_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Source> {
    let kind: String = row.get(4)?;
    Ok(Source {
        id: row.get(0)?,
        name: row.get(1)?,
        write_key: row.get(2)?,
        trusted: row.get::<_, i64>(3)? != 0,
        data_kind: DataKind::parse(&kind).unwrap_or_default(),
        created_at: from_ms(row.get(5)?),
        revoked: row.get::<_, Option<i64>>(6)?.is_some(),
    })
}

const SOURCE_COLUMNS: &str = "id, name, write_key, trusted, data_kind, created_at, revoked_at";

/// Registers every body dictionary of the store with the codec; returns the newest one's id.
fn load_body_dictionaries(conn: &Connection) -> StoreResult<Option<u64>> {
    let mut stmt = conn.prepare_cached("SELECT dictionary FROM body_dictionaries ORDER BY created_at, id")?;
    let mut rows = stmt.query([])?;
    let mut newest = None;
    while let Some(row) = rows.next()? {
        newest = Some(crate::codec::register_dictionary(&row.get::<_, Vec<u8>>(0)?));
    }
    Ok(newest)
}

/// Decodes a stored body; a dictionary another process trained after this one opened the store is loaded on
/// first need.
fn decode_body(conn: &Connection, stored: &[u8]) -> StoreResult<Vec<u8>> {
    match crate::codec::decode_event_body(stored) {
        Err(StoreError::MissingDictionary(_)) => {
            load_body_dictionaries(conn)?;
            crate::codec::decode_event_body(stored)
        }
        decoded => decoded,
    }
}

fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, i64, i64, Vec<u8>)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn to_event(conn: &Connection, (seq, profile, source, body): (i64, i64, i64, Vec<u8>)) -> StoreResult<StoredEvent> {
    let json = decode_body(conn, &body)?;
    Ok(StoredEvent { seq, profile_id: profile as ProfileId, source_id: source, body: serde_json::from_slice(&json)? })
}

fn merge_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, i64, String, String, i64, i64)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?))
}

impl Store for SqliteStore {
    fn messages(&self) -> &dyn crate::messages::MessageStore {
        self
    }

    fn flows(&self) -> &dyn crate::flows::FlowStore {
        self
    }

    fn admins(&self) -> &dyn crate::admins::AdminStore {
        self
    }

    fn create_source(&self, name: &str, trusted: bool, data_kind: DataKind, now: DateTime<Utc>) -> StoreResult<Source> {
        let name = name.trim();
        if name.is_empty() {
            return Err(StoreError::Invalid("a source needs a name".into()));
        }
        let write_key = random_token("wk_", 32);
        let dedup_forever = data_kind == DataKind::Imported;
        self.with_writer(|conn| {
            let inserted = conn.execute_cached(
                "INSERT INTO sources (name, write_key, trusted, data_kind, dedup_forever, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
                params![name, write_key, trusted as i64, data_kind_name(data_kind), dedup_forever as i64, ms(now)],
            )?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists(format!("source '{name}'")));
            }
            Ok(())
        })?;
        self.source_by_name(name)?.ok_or_else(|| StoreError::Invalid("source vanished after insert".into()))
    }

    fn list_sources(&self) -> StoreResult<Vec<Source>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare(&format!("SELECT {SOURCE_COLUMNS} FROM sources ORDER BY id"))?;
            let rows = stmt.query_map([], source_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn source_by_write_key(&self, write_key: &str) -> StoreResult<Option<Source>> {
        self.with_reader(|conn| {
            Ok(conn
                .query_row_cached(
                    &format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE write_key = ?1"),
                    [write_key],
                    source_from_row,
                )
                .optional()?)
        })
    }

    fn source_by_name(&self, name: &str) -> StoreResult<Option<Source>> {
        self.with_reader(|conn| {
            Ok(conn
                .query_row_cached(
                    &format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE name = ?1"),
                    [name],
                    source_from_row,
                )
                .optional()?)
        })
    }

    fn create_api_key(&self, name: &str, now: DateTime<Utc>) -> StoreResult<(ApiKey, String)> {
        let name = name.trim();
        if name.is_empty() {
            return Err(StoreError::Invalid("an API key needs a name".into()));
        }
        let key = random_token("kz_", 40);
        let id = self.with_writer(|conn| {
            let inserted = conn.execute_cached(
                "INSERT INTO api_keys (name, key_hash, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                params![name, hash_key(&key), ms(now)],
            )?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists(format!("API key '{name}'")));
            }
            Ok(conn.last_insert_rowid())
        })?;
        Ok((ApiKey { id, name: name.to_owned(), created_at: now, revoked: false }, key))
    }

    fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare("SELECT id, name, created_at, revoked_at FROM api_keys ORDER BY id")?;
            let rows = stmt.query_map([], |r| {
                Ok(ApiKey {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    created_at: from_ms(r.get(2)?),
                    revoked: r.get::<_, Option<i64>>(3)?.is_some(),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn api_key_is_valid(&self, key: &str) -> StoreResult<bool> {
        self.with_reader(|conn| {
            let n: i64 = conn.query_row_cached(
                "SELECT COUNT(*) FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
                [hash_key(key)],
                |r| r.get(0),
            )?;
            Ok(n > 0)
        })
    }

    fn profile(&self, id: ProfileId) -> StoreResult<Option<StoredProfile>> {
        self.with_reader(|conn| read_profile(conn, id))
    }

    fn profiles(&self, ids: &[ProfileId]) -> StoreResult<HashMap<ProfileId, StoredProfile>> {
        // In id order: neighbouring lookups share b-tree pages.
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        self.with_reader(|conn| {
            let mut out = HashMap::with_capacity(sorted.len());
            for id in sorted {
                if let Some(profile) = read_profile(conn, id)? {
                    out.insert(id, profile);
                }
            }
            Ok(out)
        })
    }

    fn live_profile_id(&self, id: ProfileId) -> StoreResult<Option<ProfileId>> {
        self.with_reader(|conn| live_profile(conn, id))
    }

    fn live_profile_ids(&self, ids: &[ProfileId]) -> StoreResult<HashMap<ProfileId, Option<ProfileId>>> {
        // In id order: neighbouring lookups share b-tree pages.
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        self.with_reader(|conn| {
            let mut out = HashMap::with_capacity(sorted.len());
            for id in sorted {
                out.insert(id, live_profile(conn, id)?);
            }
            Ok(out)
        })
    }

    fn profile_by_identifier(&self, identifier: &Identifier) -> StoreResult<Option<ProfileId>> {
        self.with_reader(|conn| {
            let owner: Option<Option<i64>> = conn
                .query_row_cached("SELECT profile_id FROM identities WHERE identifier = ?1", [identifier.key()], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(owner.flatten().map(|p| p as ProfileId))
        })
    }

    fn events(&self, profile: ProfileId, filter: &EventFilter) -> StoreResult<Vec<StoredEvent>> {
        self.with_reader(|conn| {
            let mut sql = String::from("SELECT seq, profile_id, source_id, body FROM events WHERE profile_id = ?1");
            let mut args: Vec<rusqlite::types::Value> = vec![(profile as i64).into()];
            if !filter.kinds.is_empty() {
                let marks: Vec<String> = filter
                    .kinds
                    .iter()
                    .map(|k| {
                        args.push(k.clone().into());
                        format!("?{}", args.len())
                    })
                    .collect();
                let list = marks.join(", ");
                sql.push_str(&format!(" AND (type IN ({list}) OR name IN ({list}))"));
            }
            for (value, clause) in
                [(filter.since_ms, " AND ts >= "), (filter.until_ms, " AND ts < "), (filter.before_seq, " AND seq < ")]
            {
                if let Some(v) = value {
                    args.push(v.into());
                    sql.push_str(&format!("{clause}?{}", args.len()));
                }
            }
            args.push((filter.limit.clamp(1, 1000) as i64).into());
            sql.push_str(&format!(" ORDER BY ts DESC, seq DESC LIMIT ?{}", args.len()));
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), event_from_row)?;
            rows.map(|r| to_event(conn, r?)).collect()
        })
    }

    fn merges(&self, profile: ProfileId) -> StoreResult<Vec<MergeRecord>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare(
                "SELECT into_profile, from_profile, identifier, message_id, at_ms, replayed FROM merges
                 WHERE into_profile = ?1 OR from_profile = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([profile as i64], merge_from_row)?;
            rows.map(|r| {
                let (into, from, identifier, message_id, at_ms, replayed) = r?;
                Ok(MergeRecord {
                    into: into as ProfileId,
                    from: from as ProfileId,
                    identifier: Identifier::from_key(&identifier)
                        .ok_or_else(|| StoreError::Invalid(format!("bad identifier key {identifier}")))?,
                    message_id,
                    at_ms,
                    replayed: replayed != 0,
                })
            })
            .collect()
        })
    }

    fn conflicts(&self, profile: ProfileId) -> StoreResult<Vec<ConflictRecord>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare(
                "SELECT identifier, reason, message_id, at_ms FROM identity_conflicts WHERE profile_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([profile as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
            })?;
            rows.map(|r| {
                let (identifier, reason, message_id, at_ms) = r?;
                Ok(ConflictRecord {
                    profile: Some(profile),
                    identifier: Identifier::from_key(&identifier)
                        .ok_or_else(|| StoreError::Invalid(format!("bad identifier key {identifier}")))?,
                    reason: serde_json::from_str(&reason)?,
                    message_id,
                    at_ms,
                })
            })
            .collect()
        })
    }

    fn search_profiles(&self, name: &str, value: &str, limit: usize) -> StoreResult<Vec<ProfileId>> {
        let path = format!("$.traits.\"{}\".value", name.replace('"', ""));
        self.with_reader(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id FROM profiles WHERE CAST(json_extract(state, ?1) AS TEXT) = ?2 COLLATE NOCASE
                 ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![path, value, limit.clamp(1, 1000) as i64], |r| r.get::<_, i64>(0))?;
            Ok(rows.map(|r| r.map(|v| v as ProfileId)).collect::<Result<_, _>>()?)
        })
    }

    fn body_dictionary(&self) -> StoreResult<Option<u64>> {
        self.with_reader(load_body_dictionaries)
    }

    fn save_body_dictionary(&self, dictionary: &[u8], samples: usize, now: DateTime<Utc>) -> StoreResult<u64> {
        // Loaded first (it is only memory): nothing compresses against it before this returns.
        let id = crate::codec::register_dictionary(dictionary);
        self.with_writer(|conn| {
            conn.prepare_cached(
                "INSERT INTO body_dictionaries (id, dictionary, samples, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![id as i64, dictionary, samples as i64, ms(now)])?;
            Ok(())
        })?;
        Ok(id)
    }

    fn counts(&self) -> StoreResult<Counts> {
        // A count reads a whole index once: through a large cache every call would leave the reader holding
        // pages no other query wants (17 MB of a 100k-profile server's memory).
        self.with_scan_reader(|conn| {
            let count = |table: &str| -> StoreResult<u64> {
                Ok(conn.query_row_cached(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get::<_, i64>(0))? as u64)
            };
            Ok(Counts {
                profiles: count("profiles")?,
                events: count("events")?,
                identities: count("identities")?,
                products: count("products")?,
            })
        })
    }

    fn upsert_products(&self, products: &[Product], now: DateTime<Utc>) -> StoreResult<usize> {
        self.with_writer(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare(
                    "INSERT INTO products (id, body, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                )?;
                for product in products {
                    stmt.execute(params![product.id, serde_json::to_string(product)?, ms(now)])?;
                }
            }
            tx.commit()?;
            Ok(products.len())
        })
    }

    fn product(&self, id: &str) -> StoreResult<Option<Product>> {
        self.with_reader(|conn| {
            let body: Option<String> =
                conn.query_row_cached("SELECT body FROM products WHERE id = ?1", [id], |r| r.get(0)).optional()?;
            body.map(|b| serde_json::from_str(&b).map_err(StoreError::from)).transpose()
        })
    }

    fn list_products(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<Product>> {
        self.with_scan_reader(|conn| {
            let mut stmt = conn.prepare("SELECT body FROM products WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let rows =
                stmt.query_map(params![after.unwrap_or(""), limit.clamp(1, 1000) as i64], |r| r.get::<_, String>(0))?;
            rows.map(|r| Ok(serde_json::from_str(&r?)?)).collect()
        })
    }

    fn scan_profiles(&self, after: Option<ProfileId>, limit: usize) -> StoreResult<Vec<(ProfileId, ProfileState)>> {
        self.with_scan_reader(|conn| {
            let mut stmt = conn.prepare_cached("SELECT id, state FROM profiles WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let after = after.map_or(-1, |a| a as i64);
            let rows =
                stmt.query_map(params![after, limit as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::with_capacity(limit.min(10_000));
            for row in rows {
                let (id, state) = row?;
                out.push((id as ProfileId, serde_json::from_str(&state)?));
            }
            Ok(out)
        })
    }

    fn start_analytics_run(&self, trigger: &str, now: DateTime<Utc>) -> StoreResult<i64> {
        self.with_writer(|conn| {
            conn.execute_cached(
                "INSERT INTO analytics_runs (trigger, status, started_at) VALUES (?1, 'running', ?2)",
                params![trigger, ms(now)],
            )?;
            Ok(conn.last_insert_rowid())
        })
    }

    fn save_profile_scores(&self, run_id: i64, scores: &[(ProfileId, serde_json::Value)]) -> StoreResult<()> {
        self.with_writer(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO profile_scores (profile_id, run_id, scores) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (profile_id) DO UPDATE SET run_id = excluded.run_id, scores = excluded.scores",
                )?;
                for (profile, doc) in scores {
                    stmt.execute(params![*profile as i64, run_id, serde_json::to_string(doc)?])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn finish_analytics_run(&self, run_id: i64, outcome: &RunOutcome, now: DateTime<Utc>) -> StoreResult<()> {
        self.with_writer(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let (status, report, error) = match outcome {
                RunOutcome::Succeeded(report) => ("succeeded", Some(serde_json::to_string(report)?), None),
                RunOutcome::Failed(error) => ("failed", None, Some(error.as_str())),
            };
            tx.execute_cached(
                "UPDATE analytics_runs SET status = ?2, finished_at = ?3, report = ?4, error = ?5 WHERE id = ?1",
                params![run_id, status, ms(now), report, error],
            )?;
            if status == "succeeded" {
                // Scores of profiles this run did not score (merged away, erased, no longer buyers) are stale.
                tx.execute_cached("DELETE FROM profile_scores WHERE run_id <> ?1", [run_id])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn analytics_runs(&self, limit: usize) -> StoreResult<Vec<AnalyticsRun>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, trigger, status, started_at, finished_at, error FROM analytics_runs ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit as i64], run_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn analytics_run(&self, run_id: Option<i64>) -> StoreResult<Option<AnalyticsRun>> {
        self.with_reader(|conn| {
            let sql = "SELECT id, trigger, status, started_at, finished_at, error, report FROM analytics_runs";
            let row = match run_id {
                Some(id) => conn.query_row_cached(&format!("{sql} WHERE id = ?1"), [id], run_with_report),
                None => conn.query_row_cached(
                    &format!("{sql} WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1"),
                    [],
                    run_with_report,
                ),
            }
            .optional()?;
            row.map(|(mut run, report)| {
                run.report = report.map(|r| serde_json::from_str(&r)).transpose()?;
                Ok(run)
            })
            .transpose()
        })
    }

    fn segments(&self) -> StoreResult<Vec<StoredSegment>> {
        self.with_reader(segments::segments)
    }

    fn segment_by_name(&self, name: &str) -> StoreResult<Option<StoredSegment>> {
        self.with_reader(|conn| segments::segment_by_name(conn, name))
    }

    fn save_segment(
        &self,
        name: &str,
        description: &str,
        definition: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> StoreResult<StoredSegment> {
        self.with_writer(|conn| segments::save_segment(conn, name, description, definition, now))
    }

    fn placements(&self) -> StoreResult<Vec<StoredPlacement>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, definition, version, created_at, updated_at FROM recs_placements ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            rows.map(|row| {
                let (name, definition, version, created, updated) = row?;
                Ok(StoredPlacement {
                    name,
                    definition: serde_json::from_str(&definition)?,
                    version,
                    created_at: from_ms(created),
                    updated_at: from_ms(updated),
                })
            })
            .collect()
        })
    }

    fn save_placement(&self, name: &str, definition: &serde_json::Value, now: DateTime<Utc>) -> StoreResult<()> {
        self.with_writer(|conn| {
            conn.execute_cached(
                "INSERT INTO recs_placements (name, definition, version, created_at, updated_at)
                 VALUES (?1, ?2, 1, ?3, ?3)
                 ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,
                     version = recs_placements.version + 1, updated_at = excluded.updated_at",
                params![name, serde_json::to_string(definition)?, now.timestamp_millis()],
            )?;
            Ok(())
        })
    }

    fn delete_placement(&self, name: &str) -> StoreResult<bool> {
        self.with_writer(|conn| Ok(conn.execute_cached("DELETE FROM recs_placements WHERE name = ?1", [name])? > 0))
    }

    fn delete_segment(&self, name: &str) -> StoreResult<bool> {
        let Some(id) = self.with_writer(|conn| segments::delete_segment(conn, name))? else { return Ok(false) };
        self.with_derived_writer(|conn| segments::drop_members(conn, id))?;
        Ok(true)
    }

    fn record_segment_transitions(&self, transitions: &mut [SegmentTransitionRow]) -> StoreResult<()> {
        self.with_derived_writer(|conn| segments::record_transitions(conn, transitions))
    }

    fn apply_segment_members(&self, changes: &[MemberChange], through_seq: Option<i64>) -> StoreResult<()> {
        self.with_derived_writer(|conn| segments::apply_members(conn, changes, through_seq))
    }

    fn forget_segment_profile(&self, profile: ProfileId) -> StoreResult<()> {
        self.with_derived_writer(|conn| segments::forget_profile(conn, profile))
    }

    fn segment_members(
        &self,
        segment_id: i64,
        after: Option<ProfileId>,
        limit: usize,
    ) -> StoreResult<Vec<(ProfileId, DateTime<Utc>)>> {
        self.with_reader(|conn| segments::members(conn, segment_id, after, limit))
    }

    fn load_segment_members(&self, visit: &mut dyn FnMut(i64, ProfileId)) -> StoreResult<()> {
        self.with_scan_reader(|conn| segments::load_members(conn, visit))
    }

    fn prune_segment_members(&self) -> StoreResult<usize> {
        self.with_derived_writer(segments::catch_up_members)?;
        let stale = self.with_scan_reader(segments::stale_rows)?;
        self.with_derived_writer(|conn| segments::prune(conn, &stale))
    }

    fn profile_segments(&self, profile: ProfileId) -> StoreResult<Vec<(i64, String, DateTime<Utc>)>> {
        self.with_reader(|conn| segments::profile_memberships(conn, profile))
    }

    fn segment_transitions(&self, filter: &TransitionFilter) -> StoreResult<Vec<SegmentTransitionRow>> {
        self.with_reader(|conn| segments::transitions(conn, filter))
    }

    fn scan_profile_data(&self, after: Option<ProfileId>, limit: usize) -> StoreResult<Vec<ScannedProfile>> {
        self.with_scan_reader(|conn| segments::scan_profile_data(conn, after, limit))
    }

    fn scan_events(
        &self,
        after_seq: i64,
        limit: usize,
        wanted: &dyn Fn(&str) -> bool,
    ) -> StoreResult<(Vec<ScannedEvent>, Option<i64>)> {
        self.with_scan_reader(|conn| segments::scan_events(conn, after_seq, limit, wanted))
    }

    fn profile_scores(&self, profile: ProfileId) -> StoreResult<Option<serde_json::Value>> {
        self.with_reader(|conn| segments::profile_scores(conn, profile))
    }

    fn load_identity(&self, visit: &mut dyn FnMut(IdentityRow)) -> StoreResult<ProfileId> {
        self.with_scan_reader(|conn| {
            let mut stmt = conn.prepare("SELECT kind, value, profile_id FROM identities")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let identifier = Identifier::new(IdKind::parse(&r.get::<_, String>(0)?), r.get::<_, String>(1)?);
                visit(IdentityRow::Owner(identifier, r.get::<_, Option<i64>>(2)?.map(|p| p as ProfileId)));
            }
            let mut stmt = conn.prepare("SELECT id, identifiers, at_ms, message_id, trusted FROM identity_links")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let identifiers: Vec<Identifier> = serde_json::from_str(&r.get::<_, String>(1)?)?;
                let order = OrderKey { at_ms: r.get(2)?, message_id: r.get(3)? };
                let link = Link { identifiers, order, trusted: r.get::<_, i64>(4)? != 0 };
                visit(IdentityRow::Link(StoredLink { id: r.get::<_, i64>(0)? as LinkId, link }));
            }
            let max_profile: i64 = conn.query_row_cached(
                "SELECT MAX(m) FROM (SELECT COALESCE(MAX(id), 0) AS m FROM profiles
                 UNION ALL SELECT COALESCE(MAX(from_profile), 0) FROM merges
                 UNION ALL SELECT COALESCE(MAX(profile_id), 0) FROM erasures)",
                [],
                |r| r.get(0),
            )?;
            Ok(max_profile as ProfileId + 1)
        })
    }

    fn writer(&self) -> StoreResult<Box<dyn StoreWriter>> {
        let conn = self.connect(false)?;
        // With full durability the writer's commits still only write the WAL (no fsync: `NORMAL`), and its
        // `WalSyncer` fsyncs the WAL file on another thread; the pipeline acknowledges a commit after that. The
        // fsync of one group overlaps the work on the next instead of stalling it, and one fsync covers every
        // commit made meanwhile. A checkpoint (on its own `FULL` connection) fsyncs the WAL before it copies it
        // and the database after, so what a later restart of the WAL overwrites was durable already.
        let syncs = self.durability == Durability::Full;
        if syncs {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        conn.pragma_update(None, "cache_size", -65_536)?;
        // Checkpoints copy the WAL into the database and fsync it; done inline they stall the commit that
        // triggers them. A background connection does them instead, off the write path.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let wal = syncs.then(|| self.path.with_extension("db-wal"));
        // Loaded now, at start-up, so that the first request does not wait for it.
        let mut replay = replay_keys::ReplayKeys::default();
        replay.ensure_loaded(&conn)?;
        Ok(Box::new(SqliteWriter { conn, wal, _checkpointer: self.main_checkpointer()?, replay }))
    }
}

/// Fsyncs the main database's WAL file: every frame a commit wrote before the call is then on disk.
struct WalSyncer {
    wal: PathBuf,
    file: Option<std::fs::File>,
}

impl Syncer for WalSyncer {
    fn sync(&mut self) -> StoreResult<()> {
        if self.file.is_none() {
            // The WAL exists from the writer's first commit on and stays (restarts overwrite it in place;
            // truncation keeps the file) while the writer's connection is open.
            self.file = Some(std::fs::OpenOptions::new().write(true).open(&self.wal)?);
        }
        if let Some(file) = &self.file {
            file.sync_data()?;
        }
        Ok(())
    }
}

/// Runs passive WAL checkpoints on its own connection until dropped, then a final truncating one.
struct Checkpointer {
    /// Dropped to stop the thread: it wakes at once instead of at the end of its interval.
    stop: Option<std::sync::mpsc::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// A page rewritten by many commits within one interval is copied into the database once. Live traffic
    /// (time order) rewrites the same profile and timeline-index pages again and again: 1 s instead of 200 ms
    /// took ~5% off the kernel time per event and raised the median of six alternated 40 s runs by 5–8%
    /// (BENCHMARKS.md, 2026-12-05 19:08). Person order, where pages repeat little, showed no change. The restart
    /// figures below were measured with 200 ms: the frame count is now checked once a second, so a WAL can pass
    /// its threshold by up to a second of frames before it restarts (its size limit is twice the threshold).
    const INTERVAL: std::time::Duration = std::time::Duration::from_millis(1000);
    /// The WAL stays near 512 MiB (8 KiB pages). Each restart holds ingestion back for the copy of the last
    /// frames and the database file's fsync: 10–250 ms measured. With 128 MiB, events from many people at once
    /// (each event dirties its own profile, timeline and replay-key pages) restarted the WAL about every 0.7 s
    /// and put the ingest p99 at 78–89 ms; four times the WAL, a quarter of the restarts: p99 27–32 ms, and
    /// 15 ms instead of 20 ms for one person's history at a time. The price is a longer stall when one comes
    /// (max 180–310 ms against 90–160 ms) and up to 512 MiB of WAL on disk to replay after a crash.
    const MAIN_RESTART_AFTER_FRAMES: i64 = 65_536;
    /// The WAL stays near 256 MiB (4 KiB pages). Every restart holds the segment engine's next write back for
    /// the fsync of the database file: 3–25 ms measured, every ~1.1 s at 10,000 events/s with 64 MiB (each
    /// transition dirties about one page per commit across the history and membership indexes), which put
    /// ~27 stalls into a 30 s run and most of them into the latency p99. Four times the WAL, a quarter of the
    /// stalls.
    const DERIVED_RESTART_AFTER_FRAMES: i64 = 65_536;

    /// Twice what a WAL reaches between restarts: its file shrinks back only after a burst, so the usual cycle
    /// reuses its pages instead of growing the file again (each fresh page one the kernel must zero).
    const fn wal_limit_bytes(restart_after_frames: i64, page_size: i64) -> i64 {
        2 * restart_after_frames * page_size
    }

    fn start(
        mut conn: Connection,
        thread_name: &str,
        database: &'static str,
        restart_after_frames: i64,
    ) -> StoreResult<Self> {
        // A restarting checkpoint holds every writer back while it waits for readers of older snapshots. With
        // the writers' own 10 s patience it could stall them past it behind one long read, and they failed
        // with "database is locked" (measured after loading 1M profiles); with 50 ms it never found a gap
        // between the short reads of a busy engine and the WAL grew to 7 GB — but those 50 ms were a handful of
        // looks between SQLite's growing sleeps. It now looks every 200 µs for up to 100 ms (500 looks), and gives
        // up on a long read and tries again at the next interval, so writers are never held back long.
        conn.busy_handler(Some(wait_for_checkpoint))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new().name(thread_name.into()).spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(Self::INTERVAL) {
                match Self::checkpoint(&conn, restart_after_frames, database) {
                    Ok(()) => {}
                    Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => {
                        tracing::debug!("WAL checkpoint deferred: readers or a writer busy");
                    }
                    Err(error) => tracing::warn!(%error, "WAL checkpoint failed; will retry"),
                }
            }
            if let Err(error) = conn.query_row_cached("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!(%error, "final WAL checkpoint failed; the WAL is replayed on next open");
            }
        })?;
        Ok(Self { stop: Some(stop), handle: Some(handle) })
    }

    /// A passive checkpoint copies the WAL into the database without blocking anyone, but under a steady
    /// stream of commits it never catches the last frame, so the WAL never starts over and grows without
    /// bound (measured: gigabytes in half a minute at 10,000 events/s, every append a fresh page the kernel
    /// must zero). Once the passive pass has copied the bulk, a restarting checkpoint copies the few frames
    /// appended since while holding writers back briefly, and the next commit writes the WAL from its start.
    /// The restart syncs the database file while writers wait, so it comes right after a second passive pass
    /// (which copies and syncs what arrived during the first): little is left for it to copy and sync.
    fn checkpoint(conn: &Connection, restart_after_frames: i64, database: &str) -> rusqlite::Result<()> {
        let passive = || -> rusqlite::Result<i64> {
            conn.query_row_cached("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
        };
        if passive()? >= restart_after_frames {
            passive()?;
            let started = std::time::Instant::now();
            conn.query_row_cached("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
            let elapsed = started.elapsed();
            Telemetry::CheckpointRestarted { database, elapsed }.emit();
            if elapsed > std::time::Duration::from_millis(100) {
                // Most of it is usually waiting for the write lock (writers go on meanwhile); the part spent
                // copying, syncing and waiting for readers after taking it holds writers back.
                tracing::debug!(database, elapsed_ms = elapsed.as_millis() as u64, "a WAL restart took long");
            }
        }
        Ok(())
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

struct SqliteWriter {
    conn: Connection,
    /// The WAL file to fsync after commits, when they do not fsync themselves (full durability).
    wal: Option<PathBuf>,
    _checkpointer: std::sync::Arc<Checkpointer>,
    replay: replay_keys::ReplayKeys,
}

impl StoreWriter for SqliteWriter {
    fn begin(&mut self) -> StoreResult<Box<dyn WriteTx + '_>> {
        self.replay.ensure_loaded(&self.conn)?;
        let conn = &self.conn;
        // Unchecked only in that it takes the connection shared, so the transaction's statements can borrow it too;
        // this writer is the only one who begins transactions on it, one at a time (`&mut self`).
        let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
        Ok(Box::new(SqliteTx {
            hot: HotStatements::new(conn),
            tx,
            replay: ReplayGuard { keys: &mut self.replay, committed: false },
        }))
    }

    fn syncer(&mut self) -> StoreResult<Option<Box<dyn Syncer>>> {
        Ok(self.wal.clone().map(|wal| Box::new(WalSyncer { wal, file: None }) as Box<dyn Syncer>))
    }
}

struct SqliteTx<'c> {
    // Before `tx`: its statements go back to the connection's cache before the transaction ends.
    hot: HotStatements<'c>,
    tx: rusqlite::Transaction<'c>,
    replay: ReplayGuard<'c>,
}

/// The statements a write transaction runs for (nearly) every event.
#[derive(Clone, Copy)]
enum Hot {
    InsertEvent,
    LoadState,
    SaveState,
    SetOwner,
    ClaimReplayKey,
}

impl Hot {
    const COUNT: usize = 5;

    fn sql(self) -> &'static str {
        match self {
            Hot::InsertEvent => {
                "INSERT INTO events (profile_id, source_id, message_id, type, name, ts, received_at,
                 primary_identifier, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            }
            Hot::LoadState => "SELECT state FROM profiles WHERE id = ?1",
            Hot::SaveState => {
                "INSERT INTO profiles (id, state, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at"
            }
            Hot::SetOwner => {
                "INSERT INTO identities (identifier, kind, value, profile_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (identifier) DO UPDATE SET profile_id = excluded.profile_id"
            }
            Hot::ClaimReplayKey => replay_keys::CLAIM_SQL,
        }
    }
}

/// A transaction's hot statements, each taken from the connection's statement cache at its first use and held
/// until the transaction ends. Taking one from the cache for every use hashed its SQL text to find it and again to
/// put it back: 3–4% of the ingest writer's time (perf, BENCHMARKS.md 2026-12-06).
struct HotStatements<'c> {
    conn: &'c Connection,
    held: [Option<rusqlite::CachedStatement<'c>>; Hot::COUNT],
}

impl<'c> HotStatements<'c> {
    fn new(conn: &'c Connection) -> Self {
        Self { conn, held: Default::default() }
    }

    fn get(&mut self, which: Hot) -> StoreResult<&mut rusqlite::CachedStatement<'c>> {
        let slot = &mut self.held[which as usize];
        if slot.is_none() {
            *slot = Some(self.conn.prepare_cached(which.sql())?);
        }
        slot.as_mut().ok_or_else(|| StoreError::Invalid("a hot statement was not prepared".into()))
    }
}

/// Tells the replay keys how their transaction ended, however it ends.
struct ReplayGuard<'c> {
    keys: &'c mut replay_keys::ReplayKeys,
    committed: bool,
}

impl Drop for ReplayGuard<'_> {
    fn drop(&mut self) {
        self.keys.finish(self.committed);
    }
}

impl WriteTx for SqliteTx<'_> {
    fn claim_message(
        &mut self,
        source_id: i64,
        message_id: &str,
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let insert = self.hot.get(Hot::ClaimReplayKey)?;
        self.replay.keys.claim(&self.tx, insert, source_id, message_id, expires_at_ms, now_ms)
    }

    fn insert_event(&mut self, e: &NewEvent<'_>) -> StoreResult<i64> {
        self.hot.get(Hot::InsertEvent)?.execute(params![
            e.profile_id as i64,
            e.source_id,
            e.message_id,
            e.kind,
            e.name,
            e.ts_ms,
            e.received_ms,
            e.primary_identifier,
            e.body
        ])?;
        Ok(self.tx.last_insert_rowid())
    }

    fn load_state(&mut self, profile: ProfileId) -> StoreResult<Option<ProfileState>> {
        let state: Option<String> =
            self.hot.get(Hot::LoadState)?.query_row([profile as i64], |r| r.get(0)).optional()?;
        state.map(|s| serde_json::from_str(&s).map_err(StoreError::from)).transpose()
    }

    fn save_state(&mut self, profile: ProfileId, state: &ProfileState, now_ms: i64) -> StoreResult<()> {
        let state = serde_json::to_string(state)?;
        self.hot.get(Hot::SaveState)?.execute(params![profile as i64, state, now_ms])?;
        Ok(())
    }

    fn delete_profile(&mut self, profile: ProfileId) -> StoreResult<()> {
        self.tx.prepare_cached("DELETE FROM profiles WHERE id = ?1")?.execute([profile as i64])?;
        Ok(())
    }

    fn set_owner(&mut self, identifier: &Identifier, owner: Option<ProfileId>) -> StoreResult<()> {
        self.hot.get(Hot::SetOwner)?.execute(params![
            identifier.key(),
            identifier.kind.as_str(),
            identifier.value,
            owner.map(|p| p as i64)
        ])?;
        Ok(())
    }

    fn store_link(&mut self, stored: &StoredLink) -> StoreResult<()> {
        let link = &stored.link;
        self.tx
            .prepare_cached(
                "INSERT INTO identity_links (id, identifiers, at_ms, message_id, trusted)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms, message_id = excluded.message_id",
            )?
            .execute(params![
                stored.id as i64,
                serde_json::to_string(&link.identifiers)?,
                link.order.at_ms,
                link.order.message_id,
                link.trusted as i64
            ])?;
        Ok(())
    }

    fn delete_links(&mut self, ids: &[LinkId]) -> StoreResult<()> {
        let mut stmt = self.tx.prepare_cached("DELETE FROM identity_links WHERE id = ?1")?;
        for id in ids {
            stmt.execute([*id as i64])?;
        }
        Ok(())
    }

    fn record_merge(&mut self, m: &MergeRecord, now_ms: i64) -> StoreResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO merges (into_profile, from_profile, identifier, message_id, at_ms, replayed, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                m.into as i64,
                m.from as i64,
                m.identifier.key(),
                m.message_id,
                m.at_ms,
                m.replayed as i64,
                now_ms
            ])?;
        Ok(())
    }

    fn record_conflict(&mut self, c: &ConflictRecord, now_ms: i64) -> StoreResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO identity_conflicts (profile_id, identifier, reason, message_id, at_ms, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                c.profile.map(|p| p as i64),
                c.identifier.key(),
                serde_json::to_string(&c.reason)?,
                c.message_id,
                c.at_ms,
                now_ms
            ])?;
        Ok(())
    }

    fn move_events(&mut self, from: ProfileId, into: ProfileId) -> StoreResult<()> {
        self.tx
            .prepare_cached("UPDATE events SET profile_id = ?2 WHERE profile_id = ?1")?
            .execute(params![from as i64, into as i64])?;
        Ok(())
    }

    fn reattribute(&mut self, profiles: &[ProfileId]) -> StoreResult<()> {
        let mut stmt = self.tx.prepare_cached(
            "UPDATE events SET profile_id = COALESCE(
                 (SELECT i.profile_id FROM identities i WHERE i.identifier = events.primary_identifier), profile_id)
             WHERE profile_id = ?1",
        )?;
        for p in profiles {
            stmt.execute([*p as i64])?;
        }
        Ok(())
    }

    fn profile_events(&mut self, profile: ProfileId) -> StoreResult<Vec<StoredEvent>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT seq, profile_id, source_id, body FROM events WHERE profile_id = ?1 ORDER BY ts, seq",
        )?;
        let rows = stmt.query_map([profile as i64], event_from_row)?;
        rows.map(|r| to_event(&self.tx, r?)).collect()
    }

    fn erase_profile(&mut self, profile: ProfileId, now_ms: i64) -> StoreResult<(usize, usize)> {
        let p = profile as i64;
        let events = self.tx.execute_cached("DELETE FROM events WHERE profile_id = ?1", [p])?;
        let identities = self.tx.execute_cached("DELETE FROM identities WHERE profile_id = ?1", [p])?;
        self.tx.execute_cached("DELETE FROM profiles WHERE id = ?1", [p])?;
        self.tx.execute_cached("DELETE FROM identity_conflicts WHERE profile_id = ?1", [p])?;
        self.tx.execute_cached("DELETE FROM profile_scores WHERE profile_id = ?1", [p])?;
        self.tx.execute_cached(
            "UPDATE merges SET identifier = 'erased:' WHERE into_profile = ?1 OR from_profile = ?1",
            [p],
        )?;
        self.tx.execute_cached(
            "INSERT INTO erasures (profile_id, identifiers, events, erased_at) VALUES (?1, ?2, ?3, ?4)",
            params![p, identities as i64, events as i64, now_ms],
        )?;
        Ok((identities, events))
    }

    fn prune_dedup(&mut self, now_ms: i64, limit: usize) -> StoreResult<usize> {
        self.replay.keys.prune(&self.tx, now_ms, limit)
    }

    fn commit(self: Box<Self>) -> StoreResult<()> {
        let SqliteTx { hot, tx, mut replay } = *self;
        drop(hot);
        tx.commit()?;
        replay.committed = true;
        Ok(())
    }
}

/// A profile with its identifiers and latest scores, read inside the caller's transaction.
fn read_profile(conn: &Connection, id: ProfileId) -> StoreResult<Option<StoredProfile>> {
    let row = conn
        .query_row_cached("SELECT state, created_at, updated_at FROM profiles WHERE id = ?1", [id as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
        .optional()?;
    let Some((state, created, updated)) = row else { return Ok(None) };
    let mut stmt = conn.prepare_cached("SELECT kind, value FROM identities WHERE profile_id = ?1")?;
    let mut identities: Vec<Identifier> = stmt
        .query_map([id as i64], |r| {
            Ok(Identifier::new(IdKind::parse(&r.get::<_, String>(0)?), r.get::<_, String>(1)?))
        })?
        .collect::<Result<_, _>>()?;
    identities.sort();
    let scores: Option<String> = conn
        .prepare_cached("SELECT scores FROM profile_scores WHERE profile_id = ?1")?
        .query_row([id as i64], |r| r.get(0))
        .optional()?;
    Ok(Some(StoredProfile {
        id,
        state: serde_json::from_str(&state)?,
        scores: scores.map(|s| serde_json::from_str(&s)).transpose()?,
        identities,
        created_at: from_ms(created),
        updated_at: from_ms(updated),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_size(db: &Path) -> u64 {
        std::fs::metadata(db.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0)
    }

    /// A reader's old snapshot keeps the WAL from starting over, so it grows past its usual size; once the reader
    /// is gone and a checkpoint restarted it, the next commit must give the excess back.
    #[test]
    fn a_wal_grown_by_a_burst_shrinks_back_to_its_limit() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("t.db");
        let limit = 64 * 1024;
        let mut writer = open_connection(&db, false, 4096, "NORMAL", limit)?;
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        writer.execute_batch("CREATE TABLE t (v BLOB)")?;
        let reader = open_connection(&db, true, 4096, "NORMAL", limit)?;
        reader.execute_batch("BEGIN")?;
        reader.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))?;
        for _ in 0..64 {
            let tx = writer.transaction()?;
            tx.execute("INSERT INTO t (v) VALUES (zeroblob(16384))", [])?;
            tx.commit()?;
        }
        let grown = wal_size(&db);
        assert!(grown > 16 * limit as u64, "the burst grew the WAL to {grown} bytes");
        reader.execute_batch("COMMIT")?;

        let checkpointer = open_connection(&db, false, 4096, "NORMAL", limit)?;
        Checkpointer::checkpoint(&checkpointer, 1, "test")?;
        writer.execute("INSERT INTO t (v) VALUES (1)", [])?;
        let after = wal_size(&db);
        assert!(after <= limit as u64, "after the restart the WAL is {after} bytes (limit {limit}, was {grown})");
        let rows: i64 = writer.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?;
        assert_eq!(rows, 65);
        Ok(())
    }

    /// With full durability the writer's commits leave the fsync to its syncer (so the pipeline can overlap
    /// it with the next group); without, there is nothing to sync.
    #[test]
    fn full_durability_hands_the_fsync_to_a_syncer() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let full = SqliteStore::open(&dir.path().join("full"), Durability::Full)?;
        let mut writer = full.writer()?;
        let mut syncer = writer.syncer()?.expect("a syncer with full durability");
        let tx = writer.begin()?;
        tx.commit()?;
        syncer.sync()?;
        let conn = full.connect(false)?;
        let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        assert_eq!(synchronous, 2, "other connections still commit with FULL");

        let process = SqliteStore::open(&dir.path().join("process"), Durability::Process)?;
        assert!(process.writer()?.syncer()?.is_none());
        Ok(())
    }
}
