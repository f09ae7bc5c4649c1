//! Loop counters: always-on metrics and the activity word the slow-callback watchdog reads.
//!
//! Counted per iteration from the two clock reads the loop already makes around the poll
//! ([`Counters::record_poll`]); per callback only [`Activity`] is touched: two relaxed stores
//! of a sequence number and one of a pointer, no clock read (a read costs 22-66 ns here, more
//! than the 2 % budget of a callback).
//!
//! Invariants:
//! - [`Counters`] has one writer, the loop thread, and a seqlock version word that brackets
//!   each iteration's updates, so any thread (a watchdog, an exporter, the monitor) reads a
//!   consistent snapshot without a lock and without touching the loop's state.
//! - `Activity::seq` is odd exactly while a callback runs; it only changes on the loop thread.
//!   `Activity::current` is the running handle (a borrowed pointer; in the binding a
//!   `PyObject*`, which the engine never dereferences) and may only be
//!   dereferenced with the GIL held after re-reading `seq` unchanged and odd: the loop thread
//!   cannot finish that callback without the GIL, and the queue entry owns the handle until
//!   it has.
//! - With the `no-metrics` feature every update compiles to nothing.
use std::ffi::c_void;
use std::sync::atomic::{fence, AtomicI64, AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::Thread;

/// Log2 buckets of iteration busy time: bucket i counts busy times b (ns) whose bit length
/// is i (bucket 0: b == 0). 40 buckets reach 2^39 ns, about 9 minutes.
pub const HIST_BUCKETS: usize = 40;

const ENABLED: bool = cfg!(not(feature = "no-metrics"));

/// Scalar counters, in the order of `python/oxloop/_metrics.py`'s `_RAW_FIELDS` after
/// `timestamp_ns` and `callbacks` (which the reader adds).
#[derive(Clone, Copy)]
#[repr(usize)]
enum Field {
    Iterations,
    IoEvents,
    TimersScheduled,
    TimersFired,
    TimersCancelled,
    ReadyAtPoll,
    TimersAtPoll,
    Fds,
    BusyNs,
    IdleNs,
    SlowIterations,
    LongestStallNs,
}

const HEAD: usize = 12;
pub const PUBLISHED: usize = HEAD + HIST_BUCKETS;

/// The counters: written by the loop thread only, read by any thread through the seqlock.
///
/// They live in atomics written with plain (relaxed) loads and stores — the same machine code
/// as plain fields on x86 — so publishing costs no copy: the version word brackets each
/// iteration's updates, which is what makes them "published once per iteration". The timer
/// counts change between polls too (call_later, cancel); a snapshot may include those made
/// after the last poll.
pub struct Counters {
    version: AtomicU64,
    values: [AtomicU64; PUBLISHED],
    /// End of the last poll (loop thread only), to charge the time until the next poll as busy.
    last_poll_end: AtomicI64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            version: AtomicU64::new(0),
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            last_poll_end: AtomicI64::new(0),
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
    fn slot(&self, f: Field) -> &AtomicU64 {
        &self.values[f as usize]
    }

    #[inline]
    fn get(&self, f: Field) -> u64 {
        self.slot(f).load(Ordering::Relaxed)
    }

    #[inline]
    fn set(&self, f: Field, v: u64) {
        self.slot(f).store(v, Ordering::Relaxed);
    }

    /// Single writer: a load and a store, not a locked read-modify-write.
    #[inline]
    fn add(&self, f: Field, v: u64) {
        self.set(f, self.get(f).wrapping_add(v));
    }

    #[inline]
    pub fn timer_scheduled(&self) {
        if ENABLED {
            self.add(Field::TimersScheduled, 1);
        }
    }

    #[inline]
    pub fn timer_cancelled(&self) {
        if ENABLED {
            self.add(Field::TimersCancelled, 1);
        }
    }

    /// A new run starts: time spent stopped is neither busy nor idle.
    pub fn run_starts(&self) {
        self.last_poll_end.store(0, Ordering::Relaxed);
    }

    /// One iteration: the poll ran from `start_ns` to `end_ns`; the time since the previous
    /// poll ended was busy (callbacks and bookkeeping), the poll itself idle.
    #[inline]
    pub fn record_poll(&self, s: &PollSample, slow_ns: u64) {
        if !ENABLED {
            return;
        }
        let v = self.version.load(Ordering::Relaxed);
        self.version.store(v.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.add(Field::Iterations, 1);
        let last = self.last_poll_end.load(Ordering::Relaxed);
        if last != 0 {
            let busy = (s.start_ns - last).max(0) as u64;
            self.add(Field::BusyNs, busy);
            let b = ((u64::BITS - busy.leading_zeros()) as usize).min(HIST_BUCKETS - 1);
            let h = &self.values[HEAD + b];
            h.store(h.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            if busy >= slow_ns {
                self.add(Field::SlowIterations, 1);
            }
            if busy > self.get(Field::LongestStallNs) {
                self.set(Field::LongestStallNs, busy);
            }
        }
        self.add(Field::IdleNs, (s.end_ns - s.start_ns).max(0) as u64);
        self.last_poll_end.store(s.end_ns, Ordering::Relaxed);
        self.add(Field::IoEvents, s.io_events as u64);
        self.add(Field::TimersFired, s.timers_fired);
        self.set(Field::ReadyAtPoll, s.ready_at_poll as u64);
        self.set(Field::TimersAtPoll, s.timers_at_poll as u64);
        self.set(Field::Fds, s.fds as u64);
        self.version.store(v.wrapping_add(2), Ordering::Release);
    }

    /// A consistent copy as of the end of the last poll: retried while the loop thread is
    /// mid-update. Any thread.
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
    current: AtomicPtr<c_void>,
    /// Reports the watchdog made (the `slow_callbacks` metric).
    pub slow_callbacks: AtomicU64,
    /// `loop.slow_callback_duration` in ns (u64::MAX: never slow).
    pub slow_ns: AtomicU64,
    /// The activity word of a callback the watchdog found stalled (0: none): its end wakes
    /// the watchdog so the report goes out at once.
    pub stall_seq: AtomicU64,
    watcher: Mutex<Option<Thread>>,
}

impl Activity {
    /// A callback starts: `handle` stays owned by the ready-queue entry until `exit`.
    #[inline]
    pub fn enter(&self, handle: *mut c_void) {
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
    pub fn current(&self) -> *mut c_void {
        self.current.load(Ordering::Relaxed)
    }
}
