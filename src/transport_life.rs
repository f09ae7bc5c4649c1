//! The reader's registration and the end of a plain stream transport in Rust: what asyncio's
//! `_SelectorTransport._add_reader` (scheduled by the native set-up as `_start_reading`,
//! python/oxloop/_transports.py), `_SelectorSocketTransport._read_ready__on_eof` and `close`
//! do for an exact `_SocketTransport` on an exact `oxloop.Loop`.
//!
//! A churning server (benches/net_callgrind.sh churn-protocol) ran four Python frames per
//! connection here besides the protocol's own: `_start_reading`, `_read_ready__on_eof`,
//! `close` (two on 3.12+), each calling the loop's `_add_reader` / `_remove_reader` /
//! `_remove_writer` through their Python-level argument parsing, and `close` scheduled
//! `_call_connection_lost` with a Handle nobody sees. Here the same statements run in the same
//! order, with the loop's own Rust methods, and that callback is queued without a Handle
//! (`LoopCore::call_soon_dropped`).
//!
//! Invariants:
//! - Registered ([`_set_transport_life`]) only where `_transports.py` found the running
//!   asyncio's functions equal, bytecode for bytecode, to its reference sources, and only with
//!   the native set-up (whose slot offsets [`Setup::get`] and [`Setup::set`] use).
//! - Each method asyncio's code calls on the transport or the loop runs here only while it
//!   resolves, on that object, to the verified function (`get_method`: the class's, no
//!   instance attribute shadowing it), or, for the loop, to `LoopCore`'s own method; the super
//!   call of 3.12+'s `close` only while `_SelectorTransport.close` is the verified one
//!   ([`ClassGuard`]). Otherwise that call goes through Python by name, as asyncio's does.
//! - Attributes are read again after every call into Python (the protocol's `eof_received`
//!   may close, abort or patch), as the Python code reads them.
//! - Debug mode takes the Python path: `_read_ready__on_eof` logs there.
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyTuple};

use crate::cpython::{self, Entry};
use crate::guard::ClassGuard;
use crate::loop_core::LoopCore;
use crate::sys::epoll::{READABLE, WRITABLE};
use crate::transport_setup::{Setup, F, SETUP};

/// What `_transports.py` verified, registered once at its import.
struct Life {
    /// The Python `_start_reading`, for every case [`_start_reading`] leaves to it.
    start_reading: Py<PyAny>,
    /// `_oxloop._start_reading` ([`_start_reading`]), which the native set-up schedules.
    native: Py<PyAny>,
    /// `_SelectorTransport.is_reading` and `is_closing` (3.11+, whose `_add_reader` asks
    /// `self.is_reading()`); `None`: 3.10's `_add_reader`, which reads `_closing` only.
    is_reading: Option<(Py<PyAny>, Py<PyAny>)>,
    /// The end-of-stream path, where it is verified.
    eof: Option<Eof>,
}

struct Eof {
    /// `_SelectorSocketTransport._read_ready__on_eof`.
    on_eof: Py<PyAny>,
    /// What `transport.close` resolves to: 3.12+'s `_SelectorSocketTransport.close`, else
    /// `_SelectorTransport.close`.
    close: Py<PyAny>,
    /// `_SelectorTransport.close` still the verified one (3.12+'s `super().close()`).
    selector_close: Py<ClassGuard>,
    /// `close` first clears `_read_ready_cb` (3.12+) and `_write_ready` (3.12, 3.13).
    clear_read_cb: bool,
    clear_write_ready: bool,
}

static LIFE: PyOnceLock<Life> = PyOnceLock::new();

/// `_set_transport_life(native, start_reading, is_reading, is_closing, on_eof, close,
/// selector_close, *, clear_read_cb, clear_write_ready)`: the verified pieces (see the
/// module's invariants); `is_reading`/`is_closing` None for 3.10's `_add_reader`, `on_eof`
/// None where the end-of-stream path is not verified. Whether it took them: the native set-up
/// and the `get_method` contract are needed.
#[pyfunction]
#[pyo3(signature = (
    native, start_reading, is_reading, is_closing, on_eof, close, selector_close, *,
    clear_read_cb, clear_write_ready
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn _set_transport_life(
    native: Bound<'_, PyAny>,
    start_reading: Bound<'_, PyAny>,
    is_reading: Option<Bound<'_, PyAny>>,
    is_closing: Option<Bound<'_, PyAny>>,
    on_eof: Option<Bound<'_, PyAny>>,
    close: Option<Bound<'_, PyAny>>,
    selector_close: Bound<'_, ClassGuard>,
    clear_read_cb: bool,
    clear_write_ready: bool,
) -> PyResult<bool> {
    let py = start_reading.py();
    if SETUP.get(py).is_none()
        || !cpython::check(Entry::GetMethod, || {
            cpython::method::probe(py).unwrap_or(false)
        })
    {
        return Ok(false);
    }
    let eof = match (on_eof, close) {
        (Some(on_eof), Some(close)) => Some(Eof {
            on_eof: on_eof.unbind(),
            close: close.unbind(),
            selector_close: selector_close.unbind(),
            clear_read_cb,
            clear_write_ready,
        }),
        _ => None,
    };
    let life = Life {
        start_reading: start_reading.unbind(),
        native: native.unbind(),
        is_reading: is_reading
            .zip(is_closing)
            .map(|(r, c)| (r.unbind(), c.unbind())),
        eof,
    };
    // Imported again (importlib.reload, say): the first one stays.
    drop(LIFE.set(py, life));
    Ok(true)
}

/// What the native set-up schedules to register the reader: [`_start_reading`] once
/// registered, else `fallback` (the Python `_start_reading`).
pub(crate) fn start_reading_callback<'py>(
    py: Python<'py>,
    fallback: &Bound<'py, PyAny>,
) -> Bound<'py, PyAny> {
    LIFE.get(py)
        .map_or_else(|| fallback.clone(), |l| l.native.bind(py).clone())
}

/// Whether `obj.name` resolves to `expected`: the class's function, not shadowed on the
/// instance (`_PyObject_GetMethod`, the `get_method` contract).
fn resolves_to(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>, expected: &Py<PyAny>) -> bool {
    cpython::method::get_method(obj, name).is_some_and(|(found, m)| found && m.is(expected))
}

/// The loop methods asyncio's transport code calls on `self._loop` that this module runs
/// itself.
#[derive(Clone, Copy)]
enum LoopMethod {
    RemoveReader,
    RemoveWriter,
}

impl LoopMethod {
    /// The method's name, interned once.
    fn name<'py>(self, py: Python<'py>) -> &'py Bound<'py, PyString> {
        match self {
            LoopMethod::RemoveReader => intern!(py, "_remove_reader"),
            LoopMethod::RemoveWriter => intern!(py, "_remove_writer"),
        }
    }
}

/// `lp` as the core whose own methods `lp.get_debug`, `lp._add_reader`, `lp._remove_reader`
/// and `lp._remove_writer` are: an exact `oxloop.Loop` outside debug mode
/// (`sock::fast_loop`) on which none of them is patched (`LoopCore::io_patched`).
fn core_for<'a, 'py>(lp: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, LoopCore>> {
    crate::sock::fast_loop(lp).filter(|core| !LoopCore::io_patched(core))
}

/// `lp._remove_reader(fd)` or `lp._remove_writer(fd)`: the core's own where it is that,
/// else called by name.
fn loop_remove(lp: &Bound<'_, PyAny>, fd: &Bound<'_, PyAny>, m: LoopMethod) -> PyResult<()> {
    if let Some(core) = core_for(lp) {
        let mask = if matches!(m, LoopMethod::RemoveWriter) {
            WRITABLE
        } else {
            READABLE
        };
        return LoopCore::remove_io(core, fd, mask).map(drop);
    }
    lp.call_method1(m.name(lp.py()), (fd,)).map(drop)
}

/// `_start_reading(transport, fd, reader)`, the callback the native set-up schedules: what the
/// Python `_start_reading` does (asyncio's `self._add_reader(fd, reader)`: registers the
/// reader unless the transport is closing or, 3.11+, paused), with the loop's own
/// `_add_reader`; the Python function for anything else.
#[pyfunction]
pub(crate) fn _start_reading(
    t: &Bound<'_, PyAny>,
    fd: &Bound<'_, PyAny>,
    reader: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = t.py();
    let Some(life) = LIFE.get(py) else {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "oxloop: _start_reading before registration",
        ));
    };
    if let Some(s) = SETUP.get(py).filter(|s| s.is_exact(t)) {
        let verified = match &life.is_reading {
            // `self.is_reading()` as the verified pair: `not self._closing and not self._paused`.
            Some((is_reading, is_closing)) => {
                resolves_to(t, intern!(py, "is_reading"), is_reading)
                    && resolves_to(t, intern!(py, "is_closing"), is_closing)
            }
            None => true,
        };
        if verified {
            if s.get(t, F::Closing)?.is_truthy()?
                || (life.is_reading.is_some() && s.get(t, F::Paused)?.is_truthy()?)
            {
                return Ok(());
            }
            let lp = s.get(t, F::Loop)?;
            if let Some(core) = core_for(&lp) {
                return LoopCore::add_io(core, fd, reader, &PyTuple::empty(py), READABLE, None)
                    .map(drop);
            }
        }
    }
    life.start_reading.bind(py).call1((t, fd, reader)).map(drop)
}

/// `t._read_ready__on_eof()`, the native reader's end of stream (src/transport.rs): natively
/// where it is the verified one on an exact `_SocketTransport` whose loop is an exact
/// `oxloop.Loop` outside debug mode, by name otherwise.
pub(crate) fn on_eof(t: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = t.py();
    if let (Some(life), Some(s)) = (LIFE.get(py), SETUP.get(py)) {
        if let Some(eof) = &life.eof {
            if s.is_exact(t) && resolves_to(t, intern!(py, "_read_ready__on_eof"), &eof.on_eof) {
                let lp = s.get(t, F::Loop)?;
                // `if self._loop.get_debug(): logger.debug(...)`: a loop outside debug mode
                // whose `get_debug` is the core's.
                if core_for(&lp).is_some() {
                    return eof_body(s, eof, t);
                }
            }
        }
    }
    t.call_method0(intern!(py, "_read_ready__on_eof")).map(drop)
}

/// `_read_ready__on_eof` after its debug test.
fn eof_body(s: &Setup, eof: &Eof, t: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = t.py();
    let keep_open = match s
        .get(t, F::Protocol)
        .and_then(|p| p.call_method0(intern!(py, "eof_received")))
    {
        Ok(v) => v,
        Err(e) => {
            return crate::transport::fatal(
                t,
                e,
                "Fatal error: protocol.eof_received() call failed.",
            )
        }
    };
    if keep_open.is_truthy()? {
        return loop_remove(
            &s.get(t, F::Loop)?,
            &s.get(t, F::SockFd)?,
            LoopMethod::RemoveReader,
        );
    }
    if !resolves_to(t, intern!(py, "close"), &eof.close) {
        return t.call_method0(intern!(py, "close")).map(drop);
    }
    close(s, eof, t)
}

/// `self.close()`: 3.12+'s `_SelectorSocketTransport.close` (its clearing, then
/// `super().close()`) and `_SelectorTransport.close`.
fn close(s: &Setup, eof: &Eof, t: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = t.py();
    let none = || py.None().into_bound(py);
    if eof.clear_read_cb {
        s.set(t, F::ReadReadyCb, none())?;
    }
    if eof.clear_write_ready {
        s.set(t, F::WriteReady, none())?;
    }
    if eof.clear_read_cb && !eof.selector_close.get().holds(py) {
        // `super().close()` is another function now.
        let selector = py
            .import(intern!(py, "asyncio.selector_events"))?
            .getattr(intern!(py, "_SelectorTransport"))?;
        return selector
            .getattr(intern!(py, "close"))?
            .call1((t,))
            .map(drop);
    }
    if s.get(t, F::Closing)?.is_truthy()? {
        return Ok(());
    }
    s.set(
        t,
        F::Closing,
        pyo3::types::PyBool::new(py, true).to_owned().into_any(),
    )?;
    loop_remove(
        &s.get(t, F::Loop)?,
        &s.get(t, F::SockFd)?,
        LoopMethod::RemoveReader,
    )?;
    if s.get(t, F::Buffer)?.is_truthy()? {
        return Ok(());
    }
    // `self._conn_lost += 1`
    let lost = s.get(t, F::ConnLost)?;
    let one = 1i32.into_pyobject(py)?;
    // SAFETY: both operands are live; the result is a new reference or NULL with an error set.
    let lost = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyNumber_InPlaceAdd(lost.as_ptr(), one.as_ptr()))?
    };
    s.set(t, F::ConnLost, lost)?;
    let lp = s.get(t, F::Loop)?;
    loop_remove(&lp, &s.get(t, F::SockFd)?, LoopMethod::RemoveWriter)?;
    // `self._loop.call_soon(self._call_connection_lost, None)`, whose Handle `close` drops.
    let lp = s.get(t, F::Loop)?;
    let callback = t.getattr(intern!(py, "_call_connection_lost"))?;
    let args = PyTuple::new(py, [none()])?;
    if let Some(done) = crate::sock::fast_loop(&lp)
        .and_then(|core| LoopCore::call_soon_dropped(core, &callback, &args))
    {
        return done;
    }
    lp.call_method1(intern!(py, "call_soon"), (callback, none()))
        .map(drop)
}
