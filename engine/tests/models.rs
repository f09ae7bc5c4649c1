//! Property tests of the engine's data structures against simple models.
//!
//! Each test runs many random operation sequences from fixed seeds (so a failure replays: the
//! seed and the step are in the message), comparing the structure with an obviously correct
//! model: the timer heap with a list sorted by (deadline, scheduling order); the fd table with a
//! map; the ready queue plus the timer heap, driven as CPython's `_run_once` drives its deque and
//! heapq, with a loop written from base_events.py's algorithm. Set `OXLOOP_MODEL_CASES` to run
//! more cases than the default.
use std::collections::BTreeMap;

use oxloop_engine::io::{self, FdTable};
use oxloop_engine::iteration;
use oxloop_engine::ready::ReadyQueue;
use oxloop_engine::sys::epoll::{READABLE, WRITABLE};
use oxloop_engine::time::TimerHeap;

/// splitmix64: a tiny deterministic generator (no dependency, replayable from its seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn cases() -> u64 {
    std::env::var("OXLOOP_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// A deadline from a small set, so that equal deadlines are common; NaN and the infinities too.
fn deadline(rng: &mut Rng) -> f64 {
    match rng.below(20) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        _ => (rng.below(8) as f64) * 0.5,
    }
}

/// The model's sort key: NaN is due at once (CPython: a NaN deadline is never `>= end_time`).
fn key(when: f64) -> f64 {
    if when.is_nan() {
        f64::NEG_INFINITY
    } else {
        when
    }
}

/// The timer heap against a list kept sorted by (deadline, scheduling order), under push, pop,
/// cancel (lazy, counted, as the binding does) and CPython's compaction.
#[test]
fn timer_heap_matches_a_sorted_list() {
    for seed in 0..cases() {
        let mut rng = Rng(seed);
        let mut heap: TimerHeap<u64> = TimerHeap::default();
        // (key, id); ids grow with scheduling order, so a stable sort by key is the spec.
        let mut model: Vec<(f64, u64)> = Vec::new();
        let mut cancelled = std::collections::HashSet::new();
        let mut next_id = 0u64;
        let steps = 50 + rng.below(400);
        for step in 0..steps {
            let ctx = format!("seed {seed} step {step}");
            match rng.below(10) {
                0..=4 => {
                    let when = deadline(&mut rng);
                    heap.push(when, next_id);
                    let pos = model.partition_point(|(k, _)| k.total_cmp(&key(when)).is_le());
                    model.insert(pos, (key(when), next_id));
                    next_id += 1;
                }
                5..=6 => {
                    // Cancel a random live timer: it stays in the heap, counted.
                    let live: Vec<u64> = model
                        .iter()
                        .map(|(_, id)| *id)
                        .filter(|id| !cancelled.contains(id))
                        .collect();
                    if !live.is_empty() {
                        let id = live[rng.below(live.len() as u64) as usize];
                        cancelled.insert(id);
                        heap.cancelled += 1;
                    }
                }
                7 => {
                    // `_run_once` step 1: compact, or drop cancelled timers at the top.
                    if heap.wants_compaction() {
                        let gone = heap.take_cancelled(|t| cancelled.contains(&t.entry));
                        assert_eq!(heap.cancelled, 0, "{ctx}");
                        let mut gone_ids: Vec<u64> = gone.iter().map(|t| t.entry).collect();
                        gone_ids.sort_unstable();
                        let mut want: Vec<u64> = model
                            .iter()
                            .map(|(_, id)| *id)
                            .filter(|id| cancelled.contains(id))
                            .collect();
                        want.sort_unstable();
                        assert_eq!(gone_ids, want, "{ctx}");
                        model.retain(|(_, id)| !cancelled.contains(id));
                        cancelled.clear();
                    } else {
                        while let Some(t) = heap.peek() {
                            if !cancelled.contains(&t.entry) {
                                break;
                            }
                            let t = heap.pop().expect("peeked");
                            heap.cancelled -= 1;
                            cancelled.remove(&t.entry);
                            assert_eq!(model.remove(0).1, t.entry, "{ctx}");
                        }
                    }
                }
                _ => {
                    let got = heap.pop().map(|t| (t.when(), t.entry));
                    let want = (!model.is_empty()).then(|| model.remove(0));
                    match (got, want) {
                        (None, None) => {}
                        (Some((gw, gi)), Some((mw, mi))) => {
                            assert_eq!(gi, mi, "{ctx}");
                            assert_eq!(gw.to_bits(), mw.to_bits(), "{ctx}");
                            if cancelled.remove(&gi) {
                                heap.cancelled -= 1;
                            }
                        }
                        other => panic!("{ctx}: {other:?}"),
                    }
                }
            }
            assert_eq!(heap.len(), model.len(), "{ctx}");
            let top = heap.peek().map(|t| t.entry);
            assert_eq!(top, model.first().map(|(_, id)| *id), "{ctx}");
            assert_eq!(heap.cancelled, cancelled.len(), "{ctx}");
            // Compaction happens exactly when CPython's rule says.
            let n = heap.len();
            let want = n > 100 && (heap.cancelled as f64) / (n as f64) > 0.5;
            assert_eq!(heap.wants_compaction(), want, "{ctx}");
        }
    }
}

/// The fd table against a map, under the operations `loop_core` performs: add an interest
/// (arming the registration with a fresh generation), remove one (the last parks the entry),
/// close (the entry goes), reuse of a closed number, the readiness check the poll makes (an
/// event matches the entry only under its current generation), a parked fd reporting
/// readiness (the entry is doomed) and the reconciliation before the next poll (the doomed
/// entries that were not armed again since go, each once).
#[test]
fn fd_table_matches_a_map() {
    #[derive(Clone, Debug, PartialEq)]
    struct M {
        reader: Option<u32>,
        writer: Option<u32>,
        kmask: u32,
        gen: u32,
        doomed: bool,
    }
    for seed in 0..cases() {
        let mut rng = Rng(seed ^ 0xF00D);
        let mut table: FdTable<u32> = FdTable::default();
        let mut model: BTreeMap<i32, M> = BTreeMap::new();
        // Every token the "kernel" has been handed, to check that stale ones never match.
        let mut issued: Vec<u64> = Vec::new();
        let mut handle = 0u32;
        let steps = 50 + rng.below(300);
        for step in 0..steps {
            let ctx = format!("seed {seed} step {step}");
            let fd = rng.below(12) as i32;
            let mask = if rng.below(2) == 0 {
                READABLE
            } else {
                WRITABLE
            };
            match rng.below(8) {
                0..=2 => {
                    // add_reader / add_writer; a parked registration is kept as it stands (no
                    // syscall) when the same live socket re-adds it (`same_owner`), as
                    // `add_io_fd` does.
                    handle += 1;
                    let same_owner = rng.below(2) == 0;
                    let gen = table.next_gen();
                    let e = table.entry(fd);
                    let new_mask = e.mask() | mask;
                    let armed = !(e.kmask == new_mask && (e.is_active() || same_owner));
                    if armed {
                        e.set_registration(new_mask, gen);
                        issued.push(io::token(fd, gen));
                    }
                    let old = table.set_handler(fd, mask, handle);
                    let m = model.entry(fd).or_insert(M {
                        reader: None,
                        writer: None,
                        kmask: 0,
                        gen: 0,
                        doomed: false,
                    });
                    let slot = if mask == READABLE {
                        &mut m.reader
                    } else {
                        &mut m.writer
                    };
                    assert_eq!(old, slot.replace(handle), "{ctx}");
                    // Armed or active again, the registration is wanted: no longer doomed.
                    m.doomed = false;
                    if armed {
                        m.kmask = new_mask;
                        m.gen = gen;
                    }
                }
                3..=4 => {
                    // remove_reader / remove_writer: the last interest parks the entry.
                    let got = table.take_handler(fd, mask).map(|(h, _)| h);
                    let want = model.get_mut(&fd).and_then(|m| {
                        if mask == READABLE {
                            m.reader.take()
                        } else {
                            m.writer.take()
                        }
                    });
                    assert_eq!(got, want, "{ctx}");
                    if let Some(e) = table.get_mut(fd) {
                        let (new_mask, kmask) = (e.mask(), e.kmask);
                        if new_mask != 0 && new_mask != kmask {
                            let gen = table.next_gen();
                            let e = table.get_mut(fd).expect("entry");
                            e.set_registration(new_mask, gen);
                            issued.push(io::token(fd, gen));
                            let m = model.get_mut(&fd).expect("model entry");
                            m.kmask = new_mask;
                            m.gen = gen;
                        }
                    }
                }
                5 => {
                    // The poll reports readiness for `fd`: a parked registration is doomed.
                    table.doom(fd);
                    if let Some(m) = model.get_mut(&fd) {
                        if m.reader.is_none() && m.writer.is_none() && m.kmask != 0 {
                            m.doomed = true;
                        }
                    }
                }
                6 => {
                    // Just before the poll: the doomed entries go (loop_core deletes their
                    // registrations), each listed once, in any order.
                    let mut got = table.take_doomed();
                    got.sort_unstable();
                    let n = got.len();
                    got.dedup();
                    assert_eq!(n, got.len(), "{ctx}: an fd listed twice");
                    let want: Vec<i32> = model
                        .iter()
                        .filter(|(_, m)| m.doomed)
                        .map(|(fd, _)| *fd)
                        .collect();
                    assert_eq!(got, want, "{ctx}");
                    for fd in got {
                        table.remove(fd);
                        model.remove(&fd);
                    }
                    assert!(!table.has_doomed(), "{ctx}");
                }
                _ => {
                    // The fd is closed (or a parked entry is reaped): the entry goes; the
                    // number may be reused by the next add.
                    let got = table.remove(fd).map(|e| (e.reader, e.writer));
                    let want = model.remove(&fd).map(|m| (m.reader, m.writer));
                    assert_eq!(got, want, "{ctx}");
                }
            }
            // Agreement with the model.
            let active: Vec<i32> = model
                .iter()
                .filter(|(_, m)| m.reader.is_some() || m.writer.is_some())
                .map(|(fd, _)| *fd)
                .collect();
            assert_eq!(table.fds(), active, "{ctx}");
            assert_eq!(table.len(), active.len(), "{ctx}");
            for fd in 0..12 {
                let e = table.get(fd);
                let m = model.get(&fd);
                assert_eq!(e.is_some(), m.is_some(), "{ctx} fd {fd}");
                if let (Some(e), Some(m)) = (e, m) {
                    assert_eq!((e.reader, e.writer), (m.reader, m.writer), "{ctx} fd {fd}");
                    assert_eq!((e.kmask, e.gen), (m.kmask, m.gen), "{ctx} fd {fd}");
                    assert_eq!(e.doomed, m.doomed, "{ctx} fd {fd}");
                    if e.doomed {
                        assert!(!e.is_active() && e.kmask != 0, "{ctx}: doomed means parked");
                    }
                    if e.is_active() {
                        assert_eq!(
                            e.kmask,
                            e.mask(),
                            "{ctx}: an active entry is armed as wanted"
                        );
                    }
                }
            }
            // Of all tokens ever issued, only each live entry's current one matches it.
            for &t in &issued {
                let (fd, gen) = io::split_token(t);
                let matches = table.get(fd).is_some_and(|e| e.gen == gen && e.kmask != 0);
                let current = model.get(&fd).is_some_and(|m| m.gen == gen && m.kmask != 0);
                assert_eq!(matches, current, "{ctx} token {t:#x}");
            }
            // Generations are never reused.
            let mut gens: Vec<u32> = issued.iter().map(|t| io::split_token(*t).1).collect();
            gens.sort_unstable();
            gens.dedup();
            assert_eq!(gens.len(), issued.len(), "{ctx}");
        }
    }
}

/// What a callback does when it runs, in the iteration-order test.
#[derive(Clone, Debug)]
enum Action {
    Soon(u32),
    Later(f64, u32),
}

/// A random program: callback `i` runs `program[i]`'s actions.
fn program(rng: &mut Rng, n: u32) -> Vec<Vec<Action>> {
    (0..n)
        .map(|i| {
            let k = rng.below(3);
            (0..k)
                .filter_map(|_| {
                    let child = i + 1 + rng.below(u64::from(n)) as u32;
                    (child < n).then(|| {
                        if rng.below(2) == 0 {
                            Action::Soon(child)
                        } else {
                            Action::Later((rng.below(4) as f64) * 0.25, child)
                        }
                    })
                })
                .collect()
        })
        .collect()
}

/// CPython's algorithm (base_events.py `_run_once`), written plainly over a Vec and a list of
/// timers sorted stably by deadline: the model. Returns the callbacks in the order they ran,
/// with the iteration each ran in.
fn cpython_order(program: &[Vec<Action>], roots: &[(Option<f64>, u32)]) -> Vec<(u32, u32)> {
    let mut now = 0.0f64;
    let mut ready: Vec<u32> = Vec::new();
    let mut scheduled: Vec<(f64, u32)> = Vec::new();
    let add_timer = |s: &mut Vec<(f64, u32)>, when: f64, id: u32| {
        let pos = s.partition_point(|(w, _)| *w <= when);
        s.insert(pos, (when, id));
    };
    for (when, id) in roots {
        match when {
            None => ready.push(*id),
            Some(w) => add_timer(&mut scheduled, *w, *id),
        }
    }
    let mut out = Vec::new();
    let mut iteration = 0;
    while !ready.is_empty() || !scheduled.is_empty() {
        // The poll: with nothing ready, time advances to the first deadline (virtual time).
        if ready.is_empty() {
            now = now.max(scheduled[0].0);
        }
        let end_time = now + 1e-9;
        while !scheduled.is_empty() && scheduled[0].0 < end_time {
            ready.push(scheduled.remove(0).1);
        }
        let ntodo = ready.len();
        let batch: Vec<u32> = ready.drain(..ntodo).collect();
        for id in batch {
            out.push((id, iteration));
            for a in &program[id as usize] {
                match a {
                    Action::Soon(c) => ready.push(*c),
                    Action::Later(d, c) => add_timer(&mut scheduled, now + d, *c),
                }
            }
        }
        iteration += 1;
    }
    out
}

/// The same iteration through the engine's own steps (`iteration::take_due_timers`,
/// `iteration::run_ready`) over its ReadyQueue and TimerHeap, as `loop_core` drives them.
fn engine_order(program: &[Vec<Action>], roots: &[(Option<f64>, u32)]) -> Vec<(u32, u32)> {
    let mut now = 0.0f64;
    let mut ready: ReadyQueue<u32> = ReadyQueue::default();
    let mut timers: TimerHeap<u32> = TimerHeap::default();
    for (when, id) in roots {
        match when {
            None => ready.push_back(*id),
            Some(w) => timers.push(*w, *id),
        }
    }
    let mut out = Vec::new();
    let mut iteration = 0;
    while !ready.is_empty() || !timers.is_empty() {
        if ready.is_empty() {
            if let Some(t) = timers.peek() {
                now = now.max(t.when());
            }
        }
        let end_time = now + 1e-9;
        iteration::take_due_timers(&mut timers, &mut ready, end_time, |_| {});
        let ntodo = ready.len();
        // The binding borrows its state only to pop; callbacks schedule through the loop.
        let cell = std::cell::RefCell::new((&mut ready, &mut timers));
        let r: Result<(), ()> = iteration::run_ready(
            ntodo,
            || Ok(cell.borrow_mut().0.pop_front()),
            |id| {
                out.push((id, iteration));
                let mut st = cell.borrow_mut();
                for a in &program[id as usize] {
                    match a {
                        Action::Soon(c) => st.0.push_back(*c),
                        Action::Later(d, c) => st.1.push(now + d, *c),
                    }
                }
                Ok(())
            },
        );
        assert!(r.is_ok());
        iteration += 1;
    }
    out
}

/// The iteration order against CPython's algorithm: callbacks scheduled while running wait for
/// the next iteration, due timers join the ready queue in deadline order after what was queued,
/// equal deadlines in scheduling order.
#[test]
fn iteration_order_matches_cpython() {
    for seed in 0..cases() {
        let mut rng = Rng(seed ^ 0xBEEF);
        let n = 5 + rng.below(60) as u32;
        let prog = program(&mut rng, n);
        let roots: Vec<(Option<f64>, u32)> = (0..1 + rng.below(6) as u32)
            .map(|i| {
                let when = (rng.below(3) != 0).then(|| (rng.below(4) as f64) * 0.25);
                (when, i.min(n - 1))
            })
            .collect();
        let want = cpython_order(&prog, &roots);
        let got = engine_order(&prog, &roots);
        assert_eq!(got, want, "seed {seed}");
        for w in want.windows(2) {
            assert!(w[0].1 <= w[1].1, "seed {seed}: iterations run in order");
        }
    }
}

/// The worked example: a callback scheduled by a running callback runs in the next iteration,
/// after the timers that came due before it was queued.
#[test]
fn scheduled_while_running_waits_for_the_next_iteration() {
    // 0 schedules 1 soon and 2 at +0; 3 is a timer at 0 scheduled before.
    let prog = vec![
        vec![Action::Soon(1), Action::Later(0.0, 2)],
        vec![],
        vec![],
        vec![],
    ];
    let roots = [(None, 0), (Some(0.0), 3)];
    let got = engine_order(&prog, &roots);
    assert_eq!(got, cpython_order(&prog, &roots));
    // Iteration 0: timer 3 is due and joins after 0; iteration 1: 1 (queued while running),
    // then timer 2.
    assert_eq!(got, vec![(0, 0), (3, 0), (1, 1), (2, 1)]);
}
