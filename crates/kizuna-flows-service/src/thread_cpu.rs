//! The calling thread's time on a CPU and runnable but waiting for one, from Linux's schedstat: tells work from
//! waiting for the CPU in a slow timer round, where the store's `LockWaits` tell waiting for locks. Read only
//! while rounds are traced (`record_lateness`), since each reading is a file read.

use std::time::Duration;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ThreadCpu {
    pub on_cpu: Duration,
    pub waiting: Duration,
}

impl ThreadCpu {
    /// The readings so far, or zero when not `traced` or not on Linux.
    pub fn read(traced: bool) -> Self {
        if !traced {
            return Self::default();
        }
        let Ok(text) = std::fs::read_to_string("/proc/thread-self/schedstat") else { return Self::default() };
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok().map(Duration::from_nanos));
        match (fields.next().flatten(), fields.next().flatten()) {
            (Some(on_cpu), Some(waiting)) => Self { on_cpu, waiting },
            _ => Self::default(),
        }
    }

    /// What was spent since `earlier` (a reading on the same thread).
    pub fn since(self, earlier: Self) -> Self {
        Self {
            on_cpu: self.on_cpu.saturating_sub(earlier.on_cpu),
            waiting: self.waiting.saturating_sub(earlier.waiting),
        }
    }

    pub fn add(&mut self, other: Self) {
        self.on_cpu += other.on_cpu;
        self.waiting += other.waiting;
    }
}
