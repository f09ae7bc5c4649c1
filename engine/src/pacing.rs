//! Pacing of `call_soon_threadsafe` floods: a thread that finds the loop far behind waits
//! (GIL released) until the loop has caught up, so timers and `stop()` are not starved.
//!
//! Why it is needed: the loop runs, per iteration, only the callbacks that were ready when the
//! iteration began (CPython's `_run_once`), and due timers join the end of the ready queue. So a
//! timer runs after everything queued before it, and its lateness is the time the loop needs to
//! work through that backlog. Threads that call `call_soon_threadsafe` in a tight loop share the
//! GIL with the loop thread (one switch interval, 5 ms, each in turn), and a call costs them less
//! than running a callback costs the loop: the backlog grew without bound (4 threads: 0.6-4 s
//! late timers within a 0.3 s run, `benches/flood.py`). Stock asyncio is paced by its own cost:
//! each of its calls writes the self-pipe, a syscall that lets the GIL go. Here the pace is
//! explicit: a call from a thread other than the loop's, made while the loop runs, that leaves
//! [`HIGH`] or more callbacks ready waits until the loop has run all but [`LOW`] of the callbacks
//! ahead of its own. The backlog, and with it the lateness of a timer, stays what the loop runs in
//! a few milliseconds, and nothing is reordered: the waiting call's callback is already queued.
//!
//! Invariants:
//! - only a foreign thread waits, only while the loop is inside `_run` (whose end lets every
//!   waiter go), and never longer than its own callback's place in the queue needs, as long as the
//!   loop makes progress; a loop that runs no callback for [`STALL`] (blocked inside one, perhaps
//!   on the very thread that waits) is marked stalled: the waiters go and no call waits again
//!   until the loop has run a callback;
//! - the loop side costs, per callback, one store and one load and compare of relaxed atomics;
//! - a waiter registers its target with the GIL held, and the loop, which runs callbacks only with
//!   the GIL, releases waiters under the mutex; a target re-registered without the GIL (after a
//!   release that was for an earlier target) may miss one release, which the next [`CHUNK`]
//!   timeout makes up for.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Ready callbacks from which a foreign thread's call waits: a few milliseconds of the loop's
/// work for small callbacks (a trivial one costs ~0.3 us here), and beyond ordinary cross-thread
/// use. Under a flood of 1-4 threads (`benches/flood.py`, on a loaded 2-core machine) 2,048 to
/// 8,192 kept timers within ~10 ms; 16,384 and 32,768 let them drift to 15-50 ms; the rate of
/// calls was the same within the (large) noise.
pub const HIGH: usize = 8_192;
/// How many callbacks may still be ahead of a waiting call's own when it goes on.
pub const LOW: usize = HIGH / 4;
/// A waiter re-checks the loop's progress this often.
const CHUNK: Duration = Duration::from_millis(5);
/// A loop that ran no callback for this long is stalled.
const STALL: Duration = Duration::from_millis(50);

/// A small id per OS thread (0 is never handed out; a thread whose thread-locals are already
/// gone, as it exits, gets u64::MAX, which no loop thread has).
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: u64 = NEXT.fetch_add(1, Relaxed);
    }
    TOKEN.try_with(|t| *t).unwrap_or(u64::MAX)
}

pub struct Pacer {
    /// The token of the thread inside `_run`, 0 when the loop is not running.
    loop_thread: AtomicU64,
    /// Callbacks the loop has taken off the ready queue so far (written by the loop thread).
    popped: AtomicU64,
    /// The loop lets the waiters go when `popped` reaches this; u64::MAX: nobody waits.
    wake_at: AtomicU64,
    /// A waiter saw no progress for `STALL`; cleared by the loop's next callback.
    stalled: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer {
            loop_thread: AtomicU64::new(0),
            popped: AtomicU64::new(0),
            wake_at: AtomicU64::new(u64::MAX),
            stalled: AtomicBool::new(false),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        }
    }
}

impl Pacer {
    /// The calling thread starts running the loop (GIL held).
    pub fn enter_run(&self) {
        self.loop_thread.store(thread_token(), Relaxed);
    }

    /// The loop stops running: every waiter goes (GIL held).
    pub fn exit_run(&self) {
        self.loop_thread.store(0, Relaxed);
        self.release();
    }

    /// GIL held, right after queueing a threadsafe callback that has `ready - 1` callbacks
    /// ahead of it: whether this call must wait, and if so the `popped` count to wait for.
    #[inline]
    pub fn should_wait(&self, ready: usize) -> Option<u64> {
        if ready < HIGH {
            return None;
        }
        let running = self.loop_thread.load(Relaxed);
        if running == 0 || running == thread_token() || self.stalled.load(Relaxed) {
            return None;
        }
        let target = self.popped.load(Relaxed) + (ready - LOW) as u64;
        self.wake_at.fetch_min(target, Relaxed);
        Some(target)
    }

    /// GIL released: waits until the loop has popped `target` callbacks, it stops running, or
    /// it stalls.
    pub fn wait(&self, target: u64) {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = self.popped.load(Relaxed);
        let mut idle = Duration::ZERO;
        loop {
            if self.popped.load(Relaxed) >= target || self.loop_thread.load(Relaxed) == 0 {
                return;
            }
            // Again: a release for an earlier target reset it.
            self.wake_at.fetch_min(target, Relaxed);
            let timed_out;
            (guard, timed_out) = match self.cv.wait_timeout(guard, CHUNK) {
                Ok((g, t)) => (g, t.timed_out()),
                Err(e) => {
                    let (g, t) = e.into_inner();
                    (g, t.timed_out())
                }
            };
            if !timed_out {
                continue;
            }
            let now = self.popped.load(Relaxed);
            if now != last {
                last = now;
                idle = Duration::ZERO;
                continue;
            }
            idle += CHUNK;
            if idle >= STALL {
                // Let callers through until the loop runs a callback again (its next pop
                // reaches `wake_at` 0 and clears the mark).
                self.stalled.store(true, Relaxed);
                self.wake_at.store(0, Relaxed);
                return;
            }
        }
    }

    /// Loop thread, GIL held: one more callback taken off the ready queue.
    #[inline]
    pub fn popped_one(&self) {
        let n = self.popped.load(Relaxed) + 1;
        self.popped.store(n, Relaxed);
        if n >= self.wake_at.load(Relaxed) {
            self.release();
        }
    }

    /// Lets every waiter re-check its target.
    #[cold]
    fn release(&self) {
        self.wake_at.store(u64::MAX, Relaxed);
        self.stalled.store(false, Relaxed);
        drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()));
        self.cv.notify_all();
    }
}
