//! Time: the clock seam and the timer heap.
//!
//! The loop reads time only through [`Clock`]: `Clock::Real` is `time.monotonic()` read live,
//! `Clock::Virtual` a test clock that moves only when the loop jumps it (see
//! [`VirtualClock`] and `loop_core::virtual_idle`). The choice is made once, when the loop is
//! built, and `Real` is the first arm of every match so the real clock stays the fast path. The heap orders timers by `(deadline, sequence)`:
//! equal deadlines fire in the order they were scheduled (CPython's heapq leaves that order
//! unspecified; FIFO is one of its valid orders and the one tests can rely on).
//! Cancellation is lazy, as in CPython: a cancelled timer stays in the heap until it reaches
//! the top or until more than half the heap is cancelled, when the heap is rebuilt.
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::handles::Queued;
use crate::sys::clock;

/// The loop's clock.
pub enum Clock {
    Real,
    Virtual(Box<VirtualClock>),
}

impl Clock {
    #[inline]
    pub fn now(&self) -> f64 {
        match self {
            Clock::Real => clock::monotonic(),
            Clock::Virtual(v) => v.now(),
        }
    }

    /// The loop time at the instant the real monotonic clock read `real_ns`: lets the run loop
    /// read the clock once and use it both for its counters and for timers. A virtual clock
    /// ignores real time.
    #[inline]
    pub fn at(&self, real_ns: i64) -> f64 {
        match self {
            Clock::Real => clock::ns_to_secs(real_ns),
            Clock::Virtual(v) => v.now(),
        }
    }
}

/// An f64 in an atomic; NaN stands for "none" where a value is optional.
#[derive(Default)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    pub fn new(v: f64) -> Self {
        AtomicF64(AtomicU64::new(v.to_bits()))
    }
    #[inline]
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
    #[inline]
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed)
    }
    /// The value, or None for NaN.
    pub fn get_opt(&self) -> Option<f64> {
        let v = self.get();
        (!v.is_nan()).then_some(v)
    }
}

/// The state of a virtual clock (`oxloop.testing.VirtualClock`).
///
/// Every field is read and written with the GIL held (the loop thread, or a worker thread
/// finishing executor work); the atomics only make the frozen pyclass `Sync`, the GIL orders
/// the accesses.
///
/// Invariants: `now` never decreases (`jump_to` takes the max); `end`, `advance_to` and the
/// threshold are NaN / infinite when unset.
pub struct VirtualClock {
    now: AtomicF64,
    /// Real seconds the loop must sit idle before autojumping; +inf disables autojump.
    pub threshold: AtomicF64,
    /// The virtual deadline at which the loop raises (NaN: none).
    pub end: AtomicF64,
    /// The earliest pending `advance()` target (NaN: none).
    pub advance_to: AtomicF64,
    /// Executor / to_thread work started and not finished: the loop must not jump over it.
    pub threads: AtomicUsize,
    /// splitmix64 state for shuffling I/O events, when a seed was given.
    rng: Option<AtomicU64>,
}

impl VirtualClock {
    pub fn new(start: f64, threshold: f64, end: Option<f64>, seed: Option<u64>) -> Self {
        VirtualClock {
            now: AtomicF64::new(start),
            threshold: AtomicF64::new(threshold),
            end: AtomicF64::new(end.unwrap_or(f64::NAN)),
            advance_to: AtomicF64::new(f64::NAN),
            threads: AtomicUsize::new(0),
            rng: seed.map(AtomicU64::new),
        }
    }

    #[inline]
    pub fn now(&self) -> f64 {
        self.now.get()
    }

    /// Moves time forward to `t` (never back).
    pub fn jump_to(&self, t: f64) {
        if t > self.now() {
            self.now.set(t);
        }
    }

    /// Shuffles `items` (Fisher-Yates) with the seeded generator; no-op without a seed.
    pub fn shuffle<T>(&self, items: &mut [T]) {
        let Some(rng) = &self.rng else { return };
        let mut state = rng.load(Relaxed);
        for i in (1..items.len()).rev() {
            // splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to shuffle.
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let j = (z % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
        rng.store(state, Relaxed);
    }
}

/// CPython's thresholds for rebuilding the heap (base_events.py: _MIN_SCHEDULED_TIMER_HANDLES,
/// _MIN_CANCELLED_TIMER_HANDLES_FRACTION).
const MIN_SCHEDULED: usize = 100;
const MIN_CANCELLED_FRACTION: f64 = 0.5;

pub struct Timer {
    /// The deadline as a sortable key: NaN sorts first, as a NaN deadline in CPython's heap
    /// is never ">= now" and so is due at once.
    key: f64,
    seq: u64,
    pub entry: Queued,
}

impl Timer {
    pub fn when(&self) -> f64 {
        self.key
    }
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    // Reversed: BinaryHeap is a max-heap and we want the earliest deadline on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .key
            .total_cmp(&self.key)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
pub struct TimerHeap {
    heap: BinaryHeap<Timer>,
    seq: u64,
    /// Timers cancelled while scheduled (CPython's `_timer_cancelled_count`).
    pub cancelled: usize,
}

impl TimerHeap {
    pub fn push(&mut self, when: f64, entry: Queued) {
        let key = if when.is_nan() {
            f64::NEG_INFINITY
        } else {
            when
        };
        self.seq = self.seq.wrapping_add(1);
        self.heap.push(Timer {
            key,
            seq: self.seq,
            entry,
        });
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn peek(&self) -> Option<&Timer> {
        self.heap.peek()
    }

    pub fn pop(&mut self) -> Option<Timer> {
        self.heap.pop()
    }

    /// Whether CPython would rebuild the heap now.
    pub fn wants_compaction(&self) -> bool {
        let n = self.heap.len();
        n > MIN_SCHEDULED && (self.cancelled as f64) / (n as f64) > MIN_CANCELLED_FRACTION
    }

    /// Splits out every timer for which `is_cancelled` holds and returns them; the caller
    /// drops them once no loop state is borrowed (dropping a handle may run Python code).
    pub fn take_cancelled(&mut self, mut is_cancelled: impl FnMut(&Timer) -> bool) -> Vec<Timer> {
        let all = std::mem::take(&mut self.heap).into_vec();
        let (gone, keep): (Vec<Timer>, Vec<Timer>) = all.into_iter().partition(|t| is_cancelled(t));
        self.heap = BinaryHeap::from(keep);
        self.cancelled = 0;
        gone
    }

    pub fn drain(&mut self) -> Vec<Timer> {
        self.cancelled = 0;
        std::mem::take(&mut self.heap).into_vec()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Timer> {
        self.heap.iter()
    }
}
