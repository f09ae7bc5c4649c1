//! Loop counters: the seam for metrics and slow-callback reports.
//!
//! Counted per iteration from the clock reads the loop already makes around the poll; per
//! callback only a sequence number is bumped (a relaxed store, no read-modify-write, since only
//! the loop thread writes it), which a watchdog thread can read without a lock.
//! With the `no-metrics` feature every update compiles to nothing.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Counters {
    pub iterations: u64,
    pub io_events: u64,
    pub timers_fired: u64,
    pub poll_ns: u64,
    pub busy_ns: u64,
    /// End of the last poll, to charge the time until the next poll as busy time.
    pub last_poll_end: i64,
}

impl Counters {
    /// One iteration: the poll ran from `start_ns` to `end_ns` and queued `events` I/O
    /// callbacks and `timers` due timers; the time since the previous poll ended was busy.
    #[inline]
    pub fn record_poll(&mut self, start_ns: i64, end_ns: i64, events: usize, timers: u64) {
        if cfg!(not(feature = "no-metrics")) {
            self.iterations += 1;
            if self.last_poll_end != 0 {
                self.busy_ns += (start_ns - self.last_poll_end).max(0) as u64;
            }
            self.poll_ns += (end_ns - start_ns).max(0) as u64;
            self.last_poll_end = end_ns;
            self.io_events += events as u64;
            self.timers_fired += timers;
        }
    }
}

/// The per-callback sequence number.
#[derive(Default)]
pub struct Sequence(AtomicU64);

impl Sequence {
    #[inline]
    pub fn bump(&self) {
        if cfg!(not(feature = "no-metrics")) {
            self.0.store(self.0.load(Relaxed).wrapping_add(1), Relaxed);
        }
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}
