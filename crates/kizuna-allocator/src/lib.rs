//! The process's memory allocator, and giving a thread's freed memory back to the operating system.
//!
//! mimalloc: the write path frees on one thread what the HTTP threads allocated, which glibc does slowly.
//! The `system-allocator` feature leaves it out, so heap profilers that hook `malloc` (heaptrack) see every
//! allocation: `cargo build --release --features system-allocator`.

#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns the pages the calling thread freed to the OS now, instead of on its next allocation after a delay,
/// and the free pages of the C library's heap. For a thread that has ended a large job and is about to wait (see
/// `kizuna_types::memory`).
pub fn release_thread_memory() {
    #[cfg(not(feature = "system-allocator"))]
    #[allow(unsafe_code)]
    // SAFETY: `mi_collect` takes no pointers and may be called on any thread at any time; it only frees and
    // returns pages that hold no live allocation.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    // SQLite allocates through the C library, not mimalloc: the pages its connections' caches freed stay in
    // glibc's arenas (between live blocks, where glibc does not return them by itself) until trimmed.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` takes no pointers and is thread-safe; it only returns free pages of the C heap.
    unsafe {
        glibc::malloc_trim(0);
    }
}

/// Bytes the C library's allocator has handed out and not had back — SQLite's page caches and statements, as
/// Rust's allocations go to mimalloc. `None` where it cannot be read (a C library other than glibc).
pub fn c_heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[allow(unsafe_code)]
        // SAFETY: `mallinfo2` takes no arguments, returns a plain struct by value and is thread-safe.
        let info = unsafe { glibc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    /// `struct mallinfo2` of glibc 2.33 and later: every field a `size_t`.
    #[repr(C)]
    #[allow(dead_code)] // read by C's layout, not by name
    pub struct MallInfo2 {
        pub arena: usize,
        pub ordblks: usize,
        pub smblks: usize,
        pub hblks: usize,
        /// Bytes in mmapped chunks (large allocations).
        pub hblkhd: usize,
        pub usmblks: usize,
        pub fsmblks: usize,
        /// Bytes allocated from the arenas and in use.
        pub uordblks: usize,
        pub fordblks: usize,
        pub keepcost: usize,
    }

    #[allow(unsafe_code)]
    unsafe extern "C" {
        pub fn malloc_trim(pad: usize) -> std::ffi::c_int;
        pub fn mallinfo2() -> MallInfo2;
    }
}

#[cfg(all(test, target_os = "linux", not(feature = "system-allocator")))]
mod tests {
    use std::io::Read;

    /// Resident memory in KiB, read without allocating (an allocation could return pages by itself).
    fn resident_kib() -> u64 {
        let mut buffer = [0u8; 4096];
        let mut file = std::fs::File::open("/proc/self/statm").expect("statm");
        let read = file.read(&mut buffer).expect("read statm");
        let text = std::str::from_utf8(&buffer[..read]).expect("utf-8");
        let pages: u64 = text.split(' ').nth(1).and_then(|p| p.parse().ok()).expect("resident pages");
        pages * 4
    }

    #[test]
    fn a_thread_that_freed_a_lot_gives_it_back_when_it_releases() {
        std::thread::spawn(|| {
            let blocks: Vec<Box<[u8; 1024]>> = (0..131_072).map(|i| Box::new([i as u8; 1024])).collect();
            let held = resident_kib();
            drop(blocks);
            std::thread::sleep(std::time::Duration::from_millis(200));
            let idle = resident_kib();
            super::release_thread_memory();
            let released = resident_kib();
            assert!(idle + 1024 > held, "freed pages stayed with the idle thread: {held} KiB held, {idle} KiB idle");
            assert!(released + 65_536 < idle, "{idle} KiB before releasing, {released} KiB after");
        })
        .join()
        .expect("the allocating thread");
    }
}
