//! The listening socket asyncio's accept loop sees on oxloop: [`acceptor`] (`Loop._accept_connection`
//! in `python/oxloop/_loop.py`).
//!
//! selector_events.py `_accept_connection` calls `sock.accept()` until it raises
//! `BlockingIOError` (at most `backlog` times per readiness event), then `conn.setblocking(False)`
//! on each connection. Two costs there are not asyncio's logic but its tools':
//! - `socket.accept` (socket.py) converts `self.family` and `self.type` to enums (a Python
//!   property, `_intenum_converter` and an `EnumMeta.__call__` each, about 1 us apiece) only to
//!   pass them back to `socket()` as integers;
//! - the last `accept(2)` of every event fails with EAGAIN, and the kernel allocates and frees a
//!   file for it first: 7.9 us here, against 1.2 us for a `getsockopt(TCP_INFO)` that says how
//!   many connections are queued.
//!
//! [`Acceptor`] stands in for the listener there. Its `accept()` is `socket.accept`'s, with the
//! integers read from the listener's C struct: `sock._accept()` (CPython's own accept4 and
//! address conversion, EINTR retried), `socket.socket(family, type, proto, fd)`, and the
//! `setblocking(True)` of a listener with a timeout when no default timeout is set. On a TCP
//! listener it reads the queue's length first ([`crate::sys::listen_queue_len`]) and raises the
//! `BlockingIOError` itself once that many have been taken, without the syscall: a connection
//! that arrives meanwhile keeps the listener readable (the poller is level-triggered, as
//! selectors are), so the next iteration takes it, as it would take one that arrived just after
//! the EAGAIN.
//!
//! Invariants: the acceptor is only made for an exact `socket.socket` whose C layout the
//! `socket_head` probe confirmed (anything else is returned as is, so asyncio's loop calls the
//! object's own `accept`); it lives for one readiness event (the count is that moment's); every
//! error is the `OSError` `socket.accept` would raise, and asyncio's loop decides what to do
//! with it exactly as with the listener's. The only place asyncio's loop hands the listener on
//! (the EMFILE branch's `TransportSocket(sock)` in the exception handler's context) is mapped
//! back to the listener by `Loop.call_exception_handler`.
use std::io;
use std::sync::atomic::{AtomicI64, Ordering};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::os_error;
use crate::sock::socket_class;

/// The listener for one run of asyncio's accept loop; see the module's doc.
#[pyclass(module = "oxloop._oxloop", frozen)]
pub struct Acceptor {
    sock: Py<PyAny>,
    /// Connections known to be queued and not yet taken; -1 when unknown (not TCP).
    left: AtomicI64,
}

#[pymethods]
impl Acceptor {
    /// `socket.accept()` of the listener: `(conn, address)`.
    fn accept<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let left = self.left.load(Ordering::Relaxed);
        if left == 0 {
            // What the accept(2) would say: the queue was empty when the event was handled.
            return Err(os_error(io::Error::from_raw_os_error(libc::EAGAIN)));
        }
        if left > 0 {
            self.left.store(left - 1, Ordering::Relaxed);
        }
        let sock = self.sock.bind(py);
        // socket.py `accept`: `fd, addr = self._accept()`.
        let pair = sock.call_method0(intern!(py, "_accept"))?;
        let (fd, addr): (Bound<'py, PyAny>, Bound<'py, PyAny>) = pair.extract()?;
        let class = socket_class(py)?;
        // SAFETY: acceptor() made this only for an exact socket.socket with the probed layout.
        let (family, kind, proto) = unsafe { crate::cpython::socket::kind(sock) };
        // `sock = socket(self.family, self.type, self.proto, fileno=fd)`: the same integers.
        let conn = class.ty.bind(py).call1((family, kind, proto, fd))?;
        // `if getdefaulttimeout() is None and self.gettimeout(): sock.setblocking(True)`;
        // gettimeout() is truthy only for a positive timeout.
        // SAFETY: as above.
        let (_, timeout) = unsafe { crate::cpython::socket::head(sock) };
        if timeout > 0 {
            let default = py
                .import(intern!(py, "socket"))?
                .call_method0(intern!(py, "getdefaulttimeout"))?;
            if default.is_none() {
                conn.call_method1(intern!(py, "setblocking"), (true,))?;
            }
        }
        PyTuple::new(py, [conn, addr])
    }

    /// The listener's `fileno()`.
    fn fileno<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.sock.bind(py).call_method0(intern!(py, "fileno"))
    }

    /// The listener the acceptor stands for.
    #[getter]
    fn sock(&self, py: Python<'_>) -> Py<PyAny> {
        self.sock.clone_ref(py)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "<oxloop Acceptor for {}>",
            self.sock.bind(py).repr()?
        ))
    }
}

/// What asyncio's accept loop should call `accept()` on for the listener `sock`: an
/// [`Acceptor`] for an exact `socket.socket` of the known layout, else `sock` itself.
#[pyfunction]
pub fn acceptor<'py>(sock: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = sock.py();
    let class = socket_class(py)?;
    if !class.direct || !sock.get_type().is(class.ty.bind(py)) {
        return Ok(sock.clone());
    }
    // SAFETY: sock is exactly socket.socket and the layout was confirmed.
    let (fd, _) = unsafe { crate::cpython::socket::head(sock) };
    // SAFETY: as above.
    let (family, kind, _) = unsafe { crate::cpython::socket::kind(sock) };
    let tcp = (family == libc::AF_INET || family == libc::AF_INET6) && kind == libc::SOCK_STREAM;
    // Any failure (a closed socket, say) leaves the count unknown: the accept says the rest.
    let left = if tcp {
        crate::sys::listen_queue_len(fd)
            .ok()
            .flatten()
            .map_or(-1, i64::from)
    } else {
        -1
    };
    let acceptor = Acceptor {
        sock: sock.clone().unbind(),
        left: AtomicI64::new(left),
    };
    Ok(Bound::new(py, acceptor)?.into_any())
}
