//! Time: the clock seam and the timer heap.
//!
//! The heap is generic over its entry (the binding stores its `Queued` handle; the tests store
//! numbers), so the engine owns the ordering and the compaction rule while the binding decides
//! what "cancelled" means (a flag in a Python object).
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

/// How long (real time) a virtual loop that nothing can wake waits before calling it a
/// deadlock: long enough for a thread the loop does not know of to call back, short enough
/// that a deadlocked test fails well within a second.
pub const DEADLOCK_GRACE_MS: i32 = 100;

/// What a virtual loop does when it finds nothing to do (nothing ready, no timer due, and a
/// zero-timeout poll found no event): [`VirtualClock::idle_step`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IdleStep {
    /// Jump to the next timer, on the way to a pending `advance()` target.
    Jump(f64),
    /// No timer before the pending `advance()` target: jump there and report it reached.
    Advance(f64),
    /// Autojump: sit idle `ms` real milliseconds (0: not at all) in the real poller; if still
    /// nothing happened and no thread work started, jump to the next deadline `to`.
    Autojump { ms: i32, to: f64 },
    /// Something outside can still wake the loop (a watched fd, pending thread work): wait for
    /// it in the real poller.
    Wait,
    /// Nothing can: wait `grace_ms` in the real poller (for a thread the loop does not know of),
    /// then report the deadlock.
    Deadlock { grace_ms: i32 },
}

impl VirtualClock {
    /// The idle policy, decided once per idle iteration, in this order:
    /// 1. an `advance()` is pending: jump to the next timer on the way, or to its target when
    ///    none is left before it;
    /// 2. autojump (trio's rule): a timer exists, no executor / to_thread work is pending, and
    ///    the threshold is finite: after sitting idle for the threshold in real time, jump to
    ///    the next deadline;
    /// 3. something outside can still wake the loop (`has_fds`, pending thread work): wait;
    /// 4. nothing can: a deadlock, after a short grace.
    ///
    /// `next` is the first deadline; one at +inf is no deadline time can jump to.
    pub fn idle_step(&self, next: Option<f64>, has_fds: bool) -> IdleStep {
        let next = next.filter(|t| t.is_finite());
        if let Some(target) = self.advance_to.get_opt() {
            return match next {
                Some(t) if t <= target => IdleStep::Jump(t),
                _ => IdleStep::Advance(target),
            };
        }
        let threshold = self.threshold.get();
        let threads = self.threads.load(Relaxed);
        if let (Some(to), true, 0) = (next, threshold.is_finite(), threads) {
            let ms = if threshold > 0.0 {
                (threshold * 1e3).ceil().min(i32::MAX as f64) as i32
            } else {
                0
            };
            return IdleStep::Autojump { ms, to };
        }
        if has_fds || threads != 0 {
            return IdleStep::Wait;
        }
        IdleStep::Deadlock {
            grace_ms: DEADLOCK_GRACE_MS,
        }
    }

    /// Moves time to `t`, or to the clock's `end` if `t` reaches it: then `end` is cleared
    /// (reported once, so cleanup can run) and true returned.
    pub fn jump_or_end(&self, t: f64) -> bool {
        if let Some(end) = self.end.get_opt() {
            if t >= end {
                self.jump_to(end);
                self.end.set(f64::NAN);
                return true;
            }
        }
        self.jump_to(t);
        false
    }
}

/// CPython's thresholds for rebuilding the heap (base_events.py: _MIN_SCHEDULED_TIMER_HANDLES,
/// _MIN_CANCELLED_TIMER_HANDLES_FRACTION).
const MIN_SCHEDULED: usize = 100;
const MIN_CANCELLED_FRACTION: f64 = 0.5;

pub struct Timer<T> {
    /// The deadline as a sortable key (`ordered_bits`): NaN sorts first, as a NaN deadline in
    /// CPython's heap is never ">= now" and so is due at once.
    key: u64,
    seq: u64,
    pub entry: T,
}

/// `x`'s bits mapped so that unsigned order is `f64::total_cmp`'s order: a negative number's
/// bits all flipped, a positive one's sign bit set. Computed once per push, it makes each of
/// the heap's ~2 log2(n) comparisons per pop two integer compares instead of two
/// `total_cmp` bit conversions (benches/callgrind.py sleep_100k).
#[inline]
fn ordered_bits(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | 1 << 63
    }
}

/// The inverse of [`ordered_bits`].
#[inline]
fn from_ordered_bits(o: u64) -> f64 {
    f64::from_bits(if o >> 63 == 1 { o & !(1 << 63) } else { !o })
}

impl<T> Timer<T> {
    /// The deadline as ordered: a NaN deadline reads as -inf (due at once).
    #[inline]
    pub fn when(&self) -> f64 {
        from_ordered_bits(self.key)
    }
}

impl<T> PartialEq for Timer<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for Timer<T> {}
impl<T> PartialOrd for Timer<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Timer<T> {
    // Reversed: BinaryHeap is a max-heap and we want the earliest deadline on top.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.key, other.seq).cmp(&(self.key, self.seq))
    }
}

pub struct TimerHeap<T> {
    heap: BinaryHeap<Timer<T>>,
    seq: u64,
    /// Timers cancelled while scheduled (CPython's `_timer_cancelled_count`).
    pub cancelled: usize,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
            cancelled: 0,
        }
    }
}

impl<T> TimerHeap<T> {
    /// Schedules `entry` at `when`; among equal deadlines it fires after those pushed before.
    #[inline]
    pub fn push(&mut self, when: f64, entry: T) {
        let key = if when.is_nan() {
            f64::NEG_INFINITY
        } else {
            when
        };
        self.seq = self.seq.wrapping_add(1);
        self.heap.push(Timer {
            key: ordered_bits(key),
            seq: self.seq,
            entry,
        });
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest timer (the first scheduled among equal deadlines).
    #[inline]
    pub fn peek(&self) -> Option<&Timer<T>> {
        self.heap.peek()
    }

    #[inline]
    pub fn pop(&mut self) -> Option<Timer<T>> {
        self.heap.pop()
    }

    /// Whether CPython would rebuild the heap now.
    #[inline]
    pub fn wants_compaction(&self) -> bool {
        let n = self.heap.len();
        n > MIN_SCHEDULED && (self.cancelled as f64) / (n as f64) > MIN_CANCELLED_FRACTION
    }

    /// Splits out every timer for which `is_cancelled` holds and returns them; the caller
    /// drops them once no loop state is borrowed (dropping a handle may run Python code).
    pub fn take_cancelled(
        &mut self,
        mut is_cancelled: impl FnMut(&Timer<T>) -> bool,
    ) -> Vec<Timer<T>> {
        let all = std::mem::take(&mut self.heap).into_vec();
        let (gone, keep): (Vec<Timer<T>>, Vec<Timer<T>>) =
            all.into_iter().partition(|t| is_cancelled(t));
        self.heap = BinaryHeap::from(keep);
        self.cancelled = 0;
        gone
    }

    /// Every timer, in no particular order; the heap is left empty.
    pub fn drain(&mut self) -> Vec<Timer<T>> {
        self.cancelled = 0;
        std::mem::take(&mut self.heap).into_vec()
    }

    /// Every timer, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Timer<T>> {
        self.heap.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop_all(h: &mut TimerHeap<u32>) -> Vec<u32> {
        std::iter::from_fn(|| h.pop().map(|t| t.entry)).collect()
    }

    #[test]
    fn earliest_first_equal_deadlines_fifo() {
        let mut h = TimerHeap::default();
        for (i, when) in [3.0, 1.0, 2.0, 1.0, 3.0, 1.0].into_iter().enumerate() {
            h.push(when, i as u32);
        }
        assert_eq!(h.len(), 6);
        assert_eq!(h.peek().map(|t| t.when()), Some(1.0));
        assert_eq!(pop_all(&mut h), vec![1, 3, 5, 2, 0, 4]);
        assert!(h.is_empty());
    }

    #[test]
    fn ordered_bits_sort_as_total_cmp_and_round_trip() {
        let xs = [
            f64::NEG_INFINITY,
            f64::MIN,
            -1e300,
            -1.5,
            -f64::MIN_POSITIVE,
            -5e-324,
            -0.0,
            0.0,
            5e-324,
            f64::MIN_POSITIVE,
            1.0,
            1.0 + f64::EPSILON,
            123_456.789,
            1e300,
            f64::MAX,
            f64::INFINITY,
        ];
        for &a in &xs {
            assert_eq!(from_ordered_bits(ordered_bits(a)).to_bits(), a.to_bits());
            for &b in &xs {
                assert_eq!(
                    ordered_bits(a).cmp(&ordered_bits(b)),
                    a.total_cmp(&b),
                    "{a} {b}"
                );
            }
        }
    }

    #[test]
    fn nan_is_due_first_and_infinities_order() {
        let mut h = TimerHeap::default();
        h.push(f64::INFINITY, 0);
        h.push(f64::NAN, 1);
        h.push(f64::NEG_INFINITY, 2);
        h.push(-1e300, 3);
        h.push(f64::NAN, 4);
        // NaN reads as -inf and keeps its scheduling order among -inf deadlines.
        assert_eq!(h.peek().map(|t| t.when()), Some(f64::NEG_INFINITY));
        assert_eq!(pop_all(&mut h), vec![1, 2, 4, 3, 0]);
    }

    #[test]
    fn compaction_follows_cpython_thresholds() {
        let mut h = TimerHeap::default();
        for i in 0..=MIN_SCHEDULED as u32 {
            h.push(f64::from(i), i);
        }
        // 101 timers: more than half cancelled is needed.
        h.cancelled = 50;
        assert!(!h.wants_compaction());
        h.cancelled = 51;
        assert!(h.wants_compaction());
        let gone = h.take_cancelled(|t| t.entry % 2 == 0);
        assert_eq!(h.cancelled, 0);
        assert_eq!(gone.len(), 51);
        assert!(gone.iter().all(|t| t.entry % 2 == 0));
        let rest = pop_all(&mut h);
        assert_eq!(rest, (0..=100).filter(|i| i % 2 == 1).collect::<Vec<_>>());
        // At most MIN_SCHEDULED timers: never compacted, whatever is cancelled.
        let mut small = TimerHeap::default();
        for i in 0..MIN_SCHEDULED as u32 {
            small.push(0.0, i);
        }
        small.cancelled = MIN_SCHEDULED;
        assert!(!small.wants_compaction());
    }

    #[test]
    fn drain_and_iter() {
        let mut h = TimerHeap::default();
        h.push(2.0, 'b');
        h.push(1.0, 'a');
        h.cancelled = 1;
        let mut seen: Vec<char> = h.iter().map(|t| t.entry).collect();
        seen.sort_unstable();
        assert_eq!(seen, vec!['a', 'b']);
        assert_eq!(h.drain().len(), 2);
        assert_eq!(h.cancelled, 0);
        assert!(h.peek().is_none());
    }

    #[test]
    fn virtual_clock_moves_forward_only() {
        let v = VirtualClock::new(10.0, f64::INFINITY, Some(20.0), None);
        let c = Clock::Virtual(Box::new(v));
        assert_eq!(c.now(), 10.0);
        assert_eq!(c.at(123_456_789), 10.0, "a virtual clock ignores real time");
        let Clock::Virtual(v) = &c else {
            unreachable!()
        };
        v.jump_to(15.0);
        v.jump_to(12.0);
        assert_eq!(c.now(), 15.0);
        assert_eq!(v.end.get_opt(), Some(20.0));
        assert_eq!(v.advance_to.get_opt(), None);
    }

    #[test]
    fn real_clock_reads_monotonic() {
        let c = Clock::Real;
        let a = c.now();
        let b = clock::monotonic();
        assert!(a <= b);
        assert_eq!(c.at(1_500_000_000), 1.5);
        assert_eq!(c.at(2_000_000_000), 2.0);
    }

    #[test]
    fn seeded_shuffle_is_a_replayable_permutation() {
        let a = VirtualClock::new(0.0, 0.0, None, Some(42));
        let b = VirtualClock::new(0.0, 0.0, None, Some(42));
        let mut x: Vec<u32> = (0..50).collect();
        let mut y = x.clone();
        a.shuffle(&mut x);
        b.shuffle(&mut y);
        assert_eq!(x, y);
        assert_ne!(x, (0..50).collect::<Vec<_>>());
        x.sort_unstable();
        assert_eq!(x, (0..50).collect::<Vec<_>>());
        let unseeded = VirtualClock::new(0.0, 0.0, None, None);
        let mut z: Vec<u32> = (0..50).collect();
        unseeded.shuffle(&mut z);
        assert_eq!(z, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn idle_policy() {
        let v = VirtualClock::new(0.0, 0.5, Some(10.0), None);
        assert_eq!(
            v.idle_step(Some(2.0), false),
            IdleStep::Autojump { ms: 500, to: 2.0 }
        );
        assert_eq!(
            v.idle_step(Some(f64::INFINITY), false),
            IdleStep::Deadlock {
                grace_ms: DEADLOCK_GRACE_MS
            }
        );
        assert_eq!(v.idle_step(None, true), IdleStep::Wait);
        v.threads.store(1, Relaxed);
        assert_eq!(
            v.idle_step(Some(2.0), false),
            IdleStep::Wait,
            "thread work pending"
        );
        v.threads.store(0, Relaxed);
        v.advance_to.set(3.0);
        assert_eq!(v.idle_step(Some(2.0), false), IdleStep::Jump(2.0));
        assert_eq!(v.idle_step(Some(4.0), false), IdleStep::Advance(3.0));
        assert_eq!(v.idle_step(None, false), IdleStep::Advance(3.0));
        v.advance_to.set(f64::NAN);
        v.threshold.set(0.0);
        assert_eq!(
            v.idle_step(Some(2.0), false),
            IdleStep::Autojump { ms: 0, to: 2.0 }
        );
        v.threshold.set(f64::INFINITY);
        assert_eq!(v.idle_step(Some(2.0), true), IdleStep::Wait, "autojump off");
        assert!(!v.jump_or_end(4.0));
        assert_eq!(v.now(), 4.0);
        assert!(v.jump_or_end(12.0), "end reached");
        assert_eq!(v.now(), 10.0);
        assert!(!v.jump_or_end(12.0), "reported once");
        assert_eq!(v.now(), 12.0);
    }

    #[test]
    fn atomic_f64_nan_is_none() {
        let a = AtomicF64::new(f64::NAN);
        assert_eq!(a.get_opt(), None);
        a.set(-0.5);
        assert_eq!(a.get_opt(), Some(-0.5));
    }
}
