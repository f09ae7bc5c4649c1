//! Raw `METH_FASTCALL | METH_KEYWORDS` entry points for the four scheduling methods
//! (`call_soon`, `call_soon_threadsafe`, `call_later`, `call_at`), the calls every asyncio
//! program makes most, a `METH_NOARGS` `get_debug`, which every Future and Task
//! constructor calls, and a `METH_NOARGS` `create_future`.
//!
//! They are `LoopCore`'s only versions of these methods (set on the class by
//! `_install_fast_methods`, which `_loop.py` calls at import; `oxloop.Loop` inherits them), so
//! the arguments of a scheduling call are bound in one place, `bind`. No `#[pymethods]`
//! version exists because of PyO3's generic wrapper: its trampoline and its argument extraction for a `(callback, *args,
//! context=None)` signature cost about 150 of call_soon's ~2,500 instructions (callgrind,
//! benches/callgrind.py call_soon). Here the arguments are read straight from the vector and
//! the `*args` tuple is built once, as CPython's own `def call_soon(self, callback, *args,
//! context=None)` binds them.
//!
//! Invariants: the parameter rules are Python's for those signatures (leading parameters by
//! position or keyword, `context` keyword-only, the same TypeErrors); every path returns a new
//! reference or NULL with an exception set; a Rust panic becomes a Python exception, never an
//! abort.
use std::ffi::CStr;
use std::sync::atomic::AtomicPtr;
use std::sync::atomic::Ordering::Relaxed;

use pyo3::exceptions::{PySystemError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple, PyType};

use super::LoopCore;
use crate::pyutil::{install_method, MethodDef};

/// What one entry point schedules.
#[derive(Clone, Copy)]
enum Kind {
    Soon,
    Threadsafe,
    Later,
    At,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Soon => "call_soon",
            Kind::Threadsafe => "call_soon_threadsafe",
            Kind::Later => "call_later",
            Kind::At => "call_at",
        }
    }

    /// The parameters before `*args`, in order.
    fn leading(self) -> &'static [&'static str] {
        match self {
            Kind::Soon | Kind::Threadsafe => &["callback"],
            Kind::Later => &["delay", "callback"],
            Kind::At => &["when", "callback"],
        }
    }
}

/// The bound arguments: the leading parameters (borrowed), `*args` (new tuple), `context`.
struct Bound3<'py> {
    lead: [Option<Bound<'py, PyAny>>; 2],
    args: Bound<'py, PyTuple>,
    context: Option<Bound<'py, PyAny>>,
}

/// Binds a vectorcall argument vector to `(lead..., *args, context=None)` as Python would.
///
/// # Safety
/// `args` points at `nargs` positional values followed by one value per name in `kwnames`
/// (a tuple of str, or NULL), all alive for the call, as the vectorcall protocol guarantees.
unsafe fn bind<'py>(
    py: Python<'py>,
    kind: Kind,
    args: *const *mut ffi::PyObject,
    nargs: usize,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Bound3<'py>> {
    let names = kind.leading();
    // The usual calls: `call_soon(cb, *args)`, and `call_soon(cb, context=ctx)` as asyncio's
    // C Task makes for every step (a pointer compare decides, see `only_context`).
    // SAFETY: kwnames is NULL or a tuple of str (contract).
    let only_context = !kwnames.is_null() && unsafe { only_context(py, kwnames) };
    if (kwnames.is_null() || only_context) && nargs >= names.len() {
        // SAFETY: the first names.len() <= nargs entries are live borrowed arguments, and the
        // context value (if any) follows the positional ones.
        let lead = unsafe {
            [
                Some(Bound::from_borrowed_ptr(py, *args)),
                (names.len() > 1).then(|| Bound::from_borrowed_ptr(py, *args.add(1))),
            ]
        };
        return Ok(Bound3 {
            lead,
            // SAFETY: as above; the rest of the vector holds the `*args` values.
            args: unsafe { rest_tuple(py, args.add(names.len()), nargs - names.len()) }?,
            // SAFETY: with only_context the vector holds one keyword value after nargs.
            context: only_context
                .then(|| unsafe { Bound::from_borrowed_ptr(py, *args.add(nargs)) }),
        });
    }
    // SAFETY: as this function's contract.
    unsafe { bind_general(py, kind, args, nargs, kwnames) }
}

/// [`bind`] for every other call (keywords, missing arguments, errors): out of line, so the
/// usual calls' code stays a few cache lines (the interpreter's own code evicts it between
/// two calls; benches/callgrind.py --cache counts the I1 misses).
///
/// # Safety
/// As [`bind`].
#[cold]
#[inline(never)]
unsafe fn bind_general<'py>(
    py: Python<'py>,
    kind: Kind,
    args: *const *mut ffi::PyObject,
    nargs: usize,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Bound3<'py>> {
    let names = kind.leading();
    let mut lead: [Option<Bound<'py, PyAny>>; 2] = [None, None];
    let npos = nargs.min(names.len());
    for (i, slot) in lead.iter_mut().enumerate().take(npos) {
        // SAFETY: i < nargs, inside the vector (contract).
        *slot = Some(unsafe { Bound::from_borrowed_ptr(py, *args.add(i)) });
    }
    let mut context = None;
    if !kwnames.is_null() {
        // SAFETY: kwnames is a tuple of str (contract).
        let kw = unsafe { Bound::from_borrowed_ptr(py, kwnames).cast_into_unchecked::<PyTuple>() };
        for (j, name) in kw.iter().enumerate() {
            // SAFETY: keyword values follow the positional ones (contract).
            let value = unsafe { Bound::from_borrowed_ptr(py, *args.add(nargs + j)) };
            let name = name.cast_into::<PyString>()?;
            let name = name.to_str()?;
            if name == "context" {
                context = Some(value);
                continue;
            }
            match names.iter().position(|n| *n == name) {
                Some(i) if lead[i].is_some() => {
                    return Err(PyTypeError::new_err(format!(
                        "{}() got multiple values for argument '{name}'",
                        kind.name()
                    )));
                }
                Some(i) => lead[i] = Some(value),
                None => {
                    return Err(PyTypeError::new_err(format!(
                        "{}() got an unexpected keyword argument '{name}'",
                        kind.name()
                    )));
                }
            }
        }
    }
    let missing: Vec<&str> = names
        .iter()
        .zip(&lead)
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(" and ");
        let s = if missing.len() == 1 { "" } else { "s" };
        return Err(PyTypeError::new_err(format!(
            "{}() missing {} required positional argument{s}: {list}",
            kind.name(),
            missing.len()
        )));
    }
    let rest = nargs.saturating_sub(names.len());
    Ok(Bound3 {
        lead,
        // SAFETY: when rest > 0 every leading parameter was bound positionally, so the
        // `*args` values follow them in the vector.
        args: unsafe { rest_tuple(py, args.add(nargs - rest), rest) }?,
        context,
    })
}

/// A keyword-name tuple `("context",)` whose string is not the interned "context": asyncio's
/// C Task and Future (3.11, 3.12) build theirs once with Py_BuildValue, which does not intern,
/// and pass it to every `call_soon(step, context=ctx)` (each task step, each done callback).
/// Remembering that tuple turns the character compare into a pointer compare (40 of ~8,000
/// instructions per task step, benches/callgrind.py tasks_sleep0). It holds a strong
/// reference, never released (one small tuple), so its address cannot be reused by another
/// object; tuples are immutable, so it cannot stop being `("context",)`.
static CONTEXT_KWNAMES: AtomicPtr<ffi::PyObject> = AtomicPtr::new(std::ptr::null_mut());

/// Whether `kwnames` (a tuple of str) is exactly `("context",)`.
///
/// # Safety
/// `kwnames` is a live tuple of str.
#[inline(always)]
unsafe fn only_context(py: Python<'_>, kwnames: *mut ffi::PyObject) -> bool {
    if kwnames == CONTEXT_KWNAMES.load(Relaxed) {
        return true;
    }
    // SAFETY: kwnames is a live tuple (contract).
    if unsafe { ffi::PyTuple_GET_SIZE(kwnames) } != 1 {
        return false;
    }
    // SAFETY: as above; item 0 exists.
    let name = unsafe { ffi::PyTuple_GET_ITEM(kwnames, 0) };
    name == pyo3::intern!(py, "context").as_ptr() || unsafe { context_by_chars(kwnames, name) }
}

/// The keyword name is not the interned "context": compare the characters, and remember the
/// tuple when they match (`CONTEXT_KWNAMES`).
///
/// # Safety
/// `kwnames` is a live 1-tuple of str and `name` its item.
#[cold]
#[inline(never)]
unsafe fn context_by_chars(kwnames: *mut ffi::PyObject, name: *mut ffi::PyObject) -> bool {
    // SAFETY: name is a live str (vectorcall keyword names are str).
    if unsafe { ffi::PyUnicode_CompareWithASCIIString(name, c"context".as_ptr()) } != 0 {
        return false;
    }
    // SAFETY: kwnames is live and the GIL is held (this function's contract); only a tuple
    // is remembered.
    unsafe {
        if ffi::PyTuple_CheckExact(kwnames) != 0 {
            remember(&CONTEXT_KWNAMES, kwnames);
        }
    }
    true
}

/// Stores a new strong reference to `kwnames` in `cache` if it is still empty (never released:
/// one small tuple, whose address then cannot be reused by another object).
///
/// # Safety
/// `kwnames` is a live object and the GIL is held.
unsafe fn remember(cache: &AtomicPtr<ffi::PyObject>, kwnames: *mut ffi::PyObject) {
    // SAFETY: as the contract says; the reference is released only if another thread filled
    // the cache first.
    unsafe {
        ffi::Py_INCREF(kwnames);
        if cache
            .compare_exchange(std::ptr::null_mut(), kwnames, Relaxed, Relaxed)
            .is_err()
        {
            ffi::Py_DECREF(kwnames);
        }
    }
}

/// The keyword-name tuple `("context",)` that asyncio's C module passes to every
/// `call_soon(callback[, arg], context=ctx)` it makes: the one tuple of its `call_soon` helper
/// (Modules/_asynciomodule.c, a module global in 3.10-3.11, `state->context_kwname` in
/// 3.12-3.15), made once with Py_BuildValue. That helper returns an int: it drops the handle
/// as soon as `call_soon` returns it, for each of its callers (a Task's step, a Future's done
/// callbacks, a callback added to a Future already done). Python code cannot pass this tuple:
/// the interpreter passes keyword names from the calling code's constants, or a tuple it builds
/// for `**kwargs`. So a call that comes with it is asyncio's own, and nobody sees what it
/// returns (`LoopCore::schedule_unseen` then queues no Handle; where it declines, the call is
/// bound and scheduled as any other). Learnt once, by
/// [`learn_asyncio_kwnames`] (the `asyncio_call_soon` contract entry: it stays NULL when that
/// fails or is forced off); a strong reference keeps its address from being reused.
static ASYNCIO_KWNAMES: AtomicPtr<ffi::PyObject> = AtomicPtr::new(std::ptr::null_mut());

/// Whether `kwnames` is [`ASYNCIO_KWNAMES`] (never true before it is learnt: NULL is no
/// keyword).
#[inline(always)]
fn from_asyncio_c(kwnames: *mut ffi::PyObject) -> bool {
    !kwnames.is_null() && kwnames == ASYNCIO_KWNAMES.load(Relaxed)
}

/// The probe's `call_soon`: records the keyword-name tuple of a `(callback, future,
/// context=ctx)` call, and returns None (the C caller drops it).
unsafe extern "C" fn record_kwnames(
    _slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let _ = args;
    // SAFETY: CPython calls this through the function made in `learn_asyncio_kwnames`, with
    // the GIL held and the vectorcall arguments of the protocol; kwnames is NULL or a live
    // tuple of str, only read here, and the stored reference is a new one.
    unsafe {
        let nargs = ffi::PyVectorcall_NARGS(nargsf as usize);
        if nargs == 2
            && !kwnames.is_null()
            && ffi::PyTuple_CheckExact(kwnames) != 0
            && ffi::PyTuple_GET_SIZE(kwnames) == 1
            && ffi::PyUnicode_CompareWithASCIIString(
                ffi::PyTuple_GET_ITEM(kwnames, 0),
                c"context".as_ptr(),
            ) == 0
        {
            remember(&ASYNCIO_KWNAMES, kwnames);
        }
        let none = ffi::Py_None();
        ffi::Py_INCREF(none);
        none
    }
}

static RECORD_KWNAMES: MethodDef = def(
    c"call_soon",
    record_kwnames,
    c"call_soon(callback, *args, context=None)\n--\n\nThe _asyncio probe's recorder.",
);

/// Learns [`ASYNCIO_KWNAMES`]: an `_asyncio.Future` whose loop is a namespace with
/// `get_debug` and the recording `call_soon` gets a done callback and a result, so its
/// `future_schedule_callbacks` calls the helper once. False (and the Handles asyncio would
/// queue) where `_asyncio` is missing or made no such call.
pub(crate) fn learn_asyncio_kwnames(py: Python<'_>) -> PyResult<bool> {
    if !ASYNCIO_KWNAMES.load(Relaxed).is_null() {
        return Ok(true);
    }
    let Ok(asyncio_c) = py.import("_asyncio") else {
        return Ok(false);
    };
    // SAFETY: RECORD_KWNAMES has a 'static address; PyCFunction_NewEx returns a new
    // reference or NULL with an error set.
    let recorder = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyCFunction_NewEx(
                &RECORD_KWNAMES.0 as *const ffi::PyMethodDef as *mut ffi::PyMethodDef,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ),
        )?
    };
    let builtins = py.import("builtins")?;
    let kw = pyo3::types::PyDict::new(py);
    kw.set_item("get_debug", builtins.getattr("bool")?)?;
    kw.set_item("call_soon", recorder)?;
    let fake_loop = py
        .import("types")?
        .getattr("SimpleNamespace")?
        .call((), Some(&kw))?;
    let fkw = pyo3::types::PyDict::new(py);
    fkw.set_item("loop", fake_loop)?;
    let fut = asyncio_c.getattr("Future")?.call((), Some(&fkw))?;
    fut.call_method1("add_done_callback", (builtins.getattr("len")?,))?;
    fut.call_method1("set_result", (py.None(),))?;
    Ok(!ASYNCIO_KWNAMES.load(Relaxed).is_null())
}

/// A new tuple of the `n` objects at `items`.
///
/// # Safety
/// `items` points at `n` live objects (borrowed).
unsafe fn rest_tuple<'py>(
    py: Python<'py>,
    items: *const *mut ffi::PyObject,
    n: usize,
) -> PyResult<Bound<'py, PyTuple>> {
    // SAFETY: PyTuple_New returns a new tuple (or NULL with an error set); each item is a
    // live object (contract) given a new reference that the tuple then owns.
    unsafe {
        let t = ffi::PyTuple_New(n as ffi::Py_ssize_t);
        if t.is_null() {
            return Err(PyErr::fetch(py));
        }
        for i in 0..n {
            let item = *items.add(i);
            ffi::Py_INCREF(item);
            ffi::PyTuple_SET_ITEM(t, i as ffi::Py_ssize_t, item);
        }
        Ok(Bound::from_owned_ptr(py, t).cast_into_unchecked::<PyTuple>())
    }
}

fn dispatch<'py>(
    slf: &Bound<'py, LoopCore>,
    kind: Kind,
    b: Bound3<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    let Bound3 {
        lead: [first, second],
        args,
        context,
    } = b;
    let context = context.as_ref();
    let missing = || PySystemError::new_err("argument binding failed");
    match kind {
        Kind::Soon | Kind::Threadsafe => {
            let callback = first.ok_or_else(missing)?;
            LoopCore::schedule_soon(
                slf,
                &callback,
                &args,
                context,
                matches!(kind, Kind::Threadsafe),
            )
        }
        Kind::Later => {
            let (delay, callback) = (first.ok_or_else(missing)?, second.ok_or_else(missing)?);
            let when = LoopCore::when_after(slf, &delay)?;
            LoopCore::schedule_at(slf, &when, &callback, &args, context)
        }
        Kind::At => {
            let (when, callback) = (first.ok_or_else(missing)?, second.ok_or_else(missing)?);
            LoopCore::schedule_at(slf, &when, &callback, &args, context)
        }
    }
}

/// The shared body of the entry points. (Inlined into each, with `kind` a constant, it cost
/// call_soon 7% more CPU time for 1% fewer instructions: code layout; see benches/README.md.)
///
/// # Safety
/// Called by CPython's method descriptor with the GIL held, `slf` an instance of `LoopCore`
/// (the descriptor checks the type) and the vectorcall arguments as in [`bind`].
unsafe fn entry(
    kind: Kind,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: the GIL is held for the whole call (contract).
    let py = unsafe { Python::assume_attached() };
    let run = || -> PyResult<*mut ffi::PyObject> {
        // SAFETY: slf is a live LoopCore instance, borrowed for the call (contract).
        let slf = unsafe { Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<LoopCore>() };
        // SAFETY: arguments as the contract states.
        let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf as usize) } as usize;
        if matches!(kind, Kind::Soon) && (nargs == 1 || nargs == 2) && from_asyncio_c(kwnames) {
            // SAFETY: the vector holds nargs positional values, then the one keyword value
            // (kwnames is `("context",)`), all live for the call.
            let (cb, arg, ctx) = unsafe {
                (
                    Bound::from_borrowed_ptr(py, *args),
                    (nargs == 2).then(|| Bound::from_borrowed_ptr(py, *args.add(1))),
                    Bound::from_borrowed_ptr(py, *args.add(nargs)),
                )
            };
            if let Some(r) = LoopCore::schedule_unseen(&slf, &cb, arg.as_ref(), &ctx) {
                return Ok(r?.into_ptr());
            }
        }
        // SAFETY: as above.
        let bound = unsafe { bind(py, kind, args, nargs, kwnames) }?;
        Ok(dispatch(&slf, kind, bound)?.into_ptr())
    };
    crate::pyutil::c_return(py, kind.name(), run)
}

macro_rules! entry_point {
    ($fn:ident, $kind:expr) => {
        unsafe extern "C" fn $fn(
            slf: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargsf: ffi::Py_ssize_t,
            kwnames: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject {
            // SAFETY: CPython calls this through the method descriptor made in `install`,
            // which is exactly `entry`'s contract.
            unsafe { entry($kind, slf, args, nargsf, kwnames) }
        }
    };
}

entry_point!(call_soon_fast, Kind::Soon);
entry_point!(call_soon_threadsafe_fast, Kind::Threadsafe);
entry_point!(call_later_fast, Kind::Later);
entry_point!(call_at_fast, Kind::At);

const fn def(
    name: &'static CStr,
    meth: ffi::PyCFunctionFastWithKeywords,
    doc: &'static CStr,
) -> MethodDef {
    MethodDef(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFastWithKeywords: meth,
        },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr(),
    })
}

/// `get_debug()`: asyncio's C Future and Task call it on their loop in every constructor, so
/// each `create_future`, `create_task` and `sleep` pays for it.
unsafe extern "C" fn get_debug_fast(
    slf: *mut ffi::PyObject,
    _noargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls this through the method descriptor made in `install`, with the
    // GIL held and `slf` a live LoopCore instance (the descriptor checks the type).
    unsafe {
        let py = Python::assume_attached();
        let slf = Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<LoopCore>();
        let v = if slf.get().is_debug() {
            ffi::Py_True()
        } else {
            ffi::Py_False()
        };
        ffi::Py_INCREF(v);
        v
    }
}

/// `create_future()`: `futures.Future(loop=self)` (factories.rs). A raw `METH_NOARGS` method
/// rather than a `#[pymethods]` one: PyO3's trampoline was ~60 of the `future` row's
/// instructions per future (callgrind, benches/callgrind.py future).
unsafe extern "C" fn create_future_fast(
    slf: *mut ffi::PyObject,
    _noargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: the GIL is held (CPython calls this through the method descriptor made in
    // `install`, which checks that `slf` is a live LoopCore instance).
    let py = unsafe { Python::assume_attached() };
    let run = || -> PyResult<*mut ffi::PyObject> {
        // SAFETY: as above; slf is borrowed for the call.
        let slf = unsafe { Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<LoopCore>() };
        Ok(super::factories::create_future(&slf)?.into_ptr())
    };
    crate::pyutil::c_return(py, "create_future", run)
}

static DEFS: [MethodDef; 6] = [
    MethodDef(ffi::PyMethodDef {
        ml_name: c"create_future".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunction: create_future_fast,
        },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"create_future($self, /)\n--\n\nCreate a Future object attached to the loop.".as_ptr(),
    }),
    MethodDef(ffi::PyMethodDef {
        ml_name: c"get_debug".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunction: get_debug_fast,
        },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"get_debug($self, /)\n--\n\nTrue if the loop runs in debug mode.".as_ptr(),
    }),
    def(
        c"call_soon",
        call_soon_fast,
        c"call_soon($self, callback, *args, context=None)\n--\n\nArrange for a callback to be called as soon as possible.",
    ),
    def(
        c"call_soon_threadsafe",
        call_soon_threadsafe_fast,
        c"call_soon_threadsafe($self, callback, *args, context=None)\n--\n\nLike call_soon(), but thread-safe.",
    ),
    def(
        c"call_later",
        call_later_fast,
        c"call_later($self, delay, callback, *args, context=None)\n--\n\nArrange for a callback to be called at a given time.",
    ),
    def(
        c"call_at",
        call_at_fast,
        c"call_at($self, when, callback, *args, context=None)\n--\n\nLike call_later(), but uses an absolute time.",
    ),
];

/// The loop class whose Python methods the native `sock_*` paths stand for (`oxloop.Loop`),
/// recorded by `_install_fast_methods` (src/sock.rs reads it; the core names no handler).
pub(crate) static LOOP_CLASS: pyo3::sync::PyOnceLock<Py<PyType>> = pyo3::sync::PyOnceLock::new();

/// The loop class's `_ensure_fd_no_transport` as it was when the class was registered: what
/// `LoopCore::io_patched` compares the class's with.
pub(crate) static LOOP_ENSURE_FD: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

/// `_install_fast_methods(cls)`: sets the four scheduling methods, `get_debug` and
/// `create_future` on
/// `LoopCore` (from which `cls`, a subclass, inherits them) as method descriptors of the raw
/// entry points above, and records `cls` as the loop class of the sock_* fast paths
/// (src/sock.rs). Calling it again sets the same methods again.
#[pyfunction]
pub fn _install_fast_methods(cls: &Bound<'_, PyType>) -> PyResult<()> {
    let py = cls.py();
    let core = py.get_type::<LoopCore>();
    if !cls.is_subclass(&core)? {
        return Err(PyTypeError::new_err("expected a subclass of LoopCore"));
    }
    for d in &DEFS {
        install_method(&core, &core, d)?;
    }
    // The sock_* fast paths bypass this class's Python methods only on exact instances.
    let _ = LOOP_CLASS.set(py, cls.clone().unbind());
    if let Ok(f) = cls.getattr(pyo3::intern!(py, "_ensure_fd_no_transport")) {
        let _ = LOOP_ENSURE_FD.set(py, f.unbind());
    }
    // The `asyncio_call_soon` contract entry: a probe that fails (an error, or no such call)
    // leaves every call_soon with a Handle but for the steps and wakeups recognised otherwise.
    crate::cpython::check(crate::cpython::Entry::AsyncioCallSoon, || {
        learn_asyncio_kwnames(py).unwrap_or(false)
    });
    Ok(())
}
