//! A SQLite VFS that writes each commit's WAL frames to the file in one system call, and a page cache that
//! spares a write transaction's end a walk of the whole cache ([`page_cache`]).
//!
//! SQLite writes every WAL frame with two `pwrite`s, its 24-byte header and then its page, so a commit of 80 pages
//! is 160 system calls. The kernel takes the file's lock, updates its times and looks up the page-cache pages for
//! each call, and a frame's header and page share a page. On the ingest writer these writes were 13–17% of the
//! thread's time (BENCHMARKS.md, 2026-12-06). Measured alone on this machine's disk, one write per 80-frame
//! commit took 1.7 µs per frame against 2.9 µs as two writes per frame.
//!
//! [`register`] adds a VFS named [`VFS_NAME`] that wraps the platform's default one. Only WAL files and the main
//! database files they belong to get wrapped methods; every other file is the default VFS's own. For a WAL file,
//! the frames a connection appends are gathered in memory and written at once:
//!
//! - **At the commit frame.** SQLite publishes a commit to other connections (the wal-index header) only after
//!   the commit frame's write returned, so everything a reader may read is in the file by then. A failed write
//!   is the commit frame's failed write: the transaction fails as it would have without this VFS.
//! - **Before anything else touches the file**: a read (SQLite may read back a page it spilled), a write that
//!   does not follow on, a sync, a truncation, a size query, a file control, closing.
//! - **Before the connection takes or releases a wal-index lock** (`xShmLock` on its database file). A
//!   transaction that spilled pages into the WAL and then rolled back leaves frames nobody committed; they must
//!   reach the file (or nowhere) while the connection still holds the write lock. Written later, they would land
//!   on frames another connection committed in the meantime.
//!
//! After the commit frame, and until the connection's next wal-index lock call, every write goes to the file
//! directly: SQLite may still rewrite the checksums of the transaction's frames (when a page it had spilled was
//! written again) or pad the commit with copies of its last frame (`synchronous = FULL` without power-safe
//! overwrite), and it publishes the commit only after those writes returned.

use rusqlite::ffi;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The name to open connections with (`Connection::open_with_flags_and_vfs`).
pub const VFS_NAME: &str = "kizuna-wal";
const VFS_NAME_C: &CStr = c"kizuna-wal";

const FRAME_HEADER_BYTES: usize = 24;
/// A transaction's frames beyond this are written before its commit (huge transactions, for instance a bulk
/// load's), so that the buffer stays small.
const MAX_BUFFERED_BYTES: usize = 8 << 20;
/// A buffer that grew past this for one big transaction gives the rest of its memory back after writing it out.
/// Live ingest commits are ~80 frames of 8 KiB but some pass 1 MiB: a buffer freed whenever one did grew again
/// from nothing by doubling, copying what it held each time (1.6% of the ingest writer's time).
const KEPT_CAPACITY: usize = 4 << 20;

static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
/// The default VFS this one wraps, as an address (set once, before the VFS is registered).
static BASE_VFS: AtomicUsize = AtomicUsize::new(0);
/// Where this VFS's own fields start in a file object: after the default VFS's file object.
static EXTRA_OFFSET: AtomicUsize = AtomicUsize::new(0);
/// Open main database files by the address of their name, so that a WAL file finds the database file it belongs
/// to (SQLite keeps a database's WAL name in the same allocation as its name: `sqlite3_filename_database`).
static DATABASES: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

/// Registers the VFS, once per process; later calls return the first outcome. Returns the name to open with.
pub fn register() -> Result<&'static str, String> {
    REGISTERED.get_or_init(register_now).clone().map(|()| VFS_NAME)
}

/// Whether SQLite's page cache is wrapped in this process (see [`page_cache`]), after [`register`]: it can be only
/// when nothing initialised SQLite before the first `register`.
pub fn page_cache_wrapped() -> Result<(), String> {
    PAGE_CACHE.get().cloned().unwrap_or_else(|| Err("register() has not run".into()))
}

static PAGE_CACHE: OnceLock<Result<(), String>> = OnceLock::new();

#[allow(unsafe_code)]
fn register_now() -> Result<(), String> {
    // Before anything below initialises SQLite, which it accepts a page cache only before. A failure costs speed
    // only: the default cache is used unwrapped.
    PAGE_CACHE.get_or_init(page_cache::install);
    // SAFETY: a null name asks for the default VFS. SQLite initialises itself if needed and returns a pointer to a
    // registered VFS, which stays valid for the life of the process (nothing here unregisters it).
    let base = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
    if base.is_null() {
        return Err("SQLite has no default VFS".into());
    }
    // SAFETY: `base` is non-null and points to a registered VFS (above); `sqlite3_vfs` is plain data.
    let mut vfs = unsafe { *base };
    let base_file_bytes = usize::try_from(vfs.szOsFile).map_err(|_| "the default VFS's file size is negative")?;
    let extra_offset = base_file_bytes.next_multiple_of(std::mem::align_of::<Extra>());
    vfs.szOsFile = c_int::try_from(extra_offset + std::mem::size_of::<Extra>())
        .map_err(|_| "the default VFS's file object is too large")?;
    vfs.zName = VFS_NAME_C.as_ptr();
    vfs.pNext = std::ptr::null_mut();
    vfs.xOpen = Some(open);
    BASE_VFS.store(base as usize, Ordering::Release);
    EXTRA_OFFSET.store(extra_offset, Ordering::Release);
    // The VFS object must outlive every connection that uses it: it is leaked, once per process.
    let vfs: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(vfs));
    // SAFETY: `vfs` is fully initialised and lives for the rest of the process; registration is thread-safe.
    let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if rc == ffi::SQLITE_OK { Ok(()) } else { Err(format!("sqlite3_vfs_register failed with code {rc}")) }
}

/// This VFS's fields, after the default VFS's file object in each file SQLite opens through it.
#[repr(C)]
struct Extra {
    /// The default VFS's methods for this file.
    inner: *const ffi::sqlite3_io_methods,
    /// For a WAL file, its buffered frames; for a main database file, its WAL's (null when it has none open).
    wal: *mut WalBuffer,
    /// For a main database file, the address of its name (its key in `DATABASES`); for a WAL file, the database
    /// file it belongs to (null if none was found).
    partner: usize,
}

struct WalBuffer {
    /// The WAL file object SQLite opened (its `Extra` is reached through it when its database closes first).
    file: *mut ffi::sqlite3_file,
    /// The WAL file opened once more, for the buffered writes: the default VFS writes at most 128 KiB per call.
    /// Nothing locks a WAL file (its locks are on the wal-index), so a descriptor of our own closed with it
    /// releases no lock SQLite holds.
    writes: std::fs::File,
    bytes: Vec<u8>,
    /// The file offset of `bytes[0]`.
    start: i64,
    /// The last frame header buffered is a commit frame's: its page completes the commit.
    commit_pending: bool,
    /// The commit frame is in the file: until the connection next takes or releases a wal-index lock (its
    /// write transaction ends), every write goes straight to the file. SQLite may still rewrite the checksums of
    /// the transaction's frames, or (with `synchronous = FULL` on a device without power-safe overwrite) pad the
    /// commit with copies of its last frame split at a sync point, before it publishes the commit.
    committed: bool,
}

/// Where this VFS's fields are in a file object it allocated.
///
/// # Safety
/// `file` must be a file object of this VFS (`szOsFile` bytes, with room for `Extra` at `EXTRA_OFFSET`).
#[allow(unsafe_code)]
unsafe fn extra_slot(file: *mut ffi::sqlite3_file) -> *mut Extra {
    // SAFETY: per this function's contract the object is `szOsFile` bytes long, and `register_now` computed that
    // size as `EXTRA_OFFSET + size_of::<Extra>()` with the offset aligned for `Extra`; SQLite allocates file
    // objects with 8-byte alignment.
    unsafe { file.cast::<u8>().add(EXTRA_OFFSET.load(Ordering::Acquire)).cast::<Extra>() }
}

/// This VFS's fields of a file [`open`] set up.
///
/// # Safety
/// `file` must be a file [`open`] wrapped (it wrote the `Extra`), not yet closed. A file object is used by one
/// connection, on one thread at a time.
#[allow(unsafe_code)]
unsafe fn extra<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Extra {
    // SAFETY: per the contract, `open` initialised the `Extra` in the slot.
    unsafe { &mut *extra_slot(file) }
}

#[allow(unsafe_code)]
unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let base = BASE_VFS.load(Ordering::Acquire) as *mut ffi::sqlite3_vfs;
    // SAFETY: `base` was stored before this VFS was registered, so it is the default VFS (valid for the process).
    let Some(base_open) = (unsafe { (*base).xOpen }) else { return ffi::SQLITE_CANTOPEN };
    // SAFETY: the default VFS opens into the first `szOsFile` bytes of its own size, which ours extends.
    let rc = unsafe { base_open(base, name, file, flags, out_flags) };
    // SAFETY: after a successful open, `pMethods` is the default VFS's methods for the file (or null).
    let inner = unsafe { (*file).pMethods };
    // Version 3 methods (with the wal-index and memory-mapping ones) are what this VFS's own methods declare.
    // SAFETY: a non-null `inner` points to the default VFS's static methods.
    if rc != ffi::SQLITE_OK || name.is_null() || inner.is_null() || unsafe { (*inner).iVersion } < 3 {
        return rc;
    }
    // SAFETY: `file` is a file object of this VFS; its `Extra` is written here before anything reads it.
    let slot = unsafe { extra_slot(file) };
    if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
        // SAFETY: `slot` is valid for writes and aligned (above).
        unsafe { slot.write(Extra { inner, wal: std::ptr::null_mut(), partner: name as usize }) };
        databases().push((name as usize, file as usize));
        // SAFETY: `file` is open and now set up as a wrapped database file.
        unsafe { (*file).pMethods = &DATABASE_METHODS };
    } else if flags & ffi::SQLITE_OPEN_WAL != 0 {
        // SAFETY: `name` is a WAL file name SQLite built next to its database's name.
        let database_name = unsafe { ffi::sqlite3_filename_database(name) } as usize;
        let database = databases().iter().find(|(key, _)| *key == database_name).map(|&(_, file)| file);
        let Some(database) = database else {
            // Without its database file this WAL's locks cannot be watched: leave it to the default VFS.
            return rc;
        };
        // SAFETY: `name` is the WAL's path, a NUL-terminated string valid while the file is open.
        let path = unsafe { CStr::from_ptr(name) };
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
        let Ok(writes) = std::fs::OpenOptions::new().write(true).open(path) else {
            // Writable through SQLite's descriptor but not through ours (it was just opened): write as SQLite does.
            return rc;
        };
        let buffer = Box::into_raw(Box::new(WalBuffer {
            file,
            writes,
            bytes: Vec::new(),
            start: 0,
            commit_pending: false,
            committed: false,
        }));
        // SAFETY: `slot` is valid for writes and aligned (above).
        unsafe { slot.write(Extra { inner, wal: buffer, partner: database }) };
        // SAFETY: `database` is an open main database file of this VFS (in `DATABASES` until it closes), used by
        // the same connection, and its WAL closes before it does.
        unsafe { extra(database as *mut ffi::sqlite3_file).wal = buffer };
        // SAFETY: `file` is open and now set up as a wrapped WAL file.
        unsafe { (*file).pMethods = &WAL_METHODS };
    }
    rc
}

fn databases() -> std::sync::MutexGuard<'static, Vec<(usize, usize)>> {
    DATABASES.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
thread_local! {
    /// Writes this VFS made to WAL files on this thread (tests count them).
    static WAL_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Times SQLite went through a wal-index barrier (as when it publishes a commit) with WAL bytes still buffered.
    static BUFFERED_AT_BARRIER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl WalBuffer {
    fn end(&self) -> i64 {
        self.start + self.bytes.len() as i64
    }

    /// Writes `bytes` at `offset`, all of them (or fails).
    fn write_through(&self, bytes: &[u8], offset: i64) -> c_int {
        use std::os::unix::fs::FileExt;
        #[cfg(test)]
        WAL_WRITES.with(|writes| writes.set(writes.get() + 1));
        let Ok(offset) = u64::try_from(offset) else { return ffi::SQLITE_IOERR_WRITE };
        match self.writes.write_all_at(bytes, offset) {
            Ok(()) => ffi::SQLITE_OK,
            Err(error) if error.raw_os_error() == Some(28) => ffi::SQLITE_FULL, // ENOSPC
            Err(_) => ffi::SQLITE_IOERR_WRITE,
        }
    }

    /// Writes what is buffered. The buffer is empty afterwards, whether the write succeeded or not (a failure is
    /// reported to SQLite, which then fails the transaction the frames belonged to).
    fn flush(&mut self) -> c_int {
        self.commit_pending = false;
        if self.bytes.is_empty() {
            return ffi::SQLITE_OK;
        }
        let rc = self.write_through(&self.bytes, self.start);
        self.bytes.clear();
        self.bytes.shrink_to(KEPT_CAPACITY);
        rc
    }

    fn write(&mut self, bytes: &[u8], offset: i64) -> c_int {
        if self.committed {
            return self.write_through(bytes, offset);
        }
        if !self.bytes.is_empty() && (offset != self.end() || self.bytes.len() + bytes.len() > MAX_BUFFERED_BYTES) {
            let rc = self.flush();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if self.bytes.is_empty() {
            self.start = offset;
        }
        self.bytes.extend_from_slice(bytes);
        if self.commit_pending {
            // The page of the commit frame: the whole commit goes to the file now.
            let rc = self.flush();
            self.committed = rc == ffi::SQLITE_OK;
            return rc;
        }
        // A frame header's bytes 4..8 hold the database size after a commit, and are zero in every other frame.
        self.commit_pending = bytes.len() == FRAME_HEADER_BYTES && bytes[4..8] != [0; 4];
        ffi::SQLITE_OK
    }

    /// The connection takes or releases a wal-index lock: what it buffered goes to the file while the lock is as
    /// it was, and its next transaction's frames are buffered again.
    fn lock_changes(&mut self) -> c_int {
        self.committed = false;
        self.flush()
    }
}

/// The WAL file's buffer and its default methods.
///
/// # Safety
/// `file` must be a WAL file [`open`] set up (its `pMethods` is `WAL_METHODS`) and not yet closed.
#[allow(unsafe_code)]
unsafe fn wal_parts<'a>(file: *mut ffi::sqlite3_file) -> (&'a ffi::sqlite3_io_methods, &'a mut WalBuffer) {
    // SAFETY: per the contract, `Extra` was written by `open` with the default methods and a live buffer.
    unsafe {
        let fields = extra(file);
        (&*fields.inner, &mut *fields.wal)
    }
}

/// Flushes a WAL file's buffer, then calls its default method.
macro_rules! flush_then {
    ($file:ident, $method:ident($($arg:expr),*)) => {{
        // SAFETY: SQLite calls WAL methods only on files `open` set up with `WAL_METHODS`.
        let (inner, buffer) = unsafe { wal_parts($file) };
        let rc = buffer.flush();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        match inner.$method {
            // SAFETY: the default VFS's method for this file, with SQLite's own arguments.
            Some(method) => unsafe { method($file, $($arg),*) },
            None => ffi::SQLITE_IOERR,
        }
    }};
}

/// Calls a file's default method unchanged.
macro_rules! delegate {
    ($file:ident, $method:ident($($arg:expr),*), $missing:expr) => {{
        // SAFETY: SQLite calls these methods only on files `open` set up, whose `Extra` holds the default methods.
        let inner = unsafe { &*extra($file).inner };
        match inner.$method {
            // SAFETY: the default VFS's method for this file, with SQLite's own arguments.
            Some(method) => unsafe { method($file, $($arg),*) },
            None => $missing,
        }
    }};
}

pub mod page_cache;

#[allow(unsafe_code)]
mod methods {
    use super::*;

    pub(super) unsafe extern "C" fn wal_close(file: *mut ffi::sqlite3_file) -> c_int {
        // SAFETY: SQLite closes each file once, through the methods `open` gave it.
        let fields = unsafe { extra(file) };
        // SAFETY: a WAL file's buffer was boxed by `open` and is freed only here.
        let mut buffer = unsafe { Box::from_raw(fields.wal) };
        let flushed = buffer.flush();
        if fields.partner != 0 {
            // SAFETY: the database file outlives its WAL (SQLite closes the WAL first) and is used by the same
            // connection.
            unsafe { extra(fields.partner as *mut ffi::sqlite3_file).wal = std::ptr::null_mut() };
        }
        // SAFETY: hand the file back to the default VFS's methods to close it.
        let closed = unsafe {
            (*file).pMethods = fields.inner;
            match (*fields.inner).xClose {
                Some(close) => close(file),
                None => ffi::SQLITE_OK,
            }
        };
        if flushed != ffi::SQLITE_OK { flushed } else { closed }
    }

    pub(super) unsafe extern "C" fn wal_read(
        file: *mut ffi::sqlite3_file,
        data: *mut c_void,
        amount: c_int,
        offset: ffi::sqlite3_int64,
    ) -> c_int {
        flush_then!(file, xRead(data, amount, offset))
    }

    pub(super) unsafe extern "C" fn wal_write(
        file: *mut ffi::sqlite3_file,
        data: *const c_void,
        amount: c_int,
        offset: ffi::sqlite3_int64,
    ) -> c_int {
        // SAFETY: SQLite calls WAL methods only on files `open` set up with `WAL_METHODS`.
        let (_, buffer) = unsafe { wal_parts(file) };
        let Ok(length) = usize::try_from(amount) else { return ffi::SQLITE_IOERR_WRITE };
        // SAFETY: SQLite passes `amount` readable bytes at `data`, valid for the call.
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), length) };
        buffer.write(bytes, offset)
    }

    pub(super) unsafe extern "C" fn wal_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
        flush_then!(file, xTruncate(size))
    }

    pub(super) unsafe extern "C" fn wal_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
        flush_then!(file, xSync(flags))
    }

    pub(super) unsafe extern "C" fn wal_file_size(
        file: *mut ffi::sqlite3_file,
        size: *mut ffi::sqlite3_int64,
    ) -> c_int {
        flush_then!(file, xFileSize(size))
    }

    pub(super) unsafe extern "C" fn wal_file_control(
        file: *mut ffi::sqlite3_file,
        op: c_int,
        arg: *mut c_void,
    ) -> c_int {
        flush_then!(file, xFileControl(op, arg))
    }

    pub(super) unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
        delegate!(file, xLock(level), ffi::SQLITE_OK)
    }

    pub(super) unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
        delegate!(file, xUnlock(level), ffi::SQLITE_OK)
    }

    pub(super) unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
        delegate!(file, xCheckReservedLock(out), ffi::SQLITE_OK)
    }

    pub(super) unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
        delegate!(file, xSectorSize(), 4096)
    }

    pub(super) unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
        delegate!(file, xDeviceCharacteristics(), 0)
    }

    pub(super) unsafe extern "C" fn shm_map(
        file: *mut ffi::sqlite3_file,
        region: c_int,
        size: c_int,
        extend: c_int,
        out: *mut *mut c_void,
    ) -> c_int {
        delegate!(file, xShmMap(region, size, extend, out), ffi::SQLITE_IOERR_SHMMAP)
    }

    /// A database file's wal-index lock: its WAL's frames go to the file first, while the lock is as it was.
    pub(super) unsafe extern "C" fn database_shm_lock(
        file: *mut ffi::sqlite3_file,
        offset: c_int,
        count: c_int,
        flags: c_int,
    ) -> c_int {
        // SAFETY: SQLite calls database methods only on main database files `open` set up.
        let wal = unsafe { extra(file).wal };
        if !wal.is_null() {
            // SAFETY: a non-null `wal` is the open WAL's buffer (cleared when that WAL closes), and the WAL and
            // its database are used by the same connection, on this thread.
            let rc = unsafe { (*wal).lock_changes() };
            if rc != ffi::SQLITE_OK && flags & ffi::SQLITE_SHM_UNLOCK == 0 {
                return rc;
            }
        }
        delegate!(file, xShmLock(offset, count, flags), ffi::SQLITE_IOERR_SHMLOCK)
    }

    pub(super) unsafe extern "C" fn wal_shm_lock(
        file: *mut ffi::sqlite3_file,
        offset: c_int,
        count: c_int,
        flags: c_int,
    ) -> c_int {
        delegate!(file, xShmLock(offset, count, flags), ffi::SQLITE_IOERR_SHMLOCK)
    }

    pub(super) unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
        delegate!(file, xShmBarrier(), ())
    }

    /// SQLite publishes a commit (writes the wal-index header) behind this barrier: tests check that nothing of
    /// the connection's WAL is still in memory then.
    pub(super) unsafe extern "C" fn database_shm_barrier(file: *mut ffi::sqlite3_file) {
        #[cfg(test)]
        {
            // SAFETY: as in `database_shm_lock`.
            let wal = unsafe { extra(file).wal };
            // SAFETY: as in `database_shm_lock`.
            if !wal.is_null() && unsafe { !(*wal).bytes.is_empty() } {
                BUFFERED_AT_BARRIER.with(|count| count.set(count.get() + 1));
            }
        }
        delegate!(file, xShmBarrier(), ())
    }

    pub(super) unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
        delegate!(file, xShmUnmap(delete), ffi::SQLITE_OK)
    }

    pub(super) unsafe extern "C" fn fetch(
        file: *mut ffi::sqlite3_file,
        offset: ffi::sqlite3_int64,
        amount: c_int,
        out: *mut *mut c_void,
    ) -> c_int {
        // SAFETY: SQLite expects `*out` null when nothing is mapped; set it in case the default VFS has no method.
        unsafe { *out = std::ptr::null_mut() };
        delegate!(file, xFetch(offset, amount, out), ffi::SQLITE_OK)
    }

    pub(super) unsafe extern "C" fn unfetch(
        file: *mut ffi::sqlite3_file,
        offset: ffi::sqlite3_int64,
        page: *mut c_void,
    ) -> c_int {
        delegate!(file, xUnfetch(offset, page), ffi::SQLITE_OK)
    }

    // Database files: every method is the default VFS's, except the wal-index lock (above) and closing.

    pub(super) unsafe extern "C" fn database_close(file: *mut ffi::sqlite3_file) -> c_int {
        // SAFETY: SQLite closes each file once, through the methods `open` gave it.
        let fields = unsafe { extra(file) };
        databases().retain(|&(_, open)| open != file as usize);
        if !fields.wal.is_null() {
            // SAFETY: SQLite closes a WAL before its database; should it not, the WAL must not point back here.
            unsafe { extra((*fields.wal).file).partner = 0 };
        }
        // SAFETY: hand the file back to the default VFS's methods to close it.
        unsafe {
            (*file).pMethods = fields.inner;
            match (*fields.inner).xClose {
                Some(close) => close(file),
                None => ffi::SQLITE_OK,
            }
        }
    }

    pub(super) unsafe extern "C" fn database_read(
        file: *mut ffi::sqlite3_file,
        data: *mut c_void,
        amount: c_int,
        offset: ffi::sqlite3_int64,
    ) -> c_int {
        delegate!(file, xRead(data, amount, offset), ffi::SQLITE_IOERR_READ)
    }

    pub(super) unsafe extern "C" fn database_write(
        file: *mut ffi::sqlite3_file,
        data: *const c_void,
        amount: c_int,
        offset: ffi::sqlite3_int64,
    ) -> c_int {
        delegate!(file, xWrite(data, amount, offset), ffi::SQLITE_IOERR_WRITE)
    }

    pub(super) unsafe extern "C" fn database_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
        delegate!(file, xTruncate(size), ffi::SQLITE_IOERR_TRUNCATE)
    }

    pub(super) unsafe extern "C" fn database_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
        delegate!(file, xSync(flags), ffi::SQLITE_IOERR_FSYNC)
    }

    pub(super) unsafe extern "C" fn database_file_size(
        file: *mut ffi::sqlite3_file,
        size: *mut ffi::sqlite3_int64,
    ) -> c_int {
        delegate!(file, xFileSize(size), ffi::SQLITE_IOERR_FSTAT)
    }

    pub(super) unsafe extern "C" fn database_file_control(
        file: *mut ffi::sqlite3_file,
        op: c_int,
        arg: *mut c_void,
    ) -> c_int {
        delegate!(file, xFileControl(op, arg), ffi::SQLITE_NOTFOUND)
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(methods::wal_close),
    xRead: Some(methods::wal_read),
    xWrite: Some(methods::wal_write),
    xTruncate: Some(methods::wal_truncate),
    xSync: Some(methods::wal_sync),
    xFileSize: Some(methods::wal_file_size),
    xLock: Some(methods::lock),
    xUnlock: Some(methods::unlock),
    xCheckReservedLock: Some(methods::check_reserved_lock),
    xFileControl: Some(methods::wal_file_control),
    xSectorSize: Some(methods::sector_size),
    xDeviceCharacteristics: Some(methods::device_characteristics),
    xShmMap: Some(methods::shm_map),
    xShmLock: Some(methods::wal_shm_lock),
    xShmBarrier: Some(methods::shm_barrier),
    xShmUnmap: Some(methods::shm_unmap),
    xFetch: Some(methods::fetch),
    xUnfetch: Some(methods::unfetch),
};

static DATABASE_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(methods::database_close),
    xRead: Some(methods::database_read),
    xWrite: Some(methods::database_write),
    xTruncate: Some(methods::database_truncate),
    xSync: Some(methods::database_sync),
    xFileSize: Some(methods::database_file_size),
    xLock: Some(methods::lock),
    xUnlock: Some(methods::unlock),
    xCheckReservedLock: Some(methods::check_reserved_lock),
    xFileControl: Some(methods::database_file_control),
    xSectorSize: Some(methods::sector_size),
    xDeviceCharacteristics: Some(methods::device_characteristics),
    xShmMap: Some(methods::shm_map),
    xShmLock: Some(methods::database_shm_lock),
    xShmBarrier: Some(methods::database_shm_barrier),
    xShmUnmap: Some(methods::shm_unmap),
    xFetch: Some(methods::fetch),
    xUnfetch: Some(methods::unfetch),
};

#[cfg(test)]
mod tests;
