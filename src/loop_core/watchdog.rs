//! The slow-callback watchdog: one OS thread per loop, started when reports are enabled and
//! joined when they are disabled or the loop closes.
//!
//! It never slows the loop down: it reads the loop's [`Activity`] word (odd while a callback
//! runs) every `slow_callback_duration / 10` (1-50 ms) without the GIL. When the same
//! callback has run for `slow_callback_duration`, it takes the GIL (the loop thread hands it
//! over at its next eval-loop switch interval) and, if that callback is still running, has
//! the loop's Python side sample the loop thread's stack (`Loop._watchdog_sample`), so the
//! report names the line that blocked. When the callback ends (the loop thread wakes the
//! watchdog at once, see `Activity::exit`) it reports once (`Loop._watchdog_report`), which
//! queues the report on the loop thread.
//!
//! Invariants:
//! - The running handle's pointer is dereferenced only with the GIL held and the activity word
//!   re-read unchanged and odd (engine/src/counters.rs explains why the handle is alive then).
//! - A callback that holds the GIL for its whole stall (a C call) cannot be sampled: the
//!   watchdog gets the GIL only after it ends, and the report says the stack was not sampled.
//! - Durations are measured by this thread's monotonic clock from its first sight of the
//!   callback to its first sight of the next state: accurate to one polling period.
//! - The thread holds the loop weakly and exits when the loop is gone or `stop` is set.
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyWeakrefReference;

use super::Shared;

pub struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn spawn(shared: Arc<Shared>, loop_ref: Py<PyWeakrefReference>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("oxloop-watchdog".into())
            .spawn(move || {
                shared.activity.set_watcher(std::thread::current());
                watch(&shared, &loop_ref, &flag);
                shared.activity.stall_seq.store(0, Relaxed);
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops and joins the thread. Call without the GIL (the thread may be waiting for it).
    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Dropped without `stop` (the loop object freed): ask the thread to exit, do not join
        // (we may hold the GIL it waits for).
        self.stop.store(true, Relaxed);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

/// A stall being watched: the callback's activity word and when it was first seen.
struct Stall {
    seq: u64,
    since: Instant,
    sample: Option<Py<PyAny>>,
    /// The watchdog could not take the GIL until the callback ended.
    unsampled: bool,
}

fn period(slow_ns: u64) -> Duration {
    Duration::from_nanos((slow_ns / 10).clamp(1_000_000, 50_000_000))
}

fn watch(shared: &Shared, loop_ref: &Py<PyWeakrefReference>, stop: &AtomicBool) {
    let activity = &shared.activity;
    let mut last_seq = activity.seq();
    let mut first_seen = Instant::now();
    let mut stall: Option<Stall> = None;
    while !stop.load(Relaxed) {
        let slow_ns = activity.slow_ns.load(Relaxed);
        std::thread::park_timeout(period(slow_ns));
        if stop.load(Relaxed) {
            break;
        }
        let seq = activity.seq();
        let now = Instant::now();
        if let Some(st) = &stall {
            if seq == st.seq {
                continue; // still stalled, already sampled
            }
            let Some(st) = stall.take() else { break };
            activity.stall_seq.store(0, Relaxed);
            if !report(shared, loop_ref, st, now) {
                break;
            }
        }
        if seq != last_seq {
            last_seq = seq;
            first_seen = now;
            continue;
        }
        let stalled = seq % 2 == 1
            && slow_ns != u64::MAX
            && now.duration_since(first_seen) >= Duration::from_nanos(slow_ns);
        if !stalled {
            continue;
        }
        let mut st = Stall {
            seq,
            since: first_seen,
            sample: None,
            unsampled: false,
        };
        // Flag it before waiting for the GIL: if the callback holds the GIL to its end, the
        // loop thread keeps its handle for the report (LoopCore::run_handle).
        activity.stall_seq.store(seq, Relaxed);
        let alive = Python::attach(|py| {
            let Some(lp) = loop_ref.bind(py).upgrade() else {
                return false;
            };
            if activity.seq() != seq {
                st.unsampled = true;
                return true;
            }
            let ptr = activity.current().cast::<pyo3::ffi::PyObject>();
            if ptr.is_null() {
                st.unsampled = true;
                return true;
            }
            // SAFETY: the GIL is held and the activity word still names this callback, so the
            // loop thread is inside it and its queue entry owns the handle (module invariants).
            let handle = unsafe { Bound::from_borrowed_ptr(py, ptr) };
            match lp.call_method1(intern!(py, "_watchdog_sample"), (handle,)) {
                Ok(s) => st.sample = Some(s.unbind()),
                Err(e) => e.write_unraisable(py, Some(&lp)),
            }
            true
        });
        if !alive {
            break;
        }
        if st.unsampled {
            // It ended while we waited for the GIL: report at once.
            activity.stall_seq.store(0, Relaxed);
            if !report(shared, loop_ref, st, Instant::now()) {
                break;
            }
            last_seq = activity.seq();
            first_seen = Instant::now();
        } else {
            // From here the loop thread wakes us as the callback ends (Activity::exit).
            if activity.seq() != seq {
                std::thread::current().unpark(); // it ended in between: do not sleep a period
            }
            stall = Some(st);
        }
    }
}

/// Hands one report to the loop (`Loop._watchdog_report`); false when the loop is gone.
fn report(shared: &Shared, loop_ref: &Py<PyWeakrefReference>, st: Stall, end: Instant) -> bool {
    let secs = end.duration_since(st.since).as_secs_f64();
    shared.activity.slow_callbacks.fetch_add(1, Relaxed);
    Python::attach(|py| {
        let Some(lp) = loop_ref.bind(py).upgrade() else {
            return false;
        };
        let sample = st.sample.map(|s| s.into_bound(py));
        if let Err(e) = lp.call_method1(
            intern!(py, "_watchdog_report"),
            (sample, secs, st.unsampled, st.seq),
        ) {
            e.write_unraisable(py, Some(&lp));
        }
        true
    })
}
