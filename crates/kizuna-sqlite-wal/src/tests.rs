//! The VFS against real files: what a commit leaves on disk is read back by a copy of the files opened afresh
//! (as after `kill -9`), which makes SQLite recover the WAL and check every frame's checksum.

use super::*;
use anyhow::Result;
use rusqlite::{Connection, OpenFlags, params};
use std::path::Path;

fn connect(path: &Path, cache_pages: i64) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags_and_vfs(path, flags, register().map_err(anyhow::Error::msg)?)?;
    conn.pragma_update(None, "page_size", 4096)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "cache_size", cache_pages)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

fn writes_during<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, u64)> {
    let before = WAL_WRITES.with(std::cell::Cell::get);
    let out = f()?;
    Ok((out, WAL_WRITES.with(std::cell::Cell::get) - before))
}

/// The database and its WAL as they are on disk now, copied and opened with SQLite's default VFS.
fn as_after_a_crash(path: &Path, into: &Path) -> Result<Connection> {
    std::fs::copy(path, into)?;
    let wal = path.with_extension("db-wal");
    if wal.exists() {
        std::fs::copy(&wal, into.with_extension("db-wal"))?;
    }
    let conn = Connection::open(into)?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(check, "ok");
    Ok(conn)
}

/// What the connection's main WAL holds in memory now.
#[allow(unsafe_code)]
fn buffered_wal_bytes(conn: &Connection) -> Result<usize> {
    let mut wal: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: the handle is the open connection's; SQLITE_FCNTL_JOURNAL_POINTER writes the main database's
    // journal file object (its WAL, in WAL mode) into `wal`, which lives while the connection is open.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_JOURNAL_POINTER,
            (&raw mut wal).cast::<c_void>(),
        )
    };
    anyhow::ensure!(rc == ffi::SQLITE_OK && !wal.is_null(), "no WAL file ({rc})");
    // SAFETY: the WAL was opened through this VFS with its database, so `open` set up its buffer.
    let (_, buffer) = unsafe { wal_parts(wal) };
    Ok(buffer.bytes.len())
}

fn rows(conn: &Connection) -> Result<Vec<(i64, Vec<u8>)>> {
    let mut statement = conn.prepare("SELECT id, body FROM t ORDER BY id")?;
    let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn body(id: i64, round: u8) -> Vec<u8> {
    (0..900).map(|i| (id as u8).wrapping_mul(31).wrapping_add(i as u8).wrapping_add(round)).collect()
}

fn insert(conn: &mut Connection, ids: std::ops::Range<i64>, round: u8) -> Result<()> {
    let tx = conn.transaction()?;
    for id in ids {
        tx.execute("INSERT OR REPLACE INTO t (id, body) VALUES (?1, ?2)", params![id, body(id, round)])?;
    }
    tx.commit()?;
    Ok(())
}

#[test]
fn a_commit_reaches_the_file_in_one_write_and_other_connections_read_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("a.db");
    let mut writer = connect(&path, 2000)?;
    writer.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")?;
    // 300 rows of 900 bytes: ~70 pages, 140 writes of SQLite's own.
    let ((), writes) = writes_during(|| insert(&mut writer, 0..300, 1))?;
    assert_eq!(writes, 1, "the commit's frames were written in one call");
    let reader = Connection::open(&path)?;
    assert_eq!(rows(&reader)?.len(), 300);
    let ((), writes) = writes_during(|| insert(&mut writer, 300..310, 1))?;
    assert_eq!(writes, 1);
    assert_eq!(rows(&reader)?.len(), 310, "the next commit is seen too");
    let copy = as_after_a_crash(&path, &dir.path().join("copy.db"))?;
    assert_eq!(rows(&copy)?, (0..310).map(|id| (id, body(id, 1))).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn a_transaction_that_spilled_and_rewrote_its_frames_is_whole_on_disk_when_its_commit_returns() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("b.db");
    // A 20-page cache: the transaction below spills pages into the WAL before it commits, writes some of them
    // again (SQLite overwrites those frames) and at the commit rewrites the frames' checksums.
    let mut writer = connect(&path, 20)?;
    writer.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")?;
    insert(&mut writer, 0..50, 0)?;
    let tx = writer.transaction()?;
    for id in 0..600 {
        tx.execute("INSERT OR REPLACE INTO t (id, body) VALUES (?1, ?2)", params![id, body(id, 1)])?;
    }
    for id in (0..600).step_by(7) {
        tx.execute("UPDATE t SET body = ?2 WHERE id = ?1", params![id, body(id, 2)])?;
    }
    let before = BUFFERED_AT_BARRIER.with(std::cell::Cell::get);
    tx.commit()?;
    assert_eq!(BUFFERED_AT_BARRIER.with(std::cell::Cell::get), before, "the commit was published with bytes in memory");
    let expected: Vec<_> = (0..600).map(|id| (id, body(id, if id % 7 == 0 { 2 } else { 1 }))).collect();
    let copy = as_after_a_crash(&path, &dir.path().join("copy.db"))?;
    assert_eq!(rows(&copy)?, expected, "every committed frame, with its final checksum, was in the file");
    assert_eq!(rows(&writer)?, expected);
    Ok(())
}

#[test]
fn frames_of_a_rolled_back_transaction_never_land_on_what_another_connection_committed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("c.db");
    let mut first = connect(&path, 20)?;
    first.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")?;
    insert(&mut first, 0..10, 0)?;
    {
        // Spills frames past the last commit, then rolls back: those frames are nobody's.
        let tx = first.transaction()?;
        let mut most_buffered = 0;
        for id in 1000..1400 {
            tx.execute("INSERT INTO t (id, body) VALUES (?1, ?2)", params![id, body(id, 9)])?;
            most_buffered = most_buffered.max(buffered_wal_bytes(&tx)?);
        }
        assert!(most_buffered > 0, "the transaction spilled frames that stayed in memory for a while");
        tx.execute("INSERT INTO t (id, body) VALUES (?1, ?2)", params![2000, body(2000, 9)])?;
        tx.rollback()?;
    }
    assert_eq!(buffered_wal_bytes(&first)?, 0, "nothing is held once the transaction is over");
    // Another connection commits over the same part of the WAL.
    let mut second = connect(&path, 2000)?;
    insert(&mut second, 10..200, 1)?;
    // The first connection works on: whatever it still held must not be written over the second's commit.
    insert(&mut first, 200..210, 1)?;
    let expected: Vec<_> = (0..10).map(|id| (id, body(id, 0))).chain((10..210).map(|id| (id, body(id, 1)))).collect();
    assert_eq!(rows(&first)?, expected);
    let copy = as_after_a_crash(&path, &dir.path().join("copy.db"))?;
    assert_eq!(rows(&copy)?, expected);
    Ok(())
}

#[test]
fn a_connection_keeps_writing_whole_commits_after_another_one_started_the_wal_over() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("d.db");
    let mut first = connect(&path, 2000)?;
    first.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")?;
    insert(&mut first, 0..300, 1)?;
    let mut second = connect(&path, 2000)?;
    insert(&mut second, 300..320, 1)?;
    // Copies the WAL into the database and starts the WAL over: the next writer writes a new WAL header.
    second.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    insert(&mut second, 320..330, 1)?;
    // The first connection's last commit lies beyond the frames it writes now, in the WAL's earlier generation.
    let ((), writes) = writes_during(|| insert(&mut first, 330..400, 1))?;
    assert_eq!(writes, 1);
    let expected: Vec<_> = (0..400).map(|id| (id, body(id, 1))).collect();
    let copy = as_after_a_crash(&path, &dir.path().join("copy.db"))?;
    assert_eq!(rows(&copy)?, expected);
    Ok(())
}

#[test]
fn nothing_is_buffered_when_sqlite_publishes_a_commit_even_with_padding_frames() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("e.db");
    // `psow=0`: the device may tear a sector, so with `synchronous = FULL` SQLite pads each commit to a sector
    // boundary with copies of its commit frame and syncs in the middle of the one that crosses it.
    let uri = format!("file:{}?psow=0", path.display());
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_URI;
    let mut conn = Connection::open_with_flags_and_vfs(&uri, flags, register().map_err(anyhow::Error::msg)?)?;
    conn.pragma_update(None, "page_size", 4096)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")?;
    let before = BUFFERED_AT_BARRIER.with(std::cell::Cell::get);
    for round in 0..5 {
        insert(&mut conn, round * 40..round * 40 + 37, 1)?;
    }
    assert_eq!(BUFFERED_AT_BARRIER.with(std::cell::Cell::get), before, "a barrier passed with bytes in memory");
    let expected: Vec<_> = (0..5).flat_map(|round| round * 40..round * 40 + 37).map(|id| (id, body(id, 1))).collect();
    let copy = as_after_a_crash(&path, &dir.path().join("copy.db"))?;
    assert_eq!(rows(&copy)?, expected);
    Ok(())
}

#[test]
fn registering_twice_gives_the_same_vfs() {
    assert_eq!(register(), Ok(VFS_NAME));
    assert_eq!(register(), Ok(VFS_NAME));
}

#[test]
fn commits_that_rebalance_pages_skip_the_cache_walk_and_a_rolled_back_growth_is_still_dropped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.db");
    let mut conn = connect(&path, 4000)?;
    page_cache_wrapped().map_err(anyhow::Error::msg)?;
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB); CREATE INDEX t_body ON t (body);")?;
    // Bodies in a scattered order: index leaves split and are rebalanced, which parks pages under the lock-byte
    // page's number, and each commit ends with a truncation at the database's end.
    let scattered = |n: i64| (n * 7_919) % 10_007;
    let (_, skipped_before) = page_cache::truncations();
    for round in 0..40 {
        let tx = conn.transaction()?;
        for n in round * 100..(round + 1) * 100 {
            tx.execute("INSERT INTO t (id, body) VALUES (?1, ?2)", params![n, body(scattered(n), 0)])?;
        }
        tx.commit()?;
    }
    let (passed_before, skipped) = page_cache::truncations();
    assert!(skipped - skipped_before >= 40, "every commit's truncation left out: {skipped_before} → {skipped}");

    // A transaction that grows the database and rolls back ends with a truncation that has pages to drop, and the
    // next growth's rows are what is stored. (In WAL mode the rollback itself already drops its dirty pages, so
    // this checks the whole path; the bookkeeping is checked page by page in `page_cache`'s own test.)
    let tx = conn.transaction()?;
    for n in 4_000..6_000 {
        tx.execute("INSERT INTO t (id, body) VALUES (?1, ?2)", params![n, vec![0xAB_u8; 900]])?;
    }
    tx.rollback()?;
    let (passed, _) = page_cache::truncations();
    assert!(passed > passed_before, "the rollback's truncation is passed on");
    insert(&mut conn, 4_000..6_000, 1)?;
    for conn in [&conn, &as_after_a_crash(&path, &dir.path().join("copy.db"))?] {
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        assert_eq!(check, "ok");
        let stored = rows(conn)?;
        assert_eq!(stored.len(), 6_000);
        assert!(stored.iter().all(|(id, body_)| *id < 4_000 || *body_ == body(*id, 1)), "the new growth's rows");
    }
    Ok(())
}

/// The buffer's rules, on a plain file: what SQLite's writes leave in the file, write by write.
mod buffer {
    use super::*;

    const PAGE: usize = 512;
    const WAL_HEADER_BYTES: usize = 32;

    fn wal_buffer(path: &Path) -> Result<WalBuffer> {
        Ok(WalBuffer {
            file: std::ptr::null_mut(),
            writes: std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(path)?,
            bytes: Vec::new(),
            start: 0,
            commit_pending: false,
            committed: false,
        })
    }

    fn frame_header(commit_size: u32, salts: [u8; 8]) -> Vec<u8> {
        let mut header = vec![0u8; FRAME_HEADER_BYTES];
        header[4..8].copy_from_slice(&commit_size.to_be_bytes());
        header[8..16].copy_from_slice(&salts);
        header
    }

    fn frame_offset(frame: usize) -> i64 {
        (WAL_HEADER_BYTES + frame * (FRAME_HEADER_BYTES + PAGE)) as i64
    }

    /// Writes frame `frame` (0-based) as SQLite does: its header, then its page.
    fn write_frame(buffer: &mut WalBuffer, frame: usize, commit_size: u32, salts: [u8; 8], fill: u8) {
        let offset = frame_offset(frame);
        assert_eq!(buffer.write(&frame_header(commit_size, salts), offset), ffi::SQLITE_OK);
        assert_eq!(buffer.write(&[fill; PAGE], offset + FRAME_HEADER_BYTES as i64), ffi::SQLITE_OK);
    }

    fn on_disk(path: &Path) -> Result<Vec<u8>> {
        Ok(std::fs::read(path)?)
    }

    #[test]
    fn frames_stay_in_memory_until_the_commit_frame_then_go_in_one_write() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db-wal");
        let mut buffer = wal_buffer(&path)?;
        let salts = [1, 2, 3, 4, 5, 6, 7, 8];
        let ((), writes) = writes_during(|| {
            assert_eq!(buffer.write(&[9; WAL_HEADER_BYTES], 0), ffi::SQLITE_OK);
            for frame in 0..5 {
                write_frame(&mut buffer, frame, 0, salts, frame as u8);
            }
            assert!(on_disk(&path)?.is_empty(), "nothing is written before the commit frame");
            write_frame(&mut buffer, 5, 42, salts, 5);
            Ok(())
        })?;
        assert_eq!(writes, 1);
        let file = on_disk(&path)?;
        assert_eq!(file.len() as i64, frame_offset(6));
        assert_eq!(file[frame_offset(3) as usize + FRAME_HEADER_BYTES], 3);
        assert!(buffer.committed && buffer.bytes.is_empty());
        Ok(())
    }

    #[test]
    fn a_rewrite_of_a_committed_frame_goes_to_the_file_at_once() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db-wal");
        let mut buffer = wal_buffer(&path)?;
        let salts = [1; 8];
        assert_eq!(buffer.write(&[9; WAL_HEADER_BYTES], 0), ffi::SQLITE_OK);
        for frame in 0..3 {
            write_frame(&mut buffer, frame, if frame == 2 { 7 } else { 0 }, salts, 1);
        }
        // SQLite recomputes the checksums of the transaction's frames after the commit frame: header only.
        let mut rewritten = frame_header(0, salts);
        rewritten[16..24].copy_from_slice(&[0xAB; 8]);
        let ((), writes) = writes_during(|| {
            assert_eq!(buffer.write(&rewritten, frame_offset(1)), ffi::SQLITE_OK);
            Ok(())
        })?;
        assert_eq!(writes, 1);
        let file = on_disk(&path)?;
        assert_eq!(&file[frame_offset(1) as usize + 16..frame_offset(1) as usize + 24], &[0xAB; 8]);
        assert!(buffer.bytes.is_empty());
        Ok(())
    }

    #[test]
    fn padding_after_the_commit_frame_goes_to_the_file_even_when_split_at_a_sync_point() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db-wal");
        let mut buffer = wal_buffer(&path)?;
        write_frame(&mut buffer, 0, 0, [1; 8], 1);
        write_frame(&mut buffer, 1, 2, [1; 8], 1);
        // `synchronous = FULL` without power-safe overwrite: SQLite repeats the commit frame up to the sector
        // boundary, splitting the write that crosses it around a sync (`walWriteToLog`).
        let padding = frame_offset(2);
        let ((), writes) = writes_during(|| {
            assert_eq!(buffer.write(&frame_header(2, [1; 8]), padding), ffi::SQLITE_OK);
            assert_eq!(buffer.write(&[7; 100], padding + 24), ffi::SQLITE_OK);
            assert_eq!(buffer.write(&[7; PAGE - 100], padding + 124), ffi::SQLITE_OK);
            Ok(())
        })?;
        assert_eq!(writes, 3, "each piece went to the file as it came");
        assert!(buffer.bytes.is_empty());
        assert_eq!(on_disk(&path)?.len() as i64, frame_offset(3));
        Ok(())
    }

    #[test]
    fn the_next_transactions_frames_are_buffered_again_after_a_lock_call() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db-wal");
        let mut buffer = wal_buffer(&path)?;
        write_frame(&mut buffer, 0, 1, [1; 8], 1);
        assert!(buffer.committed);
        assert_eq!(buffer.lock_changes(), ffi::SQLITE_OK, "the write lock is released");
        let ((), writes) = writes_during(|| {
            write_frame(&mut buffer, 1, 0, [1; 8], 2);
            write_frame(&mut buffer, 2, 0, [1; 8], 2);
            assert_eq!(buffer.bytes.len(), 2 * (FRAME_HEADER_BYTES + PAGE), "buffered, not written through");
            write_frame(&mut buffer, 3, 4, [1; 8], 2);
            Ok(())
        })?;
        assert_eq!(writes, 1);
        Ok(())
    }

    #[test]
    fn frames_of_a_transaction_that_rolled_back_reach_the_file_before_its_lock_is_released() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db-wal");
        let mut buffer = wal_buffer(&path)?;
        write_frame(&mut buffer, 0, 0, [1; 8], 1);
        write_frame(&mut buffer, 1, 0, [1; 8], 1);
        assert!(on_disk(&path)?.is_empty());
        assert_eq!(buffer.lock_changes(), ffi::SQLITE_OK);
        assert_eq!(on_disk(&path)?.len() as i64, frame_offset(2));
        assert!(buffer.bytes.is_empty());
        Ok(())
    }

    #[test]
    fn a_buffer_grown_by_a_big_transaction_gives_the_excess_back_and_a_small_one_keeps_it() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db-wal");
        let mut buffer = wal_buffer(&path)?;
        let big = KEPT_CAPACITY / (FRAME_HEADER_BYTES + PAGE) + 10;
        for frame in 0..big {
            write_frame(&mut buffer, frame, if frame + 1 == big { 9 } else { 0 }, [1; 8], 1);
        }
        assert!(buffer.bytes.capacity() <= KEPT_CAPACITY, "the big commit's allocation shrank back");
        assert!(buffer.bytes.capacity() >= KEPT_CAPACITY / 2, "and kept what a live commit needs");
        assert_eq!(buffer.lock_changes(), ffi::SQLITE_OK);
        for frame in big..big + 3 {
            write_frame(&mut buffer, frame, if frame + 1 == big + 3 { 9 } else { 0 }, [1; 8], 1);
        }
        assert!(buffer.bytes.capacity() > 0, "a small commit's allocation is kept for the next one");
        assert_eq!(on_disk(&path)?.len() as i64, frame_offset(big + 3));
        Ok(())
    }

    #[test]
    fn a_failed_write_is_reported_and_leaves_nothing_buffered() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db-wal");
        let mut buffer = wal_buffer(&path)?;
        // A descriptor opened for reading only: every write fails.
        buffer.writes = std::fs::File::open(&path)?;
        write_frame(&mut buffer, 0, 0, [1; 8], 1);
        assert_eq!(buffer.write(&frame_header(3, [1; 8]), frame_offset(1)), ffi::SQLITE_OK);
        let page = frame_offset(1) + FRAME_HEADER_BYTES as i64;
        assert_eq!(buffer.write(&[1; PAGE], page), ffi::SQLITE_IOERR_WRITE, "the commit frame's write fails");
        assert!(buffer.bytes.is_empty());
        assert!(!buffer.committed && !buffer.commit_pending, "a commit that did not reach the file is not counted");
        Ok(())
    }
}
