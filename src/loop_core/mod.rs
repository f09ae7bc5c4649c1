//! The loop core: `LoopCore`, the Rust base class of `oxloop.Loop`.
//!
//! It owns the engine's ready queue, timer heap, poller and fd table (engine/, the
//! `oxloop-engine` crate) holding Python handles, and runs iterations in CPython's order
//! (`BaseEventLoop._run_once`) through the engine's named steps (`oxloop_engine::iteration`):
//! drop cancelled timers, compute the poll timeout (the clock's policy), poll (GIL released when
//! the timeout is not zero), dispatch I/O events, queue due timers, then run exactly the
//! callbacks that were ready when the run began. `run_once_with` sequences those steps and adds
//! only what needs Python between them. Cold paths (task factories, exception handlers, executors, async
//! generator hooks, debug mode) live in Python in `oxloop/_loop.py`, mostly inherited from
//! `asyncio.BaseEventLoop` so they behave as the running version's asyncio does.
//!
//! Invariants:
//! - loop state is only touched with the GIL held, through `GilCell`; no borrow is alive while
//!   Python code runs or a Python object is dropped (objects to drop go to a local `trash`);
//! - `polling` is true exactly while the loop thread waits in the poller; `call_soon_threadsafe`
//!   writes the waker only then, and `close` refuses to close the poller under a waiting thread;
//! - every callback runs inside its `contextvars.Context`.
mod cell;
mod factories;
pub mod fastcall;
pub(crate) mod native;
mod signals;
mod watchdog;

pub use oxloop_engine::counters;
use oxloop_engine::pacing;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use pyo3::exceptions::{
    PyAssertionError, PyKeyboardInterrupt, PyRuntimeError, PySystemExit, PyTypeError, PyValueError,
};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyInt, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

pub(crate) use self::cell::GilCell;
use self::counters::{Activity, Counters, PollSample};
use crate::errors::{closed_error, os_error};
use crate::handles::{self, BareArgs, Layout, Queued, RunKind};
use crate::io::{self, FdTable, SIGNAL_TOKEN, WAKER_TOKEN};
use crate::sys::clock;
use crate::sys::epoll::{self, Epoll, READABLE, WRITABLE};
use crate::sys::waker::Waker;
use crate::time::{Clock, IdleStep, TimerHeap, VirtualClock};
use oxloop_engine::iteration::{self, Dispatch};
use oxloop_engine::ready::ReadyQueue;
use oxloop_engine::signal::SignalWakeup;

/// Whether `_add_reader` / `_add_writer` take a `context` keyword, as the running asyncio's
/// do from 3.15 on. Set at import by `_loop.py` from the signature of
/// `selector_events.BaseSelectorEventLoop._add_reader` (`_set_io_context_keyword`); off, the
/// keyword is the TypeError it is for asyncio's own methods before 3.15.
static IO_CONTEXT_KEYWORD: AtomicBool = AtomicBool::new(false);

/// The C function of `_asyncio`'s Task wakeup (`task_wakeup`), learnt from the first one a
/// `call_soon` sees (`LoopCore::is_task_wakeup`); 0 until then. One per process: the function
/// is static in Modules/_asynciomodule.c.
static TASK_WAKEUP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `_asyncio.Task`, the C Task type whose wakeups `is_task_wakeup` recognises; `None` when
/// the interpreter has no `_asyncio` (then every Task is Python's, with no C wakeup).
fn c_task_type(py: Python<'_>) -> Option<&'static Py<PyAny>> {
    static TYPE: pyo3::sync::PyOnceLock<Option<Py<PyAny>>> = pyo3::sync::PyOnceLock::new();
    TYPE.get_or_init(py, || {
        PyModule::import(py, "_asyncio")
            .and_then(|m| m.getattr("Task"))
            .ok()
            .map(Bound::unbind)
    })
    .as_ref()
}

/// `_set_io_context_keyword(on)`: see [`IO_CONTEXT_KEYWORD`].
#[pyfunction]
pub fn _set_io_context_keyword(on: bool) {
    IO_CONTEXT_KEYWORD.store(on, Relaxed);
}

/// The `context` keyword of `_add_reader` / `_add_writer` (`name`), when the running
/// asyncio's methods have one; any other keyword is Python's TypeError for the signature.
/// Without keywords (every call before 3.15, and the sock_* waits) nothing is allocated.
fn io_context<'py>(
    kwargs: Option<&Bound<'py, PyDict>>,
    name: &str,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let Some(kwargs) = kwargs else {
        return Ok(None);
    };
    let mut context = None;
    for (key, value) in kwargs.iter() {
        if IO_CONTEXT_KEYWORD.load(Relaxed) && key.eq(pyo3::intern!(kwargs.py(), "context"))? {
            context = Some(value);
            continue;
        }
        return Err(PyTypeError::new_err(format!(
            "LoopCore.{name}() got an unexpected keyword argument '{key}'"
        )));
    }
    // An explicit None is the default: the handle copies the current context.
    Ok(context.filter(|c| !c.is_none()))
}

const EVENTS_CAPACITY: usize = 1024;

struct State {
    ready: ReadyQueue<Queued>,
    timers: TimerHeap<Queued>,
    fds: FdTable<Py<PyAny>>,
    poller: Option<Epoll>,
    waker: Option<Waker>,
    /// The socket pair handed to `signal.set_wakeup_fd` (write end) and polled (read end).
    sig: Option<SignalWakeup>,
    events: Vec<epoll::Event>,
    polling: bool,
    wake_pending: bool,
    /// Set for good once `add_signal_handler` asked for the wakeup fd: from then on the signal
    /// socket can have something to read at any time (see `run_once_impl`, step 2).
    signals_armed: bool,
    /// `slow_callback_duration` as the user set it (asyncio keeps any object there).
    slow_duration: Py<PyAny>,
    /// The slow-callback watchdog thread, while reports are enabled.
    watchdog: Option<watchdog::Watchdog>,
    /// The last callback the watchdog flagged as slow, kept as it ended.
    slow_handle: Option<(u64, Py<PyAny>)>,
    /// Handles and timer handles that ran and nobody else holds, ready for reuse: building a
    /// handle from here skips the allocation and the deallocation (see `Layout::recycle`).
    free_handles: Vec<Py<PyAny>>,
    free_timers: Vec<Py<PyAny>>,
    /// `{"loop": self}`, the keyword arguments `create_future` and `create_task` pass to the C
    /// Future and Task (factories.rs), made at the first call and kept (a cycle through this
    /// loop: traversed and cleared).
    loop_kwargs: Option<Py<PyDict>>,
}

/// How many spare handles of each kind a loop keeps. A thread feeding `call_soon_threadsafe`
/// queues one GIL switch interval's worth of calls at a time (5 ms: 10-20 thousand here), and
/// with a 1,024 cap most of those handles were freed and allocated again (benches/micro.py
/// call_soon_threadsafe: 72.8 ms with 1,024 against 55.2 ms with a larger cap). At ~100 bytes a
/// handle this bounds the spares near 3 MiB per kind while a loop is busy...
const FREE_LIST_MAX: usize = 32_768;
/// ...and a loop that slept in the poller for `FREE_LIST_IDLE_NS` keeps only this many.
const FREE_LIST_IDLE_KEEP: usize = 1024;
const FREE_LIST_IDLE_NS: i64 = 1_000_000_000;

#[pyclass(subclass, frozen, module = "oxloop._oxloop", name = "LoopCore")]
pub struct LoopCore {
    state: GilCell<State>,
    closed: AtomicBool,
    stopping: AtomicBool,
    debug: AtomicBool,
    running: AtomicBool,
    /// Set while this loop's `create_task` runs the C Task's constructor (`is_task_step`).
    pub(crate) task_init: AtomicBool,
    shared: Arc<Shared>,
    clock: Clock,
    resolution: f64,
    /// Whether `loop.time` is something else than this core's clock (see `time_patched`).
    patch: TimePatch,
    /// The same for `call_soon` (see `schedule_soon`'s handle-less Task steps).
    soon_patch: TimePatch,
    /// The same for [`IO_METHODS`] together (see `io_patched`).
    io_patch: TimePatch,
    /// `_asyncio`'s TaskStepMethWrapper type, learnt from the first Task this loop's
    /// `create_task` built (see `schedule_soon`).
    step_type: pyo3::sync::PyOnceLock<Py<PyAny>>,
}

/// What `time_patched` remembers between iterations. Test suites replace `loop.time`
/// (`mock.patch.object(loop, "time", ...)`, a subclass with its own `time()`), and asyncio's
/// timers follow it: `_run_once` and `call_later` call `self.time()`. Asking Python for
/// `self.time` every iteration would cost an attribute lookup per iteration; instead:
/// - an instance attribute is set through `setattr` (mock's way, and `loop.time = ...`), which
///   this class's `__setattr__` sees: `instance` is set while one named `time` may exist (a
///   write to `loop.__dict__` or through `object.__setattr__` is not seen);
/// - the class's `time` is looked up once per type and version tag (CPython gives a type a new
///   tag, or none, whenever one of its attributes or its bases' changes).
///
/// All of it is read and written with the GIL held; the atomics only make the pyclass `Sync`.
struct TimePatch {
    /// Before 3.11, a tag is only valid with `VALID_VERSION_TAG` set.
    check_valid_flag: bool,
    instance: AtomicBool,
    type_ptr: std::sync::atomic::AtomicUsize,
    type_tag: std::sync::atomic::AtomicU32,
    overridden: AtomicBool,
}

impl TimePatch {
    /// Nothing remembered yet.
    fn new(py: Python<'_>) -> Self {
        Self {
            check_valid_flag: py.version_info() < (3, 11),
            instance: AtomicBool::new(false),
            type_ptr: Default::default(),
            type_tag: Default::default(),
            overridden: AtomicBool::new(false),
        }
    }

    /// The answer remembered for `obj`'s type while its version tag is the one the answer was
    /// found for (`true` while an instance attribute may shadow the method); `None`: look up.
    #[inline]
    fn known(&self, obj: &Bound<'_, PyAny>) -> Option<bool> {
        if self.instance.load(Relaxed) {
            return Some(true);
        }
        // SAFETY: the type of a live instance is live.
        let ptr = unsafe { ffi::Py_TYPE(obj.as_ptr()) };
        let tag = crate::cpython::typetag::tag(ptr, self.check_valid_flag);
        // `type_ptr` stays 0 without the `type_version_tag` contract: every call looks up.
        (tag != 0
            && ptr as usize == self.type_ptr.load(Relaxed)
            && tag == self.type_tag.load(Relaxed))
        .then(|| self.overridden.load(Relaxed))
    }

    /// Remembers `overridden` for `tp` at the version tag the lookup just gave it; returns it.
    fn remember(&self, tp: &Bound<'_, pyo3::types::PyType>, overridden: bool) -> bool {
        let tag = crate::cpython::typetag::tag(tp.as_type_ptr(), false);
        if crate::cpython::outcome(crate::cpython::Entry::TypeVersionTag) == Some(true) {
            self.type_ptr.store(tp.as_type_ptr() as usize, Relaxed);
        }
        self.type_tag.store(tag, Relaxed);
        self.overridden.store(overridden, Relaxed);
        overridden
    }
}

/// What dropping one interest of an fd releases, to be dropped once the state is unborrowed.
struct Released {
    /// The reader or writer handle that was registered.
    handle: Py<PyAny>,
    /// The entry's `fileobj`, when that was its last interest.
    fileobj: Option<Py<PyAny>>,
    /// The failure to set the interest that remains (the fd was closed): the kernel holds
    /// no registration for the entry any more.
    error: Option<std::io::Error>,
}

/// What other threads read without the GIL or the loop state: the counters and
/// the activity word of the slow-callback watchdog (see engine/src/counters.rs).
#[derive(Default)]
pub struct Shared {
    pub activity: Activity,
    pub counters: Counters,
    /// Paces threads flooding `call_soon_threadsafe` (see engine/src/pacing.rs).
    pub pacer: pacing::Pacer,
}

/// `slow_callback_duration` (seconds, any object asyncio would accept) as a threshold in ns:
/// what `dt >= slow_callback_duration` selects; a non-number never matches.
fn slow_threshold_ns(v: &Bound<'_, PyAny>) -> u64 {
    match v.extract::<f64>() {
        Ok(secs) if secs.is_nan() => u64::MAX,
        Ok(secs) if secs <= 0.0 => 0,
        Ok(secs) => (secs * 1e9).min(u64::MAX as f64) as u64,
        Err(_) => u64::MAX,
    }
}

/// The number `selectors._fileobj_to_fd` and selector_events' `_ensure_fd_no_transport` both
/// start from: `obj` itself when it is an int, else `int(obj.fileno())`, whose AttributeError,
/// TypeError or ValueError becomes `ValueError("Invalid file object: ...")`, raised `from None`
/// as both raise it. The one copy of that step: `_loop.py`'s `_ensure_fd_no_transport` calls it
/// as `_oxloop._fileno`.
#[pyfunction]
#[pyo3(name = "_fileno")]
pub fn fileno_of<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if obj.is_instance_of::<PyInt>() {
        return Ok(obj.clone());
    }
    let r = obj
        .call_method0("fileno")
        .and_then(|f| py.get_type::<PyInt>().call1((f,)));
    match r {
        Err(e)
            if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py)
                || e.is_instance_of::<PyTypeError>(py)
                || e.is_instance_of::<PyValueError>(py) =>
        {
            let err = PyValueError::new_err(format!("Invalid file object: {}", obj.repr()?));
            // `raise ... from None` inside the `except`: the caught error is the context, shown
            // by no traceback.
            let value = err.value(py);
            value.setattr(pyo3::intern!(py, "__context__"), e.value(py))?;
            value.setattr(pyo3::intern!(py, "__suppress_context__"), true)?;
            Err(err)
        }
        r => r,
    }
}

/// `selectors._fileobj_to_fd`: an int, or an object whose `fileno()` gives one.
///
/// An int beyond 64 bits is no error there: a negative one is an invalid descriptor, a positive
/// one is a number no fd has. Such a number comes back as `i64::MAX`, which callers treat as
/// beyond a C int (`add_*`: epoll's OverflowError; `remove_*`: not registered, False).
fn fileobj_to_fd(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    let py = obj.py();
    let value = fileno_of(obj)?;
    let negative = match value.extract::<i64>() {
        Ok(fd) if fd >= 0 => return Ok(fd),
        Ok(_) => true,
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(py) => value.lt(0)?,
        Err(e) => return Err(e),
    };
    if !negative {
        return Ok(i64::MAX);
    }
    Err(PyValueError::new_err(format!(
        "Invalid file descriptor: {}",
        value.str()?
    )))
}

fn is_fatal(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

/// The virtual clock described by a `VirtualClock`'s `_config()`:
/// `(start, autojump_threshold, end, seed)`, validated on the Python side.
fn virtual_clock_from(obj: &Bound<'_, PyAny>) -> PyResult<VirtualClock> {
    let config = obj.call_method0("_config").map_err(|e| {
        if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(obj.py()) {
            PyTypeError::new_err(format!(
                "clock must be an oxloop.testing.VirtualClock, not {}",
                obj.get_type()
                    .name()
                    .map_or_else(|_| "?".to_string(), |n| n.to_string())
            ))
        } else {
            e
        }
    })?;
    let (start, threshold, end, seed): (f64, f64, Option<f64>, Option<u64>) = config.extract()?;
    Ok(VirtualClock::new(start, threshold, end, seed))
}

/// The loop methods asyncio's transport code calls that src/transport_life.rs and the native
/// `accept_now` (src/transport_setup.rs) run in Rust while they are the loop class's own
/// (`io_patched`; `_ensure_fd_no_transport` is `Loop`'s, the others `LoopCore`'s).
pub(crate) const IO_METHODS: [&str; 5] = [
    "get_debug",
    "_add_reader",
    "_remove_reader",
    "_remove_writer",
    "_ensure_fd_no_transport",
];

/// `LoopCore.time`, the method every unpatched loop's `time` resolves to.
static CORE_TIME: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
/// `LoopCore.call_soon` (the raw method descriptor set at import, `fastcall.rs`).
static CORE_CALL_SOON: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

impl LoopCore {
    /// Whether `self.time` may be something else than the core's clock: then the loop calls
    /// `self.time()` where asyncio's `_run_once` and `call_later` do (see [`TimePatch`]). A
    /// virtual clock is the loop's own test clock and is never replaced. Unpatched, this costs
    /// a few loads and compares.
    #[inline]
    fn time_patched(slf: &Bound<'_, Self>) -> bool {
        let this = slf.get();
        if !matches!(this.clock, Clock::Real) {
            return false;
        }
        Self::patched(
            slf,
            &this.patch,
            pyo3::intern!(slf.py(), "time"),
            &CORE_TIME,
        )
    }

    /// Whether `self.call_soon` may be something else than the core's method (an instance
    /// attribute, a subclass's method, a patched class), as [`Self::time_patched`] asks it.
    #[inline]
    fn call_soon_patched(slf: &Bound<'_, Self>) -> bool {
        let this = slf.get();
        Self::patched(
            slf,
            &this.soon_patch,
            pyo3::intern!(slf.py(), "call_soon"),
            &CORE_CALL_SOON,
        )
    }

    /// The check behind `time_patched` and `call_soon_patched` (see [`TimePatch`]).
    #[inline]
    fn patched(
        slf: &Bound<'_, Self>,
        p: &TimePatch,
        name: &Bound<'_, pyo3::types::PyString>,
        core: &pyo3::sync::PyOnceLock<Py<PyAny>>,
    ) -> bool {
        if let Some(known) = p.known(slf.as_any()) {
            return known;
        }
        let tp = slf.get_type();
        Self::type_overrides(slf, &tp, p, name, core)
    }

    /// Looks up `type(self).<name>` and remembers the answer for the type's version tag.
    #[cold]
    fn type_overrides(
        slf: &Bound<'_, Self>,
        tp: &Bound<'_, pyo3::types::PyType>,
        p: &TimePatch,
        name: &Bound<'_, pyo3::types::PyString>,
        core: &pyo3::sync::PyOnceLock<Py<PyAny>>,
    ) -> bool {
        let py = slf.py();
        let Ok(core) = core.get_or_try_init(py, || {
            py.get_type::<LoopCore>().getattr(name).map(Bound::unbind)
        }) else {
            return true;
        };
        // A class attribute that is not the core's method (a subclass's, a patched class), or
        // none at all: call `self.<name>()` and let Python say what it is.
        let overridden = match tp.getattr(name) {
            Ok(found) => !found.is(core),
            Err(_) => true,
        };
        p.remember(tp, overridden)
    }

    /// `PyObject_GenericSetAttr` (a deletion when `value` is None); an instance attribute
    /// `time` set marks the clock patched, deleted unmarks it (so `call_soon`); one of
    /// [`IO_METHODS`] set marks them patched for good.
    fn generic_setattr(
        slf: &Bound<'_, Self>,
        name: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let value = value.map_or(std::ptr::null_mut(), Bound::as_ptr);
        // SAFETY: slf and name are live; value is live or NULL (a deletion), as the C API takes.
        if unsafe { ffi::PyObject_GenericSetAttr(slf.as_ptr(), name.as_ptr(), value) } < 0 {
            return Err(PyErr::fetch(py));
        }
        // Interned names (every `setattr` from source code, mock's too) match by identity.
        let time = pyo3::intern!(py, "time");
        if name.is(time) || name.eq(time)? {
            slf.get().patch.instance.store(!value.is_null(), Relaxed);
        }
        let call_soon = pyo3::intern!(py, "call_soon");
        if name.is(call_soon) || name.eq(call_soon)? {
            slf.get()
                .soon_patch
                .instance
                .store(!value.is_null(), Relaxed);
        }
        // One of them set on the instance stays marked until the loop goes (a deletion of one
        // does not say whether another is still there).
        // (`PyObject_GenericSetAttr` took only a str name; its UTF-8 form is cached.)
        if !value.is_null()
            && name
                .cast::<pyo3::types::PyString>()
                .ok()
                .and_then(|n| n.to_str().ok())
                .is_some_and(|n| IO_METHODS.contains(&n))
        {
            slf.get().io_patch.instance.store(true, Relaxed);
        }
        Ok(())
    }

    /// Whether one of [`IO_METHODS`] may be something else on this loop than the core's own
    /// (an instance attribute set through `setattr`, a subclass's or a patched class's
    /// method), asked as [`Self::call_soon_patched`] asks it: the Rust paths that stand for
    /// asyncio's transport code calling them (src/transport_life.rs) call them by name then.
    #[inline]
    pub(crate) fn io_patched(slf: &Bound<'_, Self>) -> bool {
        match slf.get().io_patch.known(slf.as_any()) {
            Some(known) => known,
            None => Self::io_type_overrides(slf),
        }
    }

    /// Looks up `type(self).<name>` of each of [`IO_METHODS`] and remembers whether one is not
    /// `LoopCore`'s, for the type's version tag.
    #[cold]
    fn io_type_overrides(slf: &Bound<'_, Self>) -> bool {
        let py = slf.py();
        let p = &slf.get().io_patch;
        let tp = slf.get_type();
        let core = py.get_type::<LoopCore>();
        let own = |m: &str| match m {
            // Not the core's: the loop class's, as `_install_fast_methods` found it.
            "_ensure_fd_no_transport" => fastcall::LOOP_ENSURE_FD
                .get(py)
                .map(|f| f.bind(py).clone())
                .ok_or_else(|| pyo3::exceptions::PyAttributeError::new_err(m.to_string())),
            _ => core.getattr(m),
        };
        let overridden = IO_METHODS.iter().any(|m| match (tp.getattr(*m), own(m)) {
            (Ok(found), Ok(own)) => !found.is(&own),
            _ => true,
        });
        p.remember(&tp, overridden)
    }

    /// `self.time()` as a float (a patched clock).
    fn patched_now(slf: &Bound<'_, Self>) -> PyResult<f64> {
        slf.call_method0(pyo3::intern!(slf.py(), "time"))?.extract()
    }

    /// With a patched clock, the poll timeout as `_run_once` computes it, before the poll:
    /// `self._scheduled[0]._when - self.time()` when nothing is ready, the loop is not stopping
    /// and a timer is scheduled (cancelled ones at the top dropped first, as CPython does);
    /// None otherwise, without calling `self.time()`.
    #[cold]
    fn patched_timeout(slf: &Bound<'_, Self>, lay: &Layout) -> PyResult<Option<f64>> {
        let py = slf.py();
        let this = slf.get();
        let mut trash = Vec::new();
        let head = {
            let mut st = this.state.borrow(py)?;
            st.drop_cancelled_timers(py, lay, &mut trash);
            if st.ready.is_empty() && !this.stopping.load(Relaxed) {
                st.timers.peek().map(|t| t.when())
            } else {
                None
            }
        };
        for t in &trash {
            lay.set_scheduled(py, t.handle.bind(py), false);
            lay.release(t);
        }
        drop(trash);
        match head {
            Some(when) => Ok(Some(when - Self::patched_now(slf)?)),
            None => Ok(None),
        }
    }

    fn virtual_clock(&self) -> PyResult<&VirtualClock> {
        match &self.clock {
            Clock::Virtual(v) => Ok(v),
            Clock::Real => Err(PyRuntimeError::new_err("this loop has no virtual clock")),
        }
    }

    fn check_open(&self) -> PyResult<()> {
        if self.closed.load(Relaxed) {
            Err(closed_error())
        } else {
            Ok(())
        }
    }

    fn is_debug(&self) -> bool {
        self.debug.load(Relaxed)
    }

    /// Wakes the loop thread if (and only if) it waits in the poller.
    fn wake(st: &mut State) {
        if st.polling && !st.wake_pending {
            if let Some(w) = &st.waker {
                st.wake_pending = true;
                w.wake();
            }
        }
    }

    /// Queues `entry`; returns how many callbacks are ready now.
    fn push_ready(&self, py: Python<'_>, entry: Queued, wake: bool) -> PyResult<usize> {
        let mut st = self.state.borrow(py)?;
        st.ready.push_back(entry);
        if wake {
            Self::wake(&mut st);
        }
        Ok(st.ready.len())
    }

    fn push_timer(&self, py: Python<'_>, lay: &Layout, timer: &Bound<'_, PyAny>) -> PyResult<()> {
        let when: f64 = timer.getattr("_when")?.extract()?;
        {
            let mut st = self.state.borrow(py)?;
            st.timers.push(when, Queued::plain(timer.clone().unbind()));
            self.shared.counters.timer_scheduled();
        }
        lay.set_scheduled(py, timer, true);
        Ok(())
    }

    /// `self.call_soon(callback, *args)` made by asyncio code that oxloop runs natively and
    /// that drops the Handle unseen (`_SelectorSocketTransport.__init__`'s calls in
    /// transport_setup.rs, `close`'s in transport.rs): the core's own scheduling where
    /// `call_soon` is not patched on the instance or its class (`call_soon_patched`), `None`
    /// where it is (call it by name). Outside debug mode the entry is queued without a Handle
    /// (`Queued::bare`), in a copy of the current context as `Handle.__init__` makes; nothing
    /// can tell, as nothing holds the Handle (an error or a slow-callback report builds the one
    /// asyncio would have run).
    pub(crate) fn call_soon_dropped<'py>(
        slf: &Bound<'py, Self>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
    ) -> Option<PyResult<()>> {
        if Self::call_soon_patched(slf) {
            return None;
        }
        let this = slf.get();
        if this.closed.load(Relaxed) || this.is_debug() {
            return Some(Self::schedule_soon(slf, callback, args, None, false).map(drop));
        }
        let py = slf.py();
        // SAFETY: PyContext_CopyCurrent returns a new reference (an exact Context) or NULL
        // with an error set.
        let ctx = match unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()) } {
            Ok(ctx) => ctx,
            Err(e) => return Some(Err(e)),
        };
        // One argument that is not itself an exact tuple is kept alone (`BareArgs`).
        let bare = match args.len() {
            1 => args
                .get_item(0)
                .ok()
                .filter(|a| !a.is_exact_instance_of::<PyTuple>()),
            _ => None,
        }
        .unwrap_or_else(|| args.clone().into_any());
        Some(this.push_bare(py, callback, bare, &ctx).map(drop))
    }

    /// `call_soon(callback[, arg], context=ctx)` from asyncio's C module (fastcall.rs,
    /// `ASYNCIO_KWNAMES`), which drops what it returns: queued with neither a Handle nor an
    /// `*args` tuple (`Queued::bare`). `None` where `schedule_soon` decides instead: a closed
    /// loop (its error), debug mode, a context that is not a Context, an argument that is an
    /// exact tuple.
    #[inline]
    pub(crate) fn schedule_unseen<'py>(
        slf: &Bound<'py, Self>,
        callback: &Bound<'py, PyAny>,
        arg: Option<&Bound<'py, PyAny>>,
        ctx: &Bound<'py, PyAny>,
    ) -> Option<PyResult<Bound<'py, PyAny>>> {
        let py = slf.py();
        let this = slf.get();
        // SAFETY: reading the types of live objects.
        let plain = unsafe {
            ffi::PyContext_CheckExact(ctx.as_ptr()) != 0
                && arg.is_none_or(|a| ffi::PyTuple_CheckExact(a.as_ptr()) == 0)
        };
        if !plain || this.closed.load(Relaxed) || this.is_debug() {
            return None;
        }
        let bare = match arg {
            Some(a) => a.clone(),
            None => PyTuple::empty(py).into_any(),
        };
        Some(this.push_bare(py, callback, bare, ctx))
    }

    /// Queues a handle-less entry (`Queued::bare`: `callback(*args)`, or `callback(arg)`, in
    /// `ctx`, an exact Context) and returns what `call_soon` returns for it: None.
    fn push_bare<'py>(
        &self,
        py: Python<'py>,
        callback: &Bound<'py, PyAny>,
        bare: Bound<'py, PyAny>,
        ctx: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let entry = Queued {
            handle: callback.clone().unbind(),
            hidden_ctx: Some(ctx.clone().unbind()),
            bare: Some(bare.unbind()),
        };
        self.push_ready(py, entry, false)?;
        Ok(py.None().into_bound(py))
    }

    fn schedule_soon<'py>(
        slf: &Bound<'py, Self>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<&Bound<'py, PyAny>>,
        threadsafe: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_open()?;
        if this.is_debug() {
            return Self::schedule_soon_debug(slf, callback, args, context, threadsafe);
        }
        if !threadsafe && args.len() <= 1 {
            // Only a real Context: with anything else the run fails as `Handle._run` does
            // (`self._context.run`: an AttributeError), which takes the Handle.
            // SAFETY: reading the type of a live object.
            if let Some(ctx) =
                context.filter(|c| unsafe { ffi::PyContext_CheckExact(c.as_ptr()) } != 0)
            {
                let unseen = if args.is_empty() {
                    Self::is_task_step(slf, callback)
                } else {
                    Self::is_task_wakeup(slf, callback)
                };
                if unseen {
                    // A C Task scheduling its own step (`task_call_step_soon` in
                    // Modules/_asynciomodule.c, 3.10-3.15), or a Future scheduling the wakeup
                    // of the Task awaiting it (`future_schedule_callbacks`, or futures.py
                    // `__schedule_callbacks`), each recognised by its callback (where
                    // asyncio's C module is recognised by its keyword names instead,
                    // `schedule_unseen` has queued it already): each drops the handle
                    // `call_soon` returns unseen, so the entry holds the callback, its
                    // arguments and its context and no Handle is built. An `asyncio.Handle` is
                    // a GC object: 100k tasks queued at once made 100k more gen-0 allocations
                    // (one more full collection of the tasks' heap in benches/micro.py's
                    // tasks_sleep0 and gather; the same per sleep in sleep_100k).
                    return this.push_bare(py, callback, args.clone().into_any(), ctx);
                }
            }
        }
        let lay = handles::layout(py)?;
        // Before 3.14 a threadsafe call builds a plain Handle, from the free list like the rest.
        let (h, hidden_ctx) = if threadsafe && lay.threadsafe.is_some() {
            lay.build_threadsafe(py, true, callback, args, slf.as_any(), context)?
        } else {
            let recycled = this.state.borrow(py)?.free_handles.pop();
            lay.build(
                py,
                recycled,
                true,
                None,
                callback,
                args,
                slf.as_any(),
                context,
            )?
        };
        let entry = Queued {
            handle: h.clone().unbind(),
            hidden_ctx,
            bare: None,
        };
        let ready = this.push_ready(py, entry, threadsafe)?;
        if threadsafe {
            // A flooding thread waits for the loop to catch up (see engine/src/pacing.rs); its callback
            // is already queued, in its place.
            if let Some(target) = this.shared.pacer.should_wait(ready) {
                let pacer = &this.shared.pacer;
                py.detach(|| pacer.wait(target));
            }
        }
        Ok(h)
    }

    /// Whether `callback` is a C Task's step (`TaskStepMethWrapper`, whose only maker is the
    /// Task's own `task_call_step_soon`) and the Task called this very method: `loop.call_soon`
    /// not replaced on the instance or the class. A replacement gets a real Handle from
    /// `super().call_soon` and may keep it. The type is learnt from the first Task this loop's
    /// `create_task` constructs (`task_init` set around the constructor, whose only
    /// `call_soon` is the first step's).
    #[inline]
    fn is_task_step(slf: &Bound<'_, Self>, callback: &Bound<'_, PyAny>) -> bool {
        let this = slf.get();
        let py = slf.py();
        match this.step_type.get(py) {
            Some(tp) => {
                // SAFETY: the type of a live object is live; only pointers are compared.
                (unsafe { ffi::Py_TYPE(callback.as_ptr()) } as *mut ffi::PyObject == tp.as_ptr())
                    && !Self::call_soon_patched(slf)
            }
            None => {
                if this.task_init.swap(false, Relaxed) {
                    let tp = callback.get_type();
                    if tp.name().is_ok_and(|n| n == "TaskStepMethWrapper") {
                        let _ = this.step_type.set(py, tp.into_any().unbind());
                    }
                }
                false
            }
        }
    }

    /// Whether `callback` is a C Task's wakeup: `task_wakeup` (Modules/_asynciomodule.c,
    /// `TaskWakeupDef`, 3.10-3.15), a builtin method bound to the Task, which the Task adds as
    /// a done callback to the Future it awaits. Only that Future's callback scheduling calls
    /// `call_soon` with it, and drops the handle (a user could take it from the Future's
    /// `_callbacks` and schedule it: docs/compatibility.md). As for steps, only through this
    /// very method. The C function is learnt from the first wakeup seen: a builtin named
    /// `task_wakeup` bound to an `_asyncio.Task`; later ones compare the function pointer.
    #[inline]
    fn is_task_wakeup(slf: &Bound<'_, Self>, callback: &Bound<'_, PyAny>) -> bool {
        let cb = callback.as_ptr();
        // SAFETY: the type of a live object is live; PyCFunction_GetFunction is called on an
        // exact PyCFunction only (it only reads the method definition).
        let f = unsafe {
            if ffi::Py_TYPE(cb) != std::ptr::addr_of_mut!(ffi::PyCFunction_Type) {
                return false;
            }
            ffi::PyCFunction_GetFunction(cb)
        };
        let Some(f) = f else {
            return false;
        };
        let f = f as usize;
        let known = TASK_WAKEUP.load(Relaxed);
        if known != 0 {
            return f == known && !Self::call_soon_patched(slf);
        }
        if !Self::learn_task_wakeup(slf.py(), callback, f) {
            return false;
        }
        !Self::call_soon_patched(slf)
    }

    #[cold]
    #[inline(never)]
    fn learn_task_wakeup(py: Python<'_>, callback: &Bound<'_, PyAny>, f: usize) -> bool {
        // SAFETY: callback is an exact PyCFunction (checked by the caller); the self it
        // returns is borrowed from it (NULL for a module-less function).
        let owner = unsafe { ffi::PyCFunction_GetSelf(callback.as_ptr()) };
        if owner.is_null() {
            return false;
        }
        // SAFETY: owner is live while callback is; borrowed for the type check only.
        let owner = unsafe { Bound::from_borrowed_ptr(py, owner) };
        let Some(task_type) = c_task_type(py) else {
            return false;
        };
        if !owner.is_instance(task_type.bind(py)).unwrap_or(false) {
            return false;
        }
        let named = callback
            .getattr(pyo3::intern!(py, "__name__"))
            .ok()
            .is_some_and(|n| n.eq("task_wakeup").unwrap_or(false));
        if named {
            TASK_WAKEUP.store(f, Relaxed);
        }
        named
    }

    /// Debug mode's `call_soon` (the Python subclass's `_call_soon_debug`); out of line, so
    /// the usual path's code stays compact.
    #[cold]
    #[inline(never)]
    fn schedule_soon_debug<'py>(
        slf: &Bound<'py, Self>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<&Bound<'py, PyAny>>,
        threadsafe: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let method = if threadsafe {
            "call_soon_threadsafe"
        } else {
            "call_soon"
        };
        slf.call_method1("_call_soon_debug", (callback, args, context, method))
    }

    /// `self.time() + delay` as CPython's call_later computes it: floats and ints directly,
    /// anything else through Python's own addition (so its TypeError/OverflowError is the same).
    fn when_after<'py>(
        slf: &Bound<'py, Self>,
        delay: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        if delay.is_none() && py.version_info() >= (3, 12) {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        if Self::time_patched(slf) {
            // CPython's call_later: `self.call_at(self.time() + delay, ...)`, term for term.
            return slf.call_method0(pyo3::intern!(py, "time"))?.add(delay);
        }
        let now = slf.get().clock.now();
        if delay.is_exact_instance_of::<PyFloat>() || delay.is_exact_instance_of::<PyInt>() {
            Ok(PyFloat::new(py, now + delay.extract::<f64>()?).into_any())
        } else {
            PyFloat::new(py, now).add(delay)
        }
    }

    fn schedule_at<'py>(
        slf: &Bound<'py, Self>,
        when: &Bound<'py, PyAny>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if when.is_none() && py.version_info() >= (3, 11) {
            return Err(PyTypeError::new_err("when cannot be None"));
        }
        this.check_open()?;
        if this.is_debug() {
            return slf.call_method1("_call_at_debug", (when, callback, args, context));
        }
        if when.is_none() {
            // 3.10: TimerHandle.__init__ asserts `when is not None`.
            return Err(PyAssertionError::new_err(()));
        }
        let key: f64 = match when.extract() {
            Ok(key) => key,
            // An int beyond a float's range: asyncio accepts it (the handle keeps the int) and
            // the heap orders it exactly; as a key it is as far as a float goes, either way.
            Err(e)
                if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(py)
                    && when.is_instance_of::<PyInt>() =>
            {
                if when.lt(0)? {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }
            }
            Err(e) => return Err(e),
        };
        let lay = handles::layout(py)?;
        let recycled = this.state.borrow(py)?.free_timers.pop();
        let (h, hidden_ctx) = lay.build(
            py,
            recycled,
            true,
            Some(when),
            callback,
            args,
            slf.as_any(),
            context,
        )?;
        let entry = Queued {
            handle: h.clone().unbind(),
            hidden_ctx,
            bare: None,
        };
        {
            let mut st = this.state.borrow(py)?;
            st.timers.push(key, entry);
            this.shared.counters.timer_scheduled();
        }
        lay.set_scheduled(py, &h, true);
        Ok(h)
    }

    /// Registers `callback` for `fd` readiness (`mask` is READABLE or WRITABLE). `context`:
    /// the handle's context (3.15's keyword); None copies the current one, as `Handle` does.
    pub(crate) fn add_io<'py>(
        slf: &Bound<'py, Self>,
        fd: &Bound<'py, PyAny>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        mask: u32,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // asyncio's `_add_reader` checks that the loop is open before it looks at the fd: a
        // closed loop is a RuntimeError whatever the fd (-1 included).
        slf.get().check_open()?;
        let fileobj = fd;
        let fd = slf.get().fileobj_lookup(fileobj)?;
        // epoll.register's error for an fd beyond a C int, as asyncio gets it.
        let fd = i32::try_from(fd).map_err(|_| {
            pyo3::exceptions::PyOverflowError::new_err("signed integer is greater than maximum")
        })?;
        // An int is its own fd: only another object is worth keeping for the lookup.
        let keep = (!fileobj.is_instance_of::<PyInt>()).then_some(fileobj);
        // A transport's native reader: its socket owns the registration, as a sock_* call's.
        let owner = if mask == READABLE && args.is_empty() {
            crate::transport::reader_owner(callback, fd)
        } else {
            None
        };
        Self::add_io_fd(slf, fd, callback, args, mask, owner.as_ref(), keep, context)
    }

    /// selectors' `_fileobj_lookup`: [`fileobj_to_fd`], or, when that raises ValueError (a
    /// closed socket's `fileno()` is -1), the fd of the active registration made with this
    /// very object, so that `remove_reader(sock)` after `sock.close()` still finds it, as
    /// `_BaseSelectorImpl._fileobj_lookup` (Lib/selectors.py) does.
    fn fileobj_lookup(&self, obj: &Bound<'_, PyAny>) -> PyResult<i64> {
        let py = obj.py();
        match fileobj_to_fd(obj) {
            Err(e) if e.is_instance_of::<PyValueError>(py) && !self.closed.load(Relaxed) => {
                let found = self.state.borrow(py)?.fds.find_fileobj(|f| f.is(obj));
                found.map(i64::from).ok_or(e)
            }
            r => r,
        }
    }

    /// `add_io` once the fd is known to be a valid C int. `owner`: the socket object whose
    /// `fileno()` is `fd` right now, when the caller knows one (the sock_* API); see
    /// `FdEntry::owner`. `fileobj`: the object the caller passed for the fd, kept by a
    /// registration this call makes (see `FdEntry::fileobj`).
    #[allow(clippy::too_many_arguments)]
    fn add_io_fd<'py>(
        slf: &Bound<'py, Self>,
        fd: i32,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        mask: u32,
        owner: Option<&Bound<'py, PyAny>>,
        fileobj: Option<&Bound<'py, PyAny>>,
        context: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_open()?;
        let handle = if this.is_debug() {
            let lay = handles::layout(py)?;
            let ctx = context.map_or_else(|| py.None(), |c| c.clone().unbind());
            lay.handle_type.bind(py).call1((callback, args, slf, ctx))?
        } else {
            handles::layout(py)?
                .build(py, None, false, None, callback, args, slf.as_any(), context)?
                .0
        };
        // The owner's weak reference, made unborrowed (an allocation can run the GC). CPython
        // hands out the one plain weak reference an object has, so it is the very object an
        // entry armed for the same live socket holds.
        let owner = owner
            .map(|o| pyo3::types::PyWeakrefReference::new(o).map(|w| w.into_any().unbind()))
            .transpose()?;
        // A number past the end of the fd table grows the table to it, so first make sure a
        // file is open there: a number no fd has (746782748, say) would otherwise allocate an
        // entry per lower number and abort on OOM; asyncio's epoll.register says EBADF.
        if !this.state.borrow(py)?.fds.covers(fd) {
            crate::sys::check_fd(fd).map_err(os_error)?;
        }
        let mut failed = None;
        let outcome = {
            let mut st = this.state.borrow(py)?;
            let st = &mut *st;
            if st.poller.is_none() {
                return Err(closed_error());
            }
            let was_active = st.fds.get(fd).is_some_and(io::FdEntry::is_active);
            let gen = st.fds.next_gen();
            let entry = st.fds.entry(fd);
            let new_mask = entry.mask() | mask;
            // A parked registration armed for this same live socket, whose fd is still `fd`,
            // is for the same open file: it is valid as it stands.
            let same_owner = match (&owner, &entry.owner) {
                (Some(o), Some(e)) => o.is(e),
                _ => false,
            };
            let armed = !(entry.kmask == new_mask && (entry.is_active() || same_owner));
            let res = if !armed {
                Ok(())
            } else if entry.kmask == 0 {
                st.poller_ctl(Epoll::add, fd, new_mask, gen)
            } else {
                // A parked or active registration; ENOENT (the fd was closed and its number
                // reused) registers afresh.
                st.poller_ctl(Epoll::modify, fd, new_mask, gen)
            };
            if let Err(e) = res {
                // The entry goes, whatever it was: a new or parked one has lost its
                // registration (nothing is registered, nobody is interested), and an active
                // one goes as selectors' EpollSelector.modify drops its key when
                // epoll.modify fails (its handles are dropped, not cancelled). Its handles,
                // owner and fileobj are dropped below, unborrowed.
                failed = st.fds.remove(fd);
                Err(os_error(e))
            } else {
                // The owner is recorded only with a registration armed now for its fd, i.e.
                // for its file (a ctl by number reaches the fd's current file).
                let mut spare = owner;
                let mut spare_fileobj = None;
                if let Some(e) = st.fds.get_mut(fd) {
                    if armed && spare.is_some() {
                        std::mem::swap(&mut e.owner, &mut spare);
                    }
                    // selectors' `register` makes the key with the object passed; `modify`
                    // (an fd already active) keeps the key's.
                    if !was_active {
                        spare_fileobj =
                            std::mem::replace(&mut e.fileobj, fileobj.map(|f| f.clone().unbind()));
                    }
                }
                let old = st.fds.set_handler(fd, mask, handle.clone().unbind());
                Ok((old, (spare, spare_fileobj)))
            }
        };
        drop(failed);
        let (old, spare) = outcome?;
        drop(spare);
        if let Some(old) = old {
            old.bind(py).call_method0("cancel")?;
        }
        Ok(handle)
    }

    /// For the sock_* fast paths (src/sock.rs) of an exact `oxloop.Loop`: whether debug mode
    /// is on (`self._debug`).
    pub(crate) fn debug_on(&self) -> bool {
        self.is_debug()
    }

    /// `{"loop": self}` (see `State::loop_kwargs`), made at the first call.
    pub(super) fn loop_kwargs<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        if let Some(kw) = &slf.get().state.borrow(py)?.loop_kwargs {
            return Ok(kw.bind(py).clone());
        }
        let kw = PyDict::new(py);
        kw.set_item(pyo3::intern!(py, "loop"), slf)?;
        let mut st = slf.get().state.borrow(py)?;
        let old = st.loop_kwargs.replace(kw.clone().unbind());
        drop(st);
        drop(old);
        Ok(kw)
    }

    /// `self.create_future()` of an exact `oxloop.Loop` (which does not override it).
    pub(crate) fn sock_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        factories::create_future(slf)
    }

    /// `self._add_reader(fd, callback)` (or `_add_writer`): the handle registered. `sock` is
    /// the socket whose `fileno()` is `fd` right now.
    pub(crate) fn sock_add<'py>(
        slf: &Bound<'py, Self>,
        fd: i32,
        callback: &Bound<'py, PyAny>,
        mask: u32,
        sock: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::add_io_fd(
            slf,
            fd,
            callback,
            &PyTuple::empty(slf.py()),
            mask,
            Some(sock),
            None,
            None,
        )
    }

    /// `self._remove_reader(fd)` (or `_remove_writer`) of selector_events.py: drops the
    /// interest and cancels the handle that was registered for it.
    pub(crate) fn sock_remove(slf: &Bound<'_, Self>, fd: i32, mask: u32) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.closed.load(Relaxed) {
            return Ok(());
        }
        let old = this.state.borrow(py)?.remove_interest(fd, mask);
        if let Some(Released { handle: h, .. }) = &old {
            let h = h.bind(py);
            if this.is_debug() {
                // Debug mode's cancel also keeps the handle's repr and traceback.
                h.call_method0(pyo3::intern!(py, "cancel"))?;
            } else {
                handles::layout(py)?.cancel(py, h)?;
            }
        }
        Ok(())
    }

    pub(crate) fn remove_io(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        mask: u32,
    ) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        if this.closed.load(Relaxed) {
            return Ok(false);
        }
        // An fd beyond a C int cannot be registered, so it is not (asyncio: a KeyError, False).
        let Ok(fd) = i32::try_from(this.fileobj_lookup(fd)?) else {
            return Ok(false);
        };
        let (old, gone) = {
            let mut st = this.state.borrow(py)?;
            let old = st.remove_interest(fd, mask);
            // The other interest could not be kept (the fd was closed): selectors' modify
            // drops the key and raises, so `_remove_reader` neither cancels the handle nor
            // returns (selector_events.py); the entry goes, its handles dropped unborrowed.
            let gone = match &old {
                Some(Released { error: Some(_), .. }) => st.fds.remove(fd),
                _ => None,
            };
            (old, gone)
        };
        drop(gone);
        match old {
            Some(Released {
                error: Some(e),
                handle,
                fileobj,
            }) => {
                drop((handle, fileobj));
                Err(os_error(e))
            }
            Some(r) => {
                let h = r.handle.bind(py);
                if this.is_debug() {
                    // Debug mode's cancel also keeps the handle's repr.
                    h.call_method0(pyo3::intern!(py, "cancel"))?;
                } else {
                    // A transport's close (selector_events.py `_remove_reader`) on every
                    // connection: `Handle.cancel` without its Python frame.
                    handles::layout(py)?.cancel(py, h)?;
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Runs one handle; only SystemExit and KeyboardInterrupt escape (as from Handle._run).
    #[inline(always)]
    fn run_handle(slf: &Bound<'_, Self>, lay: &Layout, q: &Queued, debug: bool) -> PyResult<()> {
        let py = slf.py();
        if q.is_bare() {
            if debug {
                return Self::run_bare_debug(slf, lay, q);
            }
            return Self::run_bare(slf, lay, q);
        }
        lay.release_for_run(q);
        let h = q.handle.bind(py);
        if lay.is_cancelled(py, h) {
            return Ok(());
        }
        let activity = &slf.get().shared.activity;
        activity.enter(h.as_ptr().cast());
        let r = Self::run_live_handle(slf, lay, h, debug);
        if let Some(seq) = activity.exit() {
            Self::keep_slow_handle(slf, h, seq)?;
        }
        r
    }

    /// Runs a handle-less entry (a C Task's step or wakeup, see `schedule_soon`): what
    /// `run_callback` does for a Handle. A Handle is built only to report an error or a slow
    /// callback.
    #[inline(never)]
    fn run_bare(slf: &Bound<'_, Self>, lay: &Layout, q: &Queued) -> PyResult<()> {
        let py = slf.py();
        let cb = q.handle.bind(py);
        let (Some(ctx), Some(args)) = (&q.hidden_ctx, &q.bare) else {
            return Ok(());
        };
        let args = BareArgs::of(args.bind(py));
        let activity = &slf.get().shared.activity;
        // The watchdog's sample gets the callback itself (`Loop._watchdog_sample`).
        activity.enter(cb.as_ptr().cast());
        // PyObject_Call with the empty tuple goes straight to a step's tp_call (the wrapper
        // has no vectorcall); one argument goes to the callback's vectorcall (a wakeup's
        // builtin, a done callback's function) with no tuple.
        // SAFETY: ctx is the entry's live Context (a strong reference in the entry, an exact
        // Context: `schedule_soon`, `schedule_unseen`); cb and args are live.
        let result = unsafe {
            call_in_context(py, ctx.as_ptr(), || match &args {
                BareArgs::Tuple(t) => call_discard(py, cb, t.as_any()),
                BareArgs::One(a) => call_one_discard(py, cb, a),
            })
        };
        if let Some(seq) = activity.exit() {
            Self::keep_slow_bare(slf, lay, cb, &args.tuple()?, ctx.bind(py), seq)?;
        }
        match result {
            Ok(()) => Ok(()),
            Err(e) => Self::bare_failed(slf, lay, cb, &args, ctx.bind(py), e),
        }
    }

    /// A slow handle-less entry: the watchdog's report names the Handle asyncio would have run.
    #[cold]
    #[inline(never)]
    fn keep_slow_bare(
        slf: &Bound<'_, Self>,
        lay: &Layout,
        cb: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        ctx: &Bound<'_, PyAny>,
        seq: u64,
    ) -> PyResult<()> {
        let py = slf.py();
        let (h, _) = lay.build(py, None, false, None, cb, args, slf.as_any(), Some(ctx))?;
        Self::keep_slow_handle(slf, &h, seq)
    }

    /// Debug mode switched on while a handle-less entry was queued: it runs as the Handle
    /// asyncio would have queued (`_run_handle_debug` times it and names it).
    #[cold]
    #[inline(never)]
    fn run_bare_debug(slf: &Bound<'_, Self>, lay: &Layout, q: &Queued) -> PyResult<()> {
        let py = slf.py();
        let args = match &q.bare {
            Some(a) => BareArgs::of(a.bind(py)).tuple()?,
            None => PyTuple::empty(py),
        };
        let ctx = q.hidden_ctx.as_ref().map(|c| c.bind(py));
        let cb = q.handle.bind(py);
        let (h, _) = lay.build(py, None, false, None, cb, &args, slf.as_any(), ctx)?;
        Self::run_handle_debug(slf, &h)
    }

    /// A handle-less entry's error, reported with the Handle asyncio would have run.
    #[cold]
    #[inline(never)]
    fn bare_failed(
        slf: &Bound<'_, Self>,
        lay: &Layout,
        cb: &Bound<'_, PyAny>,
        args: &BareArgs<'_, '_>,
        ctx: &Bound<'_, PyAny>,
        e: PyErr,
    ) -> PyResult<()> {
        let py = slf.py();
        if is_fatal(py, &e) {
            return Err(e);
        }
        let args = args.tuple()?;
        let (h, _) = lay.build(py, None, false, None, cb, &args, slf.as_any(), Some(ctx))?;
        Self::callback_failed(slf, &h, e)
    }

    /// Keeps the handle of a callback the watchdog found slow, for its report
    /// (`_take_slow_handle`); cold.
    #[cold]
    fn keep_slow_handle(slf: &Bound<'_, Self>, h: &Bound<'_, PyAny>, seq: u64) -> PyResult<()> {
        let old = slf
            .get()
            .state
            .borrow(slf.py())?
            .slow_handle
            .replace((seq, h.clone().unbind()));
        drop(old);
        Ok(())
    }

    /// The body of `run_handle` for a handle that is not cancelled.
    #[inline(always)]
    fn run_live_handle(
        slf: &Bound<'_, Self>,
        lay: &Layout,
        h: &Bound<'_, PyAny>,
        debug: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        if debug {
            return Self::run_handle_debug(slf, h);
        }
        match lay.run_kind(py, h) {
            RunKind::Plain => Self::run_callback(slf, lay, h),
            RunKind::OwnRun => Self::run_own(h),
            RunKind::Locked(lock) => Self::run_locked(slf, lay, h, lock),
        }
    }

    // The rare ways to run a handle are out of line (`#[cold]`): inlined into the run loop,
    // their code sat between the usual path's instructions, which then spanned more
    // instruction cache lines per callback (benches/callgrind.py --cache, I1 misses).

    /// Debug mode: the Python subclass's `_run_handle_debug`.
    #[cold]
    #[inline(never)]
    fn run_handle_debug(slf: &Bound<'_, Self>, h: &Bound<'_, PyAny>) -> PyResult<()> {
        slf.call_method1("_run_handle_debug", (h,))?;
        Ok(())
    }

    /// A handle the fast path cannot take apart: its own `_run`.
    #[cold]
    #[inline(never)]
    fn run_own(h: &Bound<'_, PyAny>) -> PyResult<()> {
        h.call_method0("_run")?;
        Ok(())
    }

    /// 3.14+ _ThreadSafeHandle._run: under the handle's lock, check `_cancelled` again
    /// (another thread may have cancelled it after the loop's unlocked check) and run the
    /// callback, so that a cancel() from another thread waits for it.
    #[cold]
    #[inline(never)]
    fn run_locked(
        slf: &Bound<'_, Self>,
        lay: &Layout,
        h: &Bound<'_, PyAny>,
        lock: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        lock.call_method0(pyo3::intern!(py, "acquire"))?;
        let r = if lay.is_cancelled(py, h) {
            Ok(())
        } else {
            Self::run_callback(slf, lay, h)
        };
        let released = lock.call_method0(pyo3::intern!(py, "release"));
        r.and(released.map(drop))
    }

    /// The callback's error, reported as `Handle._run` does (fatal ones propagate).
    #[cold]
    #[inline(never)]
    fn callback_failed(slf: &Bound<'_, Self>, h: &Bound<'_, PyAny>, e: PyErr) -> PyResult<()> {
        let py = slf.py();
        if is_fatal(py, &e) {
            return Err(e);
        }
        slf.call_method1("_report_callback_error", (h, e.value(py)))?;
        Ok(())
    }

    /// Runs a live handle's callback in its context, reporting its error as `Handle._run` does.
    #[inline]
    fn run_callback(slf: &Bound<'_, Self>, lay: &Layout, h: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let Some((cb, args, ctx)) = lay.parts(py, h) else {
            return Self::run_own(h);
        };
        // A native handler (a stream transport's read event, a sock_* waiter: `native.rs`)
        // registered with no arguments runs its Rust body directly, not through tp_call.
        // SAFETY: args is an exact tuple (checked by `parts`).
        let no_args = unsafe { ffi::PyTuple_GET_SIZE(args.as_ptr()) } == 0;
        let native = if no_args { native::find(&cb) } else { None };
        // SAFETY: ctx is a live contextvars.Context (checked by `parts`); the callback and its
        // args are strong references.
        let result = unsafe {
            call_in_context(py, ctx.as_ptr(), || match native {
                Some(run) => run(&cb),
                None => call_discard(py, &cb, &args),
            })
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => Self::callback_failed(slf, h, e),
        }
    }

    /// A virtual loop found nothing to do: nothing ready, no timer due, and a zero-timeout
    /// poll returned no event. Carries out, once per iteration, what the clock's idle policy
    /// decides (`VirtualClock::idle_step`: advance, autojump, a real wait, or the deadlock
    /// report), and returns the poll result the iteration goes on with. No borrow is held
    /// across the Python hooks or the blocking polls.
    #[cold]
    fn virtual_idle(
        slf: &Bound<'_, Self>,
        v: &VirtualClock,
        epfd: i32,
        events: &mut [epoll::Event],
    ) -> PyResult<std::io::Result<usize>> {
        let py = slf.py();
        let this = slf.get();
        let step = {
            let st = this.state.borrow(py)?;
            v.idle_step(st.timers.peek().map(|t| t.when()), !st.fds.is_empty())
        };
        match step {
            IdleStep::Jump(t) => Self::virtual_jump(slf, v, t).map(|()| Ok(0)),
            IdleStep::Advance(target) => {
                Self::virtual_jump(slf, v, target)?;
                v.advance_to.set(f64::NAN);
                slf.call_method0("_virtual_advanced")?;
                Ok(Ok(0))
            }
            IdleStep::Autojump { ms, to } => {
                if ms > 0 {
                    let n = Self::virtual_wait(slf, epfd, events, ms)?;
                    if !matches!(n, Ok(0)) {
                        return Ok(n);
                    }
                    // Re-check after the real wait: thread work may have started meanwhile.
                    let st = this.state.borrow(py)?;
                    if !st.ready.is_empty() || v.threads.load(Relaxed) != 0 {
                        return Ok(Ok(0));
                    }
                }
                Self::virtual_jump(slf, v, to).map(|()| Ok(0))
            }
            IdleStep::Wait => Self::virtual_wait(slf, epfd, events, -1),
            IdleStep::Deadlock { grace_ms } => {
                let n = Self::virtual_wait(slf, epfd, events, grace_ms)?;
                if !matches!(n, Ok(0)) {
                    return Ok(n);
                }
                // Raises the deadlock error, unless Python knows of a wake-up source the core
                // does not see (a signal handler): then wait for it.
                slf.call_method0("_virtual_deadlock")?;
                Self::virtual_wait(slf, epfd, events, -1)
            }
        }
    }

    /// Moves virtual time to `t`; if that reaches the clock's `end`, stops there and lets
    /// Python raise its TimeoutError subclass (once: `end` is cleared so cleanup can run).
    fn virtual_jump(slf: &Bound<'_, Self>, v: &VirtualClock, t: f64) -> PyResult<()> {
        if v.jump_or_end(t) {
            slf.call_method0("_virtual_end_reached")?;
        }
        Ok(())
    }

    /// A real, blocking poll from `virtual_idle` (GIL released, waker armed).
    fn virtual_wait(
        slf: &Bound<'_, Self>,
        epfd: i32,
        events: &mut [epoll::Event],
        timeout_ms: i32,
    ) -> PyResult<std::io::Result<usize>> {
        let py = slf.py();
        let this = slf.get();
        this.state.borrow(py)?.polling = true;
        let n = py.detach(|| Epoll::wait_raw(epfd, events, timeout_ms));
        // Cleared here too (not only in step 3): a hook may raise before step 3 runs, and
        // `close` refuses while `polling` is set.
        this.state.borrow(py)?.polling = false;
        Ok(n)
    }

    /// One iteration; see [`Self::run_once_with`].
    #[inline]
    fn run_once_impl(slf: &Bound<'_, Self>) -> PyResult<()> {
        if Self::time_patched(slf) {
            Self::run_once_with::<true>(slf)
        } else {
            Self::run_once_with::<false>(slf)
        }
    }

    /// One iteration. `PATCHED`: `loop.time` is replaced (see `TimePatch`); the usual case is
    /// compiled without the code for it (with it merely present, benches/callgrind.py futures
    /// cost 9,391 instructions per operation; as two instances 9,334; 9,238 before).
    fn run_once_with<const PATCHED: bool>(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let lay = handles::layout(py)?;
        let mut trash: Vec<Queued> = Vec::new();
        let mut reaped = Vec::new();

        // The two clock reads of an iteration, before and after the poll, serve the timeout,
        // the due timers and the counters alike (a read costs 22-66 ns here).
        let t0 = clock::monotonic_ns();

        // A patched `loop.time` (see `TimePatch`) is called where `_run_once` calls it: for
        // the timeout when the loop may block, and for the due timers after the poll.
        let patched_timeout = if PATCHED {
            Self::patched_timeout(slf, lay)?
        } else {
            None
        };

        // 1. Drop cancelled timers and compute the poll timeout (CPython's order).
        let mut virtual_idle = false;
        let (timeout_ms, skip_poll, epfd, mut events, ready_before, timers_before) = {
            let mut st = this.state.borrow(py)?;
            let st = &mut *st;
            let epfd = st.poller.as_ref().ok_or_else(closed_error)?.raw();
            if st.fds.has_doomed() {
                reaped = st.reap_doomed();
            }
            st.drop_cancelled_timers(py, lay, &mut trash);
            let timeout_ms = if !st.ready.is_empty() || this.stopping.load(Relaxed) {
                0
            } else if PATCHED {
                // A patched `loop.time` is only ever a real clock's (`time_patched`).
                match patched_timeout {
                    Some(secs) => iteration::timeout_ms(secs),
                    // `self.time()` scheduled a timer: look again at once.
                    None if st.timers.peek().is_some() => 0,
                    None => -1,
                }
            } else {
                // The clock's policy: a real clock blocks until the first deadline; a virtual
                // one polls without blocking and, with nothing due, leaves it to
                // `virtual_idle` whether time jumps or the loop waits.
                let next = st.timers.peek().map(|t| t.when());
                let plan = this.clock.plan_poll(next, t0, this.resolution);
                virtual_idle = plan.idle_check;
                plan.timeout_ms
            };
            st.polling = timeout_ms != 0;
            // A zero-timeout poll that can find nothing is skipped (about half the cost of an
            // iteration that runs one callback: benches/micro.py futures); the waker is written
            // only while the loop blocks (`polling`). See `iteration::may_skip_poll`.
            let skip_poll = iteration::may_skip_poll(
                &this.clock,
                timeout_ms,
                !st.fds.is_empty(),
                st.signals_armed,
            );
            (
                timeout_ms,
                skip_poll,
                epfd,
                std::mem::take(&mut st.events),
                st.ready.len(),
                st.timers.len(),
            )
        };
        for t in &trash {
            lay.set_scheduled(py, t.handle.bind(py), false);
            lay.release(t);
        }
        drop(trash);
        drop(reaped);

        // 2. Poll, with the GIL released when we may block.
        if events.len() < EVENTS_CAPACITY {
            events.resize(EVENTS_CAPACITY, epoll::empty_event());
        }
        let polled = if skip_poll {
            Ok(0)
        } else if timeout_ms == 0 {
            Epoll::wait_raw(epfd, &mut events, 0)
        } else {
            py.detach(|| Epoll::wait_raw(epfd, &mut events, timeout_ms))
        };
        let polled = match (&this.clock, polled) {
            (Clock::Virtual(v), Ok(0)) if virtual_idle => {
                Self::virtual_idle(slf, v, epfd, &mut events)?
            }
            (_, polled) => polled,
        };
        let patched_now = match &polled {
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => None,
            _ if PATCHED => Some(Self::patched_now(slf)?),
            _ => None,
        };

        // 3. Queue I/O callbacks, then due timers.
        let mut interrupted = false;
        let mut signal_ready = false;
        let mut cancelled_io: Vec<(i32, u32)> = Vec::new();
        let mut parked_ready: Vec<i32> = Vec::new();
        let mut orphan = false;
        let (ntodo, sig_fd, gone) = {
            let mut guard = this.state.borrow(py)?;
            let st = &mut *guard;
            st.polling = false;
            let n = match polled {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    interrupted = true;
                    0
                }
                Err(e) => {
                    st.events = events;
                    return Err(os_error(e));
                }
            };
            if let Clock::Virtual(v) = &this.clock {
                // asyncio leaves the order of one poll's events unspecified; a seeded virtual
                // clock shuffles it so tests can shake out (and replay) ordering assumptions.
                v.shuffle(&mut events[..n]);
            }
            for ev in &events[..n] {
                let (token, flags) = (ev.u64, ev.events);
                match iteration::dispatch(&st.fds, token, flags) {
                    Dispatch::Waker => {
                        st.wake_pending = false;
                        if let Some(w) = &st.waker {
                            w.drain();
                        }
                    }
                    Dispatch::Signal => signal_ready = true,
                    Dispatch::Io { fd, reader, writer } => {
                        if let Some(r) = reader {
                            if lay.is_cancelled(py, r.bind(py)) {
                                cancelled_io.push((fd, READABLE));
                            } else {
                                st.ready.push_back(Queued::plain(r.clone_ref(py)));
                            }
                        }
                        if let Some(w) = writer {
                            if lay.is_cancelled(py, w.bind(py)) {
                                cancelled_io.push((fd, WRITABLE));
                            } else {
                                st.ready.push_back(Queued::plain(w.clone_ref(py)));
                            }
                        }
                    }
                    // Nobody wants it: delete it now (below) so it cannot fire again.
                    Dispatch::Parked(fd) => parked_ready.push(fd),
                    Dispatch::Orphan => orphan = true,
                }
            }
            st.events = events;
            let mut gone = Vec::new();
            for (fd, mask) in cancelled_io {
                if let Some(r) = st.remove_interest(fd, mask) {
                    gone.push(r.handle);
                    gone.extend(r.fileobj);
                }
            }
            let mut gone_fds = Vec::new();
            // Deleted before the next poll unless re-armed first (engine/src/io/mod.rs).
            for fd in parked_ready {
                st.fds.doom(fd);
            }
            if orphan {
                match st.rebuild_poller() {
                    Ok(parked) => gone_fds.extend(parked),
                    Err(e) => {
                        // The state is unborrowed before what was removed is dropped (its
                        // finalizers may run Python code that uses the loop).
                        drop(guard);
                        drop((gone, gone_fds));
                        return Err(os_error(e));
                    }
                }
            }

            // After a poll that could not block, no time worth a second clock read (~25 ns
            // here, a tenth of a one-callback iteration) has passed: take t0 again. Timers due
            // in that sub-microsecond run one iteration later; none runs early. The counters
            // then count that poll as busy time, which it was.
            let t1 = if timeout_ms == 0 {
                t0
            } else {
                clock::monotonic_ns()
            };
            let end_time = patched_now.unwrap_or_else(|| this.clock.at(t1)) + this.resolution;
            // CPython clears `_scheduled` as it pops a timer. Storing a bool into the slot runs
            // no Python code, so it is safe under the borrow.
            let fired = iteration::take_due_timers(&mut st.timers, &mut st.ready, end_time, |e| {
                lay.set_scheduled(py, e.handle.bind(py), false)
            });
            this.shared.counters.record_poll(
                &PollSample {
                    start_ns: t0,
                    end_ns: t1,
                    io_events: n,
                    timers_fired: fired,
                    ready_at_poll: ready_before,
                    timers_at_poll: timers_before,
                    fds: st.fds.len(),
                },
                this.shared.activity.slow_ns.load(Relaxed),
            );
            let sig_fd = st.sig.as_ref().map(SignalWakeup::read_fd);
            // An idle loop gives its surplus spare handles back (dropped below, unborrowed).
            let spares = if t1.saturating_sub(t0) >= FREE_LIST_IDLE_NS {
                st.trim_spares()
            } else {
                Vec::new()
            };
            (st.ready.len(), sig_fd, (gone, spares, gone_fds))
        };
        drop(gone);

        // 4. Signals (signals.rs): Python-level handlers (the default SIGINT handler raises
        // KeyboardInterrupt here), then the received numbers go to add_signal_handler's.
        if interrupted || signal_ready {
            signals::deliver(slf.as_any(), if signal_ready { sig_fd } else { None })?;
        }

        // 5. Run exactly the callbacks that were ready when this run began.
        let debug = this.is_debug();
        iteration::run_ready(
            ntodo,
            || {
                let mut st = this.state.borrow(py)?;
                let h = st.ready.pop_front();
                if h.is_some() {
                    this.shared.pacer.popped_one();
                }
                Ok(h)
            },
            |h| {
                if let Err(e) = Self::run_handle(slf, lay, &h, debug) {
                    lay.release(&h);
                    return Err(e);
                }
                if let Some((spare, timer)) = lay.recycle(py, h) {
                    let mut st = this.state.borrow(py)?;
                    let free = if timer {
                        &mut st.free_timers
                    } else {
                        &mut st.free_handles
                    };
                    if free.len() < FREE_LIST_MAX {
                        free.push(spare);
                    }
                }
                Ok(())
            },
        )
    }
}

impl Drop for LoopCore {
    fn drop(&mut self) {
        // Queued handles are untracked; give them back to the GC before they are released, so
        // whatever frees them sees a normally tracked object.
        if let Some(lay) = handles::layout_if_ready() {
            if let Some(st) = self.state.try_peek() {
                for h in st.ready.iter().chain(st.timers.iter().map(|t| &t.entry)) {
                    lay.release(h);
                }
            }
        }
    }
}

impl State {
    /// Drops the cancelled timers (CPython's `_run_once` step 1): all of them when more than
    /// half the heap is cancelled, else those at its top. They go to `trash`, to be released
    /// once nothing is borrowed.
    #[inline(always)]
    fn drop_cancelled_timers(&mut self, py: Python<'_>, lay: &Layout, trash: &mut Vec<Queued>) {
        iteration::drop_cancelled_timers(
            &mut self.timers,
            |e| lay.is_cancelled(py, e.handle.bind(py)),
            trash,
        );
    }

    /// Splits the spare handles beyond `FREE_LIST_IDLE_KEEP` off each free list.
    fn trim_spares(&mut self) -> Vec<Py<PyAny>> {
        let mut out = Vec::new();
        for free in [&mut self.free_handles, &mut self.free_timers] {
            if free.len() > FREE_LIST_IDLE_KEEP {
                out.extend(free.drain(FREE_LIST_IDLE_KEEP..));
                free.shrink_to(FREE_LIST_IDLE_KEEP);
            }
        }
        out
    }

    /// Drops `mask` interest for `fd`; returns the handle that was registered for it, with
    /// what else goes (see [`Released`]). The last interest parks the registration (see
    /// engine/src/io/mod.rs): no syscall now.
    fn remove_interest(&mut self, fd: i32, mask: u32) -> Option<Released> {
        let (handle, fileobj) = self.fds.take_handler(fd, mask)?;
        let mut error = None;
        if let Some((new_mask, kmask)) = self.fds.get(fd).map(|e| (e.mask(), e.kmask)) {
            if new_mask != 0 && new_mask != kmask {
                let gen = self.fds.next_gen();
                error = self.poller_ctl(Epoll::modify, fd, new_mask, gen).err();
            }
        }
        Some(Released {
            handle,
            fileobj,
            error,
        })
    }

    /// Deletes the registrations of the doomed entries (parked fds that reported readiness
    /// and were not armed again since; see engine/src/io/mod.rs) and removes the entries,
    /// returned to be dropped unborrowed. Called just before a poll. A failed delete means the
    /// number no longer names the registered file: closed since the event (the kernel dropped
    /// the registration with the file's last reference, epoll(7) Q6) or closed while a dup
    /// keeps the file open, an orphan whose next event has a token the table no longer has
    /// (`Dispatch::Orphan`, which rebuilds the set then).
    fn reap_doomed(&mut self) -> Vec<io::FdEntry<Py<PyAny>>> {
        let doomed = self.fds.take_doomed();
        let mut gone = Vec::with_capacity(doomed.len());
        for fd in doomed {
            if let Some(p) = &self.poller {
                let _ = p.delete(fd);
            }
            gone.extend(self.fds.remove(fd));
        }
        gone
    }

    /// `ctl` (`Epoll::add`, or `Epoll::modify`, which falls back to ADD on ENOENT) of `fd`
    /// with a token of generation `gen`, recorded in its entry (which must exist); a failure
    /// leaves the entry without a registration.
    fn poller_ctl(
        &mut self,
        ctl: fn(&Epoll, std::os::fd::RawFd, u32, u64) -> std::io::Result<()>,
        fd: i32,
        mask: u32,
        gen: u32,
    ) -> std::io::Result<()> {
        let res = match &self.poller {
            Some(p) => ctl(p, fd, mask, io::token(fd, gen)),
            None => Err(std::io::Error::from_raw_os_error(libc::EBADF)),
        };
        self.record_ctl(fd, mask, gen, &res);
        res
    }

    fn record_ctl(&mut self, fd: i32, mask: u32, gen: u32, res: &std::io::Result<()>) {
        if let Some(e) = self.fds.get_mut(fd) {
            if res.is_ok() {
                e.set_registration(mask, gen);
            } else {
                // Whatever the kernel still holds under the old token is an orphan now.
                let gen = e.gen;
                e.set_registration(0, gen);
            }
        }
    }

    /// A fresh epoll set holding the waker, the signal socket and every active entry, in place
    /// of one that holds a registration the loop cannot delete by fd number (its fd was closed
    /// while the file stays open elsewhere). Parked entries are dropped (returned, to be dropped
    /// unborrowed); an active entry whose fd is closed is kept with no registration, as the
    /// selector would keep it.
    fn rebuild_poller(&mut self) -> std::io::Result<Vec<io::FdEntry<Py<PyAny>>>> {
        let new = Epoll::new()?;
        if let Some(w) = &self.waker {
            new.add(w.raw(), READABLE, WAKER_TOKEN)?;
        }
        if let Some(s) = &self.sig {
            new.add(s.read_fd(), READABLE, SIGNAL_TOKEN)?;
        }
        let mut parked = Vec::new();
        let mut active = Vec::new();
        for (fd, e) in self.fds.iter_mut() {
            if e.is_active() {
                active.push((fd, e.mask()));
            } else {
                parked.push(fd);
            }
        }
        let gone = parked
            .into_iter()
            .filter_map(|fd| self.fds.remove(fd))
            .collect();
        for (fd, mask) in active {
            let gen = self.fds.next_gen();
            let res = new.add(fd, mask, io::token(fd, gen));
            self.record_ctl(fd, mask, gen, &res);
        }
        // Dropping the old set closes it, and the orphans with it.
        self.poller = Some(new);
        Ok(gone)
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        handles::layout(py)?;
        let clock = match _kwargs.map(|k| k.get_item("clock")).transpose()?.flatten() {
            Some(c) if !c.is_none() => Clock::Virtual(Box::new(virtual_clock_from(&c)?)),
            _ => Clock::Real,
        };
        let poller = Epoll::new().map_err(os_error)?;
        let waker = Waker::new().map_err(os_error)?;
        poller
            .add(waker.raw(), READABLE, WAKER_TOKEN)
            .map_err(os_error)?;
        let sig = SignalWakeup::new().map_err(os_error)?;
        poller
            .add(sig.read_fd(), READABLE, SIGNAL_TOKEN)
            .map_err(os_error)?;
        Ok(LoopCore {
            state: GilCell::new(State {
                ready: ReadyQueue::with_capacity(1024),
                timers: TimerHeap::default(),
                fds: FdTable::default(),
                poller: Some(poller),
                waker: Some(waker),
                sig: Some(sig),
                events: Vec::new(),
                polling: false,
                wake_pending: false,
                signals_armed: false,
                slow_duration: PyFloat::new(py, 0.1).into_any().unbind(),
                watchdog: None,
                slow_handle: None,
                free_handles: Vec::with_capacity(FREE_LIST_IDLE_KEEP),
                free_timers: Vec::with_capacity(FREE_LIST_IDLE_KEEP),
                loop_kwargs: None,
            }),
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            running: AtomicBool::new(false),
            task_init: AtomicBool::new(false),
            shared: {
                let shared = Arc::new(Shared::default());
                // asyncio's default slow_callback_duration, 0.1 s.
                shared.activity.slow_ns.store(100_000_000, Relaxed);
                shared
            },
            clock,
            resolution: clock::resolution(),
            patch: TimePatch::new(py),
            soon_patch: TimePatch::new(py),
            io_patch: TimePatch::new(py),
            step_type: pyo3::sync::PyOnceLock::new(),
        })
    }

    /// `time.monotonic()`, read live (or the virtual clock's time).
    fn time(&self) -> f64 {
        self.clock.now()
    }

    /// `object.__setattr__`, noting an instance attribute named `time` (see [`TimePatch`]).
    fn __setattr__(
        slf: &Bound<'_, Self>,
        name: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        Self::generic_setattr(slf, name, Some(value))
    }

    /// `object.__delattr__`, as `__setattr__`.
    fn __delattr__(slf: &Bound<'_, Self>, name: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::generic_setattr(slf, name, None)
    }

    /// Whether the loop runs on a virtual clock.
    fn _is_virtual(&self) -> bool {
        matches!(self.clock, Clock::Virtual(_))
    }

    /// Sets the autojump threshold of the virtual clock (seconds; +inf disables autojump).
    fn _virtual_set_threshold(&self, seconds: f64) -> PyResult<()> {
        self.virtual_clock()?.threshold.set(seconds);
        Ok(())
    }

    /// The earliest pending `advance()` target, or None to clear it; the core steps time to
    /// it and then calls `_virtual_advanced`.
    fn _virtual_advance_to(&self, target: Option<f64>) -> PyResult<()> {
        self.virtual_clock()?
            .advance_to
            .set(target.unwrap_or(f64::NAN));
        Ok(())
    }

    /// Counts executor / to_thread work in flight (+1 when submitted, -1 when done, from any
    /// thread): autojump never jumps over it. The last one wakes the loop to re-decide.
    fn _virtual_thread(&self, py: Python<'_>, delta: i32) -> PyResult<()> {
        let v = self.virtual_clock()?;
        if delta > 0 {
            v.threads.fetch_add(1, Relaxed);
        } else {
            let left = v
                .threads
                .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)))
                .unwrap_or(0);
            if left <= 1 {
                let mut st = self.state.borrow(py)?;
                Self::wake(&mut st);
            }
        }
        Ok(())
    }

    /// asyncio's `create_task`, with its common case in Rust (see factories.rs).
    #[pyo3(signature = (coro, **kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: &Bound<'py, PyAny>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        factories::create_task(slf, coro, kwargs)
    }

    // call_soon, call_soon_threadsafe, call_later, call_at, get_debug and create_future: raw
    // C methods set
    // on this class by `_install_fast_methods` (fastcall.rs), the one binder of their
    // arguments.

    fn stop(&self) {
        self.stopping.store(true, Relaxed);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    #[getter(_closed)]
    fn get_closed_flag(&self) -> bool {
        self.closed.load(Relaxed)
    }

    #[setter(_closed)]
    fn set_closed_flag(&self, v: bool) {
        self.closed.store(v, Relaxed);
    }

    #[getter(_stopping)]
    fn get_stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    #[setter(_stopping)]
    fn set_stopping(&self, v: bool) {
        self.stopping.store(v, Relaxed);
    }

    #[getter(_debug)]
    fn get_debug_flag(&self) -> bool {
        self.is_debug()
    }

    #[setter(_debug)]
    fn set_debug_flag(&self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.debug.store(v.is_truthy()?, Relaxed);
        Ok(())
    }

    /// Runs iterations until `stop()`; the Python `run_forever` does setup and cleanup.
    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        if this.running.swap(true, Relaxed) {
            return Err(PyRuntimeError::new_err(
                "This event loop is already running",
            ));
        }
        // Time spent stopped between two runs is neither busy nor idle: the first iteration
        // of a run starts counting afresh.
        this.shared.counters.run_starts();
        this.shared.pacer.enter_run();
        let res = loop {
            if let Err(e) = Self::run_once_impl(slf) {
                break Err(e);
            }
            if this.stopping.load(Relaxed) {
                break Ok(());
            }
        };
        this.shared.pacer.exit_run();
        this.running.store(false, Relaxed);
        res
    }

    /// One iteration, as `BaseEventLoop._run_once`.
    fn _run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::run_once_impl(slf)
    }

    /// Queues a handle built elsewhere (signals, debug mode); cancelled handles are skipped
    /// as `BaseEventLoop._add_callback` skips them.
    fn _add_callback(slf: &Bound<'_, Self>, handle: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let lay = handles::layout(py)?;
        if !handle.is_instance(lay.handle_type.bind(py))? {
            return Err(PyTypeError::new_err("expected an asyncio.Handle"));
        }
        if !lay.is_cancelled(py, handle) {
            slf.get()
                .push_ready(py, Queued::plain(handle.clone().unbind()), false)
                .map(drop)?;
        }
        Ok(())
    }

    /// `_add_callback` from a signal handler or another thread: also wakes the poller.
    fn _add_callback_signalsafe(slf: &Bound<'_, Self>, handle: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::_add_callback(slf, handle)?;
        slf.get()._write_to_self(slf.py())
    }

    /// Schedules a TimerHandle built in Python (debug mode).
    fn _add_timer(slf: &Bound<'_, Self>, timer: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let lay = handles::layout(py)?;
        if !timer.is_instance(lay.timer_type.bind(py))? {
            return Err(PyTypeError::new_err("expected an asyncio.TimerHandle"));
        }
        slf.get().push_timer(py, lay, timer)
    }

    /// Called by `TimerHandle.cancel()`; counts toward heap compaction.
    fn _timer_handle_cancelled(&self, py: Python<'_>, handle: &Bound<'_, PyAny>) -> PyResult<()> {
        let lay = handles::layout(py)?;
        if handle.is_instance(lay.timer_type.bind(py))? && lay.is_scheduled(py, handle) {
            let mut st = self.state.borrow(py)?;
            st.timers.cancelled += 1;
            self.shared.counters.timer_cancelled();
        }
        Ok(())
    }

    fn _write_to_self(&self, py: Python<'_>) -> PyResult<()> {
        let mut st = self.state.borrow(py)?;
        Self::wake(&mut st);
        Ok(())
    }

    /// The fd for `signal.set_wakeup_fd` (None once closed).
    fn _signal_wakeup_fd(&self, py: Python<'_>) -> PyResult<Option<i32>> {
        let mut st = self.state.borrow(py)?;
        st.signals_armed = true;
        Ok(st.sig.as_ref().map(SignalWakeup::write_fd))
    }

    /// `BaseSelectorEventLoop._add_reader`: watch `fd` for reading and return the handle
    /// (the public `add_reader` in `_loop.py` first checks that no transport owns the fd).
    /// Takes `context=` where the running asyncio's does (3.15: `_add_reader(self, fd,
    /// callback, *args, context=None)`, which its transports pass their `_context` to); see
    /// [`io_context`].
    #[pyo3(signature = (fd, callback, *args, **kwargs))]
    fn _add_reader<'py>(
        slf: &Bound<'py, Self>,
        fd: &Bound<'py, PyAny>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let context = io_context(kwargs, "_add_reader")?;
        Self::add_io(slf, fd, callback, args, READABLE, context.as_ref())
    }

    /// `BaseSelectorEventLoop._add_writer`, as `_add_reader`.
    #[pyo3(signature = (fd, callback, *args, **kwargs))]
    fn _add_writer<'py>(
        slf: &Bound<'py, Self>,
        fd: &Bound<'py, PyAny>,
        callback: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let context = io_context(kwargs, "_add_writer")?;
        Self::add_io(slf, fd, callback, args, WRITABLE, context.as_ref())
    }

    fn _remove_reader(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::remove_io(slf, fd, READABLE)
    }

    fn _remove_writer(slf: &Bound<'_, Self>, fd: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::remove_io(slf, fd, WRITABLE)
    }

    /// `fd` is about to be closed by the transport that owns it (`_SocketTransport`'s
    /// `_call_connection_lost`, python/oxloop/_transports.py, just before `_socket.socket.close`):
    /// its parked registration (engine/src/io/mod.rs) is forgotten without a syscall. The
    /// kernel drops it with the file's last reference (epoll(7), Q6); the deferred delete
    /// would run after the close and fail with EBADF (one wasted `epoll_ctl` per connection
    /// of a churning server), and a parked entry left behind would cost a MOD failing with
    /// ENOENT before the ADD of the next socket given that number. If a dup keeps the file
    /// open, the registration is an orphan, as it is today when the delete fails: its next
    /// event carries a token the table no longer has, and the loop rebuilds its set then.
    /// An fd with a reader or a writer still set is left alone (asyncio leaves it
    /// registered).
    fn _fd_closing(&self, py: Python<'_>, fd: i32) -> PyResult<()> {
        let gone = {
            let mut st = self.state.borrow(py)?;
            match st.fds.get(fd) {
                Some(e) if !e.is_active() => st.fds.remove(fd),
                _ => None,
            }
        };
        // Dropped unborrowed (an owner's weakref may run Python code).
        drop(gone);
        Ok(())
    }

    /// Whether `fd` has a parked registration (no reader or writer, the kernel's kept; see
    /// engine/src/io/mod.rs). For tests.
    fn _fd_parked(&self, py: Python<'_>, fd: i32) -> PyResult<bool> {
        let st = self.state.borrow(py)?;
        Ok(st
            .fds
            .get(fd)
            .is_some_and(|e| !e.is_active() && e.kmask != 0))
    }

    #[allow(clippy::type_complexity)] // (fd, events, reader, writer, fileobj): a SelectorKey
    /// The registration `fileobj` leads to, as selectors' `get_key` finds it (through
    /// `_fileobj_lookup`): `(fd, events, reader_handle, writer_handle, key_fileobj)` with
    /// selectors' EVENT_READ = 1 / EVENT_WRITE = 2 bits and the object the registration was
    /// made with (None when that was the fd itself), or None when nothing is registered.
    /// Raises ValueError as `_fileobj_lookup` does. Backs the `_selector` view that asyncio's
    /// transports read for their repr.
    fn _fd_key<'py>(
        &self,
        py: Python<'py>,
        fileobj: &Bound<'py, PyAny>,
    ) -> PyResult<
        Option<(
            i32,
            u32,
            Option<Py<PyAny>>,
            Option<Py<PyAny>>,
            Option<Py<PyAny>>,
        )>,
    > {
        let fd = self.fileobj_lookup(fileobj)?;
        let Ok(fd) = i32::try_from(fd) else {
            return Ok(None);
        };
        if self.closed.load(Relaxed) {
            return Ok(None);
        }
        let st = self.state.borrow(py)?;
        Ok(st.fds.get_active(fd).map(|e| {
            let events = u32::from(e.reader.is_some()) | (u32::from(e.writer.is_some()) << 1);
            (
                fd,
                events,
                e.reader.as_ref().map(|h| h.clone_ref(py)),
                e.writer.as_ref().map(|h| h.clone_ref(py)),
                e.fileobj.as_ref().map(|f| f.clone_ref(py)),
            )
        }))
    }

    /// The fds the poller watches for users (not the loop's own waker and signal fds).
    fn _fd_list(&self, py: Python<'_>) -> PyResult<Vec<i32>> {
        Ok(self.state.borrow(py)?.fds.fds())
    }

    /// Releases the core's resources: queued handles, timers, fd registrations, the poller,
    /// the waker and the signal socket. The Python `close` calls it after asyncio's steps.
    fn _close_core(&self, py: Python<'_>) -> PyResult<()> {
        if !self.running.load(Relaxed) {
            self._stop_watchdog(py)?;
        }
        let garbage = {
            let mut st = self.state.borrow(py)?;
            if st.polling || self.running.load(Relaxed) {
                return Err(PyRuntimeError::new_err("Cannot close a running event loop"));
            }
            self.closed.store(true, Relaxed);
            let slow = st.slow_handle.take();
            let ready: Vec<Queued> = st.ready.drain();
            let timers = st.timers.drain();
            let fds = st.fds.drain();
            let spares = (
                std::mem::take(&mut st.free_handles),
                std::mem::take(&mut st.free_timers),
            );
            // Drop the fds last so nothing writes to a closed (maybe reused) fd number.
            let sys = (st.poller.take(), st.waker.take(), st.sig.take());
            (ready, timers, fds, spares, sys, slow)
        };
        let lay = handles::layout(py)?;
        for h in garbage.0.iter().chain(garbage.1.iter().map(|t| &t.entry)) {
            lay.release(h);
        }
        drop(garbage);
        Ok(())
    }

    /// Gives every queued handle that someone besides the loop holds back to the cyclic GC.
    /// Called at the start of each full collection (see `_loop.py`), so a cycle through such a
    /// handle is found as asyncio would find it.
    fn _gc_track_shared(&self, py: Python<'_>) -> PyResult<()> {
        let lay = handles::layout(py)?;
        // A collection can start inside a borrow (an allocation in loop code); then the
        // handles stay as they are until the next full collection.
        if let Some(st) = self.state.try_peek() {
            for h in st.ready.iter().chain(st.timers.iter().map(|t| &t.entry)) {
                lay.track_if_shared(h);
            }
        }
        Ok(())
    }

    /// The published counters as a flat tuple in the order of `_metrics.py`'s `_RAW_FIELDS`,
    /// then the busy-time histogram. Reads no loop state: safe from any thread, any time.
    fn _metrics_raw<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let a = &self.shared.activity;
        let mut raw = vec![clock::monotonic_ns().max(0) as u64];
        raw.extend(
            self.shared
                .counters
                .read()
                .to_raw(a.callbacks(), a.slow_callbacks.load(Relaxed)),
        );
        PyTuple::new(py, raw)
    }

    /// asyncio's `slow_callback_duration`: also the threshold of slow iterations in the
    /// metrics and of the slow-callback watchdog.
    #[getter]
    fn get_slow_callback_duration(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.state.borrow(py)?.slow_duration.clone_ref(py))
    }

    #[setter]
    fn set_slow_callback_duration(&self, value: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let Some(value) = value else {
            return Err(pyo3::exceptions::PyAttributeError::new_err(
                "cannot delete slow_callback_duration",
            ));
        };
        let py = value.py();
        let ns = slow_threshold_ns(value);
        let old = std::mem::replace(
            &mut self.state.borrow(py)?.slow_duration,
            value.clone().unbind(),
        );
        self.shared.activity.slow_ns.store(ns, Relaxed);
        drop(old);
        Ok(())
    }

    /// Starts the slow-callback watchdog thread (no-op if it runs). It calls back into
    /// `_watchdog_sample` and `_watchdog_report`.
    fn _start_watchdog(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.check_open()?;
        let mut st = this.state.borrow(py)?;
        if st.watchdog.is_none() {
            let weak = pyo3::types::PyWeakrefReference::new(slf.as_any())?.unbind();
            st.watchdog =
                Some(watchdog::Watchdog::spawn(this.shared.clone(), weak).map_err(os_error)?);
        }
        Ok(())
    }

    /// Stops and joins the watchdog thread, if any.
    fn _stop_watchdog(&self, py: Python<'_>) -> PyResult<()> {
        let wd = self.state.borrow(py)?.watchdog.take();
        if let Some(wd) = wd {
            // The thread may be waiting for the GIL: release it while joining.
            py.detach(|| wd.stop());
        }
        Ok(())
    }

    /// The handle of the slow callback whose activity word was `seq`, once (None if another
    /// callback was kept since, or it was already taken).
    fn _take_slow_handle(&self, py: Python<'_>, seq: u64) -> PyResult<Option<Py<PyAny>>> {
        let mut st = self.state.borrow(py)?;
        Ok(match st.slow_handle.take() {
            Some((s, h)) if s == seq => Some(h),
            other => {
                st.slow_handle = other;
                None
            }
        })
    }

    /// Whether the watchdog thread runs.
    fn _watchdog_running(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.state.borrow(py)?.watchdog.is_some())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // A state borrowed right now (GC triggered inside the loop) is simply not traversed:
        // that can only delay collection, never free a live object.
        let Some(st) = self.state.try_peek() else {
            return Ok(());
        };
        let Some(lay) = handles::layout_if_ready() else {
            return Ok(());
        };
        let mut result = Ok(());
        let mut visit_ptr = |p: *mut ffi::PyObject| {
            // SAFETY: p is a live object referenced by a queued handle; wrapping it without an
            // incref and never dropping the wrapper leaves its refcount untouched.
            let obj = std::mem::ManuallyDrop::new(unsafe {
                Bound::<PyAny>::from_owned_ptr(Python::assume_attached(), p).unbind()
            });
            result = visit.call(&*obj);
            result.is_ok()
        };
        for h in st.ready.iter().chain(st.timers.iter().map(|t| &t.entry)) {
            if !lay.traverse_parts(h, &mut visit_ptr) {
                return result;
            }
        }
        if let Some((_, h)) = &st.slow_handle {
            visit.call(h)?;
        }
        // Any object the user set (asyncio keeps it as it is), so it can lead back here.
        visit.call(&st.slow_duration)?;
        if let Some(kw) = &st.loop_kwargs {
            visit.call(kw)?;
        }
        for e in st.fds.iter() {
            if let Some(f) = &e.fileobj {
                visit.call(f)?;
            }
            if let Some(r) = &e.reader {
                visit.call(r)?;
            }
            if let Some(w) = &e.writer {
                visit.call(w)?;
            }
        }
        result
    }

    fn __clear__(&self) {
        Python::attach(|py| {
            let garbage = self.state.borrow(py).ok().map(|mut st| {
                let slow = st.slow_handle.take();
                let duration = std::mem::replace(&mut st.slow_duration, py.None());
                let ready: Vec<Queued> = st.ready.drain();
                let kwargs = st.loop_kwargs.take();
                (
                    ready,
                    st.timers.drain(),
                    st.fds.drain(),
                    (slow, duration, kwargs),
                )
            });
            if let (Some(g), Ok(lay)) = (&garbage, handles::layout(py)) {
                for h in g.0.iter().chain(g.1.iter().map(|t| &t.entry)) {
                    lay.release(h);
                }
            }
            drop(garbage);
        });
    }
}

/// Calls `f` inside the context `ctx` (`PyContext_Enter`/`PyContext_Exit`, paired), then handles
/// a signal that arrived meanwhile, as the eval loop would on returning to `Handle._run`'s frame
/// in asyncio (otherwise its Python handler would run inside whatever Python code comes next;
/// nothing pending costs one atomic load). A failed `PyContext_Exit` (the callback left the
/// context in a foreign state) is reported as the callback's error, as `Context.run` raises it.
///
/// # Safety
/// The GIL is held and `ctx` is a live `contextvars.Context`.
#[inline(always)]
unsafe fn call_in_context(
    py: Python<'_>,
    ctx: *mut ffi::PyObject,
    f: impl FnOnce() -> PyResult<()>,
) -> PyResult<()> {
    if ffi::PyContext_Enter(ctx) < 0 {
        return Err(PyErr::fetch(py));
    }
    let out = f();
    let out = if ffi::PyContext_Exit(ctx) < 0 {
        out.and(Err(PyErr::fetch(py)))
    } else {
        out
    };
    out.and_then(|()| {
        if ffi::PyErr_CheckSignals() < 0 {
            Err(PyErr::fetch(py))
        } else {
            Ok(())
        }
    })
}

/// `cb(arg)` with the result dropped.
#[inline(always)]
fn call_one_discard(py: Python<'_>, cb: &Bound<'_, PyAny>, arg: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: the GIL is held; cb and arg are live; a new reference or NULL with an
    // exception set comes back.
    unsafe {
        let res = ffi::PyObject_CallOneArg(cb.as_ptr(), arg.as_ptr());
        if res.is_null() {
            Err(PyErr::fetch(py))
        } else {
            ffi::Py_DECREF(res);
            Ok(())
        }
    }
}

/// `cb(*args)` with the result dropped; `args` is a tuple (checked by the caller:
/// `Layout::parts`, or `PyTuple::empty`).
#[inline(always)]
fn call_discard(py: Python<'_>, cb: &Bound<'_, PyAny>, args: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: the GIL is held; cb and args are live and args a tuple (PyObject_Call's
    // requirement); a new reference or NULL with an exception set comes back.
    unsafe {
        let res = ffi::PyObject_Call(cb.as_ptr(), args.as_ptr(), std::ptr::null_mut());
        if res.is_null() {
            Err(PyErr::fetch(py))
        } else {
            ffi::Py_DECREF(res);
            Ok(())
        }
    }
}
