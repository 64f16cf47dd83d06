//! SQLite's default page cache, wrapped so that a write transaction's end does not walk the whole cache.
//!
//! At the end of every write transaction SQLite drops the cached pages beyond the database's end (`xTruncate`).
//! The default cache visits only the hash slots those pages can be in, unless the largest page number it has held
//! since its last truncation is further beyond the end than its hash table has slots: then it walks every slot
//! and every cached page. A B-tree rebalance that sorts its new pages by number parks one of them for a moment
//! under the number of the lock-byte page (`PENDING_BYTE / page size + 1`: page 131,073 with 8 KiB pages, which
//! no table ever uses), and that raises the cache's largest number to it. So in a database under 1 GiB, every
//! transaction that rebalanced a page ended with a walk of the whole cache: 3.4–3.9% of the ingest writer's time
//! (perf, `bench ingest --order time`, BENCHMARKS.md 2026-12-06), on a cache of thousands of pages.
//!
//! The wrapper keeps its own largest page number, leaving the parked page out while it is parked, and passes a
//! truncation on only when a page at or beyond its limit may be cached. Every other call goes to the default
//! cache unchanged.

use rusqlite::ffi;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// SQLite's `PENDING_BYTE`: the lock-byte page is the page that holds it.
const PENDING_BYTE: u32 = 0x4000_0000;

/// The default cache's methods, as SQLite had them before the wrapper was installed.
struct Base(ffi::sqlite3_pcache_methods2);

// SAFETY: the methods are C functions of SQLite's own page cache, callable from any thread (SQLite serialises
// each cache's calls itself), and `pArg` is whatever SQLite gave them, which only they read.
#[allow(unsafe_code)]
unsafe impl Send for Base {}
// SAFETY: as above; the struct is never written after it is stored.
#[allow(unsafe_code)]
unsafe impl Sync for Base {}

static BASE: OnceLock<Base> = OnceLock::new();
/// Truncations passed on to the default cache, and those left out because nothing was beyond their limit.
static TRUNCATIONS_PASSED: AtomicU64 = AtomicU64::new(0);
static TRUNCATIONS_SKIPPED: AtomicU64 = AtomicU64::new(0);

/// How many truncations were passed on to the default cache and how many were left out, in this process.
pub fn truncations() -> (u64, u64) {
    (TRUNCATIONS_PASSED.load(Ordering::Relaxed), TRUNCATIONS_SKIPPED.load(Ordering::Relaxed))
}

/// One connection's cache: the default cache's, and what the wrapper knows of its page numbers.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// The largest page number fetched or moved into the cache since its last truncation, the parked page aside.
    largest: c_uint,
    /// The lock-byte page's number for this cache's page size.
    parking: c_uint,
    /// A page is held under `parking` now.
    parked: bool,
}

fn base() -> &'static ffi::sqlite3_pcache_methods2 {
    match BASE.get() {
        Some(base) => &base.0,
        // The methods are installed only after BASE is set, so SQLite cannot call them before.
        None => unreachable!("the page cache wrapper is installed only after the default cache is known"),
    }
}

/// Installs the wrapper. SQLite accepts a page cache only before it initialises itself, so this must run before
/// anything opens a connection or registers a VFS; afterwards it fails and changes nothing.
#[allow(unsafe_code)]
pub(crate) fn install() -> Result<(), String> {
    let mut default = ffi::sqlite3_pcache_methods2 {
        iVersion: 0,
        pArg: std::ptr::null_mut(),
        xInit: None,
        xShutdown: None,
        xCreate: None,
        xCachesize: None,
        xPagecount: None,
        xFetch: None,
        xUnpin: None,
        xRekey: None,
        xTruncate: None,
        xDestroy: None,
        xShrink: None,
    };
    // SAFETY: SQLITE_CONFIG_GETPCACHE2 takes one pointer to a methods struct, which it fills in.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &raw mut default) };
    if rc != ffi::SQLITE_OK {
        return Err(format!("SQLite would not hand out its page cache (code {rc}): it was already initialised"));
    }
    if default.xCreate.is_none() || default.xFetch.is_none() || default.xTruncate.is_none() {
        return Err("SQLite's default page cache lacks a method".into());
    }
    if BASE.set(Base(default)).is_err() {
        return Err("the page cache wrapper was installed already".into());
    }
    let wrapper = ffi::sqlite3_pcache_methods2 {
        iVersion: base().iVersion,
        pArg: std::ptr::null_mut(),
        xInit: Some(init),
        xShutdown: Some(shutdown),
        xCreate: Some(create),
        xCachesize: Some(cache_size),
        xPagecount: Some(page_count),
        xFetch: Some(fetch),
        xUnpin: Some(unpin),
        xRekey: Some(rekey),
        xTruncate: Some(truncate),
        xDestroy: Some(destroy),
        xShrink: Some(shrink),
    };
    // SAFETY: SQLITE_CONFIG_PCACHE2 takes one pointer to a complete methods struct and copies it.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &raw const wrapper) };
    if rc == ffi::SQLITE_OK { Ok(()) } else { Err(format!("SQLite refused the page cache wrapper (code {rc})")) }
}

/// The wrapper's state for a cache handle `create` returned.
///
/// # Safety
/// `cache` must come from `create` and not have been destroyed; SQLite calls a cache's methods one at a time.
#[allow(unsafe_code)]
unsafe fn state<'a>(cache: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    // SAFETY: per the contract, `cache` is a live `Box<Cache>` turned into a pointer by `create`.
    unsafe { &mut *cache.cast::<Cache>() }
}

/// Calls one of the default cache's methods that every cache has (checked by `install` or by SQLite itself).
macro_rules! call {
    ($method:ident($($arg:expr),*), $missing:expr) => {
        match base().$method {
            // SAFETY: the default cache's own method, with arguments SQLite gave the wrapper for it.
            Some(method) => unsafe { method($($arg),*) },
            None => $missing,
        }
    };
}

#[allow(unsafe_code)]
unsafe extern "C" fn init(_arg: *mut c_void) -> c_int {
    call!(xInit(base().pArg), ffi::SQLITE_OK)
}

#[allow(unsafe_code)]
unsafe extern "C" fn shutdown(_arg: *mut c_void) {
    call!(xShutdown(base().pArg), ())
}

#[allow(unsafe_code)]
unsafe extern "C" fn create(page_size: c_int, extra: c_int, purgeable: c_int) -> *mut ffi::sqlite3_pcache {
    let inner = call!(xCreate(page_size, extra, purgeable), std::ptr::null_mut());
    if inner.is_null() {
        return inner;
    }
    let parking = PENDING_BYTE / c_uint::try_from(page_size).unwrap_or(1).max(1) + 1;
    Box::into_raw(Box::new(Cache { inner, largest: 0, parking, parked: false })).cast()
}

#[allow(unsafe_code)]
unsafe extern "C" fn cache_size(cache: *mut ffi::sqlite3_pcache, pages: c_int) {
    // SAFETY: SQLite passes a cache `create` made.
    let inner = unsafe { state(cache) }.inner;
    call!(xCachesize(inner, pages), ())
}

#[allow(unsafe_code)]
unsafe extern "C" fn page_count(cache: *mut ffi::sqlite3_pcache) -> c_int {
    // SAFETY: SQLite passes a cache `create` made.
    let inner = unsafe { state(cache) }.inner;
    call!(xPagecount(inner), 0)
}

#[allow(unsafe_code)]
unsafe extern "C" fn fetch(
    cache: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    // SAFETY: SQLite passes a cache `create` made.
    let cache = unsafe { state(cache) };
    let page = call!(xFetch(cache.inner, key, create), std::ptr::null_mut());
    if !page.is_null() {
        if key == cache.parking {
            cache.parked = true;
        } else {
            cache.largest = cache.largest.max(key);
        }
    }
    page
}

#[allow(unsafe_code)]
unsafe extern "C" fn unpin(cache: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, discard: c_int) {
    // SAFETY: SQLite passes a cache `create` made.
    let inner = unsafe { state(cache) }.inner;
    call!(xUnpin(inner, page, discard), ())
}

#[allow(unsafe_code)]
unsafe extern "C" fn rekey(
    cache: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    // SAFETY: SQLite passes a cache `create` made.
    let cache = unsafe { state(cache) };
    call!(xRekey(cache.inner, page, old, new), ());
    if new == cache.parking {
        cache.parked = true;
    } else {
        cache.largest = cache.largest.max(new);
        if old == cache.parking {
            cache.parked = false;
        }
    }
}

#[allow(unsafe_code)]
unsafe extern "C" fn truncate(cache: *mut ffi::sqlite3_pcache, limit: c_uint) {
    // SAFETY: SQLite passes a cache `create` made.
    let cache = unsafe { state(cache) };
    // Pages numbered `limit` and above are to go. None was fetched or moved in since the last truncation (nor is
    // one parked): nothing to drop, and the default cache would only walk its slots to find that out.
    if cache.largest < limit && !(cache.parked && cache.parking >= limit) {
        TRUNCATIONS_SKIPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    TRUNCATIONS_PASSED.fetch_add(1, Ordering::Relaxed);
    call!(xTruncate(cache.inner, limit), ());
    cache.largest = cache.largest.min(limit.saturating_sub(1));
    if cache.parking >= limit {
        cache.parked = false;
    }
}

#[allow(unsafe_code)]
unsafe extern "C" fn destroy(cache: *mut ffi::sqlite3_pcache) {
    // SAFETY: SQLite destroys each cache `create` made once, and calls nothing on it afterwards.
    let cache = unsafe { Box::from_raw(cache.cast::<Cache>()) };
    call!(xDestroy(cache.inner), ())
}

#[allow(unsafe_code)]
unsafe extern "C" fn shrink(cache: *mut ffi::sqlite3_pcache) {
    // SAFETY: SQLite passes a cache `create` made.
    let inner = unsafe { state(cache) }.inner;
    call!(xShrink(inner), ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creates a page in the cache under `key` and unpins it (it stays cached, clean).
    #[allow(unsafe_code)]
    fn cache_page(cache: *mut ffi::sqlite3_pcache, key: c_uint) {
        // SAFETY: `cache` came from `create` and is alive; flag 2 creates the page if it is not cached.
        let page = unsafe { fetch(cache, key, 2) };
        assert!(!page.is_null(), "page {key} created");
        // SAFETY: the page was just fetched from this cache; unpinning keeps it cached.
        unsafe { unpin(cache, page, 0) };
    }

    #[allow(unsafe_code)]
    fn cached(cache: *mut ffi::sqlite3_pcache, key: c_uint) -> bool {
        // SAFETY: flag 0 only looks the page up; a found page is unpinned again at once.
        let page = unsafe { fetch(cache, key, 0) };
        if !page.is_null() {
            // SAFETY: as above.
            unsafe { unpin(cache, page, 0) };
        }
        !page.is_null()
    }

    /// The wrapper's own bookkeeping against the default cache's pages: a truncation is left out only when no
    /// page at or beyond its limit is cached, and a page parked under the lock-byte page's number counts while it
    /// is there.
    #[test]
    #[allow(unsafe_code)]
    fn a_truncation_is_left_out_only_when_nothing_at_or_beyond_its_limit_is_cached() {
        crate::register().expect("the VFS registers");
        crate::page_cache_wrapped().expect("SQLite's page cache is wrapped");
        // SAFETY: SQLite is initialised (register), so the default cache is too. 4 KiB pages, and extra bytes per
        // page as a pager asks for (the default cache zeroes the first eight of them on every new page).
        let cache = unsafe { create(4096, 64, 1) };
        assert!(!cache.is_null());
        // SAFETY: `cache` is alive until `destroy` below. Room for 100 pages, so unpinned pages stay cached.
        unsafe { cache_size(cache, 100) };
        // SAFETY: as above.
        let parking = unsafe { state(cache) }.parking;
        assert_eq!(parking, 0x4_0000 + 1, "the lock-byte page of a 4 KiB-page database");
        for key in 1..=10 {
            cache_page(cache, key);
        }
        // SAFETY: as above.
        let count = || unsafe { page_count(cache) };
        assert_eq!(count(), 10);

        // Nothing at or beyond 11: left out, and nothing is lost.
        // SAFETY: as above.
        unsafe { truncate(cache, 11) };
        assert_eq!(count(), 10);
        // Page 5 parked under the lock-byte page's number (as a B-tree rebalance does while sorting pages).
        // SAFETY: a page is moved while it is pinned (fetched), as SQLite does, and unpinned after.
        unsafe {
            let five = fetch(cache, 5, 0);
            assert!(!five.is_null());
            rekey(cache, five, 5, parking);
            unpin(cache, five, 0);
        }
        // SAFETY: as above.
        let state_now = unsafe { state(cache) };
        assert!(state_now.parked && state_now.largest == 10, "parked, and not counted as the largest page");
        // A truncation while it is parked must drop it: it is beyond any limit below the lock-byte page.
        // SAFETY: as above.
        unsafe { truncate(cache, 11) };
        assert!(!cached(cache, parking), "the parked page was dropped");
        assert_eq!(count(), 9);

        // Parked and moved back before the transaction ends: the truncation is left out again.
        // SAFETY: page 4 is pinned while it goes to the parking key and then to key 5 (free now).
        unsafe {
            let four = fetch(cache, 4, 0);
            assert!(!four.is_null());
            rekey(cache, four, 4, parking);
            rekey(cache, four, parking, 5);
            unpin(cache, four, 0);
        }
        // SAFETY: as above.
        let parked = unsafe { state(cache) }.parked;
        assert!(!parked);
        let (_, skipped_before) = truncations();
        // SAFETY: as above.
        unsafe { truncate(cache, 11) };
        assert!(truncations().1 > skipped_before, "left out");
        assert!(cached(cache, 5) && !cached(cache, 4));

        // Pages at and beyond a limit within the cached range are dropped, and the largest key follows.
        // SAFETY: as above.
        unsafe { truncate(cache, 8) };
        assert!(cached(cache, 7) && !cached(cache, 8) && !cached(cache, 10));
        // SAFETY: as above.
        let largest = unsafe { state(cache) }.largest;
        assert_eq!(largest, 7);
        // SAFETY: nothing uses the cache afterwards.
        unsafe { destroy(cache) };
    }
}
