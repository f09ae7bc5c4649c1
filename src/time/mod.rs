//! Time: the clock seam and the timer heap.
//!
//! The loop reads time only through [`Clock`], so a virtual clock for tests can replace the
//! real one later without touching the loop. The heap orders timers by `(deadline, sequence)`:
//! equal deadlines fire in the order they were scheduled (CPython's heapq leaves that order
//! unspecified; FIFO is one of its valid orders and the one tests can rely on).
//! Cancellation is lazy, as in CPython: a cancelled timer stays in the heap until it reaches
//! the top or until more than half the heap is cancelled, when the heap is rebuilt.
use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::handles::Queued;
use crate::sys::clock;

/// The loop's clock. Only the real clock exists today.
pub enum Clock {
    Real,
}

impl Clock {
    #[inline]
    pub fn now(&self) -> f64 {
        match self {
            Clock::Real => clock::monotonic(),
        }
    }

    /// The loop time at the instant the real monotonic clock read `real_ns`: lets the run loop
    /// read the clock once and use it both for its counters and for timers.
    #[inline]
    pub fn at(&self, real_ns: i64) -> f64 {
        match self {
            Clock::Real => clock::ns_to_secs(real_ns),
        }
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
