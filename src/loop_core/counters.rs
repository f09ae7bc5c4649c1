//! Loop counters: always-on metrics and the activity word the slow-callback watchdog reads.
//!
//! Counted per iteration from the two clock reads the loop already makes around the poll
//! ([`Counters::record_poll`]); per callback only [`Activity`] is touched: two relaxed stores
//! of a sequence number and one of a pointer, no clock read (a read costs 22-66 ns here, more
//! than the 2 % budget of a callback).
//!
//! Invariants:
//! - `Counters` are plain fields owned by the loop thread (inside the loop's GIL-guarded
//!   state). Once per iteration they are copied into [`Published`], a seqlock of atomics, so
//!   any thread (a watchdog, an exporter, the monitor) reads a consistent snapshot without a
//!   lock and without touching the loop's state.
//! - `Activity::seq` is odd exactly while a callback runs; it only changes on the loop thread.
//!   `Activity::current` is the running handle (a borrowed pointer) and may only be
//!   dereferenced with the GIL held after re-reading `seq` unchanged and odd: the loop thread
//!   cannot finish that callback without the GIL, and the queue entry owns the handle until
//!   it has.
//! - With the `no-metrics` feature every update compiles to nothing.
use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::Thread;

use pyo3::ffi;

/// Log2 buckets of iteration busy time: bucket i counts busy times b (ns) whose bit length
/// is i (bucket 0: b == 0). 40 buckets reach 2^39 ns, about 9 minutes.
pub const HIST_BUCKETS: usize = 40;

const ENABLED: bool = cfg!(not(feature = "no-metrics"));

pub struct Counters {
    pub iterations: u64,
    pub io_events: u64,
    pub timers_scheduled: u64,
    pub timers_fired: u64,
    pub timers_cancelled: u64,
    pub idle_ns: u64,
    pub busy_ns: u64,
    pub slow_iterations: u64,
    pub longest_stall_ns: u64,
    pub ready_at_poll: u64,
    pub timers_at_poll: u64,
    pub fds: u64,
    pub hist: [u64; HIST_BUCKETS],
    /// End of the last poll, to charge the time until the next poll as busy time.
    pub last_poll_end: i64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            iterations: 0,
            io_events: 0,
            timers_scheduled: 0,
            timers_fired: 0,
            timers_cancelled: 0,
            idle_ns: 0,
            busy_ns: 0,
            slow_iterations: 0,
            longest_stall_ns: 0,
            ready_at_poll: 0,
            timers_at_poll: 0,
            fds: 0,
            hist: [0; HIST_BUCKETS],
            last_poll_end: 0,
        }
    }
}

/// What one poll saw, for [`Counters::record_poll`].
pub struct PollSample {
    pub start_ns: i64,
    pub end_ns: i64,
    pub io_events: usize,
    pub timers_fired: u64,
    pub ready_at_poll: usize,
    pub timers_at_poll: usize,
    pub fds: usize,
}

impl Counters {
    #[inline]
    pub fn timer_scheduled(&mut self) {
        if ENABLED {
            self.timers_scheduled += 1;
        }
    }

    #[inline]
    pub fn timer_cancelled(&mut self) {
        if ENABLED {
            self.timers_cancelled += 1;
        }
    }

    /// One iteration: the poll ran from `start_ns` to `end_ns`; the time since the previous
    /// poll ended was busy (callbacks and bookkeeping), the poll itself idle.
    #[inline]
    pub fn record_poll(&mut self, s: &PollSample, slow_ns: u64) {
        if !ENABLED {
            return;
        }
        self.iterations += 1;
        if self.last_poll_end != 0 {
            let busy = (s.start_ns - self.last_poll_end).max(0) as u64;
            self.busy_ns += busy;
            let bucket = (u64::BITS - busy.leading_zeros()) as usize;
            self.hist[bucket.min(HIST_BUCKETS - 1)] += 1;
            if busy >= slow_ns {
                self.slow_iterations += 1;
            }
            self.longest_stall_ns = self.longest_stall_ns.max(busy);
        }
        self.idle_ns += (s.end_ns - s.start_ns).max(0) as u64;
        self.last_poll_end = s.end_ns;
        self.io_events += s.io_events as u64;
        self.timers_fired += s.timers_fired;
        self.ready_at_poll = s.ready_at_poll as u64;
        self.timers_at_poll = s.timers_at_poll as u64;
        self.fds = s.fds as u64;
    }

    /// The published values, in the order of `python/oxloop/_metrics.py`'s `_RAW_FIELDS`
    /// after `timestamp_ns` and `callbacks` (which the reader adds), then the histogram.
    fn values(&self) -> [u64; PUBLISHED] {
        let mut v = [0u64; PUBLISHED];
        let head = [
            self.iterations,
            self.io_events,
            self.timers_scheduled,
            self.timers_fired,
            self.timers_cancelled,
            self.ready_at_poll,
            self.timers_at_poll,
            self.fds,
            self.busy_ns,
            self.idle_ns,
            self.slow_iterations,
            self.longest_stall_ns,
        ];
        v[..HEAD].copy_from_slice(&head);
        v[HEAD..].copy_from_slice(&self.hist);
        v
    }
}

const HEAD: usize = 12;
pub const PUBLISHED: usize = HEAD + HIST_BUCKETS;

/// The counters as of the end of the last poll, readable from any thread (a seqlock).
pub struct Published {
    version: AtomicU64,
    values: [AtomicU64; PUBLISHED],
}

impl Default for Published {
    fn default() -> Self {
        Self {
            version: AtomicU64::new(0),
            values: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Published {
    /// Loop thread only (the single writer).
    #[inline]
    pub fn publish(&self, c: &Counters) {
        if !ENABLED {
            return;
        }
        let v = self.version.load(Ordering::Relaxed);
        self.version.store(v.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (slot, val) in self.values.iter().zip(c.values()) {
            slot.store(val, Ordering::Relaxed);
        }
        self.version.store(v.wrapping_add(2), Ordering::Release);
    }

    /// A consistent copy: retried while the loop thread is mid-publish.
    pub fn read(&self) -> PublishedValues {
        loop {
            let v1 = self.version.load(Ordering::Acquire);
            if v1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut out = [0u64; PUBLISHED];
            for (o, slot) in out.iter_mut().zip(&self.values) {
                *o = slot.load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if self.version.load(Ordering::Relaxed) == v1 {
                return PublishedValues(out);
            }
        }
    }
}

pub struct PublishedValues(pub [u64; PUBLISHED]);

impl PublishedValues {
    /// `iterations` first, then the rest in `_RAW_FIELDS` order, with `callbacks` inserted
    /// after `iterations` and `slow_callbacks` before `longest_stall_ns`.
    pub fn to_raw(&self, callbacks: u64, slow_callbacks: u64) -> Vec<u64> {
        let v = &self.0;
        let mut out = Vec::with_capacity(PUBLISHED + 2);
        out.push(v[0]); // iterations
        out.push(callbacks);
        out.extend_from_slice(&v[1..11]); // io_events .. slow_iterations
        out.push(slow_callbacks);
        out.extend_from_slice(&v[11..]); // longest_stall_ns, histogram
        out
    }
}

/// What the loop thread is doing, for the watchdog (see the module invariants).
#[derive(Default)]
pub struct Activity {
    seq: AtomicU64,
    current: AtomicPtr<ffi::PyObject>,
    /// Reports the watchdog made (the `slow_callbacks` metric).
    pub slow_callbacks: AtomicU64,
    /// `loop.slow_callback_duration` in ns (u64::MAX: never slow).
    pub slow_ns: AtomicU64,
    /// Set while the loop waits in the poller.
    pub polling: AtomicBool,
    /// The activity word of a callback the watchdog found stalled (0: none): its end wakes
    /// the watchdog so the report goes out at once.
    pub stall_seq: AtomicU64,
    watcher: Mutex<Option<Thread>>,
}

impl Activity {
    /// A callback starts: `handle` stays owned by the ready-queue entry until `exit`.
    #[inline]
    pub fn enter(&self, handle: *mut ffi::PyObject) {
        if ENABLED {
            self.current.store(handle, Ordering::Relaxed);
            let s = self.seq.load(Ordering::Relaxed);
            self.seq.store(s | 1, Ordering::Release);
        }
    }

    /// A callback ends. `Some(word)` when the watchdog had flagged it as stalled: the caller
    /// keeps the handle for the report (the watchdog may not have been able to look at it).
    #[inline]
    pub fn exit(&self) -> Option<u64> {
        if ENABLED {
            let s = self.seq.load(Ordering::Relaxed) | 1;
            self.seq.store(s.wrapping_add(1), Ordering::Release);
            let flagged = self.stall_seq.load(Ordering::Relaxed);
            if flagged != 0 {
                self.wake_watcher();
                return (flagged == s).then_some(s);
            }
        }
        None
    }

    #[cold]
    fn wake_watcher(&self) {
        if let Ok(w) = self.watcher.lock() {
            if let Some(t) = w.as_ref() {
                t.unpark();
            }
        }
    }

    /// The watchdog thread registers itself (watchdog.rs).
    pub fn set_watcher(&self, t: Thread) {
        if let Ok(mut w) = self.watcher.lock() {
            *w = Some(t);
        }
    }

    /// The sequence word: odd while a callback runs; it grows by two per callback.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Callbacks started so far.
    pub fn callbacks(&self) -> u64 {
        self.seq().div_ceil(2)
    }

    /// The running handle; see the module invariants before dereferencing it.
    pub fn current(&self) -> *mut ffi::PyObject {
        self.current.load(Ordering::Relaxed)
    }
}
