//! Native fast paths of the loop's `sock_recv`, `sock_recv_into` and `sock_sendall`
//! (`Loop` in `python/oxloop/_loop.py`).
//!
//! asyncio's versions (`BaseSelectorEventLoop` in selector_events.py, the same code on
//! 3.10-3.13) first call `sock.recv(n)`, which raises and catches a `BlockingIOError` whenever
//! nothing is there yet and allocates an `n`-byte bytes object each time (256 KiB is past
//! glibc's mmap threshold: an mmap, an mremap and an munmap per call); then they build a future,
//! check that no transport owns the fd, register a reader handle whose callback calls
//! `sock.recv` again, and add a `functools.partial` done callback that removes it. Here one
//! call ([`sock_recv`], [`sock_recv_into`], [`sock_sendall`]) does the first attempt and, when
//! it would block, all of that setup:
//! - the syscall, with a receive going into the thread's 256 KiB buffer shared with the
//!   transports (`transport::recv_bytes`) and only what arrived copied out;
//! - when it would block: `self.create_future()`, `self._ensure_fd_no_transport(fd)` and
//!   `self._add_reader(fd, waiter)` (or `_add_writer`) in that order, and it returns
//!   `(future, handle, fd)`; the Python side awaits the future and, on cancellation, does what
//!   `_sock_read_done` / `_sock_write_done` do;
//! - [`SockWaiter`] is the registered callback: one syscall per readiness event, then the
//!   future is resolved and the registration dropped (`self.remove_reader(fd)` of
//!   `_sock_read_done`), as `_sock_recv` / `_sock_sendall` and the done callback do together.
//!   The loop calls it directly, not through `tp_call`.
//!
//! Invariants:
//! - Only what asyncio's code would do with the same outcome is done here. Every entry point
//!   returns `NotImplemented` *before any syscall* for anything outside the common case (a
//!   loop that is not exactly `oxloop.Loop`, whose methods these steps stand for, or is in
//!   debug mode; a socket that is not exactly `socket.socket`, so no overridden `recv`/`send`
//!   and no `ssl.SSLSocket`; a socket with a timeout, on which `sock.recv` would wait; an
//!   argument of another type or out of range; a buffer that is not one contiguous run of
//!   bytes), and the caller then runs asyncio's own method, which gives that case its exact
//!   results and exceptions.
//! - The Python-level steps are skipped only where their outcome is known: the transport
//!   check reads `self._transports` as `Loop._ensure_fd_no_transport` does and calls that
//!   method whenever the fd has an entry at all (or the registry is not a plain
//!   `WeakValueDictionary`); the waiter's removal does the same with `remove_reader` /
//!   `remove_writer`, and cancels the handle as `Handle.cancel` does (its own `cancel()` in
//!   debug mode).
//! - Syscall errors become the `OSError` subclass `socket` would raise (same errno, same
//!   message); EINTR runs the signal handlers and retries, as the socket module does (PEP 475).
//! - The fd and the timeout are read from the socket at every attempt, as `sock.recv` reads
//!   them, so a socket closed meanwhile gives EBADF, not a read from a reused fd number. They
//!   are read from the socket object's C struct (what `sock.recv` itself reads) when a probe
//!   at first use confirmed its layout (the `socket_head` entry of `crate::cpython`), else
//!   through `fileno()` and `gettimeout()`.
use std::ffi::c_void;
use std::io;

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyInt, PyMemoryView, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use crate::cpython::{self, Entry};
use crate::errors::os_error;
use crate::loop_core::LoopCore;
use crate::pyutil::{dict_get, instance_dict};
use crate::sys::epoll::{READABLE, WRITABLE};
use crate::transport::{recv_bytes, recv_into, DEFAULT_MAX_SIZE};

/// `socket.socket`, the only socket class the fast paths take (its `recv` / `send` are
/// `_socket.socket`'s C methods), and whether its instances' C layout is the known one.
pub(crate) struct SocketClass {
    pub(crate) ty: Py<PyType>,
    pub(crate) direct: bool,
}

static SOCKET_CLASS: PyOnceLock<SocketClass> = PyOnceLock::new();

/// Runs the `socket_head` probe now (for `_contract_status`).
pub(crate) fn probe_now(py: Python<'_>) -> PyResult<()> {
    socket_class(py).map(|_| ())
}

pub(crate) fn socket_class(py: Python<'_>) -> PyResult<&SocketClass> {
    SOCKET_CLASS.get_or_try_init(py, || {
        let ty = py
            .import("socket")?
            .getattr("socket")?
            .cast_into::<PyType>()?;
        // A probe that cannot even make a socket (EMFILE, say) leaves the method calls.
        let direct = cpython::check(Entry::SocketHead, || {
            cpython::socket::probe(py, &ty).unwrap_or(false)
        });
        Ok(SocketClass {
            ty: ty.unbind(),
            direct,
        })
    })
}

/// `sock.fileno()` when `sock` is a plain non-blocking socket (`gettimeout() == 0`), the one
/// kind of socket on which `sock.recv` / `sock.send` are a single non-blocking syscall.
fn plain_nonblocking_fd(sock: &Bound<'_, PyAny>) -> PyResult<Option<i32>> {
    let py = sock.py();
    let class = socket_class(py)?;
    if !sock.get_type().is(class.ty.bind(py)) {
        return Ok(None);
    }
    if class.direct {
        // SAFETY: sock is exactly socket.socket and the layout was confirmed.
        let (fd, timeout) = unsafe { cpython::socket::head(sock) };
        return Ok((timeout == 0).then_some(fd));
    }
    let timeout = sock.call_method0(intern!(py, "gettimeout"))?;
    // None (blocking) or a timeout: sock.recv would wait.
    if timeout.extract::<f64>().ok() != Some(0.0) {
        return Ok(None);
    }
    Ok(Some(fileno(sock)?))
}

/// `sock.fileno()` of a socket the fast paths took (exactly `socket.socket`).
pub(crate) fn fileno(sock: &Bound<'_, PyAny>) -> PyResult<i32> {
    let py = sock.py();
    let class = socket_class(py)?;
    if class.direct && sock.get_type().is(class.ty.bind(py)) {
        // SAFETY: sock is exactly socket.socket and the layout was confirmed.
        return Ok(unsafe { cpython::socket::head(sock) }.0);
    }
    sock.call_method0(intern!(py, "fileno"))?.extract()
}

/// The loop as a core, when it is exactly `oxloop.Loop` with debug off: the case the fast
/// paths stand in for.
pub(crate) fn fast_loop<'a, 'py>(lp: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, LoopCore>> {
    let py = lp.py();
    let ty = crate::loop_core::fastcall::LOOP_CLASS.get(py)?;
    if !lp.get_type().is(ty.bind(py)) {
        return None;
    }
    let core = lp.cast::<LoopCore>().ok()?;
    (!core.get().debug_on()).then_some(core)
}

/// `weakref.WeakValueDictionary`, the type of `self._transports`.
static WEAK_VALUE_DICT: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// True when `self._transports` (a plain `WeakValueDictionary`) has no entry for `fd`, so
/// `Loop._ensure_fd_no_transport(fd)` would find no transport; false when only that method
/// can tell.
pub(crate) fn no_transport_entry(lp: &Bound<'_, PyAny>, fd: i32) -> PyResult<bool> {
    let py = lp.py();
    let Some(d) = instance_dict(lp) else {
        return Ok(false);
    };
    let Some(transports) = dict_get(&d, intern!(py, "_transports"))? else {
        return Ok(false);
    };
    let wvd = WEAK_VALUE_DICT.import(py, "weakref", "WeakValueDictionary")?;
    if !transports.get_type().is(wvd) {
        return Ok(false);
    }
    let Some(data) = instance_dict(&transports)
        .map(|td| dict_get(&td, intern!(py, "data")))
        .transpose()?
        .flatten()
    else {
        return Ok(false);
    };
    let Ok(data) = data.cast_into_exact::<PyDict>() else {
        return Ok(false);
    };
    // No transport at all (a sock_* server): no int key to build and hash.
    if data.is_empty() {
        return Ok(true);
    }
    // A dead weak reference is no transport: `_ensure_fd_no_transport` reads it as absent
    // (the native set-up's references have no callback to delete their entry).
    Ok(match data.get_item(fd)? {
        None => true,
        Some(wr) => wr
            .cast::<pyo3::types::PyWeakref>()
            .is_ok_and(|r| r.upgrade().is_none()),
    })
}

/// `self._ensure_fd_no_transport(fd)`.
fn ensure_fd_no_transport(lp: &Bound<'_, PyAny>, fd: i32) -> PyResult<()> {
    if !no_transport_entry(lp, fd)? {
        lp.call_method1(intern!(lp.py(), "_ensure_fd_no_transport"), (fd,))?;
    }
    Ok(())
}

/// What the socket module does on EINTR (PEP 475): run the signal handlers (their exception
/// propagates), then retry.
pub(crate) fn check_signals(py: Python<'_>) -> PyResult<()> {
    // SAFETY: called with the GIL held.
    if unsafe { ffi::PyErr_CheckSignals() } < 0 {
        return Err(PyErr::fetch(py));
    }
    Ok(())
}

fn is_eintr(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

fn is_eagain(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// One `sock.recv(n)`: `Ok(None)` when it would block.
fn recv_once<'py>(py: Python<'py>, fd: i32, n: usize) -> PyResult<Option<Bound<'py, PyBytes>>> {
    if n == 0 {
        // socket.recv(0) makes no syscall: `sock_recv_guts` returns 0 for a zero length
        // (Modules/socketmodule.c), so asyncio's sock_recv(sock, 0) returns b'' at once on
        // any socket, listening, unconnected or closed.
        return Ok(Some(PyBytes::new(py, b"")));
    }
    loop {
        match recv_bytes(py, fd, n) {
            Ok(b) => return Ok(Some(b)),
            Err(e) if is_eintr(&e) => check_signals(py)?,
            Err(e) if is_eagain(&e) => return Ok(None),
            Err(e) => return Err(os_error(e)),
        }
    }
}

/// One `sock.recv_into(buf)`: `Ok(None)` when it would block; a buffer that is not writable
/// gives the TypeError `recv_into` raises.
fn recv_into_once(py: Python<'_>, fd: i32, buf: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
    loop {
        match recv_into(buf, fd)? {
            Ok(n) => return Ok(Some(n)),
            Err(e) if is_eintr(&e) => check_signals(py)?,
            Err(e) if is_eagain(&e) => return Ok(None),
            Err(e) => return Err(os_error(e)),
        }
    }
}

/// A read-only view of a bytes-like object that `sock.send` takes and whose `len()` is its
/// byte count (what `sock_sendall` compares the sent count with): bytes, bytearray, or a
/// one-dimensional, C-contiguous memoryview of single bytes. Released on drop.
struct ByteView(ffi::Py_buffer);

impl ByteView {
    fn new(data: &Bound<'_, PyAny>) -> Option<Self> {
        if !(data.is_exact_instance_of::<PyBytes>()
            || data.is_exact_instance_of::<PyByteArray>()
            || data.is_exact_instance_of::<PyMemoryView>())
        {
            return None;
        }
        let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
        // SAFETY: data is a live object; on success the view is filled, and Drop releases it.
        let rc = unsafe {
            ffi::PyObject_GetBuffer(data.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_FULL_RO)
        };
        if rc != 0 {
            // A released memoryview, say: asyncio's code raises the right error for it.
            drop(PyErr::take(data.py()));
            return None;
        }
        // SAFETY: PyObject_GetBuffer succeeded, so the view is initialised.
        let v = Self(unsafe { view.assume_init() });
        // SAFETY: the view is live; PyBuffer_IsContiguous only reads its shape and strides.
        let contiguous = unsafe { ffi::PyBuffer_IsContiguous(&v.0, b'C' as _) } != 0;
        (v.0.ndim == 1 && v.0.itemsize == 1 && contiguous).then_some(v)
    }

    fn len(&self) -> usize {
        usize::try_from(self.0.len).unwrap_or(0)
    }

    /// `send(2)` of the bytes from `pos` on; EINTR runs the signal handlers and retries.
    fn send_from(&self, py: Python<'_>, fd: i32, pos: usize) -> PyResult<Option<usize>> {
        let len = self.len();
        let pos = pos.min(len);
        loop {
            // SAFETY: buf points to len readable bytes while the view is held (the export
            // also keeps a bytearray from being resized); pos <= len.
            let ptr = unsafe { self.0.buf.cast::<u8>().add(pos) };
            match crate::sys::send(fd, ptr.cast::<c_void>(), len - pos) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if is_eintr(&e) => check_signals(py)?,
                Err(e) if is_eagain(&e) => return Ok(None),
                Err(e) => return Err(os_error(e)),
            }
        }
    }
}

impl Drop for ByteView {
    fn drop(&mut self) {
        // SAFETY: the view came from a successful PyObject_GetBuffer and is released once;
        // every ByteView is built and dropped with the GIL held.
        unsafe { ffi::PyBuffer_Release(&mut self.0) };
    }
}

/// `n` when it is an exact int that `sock.recv` accepts and the shared buffer holds.
fn recv_size(n: &Bound<'_, PyAny>) -> Option<usize> {
    if !n.is_exact_instance_of::<PyInt>() {
        return None;
    }
    n.extract::<usize>().ok().filter(|&n| n <= DEFAULT_MAX_SIZE)
}

/// `loop.sock_recv(sock, n)` up to the wait: the bytes received, `(future, handle, fd)` when
/// it has to wait (the reader is registered), or `NotImplemented` when asyncio's own
/// `sock_recv` must take the call.
#[pyfunction]
pub fn sock_recv(
    py: Python<'_>,
    lp: &Bound<'_, PyAny>,
    sock: &Bound<'_, PyAny>,
    n: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let (Some(core), Some(n)) = (fast_loop(lp), recv_size(n)) else {
        return Ok(py.NotImplemented());
    };
    let Some(fd) = plain_nonblocking_fd(sock)? else {
        return Ok(py.NotImplemented());
    };
    match recv_once(py, fd, n)? {
        Some(b) => Ok(b.into_any().unbind()),
        None => wait(core, Kind::Recv, sock, fd, n, None),
    }
}

/// The rest of a `sock_*` call that would block, as selector_events.py does it: the future,
/// the transport check, the registration of a [`SockWaiter`]; returns `(future, handle, fd)`.
fn wait(
    core: &Bound<'_, LoopCore>,
    kind: Kind,
    sock: &Bound<'_, PyAny>,
    fd: i32,
    n: usize,
    buf: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let py = core.py();
    let lp = core.as_any();
    let fut = LoopCore::sock_future(core)?;
    ensure_fd_no_transport(lp, fd)?;
    let waiter = Bound::new(py, SockWaiter::build(kind, lp, &fut, sock, fd, n, buf))?;
    let handle = LoopCore::sock_add(core, fd, waiter.as_any(), kind.mask(), sock)?;
    Ok(
        PyTuple::new(py, [fut, handle, fd.into_pyobject(py)?.into_any()])?
            .into_any()
            .unbind(),
    )
}

/// `buf` when `sock.recv_into` would take it as it is: a bytearray or a memoryview that
/// exposes a writable C-contiguous buffer (else asyncio's code raises the exact error).
fn plain_writable(buf: &Bound<'_, PyAny>) -> bool {
    if !(buf.is_exact_instance_of::<PyByteArray>() || buf.is_exact_instance_of::<PyMemoryView>()) {
        return false;
    }
    let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
    // SAFETY: buf is a live object; on success the view is filled and released right away.
    let rc =
        unsafe { ffi::PyObject_GetBuffer(buf.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_WRITABLE) };
    if rc != 0 {
        drop(PyErr::take(buf.py()));
        return false;
    }
    // SAFETY: PyObject_GetBuffer succeeded: the view is initialised, released once here.
    unsafe { ffi::PyBuffer_Release(view.as_mut_ptr()) };
    true
}

/// `loop.sock_recv_into(sock, buf)` up to the wait: the byte count, `(future, handle, fd)`
/// when it has to wait, or `NotImplemented` when asyncio's own `sock_recv_into` must take it.
#[pyfunction]
pub fn sock_recv_into(
    py: Python<'_>,
    lp: &Bound<'_, PyAny>,
    sock: &Bound<'_, PyAny>,
    buf: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let Some(core) = fast_loop(lp) else {
        return Ok(py.NotImplemented());
    };
    if !plain_writable(buf) {
        return Ok(py.NotImplemented());
    }
    let Some(fd) = plain_nonblocking_fd(sock)? else {
        return Ok(py.NotImplemented());
    };
    match recv_into_once(py, fd, buf)? {
        Some(n) => Ok(n.into_pyobject(py)?.into_any().unbind()),
        None => wait(core, Kind::RecvInto, sock, fd, 0, Some(buf)),
    }
}

/// `loop.sock_sendall(sock, data)` up to the wait: `None` when all of it went out,
/// `(future, handle, fd)` when the rest must wait for the socket to be writable, or
/// `NotImplemented` when asyncio's own `sock_sendall` must take the call.
#[pyfunction]
pub fn sock_sendall(
    py: Python<'_>,
    lp: &Bound<'_, PyAny>,
    sock: &Bound<'_, PyAny>,
    data: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let Some(core) = fast_loop(lp) else {
        return Ok(py.NotImplemented());
    };
    let Some(fd) = plain_nonblocking_fd(sock)? else {
        return Ok(py.NotImplemented());
    };
    let Some(view) = ByteView::new(data) else {
        return Ok(py.NotImplemented());
    };
    let n = view.send_from(py, fd, 0)?.unwrap_or(0);
    if n == view.len() {
        return Ok(py.None());
    }
    drop(view);
    // asyncio's `view = memoryview(data)`, which the waiter sends from.
    // SAFETY: data is a live object; the result is a new reference or NULL with an error.
    let mv =
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyMemoryView_FromObject(data.as_ptr()))? };
    wait(core, Kind::Sendall, sock, fd, n, Some(&mv))
}

#[derive(Clone, Copy)]
enum Kind {
    /// `_sock_recv(fut, sock, n)`
    Recv,
    /// `_sock_recv_into(fut, sock, buf)`
    RecvInto,
    /// `_sock_sendall(fut, sock, view, pos)`
    Sendall,
}

impl Kind {
    fn mask(self) -> u32 {
        match self {
            Kind::Recv | Kind::RecvInto => READABLE,
            Kind::Sendall => WRITABLE,
        }
    }
}

/// What a waiter holds: the loop, the future, the socket, and the buffer of a recv_into
/// (`buf`) or a sendall (the `memoryview(data)` asyncio makes).
struct Refs {
    lp: Py<PyAny>,
    fut: Py<PyAny>,
    sock: Py<PyAny>,
    buf: Option<Py<PyAny>>,
}

/// The reader (or writer) callback of one `sock_*` call that had to wait for readiness.
///
/// One syscall per call, as `_sock_recv` / `_sock_recv_into` / `_sock_sendall` of
/// selector_events.py: nothing when the future is already done (cancelled) or when the
/// syscall would block; otherwise the future gets the result or the exception, then the
/// registration is removed with `loop.remove_reader(fd)` / `remove_writer(fd)`, what
/// `_sock_read_done` / `_sock_write_done` do (the Python side does it on cancellation).
/// Supports the cyclic GC: the loop's fd table, the handle, this callback, the future and the
/// task awaiting it form a cycle until the operation completes, as asyncio's bound method and
/// partial do.
#[pyclass(module = "oxloop._oxloop")]
pub struct SockWaiter {
    kind: Kind,
    /// The fd the callback is registered on (asyncio's done callback gets it the same way).
    fd: i32,
    /// Recv: the most to receive. Sendall: the bytes of the view sent so far.
    n: usize,
    /// None once the GC cleared the object.
    refs: Option<Refs>,
}

impl crate::loop_core::native::NativeCallback for SockWaiter {
    #[inline]
    fn run_native(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::fire(slf)
    }
}

impl SockWaiter {
    fn build(
        kind: Kind,
        lp: &Bound<'_, PyAny>,
        fut: &Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
        fd: i32,
        n: usize,
        buf: Option<&Bound<'_, PyAny>>,
    ) -> Self {
        Self {
            kind,
            fd,
            n,
            refs: Some(Refs {
                lp: lp.clone().unbind(),
                fut: fut.clone().unbind(),
                sock: sock.clone().unbind(),
                buf: buf.map(|b| b.clone().unbind()),
            }),
        }
    }

    /// One readiness event (the body of `__call__`; the loop calls it directly).
    pub(crate) fn fire(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        // Strong references out of the object, so no borrow is alive while Python code runs.
        let (kind, fd, n, refs) = {
            let w = slf.borrow();
            let Some(r) = &w.refs else {
                return Ok(()); // cleared by the GC
            };
            let refs = (
                r.lp.clone_ref(py),
                r.fut.clone_ref(py),
                r.sock.clone_ref(py),
                r.buf.as_ref().map(|b| b.clone_ref(py)),
            );
            (w.kind, w.fd, w.n, refs)
        };
        let (lp, fut, sock) = (refs.0.bind(py), refs.1.bind(py), refs.2.bind(py));
        let buf = refs.3.as_ref().map(|b| b.bind(py));
        // "Future cancellation can be scheduled on previous loop iteration" (asyncio).
        if fut.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        let mut sent = None;
        let outcome = match attempt(py, kind, sock, n, buf, &mut sent) {
            Ok(None) => {
                if let Some(pos) = sent {
                    slf.borrow_mut().n = pos;
                }
                return Ok(()); // try again next time
            }
            Ok(Some(v)) => fut.call_method1(intern!(py, "set_result"), (v,)),
            Err(e) if crate::transport::escapes(py, &e) => return Err(e),
            Err(e) => fut.call_method1(intern!(py, "set_exception"), (e.into_value(py),)),
        };
        outcome?;
        // `self.remove_reader(fd)` (or `remove_writer`): selector_events' version checks that
        // no transport owns the fd, then removes the registration and cancels the handle.
        if no_transport_entry(lp, fd)? {
            LoopCore::sock_remove(lp.cast::<LoopCore>()?, fd, kind.mask())
        } else {
            let remove = match kind {
                Kind::Sendall => intern!(py, "remove_writer"),
                Kind::Recv | Kind::RecvInto => intern!(py, "remove_reader"),
            };
            lp.call_method1(remove, (fd,)).map(drop)
        }
    }
}

/// One attempt of the waiting operation: `Ok(None)` when it would block (or, for sendall,
/// when part of the data is still to go: `sent` then holds the new position).
fn attempt<'py>(
    py: Python<'py>,
    kind: Kind,
    sock: &Bound<'py, PyAny>,
    n: usize,
    buf: Option<&Bound<'py, PyAny>>,
    sent: &mut Option<usize>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let fd = fileno(sock)?;
    match (kind, buf) {
        (Kind::Recv, _) => Ok(recv_once(py, fd, n)?.map(Bound::into_any)),
        (Kind::RecvInto, Some(buf)) => match recv_into_once(py, fd, buf)? {
            Some(k) => Ok(Some(k.into_pyobject(py)?.into_any())),
            None => Ok(None),
        },
        (Kind::Sendall, Some(view)) => {
            // memoryview(data) of a buffer ByteView::new accepted: always accepted again
            // unless the user released it, when `sock.send(view[start:])` raises ValueError.
            let Some(bytes) = ByteView::new(view) else {
                return Err(PyValueError::new_err(
                    "operation forbidden on released memoryview object",
                ));
            };
            match bytes.send_from(py, fd, n)? {
                Some(k) if n + k >= bytes.len() => Ok(Some(py.None().into_bound(py))),
                Some(k) => {
                    *sent = Some(n + k);
                    Ok(None)
                }
                None => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

#[pymethods]
impl SockWaiter {
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::fire(slf)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let name = self.__name__();
        match &self.refs {
            Some(r) => Ok(format!("<SockWaiter {name} {}>", r.sock.bind(py).repr()?)),
            None => Ok(format!("<SockWaiter {name}>")),
        }
    }

    /// What asyncio's handle repr prints for the callback: the selector loop method it stands
    /// for (selector_events.py registers the bound `_sock_recv` and its siblings).
    #[getter]
    fn __qualname__(&self) -> String {
        format!("BaseSelectorEventLoop.{}", self.__name__())
    }

    #[getter]
    fn __name__(&self) -> &'static str {
        match self.kind {
            Kind::Recv => "_sock_recv",
            Kind::RecvInto => "_sock_recv_into",
            Kind::Sendall => "_sock_sendall",
        }
    }

    /// The future this callback resolves (task dumps show the fd a task waits on with it).
    #[getter]
    fn future(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.refs.as_ref().map(|r| r.fut.clone_ref(py))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(r) = &self.refs {
            visit.call(&r.lp)?;
            visit.call(&r.fut)?;
            visit.call(&r.sock)?;
            if let Some(b) = &r.buf {
                visit.call(b)?;
            }
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.refs = None;
    }
}
