//! The process's memory allocator, and giving a thread's freed memory back to the operating system.
//!
//! mimalloc: the write path frees on one thread what the HTTP threads allocated, which glibc does slowly.
//! The `system-allocator` feature leaves it out, so heap profilers that hook `malloc` (heaptrack) see every
//! allocation: `cargo build --release --features system-allocator`.

#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns the pages the calling thread freed to the OS now, instead of on its next allocation after a delay.
/// For a thread that has ended a large job and is about to wait (see `kizuna_types::memory`).
pub fn release_thread_memory() {
    #[cfg(not(feature = "system-allocator"))]
    #[allow(unsafe_code)]
    // SAFETY: `mi_collect` takes no pointers and may be called on any thread at any time; it only frees and
    // returns pages that hold no live allocation.
    unsafe {
        libmimalloc_sys::mi_collect(true);
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
