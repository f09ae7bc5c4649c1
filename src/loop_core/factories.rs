//! `create_task` and `create_future` in Rust, for the calls every task and every `sleep` make.
//!
//! asyncio's versions (base_events.py, identical in what matters on 3.10-3.13) are a few lines
//! of Python, but those lines ran for every coroutine `gather` wraps: about 800 of its ~34,000
//! instructions per coroutine were that frame (callgrind, benches/callgrind.py gather). Here
//! the common case is done directly, and every other case calls asyncio's own method:
//! - `create_future()`: `futures.Future(loop=self)`, with `Future` read from `asyncio.futures`
//!   at each call as the Python code does (so a patched class is honoured).
//! - `create_task(coro, **kwargs)` with debug off and no task factory, when `kwargs` holds only
//!   the version's own keywords (`name`, `context` on 3.11+, a false `eager_start` on 3.14+):
//!   `tasks.Task(coro, loop=self, **kwargs)`, which is what asyncio's method does then (the
//!   `_source_traceback` trim only applies in debug mode, and `_set_task_name` only with a
//!   factory). Anything else, a true `eager_start` included (see `Keywords::Python`), goes
//!   to `BaseEventLoop.create_task`.
//!
//!
//! When the class is asyncio's C `_asyncio.Future` / `_asyncio.Task` itself, the call is what
//! `type_call` (Objects/typeobject.c) does with it: `tp_new`, then `tp_init` with the keyword
//! dict `{"loop": self}`, which the loop makes once and keeps (`LoopCore::loop_kwargs`) instead
//! of the dict `_PyObject_MakeTpCall` builds and frees for every call from the keyword names
//! (neither type has a vectorcall of its own; their `__init__` only reads the dict). That dict
//! was ~570 of the `future` row's 3,528 instructions (callgrind, benches/callgrind.py future).
//! The class is read from the module's `__dict__` as `LOAD_ATTR` on a module does (what
//! `module_getattro` adds to that is for missing names, which take the general path).
//!
//! Invariant: both return exactly what asyncio's methods return for the same loop state; the
//! closed check comes first, as `_check_closed` does.
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple, PyType};
use pyo3::{intern, Py};

use super::LoopCore;
use crate::pyutil::{dict_get, instance_dict};

/// `("loop",)`, the keyword names of `Task(coro, loop=self)` and `Future(loop=self)`.
static LOOP_KWNAMES: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
/// `asyncio.futures` and `asyncio.tasks`, held as base_events.py holds them (imported once;
/// the classes are read from them at each call).
static FUTURES: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static TASKS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
/// `asyncio.base_events.BaseEventLoop.create_task`, the general path.
static BASE_CREATE_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// `_asyncio.Future` and `_asyncio.Task`, when asyncio has its C module and each type is one
/// `type_call` would call as `construct` does (see `c_type`).
static C_FUTURE: PyOnceLock<Option<Py<PyType>>> = PyOnceLock::new();
static C_TASK: PyOnceLock<Option<Py<PyType>>> = PyOnceLock::new();

/// `_asyncio.<name>`, if it is a type with `tp_new` and `tp_init` and no vectorcall (with a
/// vectorcall, the keyword-names call of `call_with_loop` builds no dict anyway).
fn c_type(py: Python<'_>, name: &str) -> Option<Py<PyType>> {
    let t = py
        .import("_asyncio")
        .and_then(|m| m.getattr(name))
        .ok()?
        .cast_into::<PyType>()
        .ok()?;
    let tp = t.as_type_ptr();
    // SAFETY: tp is a live type object; plain fields are read.
    let ok = unsafe {
        (*tp).tp_new.is_some()
            && (*tp).tp_init.is_some()
            && (*tp).tp_flags & ffi::Py_TPFLAGS_HAVE_VECTORCALL == 0
    };
    ok.then(|| t.unbind())
}

/// `cls.<name>` of a module, read from its `__dict__` as `LOAD_ATTR` does; `None` when the
/// name is missing there (the caller then uses `getattr`, for a module `__getattr__`).
fn module_attr<'py>(
    module: &Bound<'py, PyModule>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    crate::pyutil::dict_get(&module.dict(), name)
}

/// `cls(*positional, loop=loop)` where `cls` is `exact` (a C type from `c_type`): `tp_new`
/// then `tp_init` with the loop's kept `{"loop": loop}`, as `type_call` does.
fn construct<'py>(
    exact: &Bound<'py, PyType>,
    positional: Option<&Bound<'py, PyAny>>,
    slf: &Bound<'py, LoopCore>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let kwargs = LoopCore::loop_kwargs(slf)?;
    let args = match positional {
        Some(p) => PyTuple::new(py, [p])?,
        None => PyTuple::empty(py),
    };
    let tp = exact.as_type_ptr();
    // SAFETY: tp is a live type object; two plain fields are read.
    let (Some(new), Some(_)) = (unsafe { (*tp).tp_new }, unsafe { (*tp).tp_init }) else {
        return call_with_loop(exact.as_any(), positional, slf.as_any());
    };
    // The steps and checks are type_call's. SAFETY: tp_new of tp called with tp, a tuple and
    // a dict, all alive for the call; it returns a new reference or NULL with an exception.
    let raw = unsafe { new(tp, args.as_ptr(), kwargs.as_ptr()) };
    // SAFETY: raw is a new reference or NULL (then an exception is set).
    let obj = unsafe { Bound::from_owned_ptr_or_err(py, raw) }?;
    // SAFETY: obj is a live object and tp a live type.
    if unsafe { ffi::PyObject_TypeCheck(obj.as_ptr(), tp) } == 0 {
        return Ok(obj);
    }
    // SAFETY: the type of a live object is live; a plain field is read.
    if let Some(init) = unsafe { (*ffi::Py_TYPE(obj.as_ptr())).tp_init } {
        // SAFETY: tp_init of obj's type called with obj, a tuple and a dict, all alive; it
        // returns 0, or -1 with an exception set.
        if unsafe { init(obj.as_ptr(), args.as_ptr(), kwargs.as_ptr()) } < 0 {
            return Err(PyErr::fetch(py));
        }
    }
    Ok(obj)
}

/// Calls `cls(*positional, loop=loop)` through vectorcall, without building a kwargs dict.
fn call_with_loop<'py>(
    cls: &Bound<'py, PyAny>,
    positional: Option<&Bound<'py, PyAny>>,
    loop_: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    let kwnames = LOOP_KWNAMES
        .get_or_try_init(py, || -> PyResult<_> {
            Ok(PyTuple::new(py, [intern!(py, "loop")])?.unbind())
        })?
        .bind(py);
    // Slot 0 is scratch space vectorcall may use (PY_VECTORCALL_ARGUMENTS_OFFSET).
    let mut argv = [std::ptr::null_mut(); 3];
    let n = match positional {
        Some(p) => {
            argv[1] = p.as_ptr();
            argv[2] = loop_.as_ptr();
            1
        }
        None => {
            argv[1] = loop_.as_ptr();
            0
        }
    };
    // SAFETY: argv[1..] holds n positional and one keyword value, all borrowed and alive for
    // the call; kwnames is a tuple of one str; the result is a new reference or NULL.
    unsafe {
        let res = ffi::PyObject_Vectorcall(
            cls.as_ptr(),
            argv.as_ptr().add(1),
            n | ffi::PY_VECTORCALL_ARGUMENTS_OFFSET,
            kwnames.as_ptr(),
        );
        Bound::from_owned_ptr_or_err(py, res)
    }
}

pub(super) fn create_future<'py>(slf: &Bound<'py, LoopCore>) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let module = FUTURES.import(py, "asyncio", "futures")?;
    let name = intern!(py, "Future");
    let Some(cls) = module_attr(module, name)? else {
        return call_with_loop(&module.getattr(name)?, None, slf.as_any());
    };
    if let Some(exact) = C_FUTURE.get_or_init(py, || c_type(py, "Future")) {
        if cls.is(exact) {
            return construct(exact.bind(py), None, slf);
        }
    }
    call_with_loop(&cls, None, slf.as_any())
}

/// What the keywords of a `create_task` call let the Rust path do.
enum Keywords {
    /// None, or only ones that change nothing (`name=None`, `context=None`, a false
    /// `eager_start`): `Task(coro, loop=self)`.
    Trivial,
    /// Only `name`, `context` (3.11+) and `eager_start` (3.14+), a name or context among them:
    /// the version's method calls `Task(coro, loop=self, **those)` then (3.10-3.13 spell
    /// them out), so the Rust path does the same.
    Forward,
    /// Anything else is asyncio's method's business: unknown names (its TypeError), and a true
    /// `eager_start`, whose first step runs inside the constructor: under asyncio's method
    /// the coroutine's frame then sits on `create_task`'s frame, which
    /// `asyncio.graph.capture_call_graph` (3.14+) takes as the bottom of the task's stack;
    /// called from Rust it would sit on the caller's coroutine frame and the graph would run
    /// on into the caller's stack.
    Python,
}

/// The `create_task` keywords of the running version: `name` (3.8+), `context` (3.11+),
/// `eager_start` (3.14+, base_events.py passes `**kwargs` on to `Task`, whose keywords these
/// are).
fn classify_keywords(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Keywords> {
    let Some(kw) = kwargs else {
        return Ok(Keywords::Trivial);
    };
    let version = py.version_info();
    let mut out = Keywords::Trivial;
    for (k, v) in kw.iter() {
        if k.eq(intern!(py, "name"))? || (version >= (3, 11) && k.eq(intern!(py, "context"))?) {
            if !v.is_none() {
                out = Keywords::Forward;
            }
        } else if version >= (3, 14) && k.eq(intern!(py, "eager_start"))? {
            // Exactly None or False, which is Task's default: any other value may be true (or
            // raise in `bool()`).
            if !(v.is_none() || v.is(PyBool::new(py, false))) {
                return Ok(Keywords::Python);
            }
        } else {
            return Ok(Keywords::Python);
        }
    }
    Ok(out)
}

pub(super) fn create_task<'py>(
    slf: &Bound<'py, LoopCore>,
    coro: &Bound<'py, PyAny>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let this = slf.get();
    this.check_open()?;
    if !this.is_debug() {
        let keywords = classify_keywords(py, kwargs)?;
        let factory = instance_dict(slf.as_any())
            .map(|d| dict_get(&d, intern!(py, "_task_factory")))
            .transpose()?
            .flatten();
        if factory.is_some_and(|f| f.is_none()) {
            let module = TASKS.import(py, "asyncio", "tasks")?;
            let name = intern!(py, "Task");
            let task = match module_attr(module, name)? {
                Some(t) => t,
                None => module.getattr(name)?,
            };
            match (keywords, kwargs) {
                (Keywords::Trivial, _) | (Keywords::Forward, None) => {
                    if let Some(exact) = C_TASK.get_or_init(py, || c_type(py, "Task")) {
                        if task.is(exact) {
                            this.task_init
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                            let r = construct(exact.bind(py), Some(coro), slf);
                            this.task_init
                                .store(false, std::sync::atomic::Ordering::Relaxed);
                            return r;
                        }
                    }
                    return call_with_loop(&task, Some(coro), slf.as_any());
                }
                (Keywords::Forward, Some(kw)) => {
                    let kw = kw.copy()?;
                    kw.set_item(intern!(py, "loop"), slf)?;
                    return task.call((coro,), Some(&kw));
                }
                (Keywords::Python, _) => {}
            }
        }
    }
    let base = BASE_CREATE_TASK.get_or_try_init(py, || -> PyResult<_> {
        Ok(py
            .import("asyncio.base_events")?
            .getattr("BaseEventLoop")?
            .getattr("create_task")?
            .unbind())
    })?;
    base.bind(py).call((slf, coro), kwargs)
}
