//! One iteration of CPython's `BaseEventLoop._run_once` (Lib/asyncio/base_events.py), as its
//! named steps, generic over what the queues hold.
//!
//! The binding (`LoopCore::run_once_with`, src/loop_core/mod.rs) runs the steps in order, and
//! does between them only what needs Python: releasing the GIL around a blocking poll, calling
//! a replaced `loop.time()`, running the Python-level signal handlers, and running callbacks.
//!
//! 1. [`drop_cancelled_timers`] and the poll timeout ([`Clock::plan_poll`], [`timeout_ms`]):
//!    0 when a callback is ready or the loop is stopping, else until the first deadline,
//!    rounded up to the millisecond (selectors does the same), or -1 (block) with no timer;
//!    [`may_skip_poll`]: a zero-timeout poll that can find nothing is skipped;
//! 2. the poll itself ([`Epoll::wait_raw`](crate::sys::epoll::Epoll::wait_raw));
//! 3. I/O dispatch ([`dispatch`]): each event's token names the waker, the signal socket, a
//!    live fd entry (its reader and/or writer become ready, by selectors.EpollSelector's
//!    rule), a parked entry (to delete) or an orphan registration (rebuild the poller);
//! 4. due timers ([`take_due_timers`]): every timer with `when < now + clock resolution` joins
//!    the end of the ready queue, in deadline order, equal deadlines in scheduling order;
//! 5. run what was ready ([`run_ready`]): exactly the callbacks queued when this step begins;
//!    whatever they schedule waits for the next iteration.
//!
//! Virtual time is not a branch of these steps: it is the [`Clock`]'s policy
//! ([`Clock::plan_poll`] and [`VirtualClock::idle_step`](crate::time::VirtualClock::idle_step)).
//!
//! Invariants: the steps never block and never allocate except to grow the queues; each takes
//! only the pieces of state it needs, so the binding can drop its borrow of the loop state
//! between them (no Python code runs under a borrow).
use crate::io::{split_token, FdTable, SIGNAL_TOKEN, WAKER_TOKEN};
use crate::ready::ReadyQueue;
use crate::sys::epoll::{READABLE, WRITABLE};
use crate::time::{Clock, TimerHeap};

/// asyncio's MAXIMUM_SELECT_TIMEOUT (base_events.py): one day.
pub const MAX_TIMEOUT_SECS: f64 = 24.0 * 3600.0;

/// Step 1: a timeout in seconds as the poller takes it: clamped to [0, one day] and rounded up
/// to the millisecond, so the loop never wakes before the deadline.
#[inline]
pub fn timeout_ms(secs: f64) -> i32 {
    (secs.clamp(0.0, MAX_TIMEOUT_SECS) * 1e3).ceil() as i32
}

/// What the clock decides for one poll (step 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PollPlan {
    /// The poll's timeout (ms; -1 blocks).
    pub timeout_ms: i32,
    /// A virtual clock's poll found nothing due: if the poll finds nothing either, the loop is
    /// idle and the clock's idle policy decides what happens (`VirtualClock::idle_step`).
    pub idle_check: bool,
}

impl Clock {
    /// Step 1's timeout when nothing is ready and the loop is not stopping, from the first
    /// deadline `next` and the real clock's reading `real_ns`. A real clock blocks until the
    /// deadline; a virtual one never blocks here (time does not pass by itself): it polls once
    /// and, with nothing due, flags the iteration for its idle policy.
    #[inline]
    pub fn plan_poll(&self, next: Option<f64>, real_ns: i64, resolution: f64) -> PollPlan {
        match self {
            Clock::Real => PollPlan {
                timeout_ms: match next {
                    Some(when) => timeout_ms(when - self.at(real_ns)),
                    None => -1,
                },
                idle_check: false,
            },
            Clock::Virtual(v) => {
                let due = v.now() + resolution;
                PollPlan {
                    timeout_ms: 0,
                    idle_check: !matches!(next, Some(t) if t < due),
                }
            }
        }
    }

    /// Whether the clock lets the iteration skip a zero-timeout poll that can find nothing
    /// (see [`may_skip_poll`]); a virtual clock always polls, as its idle policy reads the
    /// poll's result.
    #[inline]
    pub fn may_skip_poll(&self) -> bool {
        matches!(self, Clock::Real)
    }
}

/// Step 1: a zero-timeout poll can only find what is registered. With no fd watched and no
/// signal handler, the waker is the one source left, and the binding writes it only while the
/// loop blocks; so that syscall can be skipped (libuv does the same: uv__io_poll returns at
/// once when loop->nfds is 0).
#[inline]
pub fn may_skip_poll(
    clock: &Clock,
    timeout_ms: i32,
    fds_watched: bool,
    signals_armed: bool,
) -> bool {
    timeout_ms == 0 && clock.may_skip_poll() && !fds_watched && !signals_armed
}

/// Step 1: drops the cancelled timers: all of them when CPython would compact the heap (more
/// than half of more than 100 are cancelled), else those at its top. They go to `trash`, for
/// the binding to release once nothing is borrowed.
#[inline(always)]
pub fn drop_cancelled_timers<E>(
    timers: &mut TimerHeap<E>,
    mut is_cancelled: impl FnMut(&E) -> bool,
    trash: &mut Vec<E>,
) {
    if timers.wants_compaction() {
        let gone = timers.take_cancelled(|t| is_cancelled(&t.entry));
        trash.extend(gone.into_iter().map(|t| t.entry));
    } else {
        while let Some(t) = timers.peek() {
            if !is_cancelled(&t.entry) {
                break;
            }
            if let Some(t) = timers.pop() {
                timers.cancelled = timers.cancelled.saturating_sub(1);
                trash.push(t.entry);
            }
        }
    }
}

/// Step 3: what one poll event means.
pub enum Dispatch<'a, H> {
    /// The cross-thread waker: drain it.
    Waker,
    /// The signal wake-up socket: read the signal numbers.
    Signal,
    /// A live entry: its reader (on anything but EPOLLOUT alone) and/or its writer (on anything
    /// but EPOLLIN alone) are ready, as selectors.EpollSelector maps events, so errors and
    /// hang-ups wake both sides.
    Io {
        fd: i32,
        reader: Option<&'a H>,
        writer: Option<&'a H>,
    },
    /// A parked registration (nobody wants the fd): delete it so it cannot fire again.
    Parked(i32),
    /// A registration the table does not hold under this token (see the io module): the
    /// poller must be rebuilt.
    Orphan,
}

/// Step 3: decodes one event (`token`, `flags`) against the fd table.
#[inline(always)]
pub fn dispatch<H>(fds: &FdTable<H>, token: u64, flags: u32) -> Dispatch<'_, H> {
    if token == WAKER_TOKEN {
        return Dispatch::Waker;
    }
    if token == SIGNAL_TOKEN {
        return Dispatch::Signal;
    }
    let (fd, gen) = split_token(token);
    let entry = match fds.get(fd) {
        Some(e) if e.gen == gen && e.kmask != 0 => e,
        _ => return Dispatch::Orphan,
    };
    if !entry.is_active() {
        return Dispatch::Parked(fd);
    }
    Dispatch::Io {
        fd,
        reader: entry.reader.as_ref().filter(|_| flags & !WRITABLE != 0),
        writer: entry.writer.as_ref().filter(|_| flags & !READABLE != 0),
    }
}

/// Step 4: moves every timer due before `end_time` (the clock's time plus its resolution, as
/// `_run_once` computes `end_time`) to the end of the ready queue, earliest first; `on_fire`
/// sees each (CPython clears the handle's `_scheduled` as it pops it). Returns how many.
#[inline(always)]
pub fn take_due_timers<E>(
    timers: &mut TimerHeap<E>,
    ready: &mut ReadyQueue<E>,
    end_time: f64,
    mut on_fire: impl FnMut(&E),
) -> u64 {
    let mut fired = 0;
    while let Some(t) = timers.peek() {
        if t.when() >= end_time {
            break;
        }
        if let Some(t) = timers.pop() {
            on_fire(&t.entry);
            ready.push_back(t.entry);
            fired += 1;
        }
    }
    fired
}

/// Step 5: runs `ntodo` callbacks (the length of the ready queue when the step began): `pop`
/// takes the next one off the queue (the binding borrows its state for just that), `run` runs
/// it. Stops early if the queue runs dry (a callback closed the loop) or on the first error.
#[inline(always)]
pub fn run_ready<E, Err>(
    ntodo: usize,
    mut pop: impl FnMut() -> Result<Option<E>, Err>,
    mut run: impl FnMut(E) -> Result<(), Err>,
) -> Result<(), Err> {
    for _ in 0..ntodo {
        let Some(entry) = pop()? else {
            break;
        };
        run(entry)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::token;
    use crate::time::VirtualClock;

    #[test]
    fn timeouts_round_up_and_clamp() {
        assert_eq!(timeout_ms(-1.0), 0);
        assert_eq!(timeout_ms(0.0), 0);
        assert_eq!(timeout_ms(0.0001), 1);
        assert_eq!(timeout_ms(1.0), 1000);
        assert_eq!(timeout_ms(1e12), 86_400_000);
        assert_eq!(timeout_ms(f64::INFINITY), 86_400_000);
    }

    #[test]
    fn clocks_plan_the_poll() {
        let real = Clock::Real;
        assert_eq!(real.plan_poll(None, 0, 1e-9).timeout_ms, -1);
        let p = real.plan_poll(Some(2.5), 2_000_000_000, 1e-9);
        assert_eq!(
            p,
            PollPlan {
                timeout_ms: 500,
                idle_check: false
            }
        );
        let v = Clock::Virtual(Box::new(VirtualClock::new(5.0, 0.0, None, None)));
        assert_eq!(
            v.plan_poll(Some(9.0), 0, 1e-9),
            PollPlan {
                timeout_ms: 0,
                idle_check: true
            }
        );
        assert_eq!(
            v.plan_poll(Some(5.0), 0, 1e-9),
            PollPlan {
                timeout_ms: 0,
                idle_check: false
            }
        );
        assert_eq!(
            v.plan_poll(None, 0, 1e-9),
            PollPlan {
                timeout_ms: 0,
                idle_check: true
            }
        );
        assert!(may_skip_poll(&real, 0, false, false));
        assert!(!may_skip_poll(&real, 1, false, false));
        assert!(!may_skip_poll(&real, 0, true, false));
        assert!(!may_skip_poll(&real, 0, false, true));
        assert!(!may_skip_poll(&v, 0, false, false));
    }

    #[test]
    fn dispatch_follows_epoll_selector() {
        let mut fds: FdTable<&str> = FdTable::default();
        let gen = fds.next_gen();
        let e = fds.entry(4);
        e.kmask = READABLE | WRITABLE;
        e.gen = gen;
        fds.set_handler(4, READABLE, "r");
        fds.set_handler(4, WRITABLE, "w");
        let t = token(4, gen);
        fn io(d: Dispatch<'_, &'static str>) -> (i32, Option<&'static str>, Option<&'static str>) {
            match d {
                Dispatch::Io { fd, reader, writer } => (fd, reader.copied(), writer.copied()),
                _ => panic!("not io"),
            }
        }
        assert_eq!(io(dispatch(&fds, t, READABLE)), (4, Some("r"), None));
        assert_eq!(io(dispatch(&fds, t, WRITABLE)), (4, None, Some("w")));
        let hup = libc::EPOLLHUP as u32;
        assert_eq!(io(dispatch(&fds, t, hup)), (4, Some("r"), Some("w")));
        assert!(matches!(
            dispatch(&fds, WAKER_TOKEN, READABLE),
            Dispatch::Waker
        ));
        assert!(matches!(
            dispatch(&fds, SIGNAL_TOKEN, READABLE),
            Dispatch::Signal
        ));
        assert!(matches!(
            dispatch(&fds, token(4, gen + 1), READABLE),
            Dispatch::Orphan
        ));
        assert!(matches!(
            dispatch(&fds, token(5, gen), READABLE),
            Dispatch::Orphan
        ));
        fds.take_handler(4, READABLE);
        fds.take_handler(4, WRITABLE);
        assert!(matches!(dispatch(&fds, t, READABLE), Dispatch::Parked(4)));
    }

    #[test]
    fn drop_cancelled_at_top_or_all() {
        let mut timers = TimerHeap::default();
        for i in 0..10u32 {
            timers.push(f64::from(i), i);
        }
        timers.cancelled = 3;
        let mut trash = Vec::new();
        // Cancelled: 0, 1 (top) and 5 (inside: stays until it reaches the top).
        drop_cancelled_timers(&mut timers, |e| [0, 1, 5].contains(e), &mut trash);
        assert_eq!(trash, vec![0, 1]);
        assert_eq!(timers.cancelled, 1);
        assert_eq!(timers.len(), 8);
    }

    #[test]
    fn due_timers_join_in_order_and_run_ready_stops_at_ntodo() {
        let mut timers = TimerHeap::default();
        let mut ready = ReadyQueue::default();
        ready.push_back(100);
        for (i, w) in [2.0, 1.0, 1.0, 3.0].into_iter().enumerate() {
            timers.push(w, i as u32);
        }
        let mut seen = Vec::new();
        let fired = take_due_timers(&mut timers, &mut ready, 2.0, |e| seen.push(*e));
        assert_eq!((fired, seen), (2, vec![1, 2]));
        assert_eq!(ready.iter().copied().collect::<Vec<_>>(), vec![100, 1, 2]);
        let ready = std::cell::RefCell::new(ready);
        let mut ran = Vec::new();
        let ntodo = ready.borrow().len();
        let r: Result<(), ()> = run_ready(
            ntodo,
            || Ok(ready.borrow_mut().pop_front()),
            |e| {
                ran.push(e);
                ready.borrow_mut().push_back(e + 1000); // waits for the next iteration
                Ok(())
            },
        );
        assert!(r.is_ok());
        assert_eq!(ran, vec![100, 1, 2]);
        assert_eq!(ready.borrow().len(), 3);
    }
}
