//! Multi-thread stress tests of what crosses threads: the waker (what `call_soon_threadsafe`
//! writes while the loop polls), the pacer (threads flooding `call_soon_threadsafe`), the
//! metrics seqlock and the watchdog's activity word. `make sanitize` runs them under
//! ThreadSanitizer too. Sizes are small enough for a loaded 2-core machine in a few seconds.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use oxloop_engine::counters::{Activity, Counters, PollSample};
use oxloop_engine::pacing::{Pacer, HIGH, LOW};
use oxloop_engine::sys::epoll::{empty_event, Epoll, READABLE};
use oxloop_engine::sys::waker::Waker;

const WAKER_TOKEN: u64 = u64::MAX;

/// Threads wake the loop while it polls and drains: every wake made after the loop's last drain
/// is seen by a poll (no lost wake-up), and a drained waker leaves the fd quiet.
#[test]
fn waker_loses_no_wakeup() {
    let waker = Arc::new(Waker::new().expect("eventfd"));
    let ep = Epoll::new().expect("epoll");
    ep.add(waker.raw(), READABLE, WAKER_TOKEN).expect("add");
    let rounds = 2_000u64;
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (w, done) = (Arc::clone(&waker), Arc::clone(&done));
            thread::spawn(move || {
                for _ in 0..rounds {
                    w.wake();
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let mut ev = vec![empty_event(); 8];
    let mut wakeups = 0u64;
    while done.load(Ordering::SeqCst) < 3 {
        let n = Epoll::wait_raw(ep.raw(), &mut ev, 50).expect("wait");
        if n > 0 {
            let token = ev[0].u64;
            assert_eq!(token, WAKER_TOKEN);
            waker.drain();
            wakeups += 1;
        }
    }
    for t in threads {
        t.join().expect("join");
    }
    // Whatever was written after the last drain is still readable now.
    let n = Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait");
    if n == 1 {
        waker.drain();
    }
    assert!(wakeups > 0 || n == 1);
    // Drained: quiet until the next wake.
    assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 0);
    waker.wake();
    assert_eq!(Epoll::wait_raw(ep.raw(), &mut ev, 0).expect("wait"), 1);
}

/// A loop thread pops callbacks while foreign threads flood: each flooding call that must wait
/// returns once the loop has popped up to its target, and `exit_run` lets every waiter go.
#[test]
fn pacer_releases_every_waiter() {
    let pacer = Arc::new(Pacer::default());
    let queued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(4));
    let loop_thread = {
        let (p, q, d, stop, start) = (
            Arc::clone(&pacer),
            Arc::clone(&queued),
            Arc::clone(&done),
            Arc::clone(&stop),
            Arc::clone(&start),
        );
        thread::spawn(move || {
            p.enter_run();
            start.wait();
            let mut popped = 0u64;
            loop {
                let stopping = stop.load(Ordering::SeqCst);
                // "Run" whatever was queued: pop one at a time.
                while popped < q.load(Ordering::SeqCst) {
                    popped += 1;
                    p.popped_one();
                    d.store(popped, Ordering::SeqCst);
                }
                if stopping {
                    break;
                }
                thread::yield_now();
            }
            p.exit_run();
            popped
        })
    };
    let waited = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..3)
        .map(|_| {
            let (p, q, d, start, waited) = (
                Arc::clone(&pacer),
                Arc::clone(&queued),
                Arc::clone(&done),
                Arc::clone(&start),
                Arc::clone(&waited),
            );
            thread::spawn(move || {
                start.wait();
                for _ in 0..20_000 {
                    let n = q.fetch_add(1, Ordering::SeqCst) + 1;
                    // What the loop has not popped yet is what is ready (the binding: the
                    // queue's length under the GIL).
                    let ready = n.saturating_sub(d.load(Ordering::SeqCst));
                    let ready = usize::try_from(ready).unwrap_or(usize::MAX);
                    if let Some(target) = p.should_wait(ready) {
                        waited.fetch_add(1, Ordering::Relaxed);
                        p.wait(target);
                    }
                }
            })
        })
        .collect();
    for t in producers {
        t.join().expect("producer");
    }
    stop.store(true, Ordering::SeqCst);
    let popped = loop_thread.join().expect("loop thread");
    assert_eq!(
        popped,
        queued.load(Ordering::SeqCst),
        "the loop ran everything"
    );
    const { assert!(LOW < HIGH) };
    // A producer after the run ended never waits.
    assert_eq!(pacer.should_wait(HIGH * 4), None);
}

/// The loop thread itself never waits, nor does anyone while the loop is not running.
#[test]
fn pacer_never_paces_the_loop_thread() {
    // Threads are spawned and joined (not scoped): ThreadSanitizer sees pthread_join, not the
    // uninstrumented wait of std's scope.
    let pacer = Arc::new(Pacer::default());
    assert_eq!(pacer.should_wait(HIGH * 4), None, "not running");
    pacer.enter_run();
    assert_eq!(pacer.should_wait(HIGH * 4), None, "the loop thread itself");
    let p = Arc::clone(&pacer);
    thread::spawn(move || {
        assert_eq!(p.should_wait(HIGH - 1), None, "below the mark");
        let target = p
            .should_wait(HIGH)
            .expect("at the mark a foreign call waits");
        assert_eq!(target, (HIGH - LOW) as u64);
    })
    .join()
    .expect("foreign thread");
    pacer.exit_run();
}

/// Readers of the seqlock always see one iteration's updates whole, while the loop thread
/// keeps publishing.
#[test]
fn seqlock_snapshots_are_consistent() {
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (c, stop) = (Arc::clone(&counters), Arc::clone(&stop));
            thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::SeqCst) || reads == 0 {
                    let v = c.read().0;
                    // Fields: 0 iterations, 1 io_events, 3 timers_fired, 5 ready_at_poll.
                    let (it, io, fired, ready) = (v[0], v[1], v[3], v[5]);
                    assert_eq!(io, 3 * it, "io_events and iterations from one iteration");
                    assert_eq!(fired, it, "timers_fired and iterations from one iteration");
                    assert_eq!(ready, it, "ready_at_poll is the last iteration's");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 1..=50_000u64 {
        counters.record_poll(
            &PollSample {
                start_ns: i as i64 * 10,
                end_ns: i as i64 * 10 + 5,
                io_events: 3,
                timers_fired: 1,
                ready_at_poll: i as usize,
                timers_at_poll: 0,
                fds: 1,
            },
            u64::MAX,
        );
        if i % 1000 == 0 {
            thread::yield_now();
        }
    }
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        assert!(r.join().expect("reader") > 0);
    }
    let v = counters.read().0;
    assert_eq!(v[0], 50_000);
    let raw = counters.read().to_raw(7, 2);
    assert_eq!(raw[0], 50_000);
    assert_eq!(raw[1], 7, "callbacks follows iterations");
}

/// The watchdog's view of the activity word: odd while a callback runs, and then `current` is
/// that callback's pointer; `exit` reports a callback the watchdog flagged.
#[test]
fn activity_word_names_the_running_callback() {
    let activity = Arc::new(Activity::default());
    let stop = Arc::new(AtomicBool::new(false));
    // The "handles": their addresses are what `current` holds.
    let handles: Arc<Vec<u64>> = Arc::new((0..64).collect());
    let watcher = {
        let (a, stop, hs) = (
            Arc::clone(&activity),
            Arc::clone(&stop),
            Arc::clone(&handles),
        );
        thread::spawn(move || {
            a.set_watcher(thread::current());
            let base = hs.as_ptr() as usize;
            let mut samples = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let s1 = a.seq();
                if s1 % 2 == 1 {
                    let p = a.current() as usize;
                    if a.seq() == s1 {
                        // The sample belongs to the callback numbered by the word.
                        let idx = (s1 / 2) as usize % hs.len();
                        assert_eq!(p, base + idx * 8, "seq {s1}");
                        samples += 1;
                    }
                }
            }
            samples
        })
    };
    let base = handles.as_ptr();
    for i in 0..200_000usize {
        // SAFETY: i % len is in bounds of `handles`, which outlives the loop.
        let p = unsafe { base.add(i % handles.len()) };
        activity.enter(p.cast_mut().cast());
        assert_eq!(activity.seq() % 2, 1);
        assert_eq!(activity.exit(), None);
    }
    assert_eq!(activity.callbacks(), 200_000);
    // The watcher stops before the callback below, whose null pointer is not one of `handles`
    // (sampled, it failed the watcher's check: seen under ThreadSanitizer's scheduling).
    stop.store(true, Ordering::SeqCst);
    watcher.join().expect("watcher");
    // A flagged callback is reported by its own exit.
    activity.enter(std::ptr::null_mut());
    let s = activity.seq();
    activity.stall_seq.store(s, Ordering::Relaxed);
    assert_eq!(activity.exit(), Some(s));
}
