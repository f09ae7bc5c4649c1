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
//! address conversion, EINTR retried; for asyncio's non-blocking IPv4 listener the same steps
//! in Rust, [`accept_inet`], while `socket.socket._accept` is `_socket.socket`'s),
//! `socket.socket(family, type, proto, fd)` (without socket.py's `__init__` frame where it is
//! the verified code, [`new_socket`]), and the
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
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use crate::errors::os_error;
use crate::guard::ClassGuard;
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
        let (conn, addr, _) = self.take(py, false)?;
        PyTuple::new(py, [conn, addr])
    }

    /// `socket.accept()` then asyncio's `conn.setblocking(False)` where this can do it
    /// without the `ioctl(FIONBIO)`: `(conn, address, nonblocking)`, `nonblocking` True when
    /// `conn` is already non-blocking (fd and timeout), False when the caller must still call
    /// `conn.setblocking(False)` (see `Loop._accept_plain` in python/oxloop/_loop.py).
    fn accept_nonblocking<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let (conn, addr, nonblocking) = self.take(py, true)?;
        PyTuple::new(
            py,
            [
                conn,
                addr,
                nonblocking.into_pyobject(py)?.to_owned().into_any(),
            ],
        )
    }

    /// `accept_batch(loop, protocol_factory, server, limit)`: up to `limit` iterations of
    /// `Loop._accept_plain`'s loop (python/oxloop/_loop.py) for a plain connection, each
    /// `conn, addr, nonblocking = self.accept_nonblocking()`, `conn.setblocking(False)` unless
    /// `nonblocking`, then its `else` branch: `extra = {"peername": addr}` and
    /// `copy_context().run(accept_now, loop, protocol_factory, conn, extra, server, None)`.
    /// Returns `(n, error)`: `n` connections set up; `error` the exception of the iteration
    /// after them when its accept or `setblocking` raised one (that iteration is spent: the
    /// caller handles the exception as its `except` clauses do), else None: `limit` reached,
    /// or the loop is in debug mode or has a task factory now (the protocol factory may have
    /// set either), which the caller's loop then handles. The caller checks both before the
    /// first iteration.
    fn accept_batch<'py>(
        &self,
        py: Python<'py>,
        lp: &Bound<'py, PyAny>,
        protocol_factory: &Bound<'py, PyAny>,
        server: &Bound<'py, PyAny>,
        limit: usize,
    ) -> PyResult<(usize, Option<Bound<'py, PyAny>>)> {
        for n in 0..limit {
            if n > 0 && !plain_accepting(lp)? {
                return Ok((n, None));
            }
            let taken = self.take(py, true).and_then(|(conn, addr, nonblocking)| {
                if !nonblocking {
                    conn.call_method1(intern!(py, "setblocking"), (false,))?;
                }
                Ok((conn, addr))
            });
            let (conn, addr) = match taken {
                Ok(pair) => pair,
                // Only Exception subclasses reach the caller's `except` clauses.
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyException>(py) => {
                    return Ok((n, Some(e.into_value(py).into_bound(py).into_any())))
                }
                Err(e) => return Err(e),
            };
            let extra = PyDict::new(py);
            extra.set_item(intern!(py, "peername"), addr)?;
            // `copy_context().run(...)`: the Task asyncio would make runs in a copy of the
            // current context (tasks.py `Task.__init__`).
            // SAFETY: PyContext_CopyCurrent returns a new reference or NULL with an error set.
            let ctx =
                unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyContext_CopyCurrent())? };
            // SAFETY: ctx is a fresh Context, entered once here and exited below whatever the
            // call's outcome (a fresh context cannot be entered already).
            if unsafe { pyo3::ffi::PyContext_Enter(ctx.as_ptr()) } < 0 {
                return Err(PyErr::fetch(py));
            }
            let made = crate::transport_setup::accept_now(
                lp,
                protocol_factory,
                &conn,
                extra.as_any(),
                server,
                None,
            );
            // SAFETY: ctx is the context entered above, the current one again now.
            if unsafe { pyo3::ffi::PyContext_Exit(ctx.as_ptr()) } < 0 {
                return Err(PyErr::fetch(py));
            }
            made?;
        }
        Ok((limit, None))
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

/// `not self._debug and self._task_factory is None` of `Loop._accept_plain`, for an exact
/// `oxloop.Loop` (`sock::fast_loop`: not in debug mode); false for any other loop.
fn plain_accepting(lp: &Bound<'_, PyAny>) -> PyResult<bool> {
    if crate::sock::fast_loop(lp).is_none() {
        return Ok(false);
    }
    Ok(lp.getattr(intern!(lp.py(), "_task_factory"))?.is_none())
}

impl Acceptor {
    /// `socket.accept()`, and whether the connection is non-blocking already: only when
    /// `nonblocking` is asked for, on the Rust path, with socket.py's `__init__` the verified
    /// one and the `socket_init` entry holding ([`accepted_socket`]); everywhere else the
    /// socket is made as `socket.accept` makes it, with the same arguments.
    fn take<'py>(
        &self,
        py: Python<'py>,
        nonblocking: bool,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, bool)> {
        let left = self.left.load(Ordering::Relaxed);
        if left == 0 {
            // What the accept(2) would say: the queue was empty when the event was handled.
            return Err(os_error(io::Error::from_raw_os_error(libc::EAGAIN)));
        }
        if left > 0 {
            self.left.store(left - 1, Ordering::Relaxed);
        }
        let sock = self.sock.bind(py);
        let class = socket_class(py)?;
        // SAFETY: acceptor() made this only for an exact socket.socket with the probed layout.
        let (family, kind, proto) = unsafe { crate::cpython::socket::kind(sock) };
        // SAFETY: as above.
        let (listener_fd, timeout) = unsafe { crate::cpython::socket::head(sock) };
        let init = SOCKET_INIT.get(py);
        let native = family == libc::AF_INET
            && timeout == 0
            && init.is_some_and(|init| init.accept.get().holds(py));
        // SOCK_NONBLOCK only where the socket is then filled without `sock_initobj`
        // (`accepted_socket`), which writes the timeout 0 that `setblocking(False)` would
        // leave, less its `ioctl(FIONBIO)`; elsewhere asyncio's loop makes that call.
        let direct = if nonblocking && native {
            init.and_then(|init| init.direct_base(py))
        } else {
            None
        };
        let (fd, addr) = if native {
            // A non-blocking IPv4 listener (asyncio's): `sock._accept()` in Rust (see the
            // module's doc).
            let (fd, peer) = accept_inet(py, listener_fd, direct.is_some())?;
            if let Some(base) = direct {
                // SAFETY: sock is an exact socket.socket of the probed layout; base is
                // `_socket.socket`, for which `direct_base` says `probe_init` passed.
                let conn = unsafe { accepted_socket(py, class.ty.bind(py), sock, base, fd) }?;
                return Ok((conn, peer, true));
            }
            (fd.into_pyobject(py)?.into_any(), peer)
        } else {
            // socket.py `accept`: `fd, addr = self._accept()`.
            let pair = sock.call_method0(intern!(py, "_accept"))?;
            pair.extract()?
        };
        // `sock = socket(self.family, self.type, self.proto, fileno=fd)`: the same integers.
        let conn = new_socket(py, class.ty.bind(py), (family, kind, proto, fd))?;
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
        Ok((conn, addr, false))
    }
}

/// `sock._accept()` of a non-blocking IPv4 listener, as Modules/socketmodule.c `sock_accept`
/// does it: `accept4(fd, ..., SOCK_CLOEXEC)`, retried after the signal handlers on EINTR (PEP
/// 475), an `OSError` from errno otherwise; the address as `makesockaddr` builds it for
/// AF_INET, `(inet_ntop's dotted quad, port)`, without glibc's `sprintf` (1,700 instructions
/// here). The GIL stays held: a non-blocking accept does not wait.
fn accept_inet(
    py: Python<'_>,
    listener: i32,
    nonblocking: bool,
) -> PyResult<(i32, Bound<'_, PyAny>)> {
    let (fd, peer) = loop {
        match crate::sys::accept4_inet(listener, nonblocking) {
            Ok(found) => break found,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => crate::sock::check_signals(py)?,
            Err(e) => return Err(os_error(e)),
        }
    };
    let addr = match peer {
        Some(peer) => inet_address(py, peer)?,
        None => py.None().into_bound(py),
    };
    Ok((fd, addr))
}

/// `makesockaddr` of an AF_INET address (Modules/socketmodule.c): `(host, port)`, the host as
/// `inet_ntop` writes it, four decimal bytes.
fn inet_address(
    py: Python<'_>,
    ([a, b, c, d], port): ([u8; 4], u16),
) -> PyResult<Bound<'_, PyAny>> {
    // The four decimal bytes written by hand: `format!` goes through core::fmt's padding
    // machinery (about 420 instructions per address here, two addresses per connection).
    let mut buf = [0u8; 15];
    let mut len = 0;
    for (i, byte) in [a, b, c, d].into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        if byte >= 100 {
            buf[len] = b'0' + byte / 100;
            len += 1;
        }
        if byte >= 10 {
            buf[len] = b'0' + byte / 10 % 10;
            len += 1;
        }
        buf[len] = b'0' + byte % 10;
        len += 1;
    }
    let host = host_string(py, [a, b, c, d], &buf[..len]);
    Ok(PyTuple::new(py, [host.into_any(), port.into_pyobject(py)?.into_any()])?.into_any())
}

/// The host strings made last, by address, the last used first: a server's own address (its
/// `sockname` extra) is the same for every connection it accepts, and its clients' addresses
/// often repeat. A string is immutable, so sharing one between tuples is invisible
/// (`makesockaddr` makes a new one each time, but no code can rely on a str's identity). Two
/// entries, the older replaced; never dropped (a static), so no reference outlives the
/// interpreter in a destructor.
static HOSTS: std::sync::Mutex<[Option<Host>; 2]> = std::sync::Mutex::new([None, None]);

/// An IPv4 address and its dotted form.
type Host = ([u8; 4], Py<PyString>);

/// `text` (the dotted form of `addr`) as a str, from [`HOSTS`] when it is there.
fn host_string<'py>(py: Python<'py>, addr: [u8; 4], text: &[u8]) -> Bound<'py, PyString> {
    let Ok(mut hosts) = HOSTS.lock() else {
        return new_host(py, text);
    };
    if let Some(i) = hosts
        .iter()
        .position(|h| h.as_ref().is_some_and(|(a, _)| *a == addr))
    {
        // The one found moves to the front: a server's own address, asked once per
        // connection between its clients' ever-new ones, stays.
        hosts.swap(0, i);
        if let Some((_, s)) = &hosts[0] {
            return s.bind(py).clone();
        }
    }
    let host = new_host(py, text);
    // The newer entry moves to the front; the older is dropped (a decref, with the GIL held).
    let newer = hosts[0].take();
    let old = std::mem::replace(&mut hosts[1], newer);
    hosts[0] = Some((addr, host.clone().unbind()));
    drop(hosts);
    drop(old);
    host
}

fn new_host<'py>(py: Python<'py>, text: &[u8]) -> Bound<'py, PyString> {
    // ASCII digits and dots only, at most 15 bytes: valid UTF-8 within the buffer.
    PyString::new(py, std::str::from_utf8(text).unwrap_or_default())
}

/// `sock.getsockname()`, what asyncio's transport set-up stores as the `sockname` extra: for
/// an exact `socket.socket` of family AF_INET whose `getsockname` is `_socket.socket`'s
/// (the guard `_transports.py` registered), `sock_getsockname`'s steps in Rust -- the
/// syscall (an `OSError` from errno), `makesockaddr` without glibc's `sprintf`, and the GIL
/// held (a getsockname does not wait); otherwise the object's own method.
#[pyfunction]
pub fn sockname<'py>(sock: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = sock.py();
    let class = socket_class(py)?;
    if class.direct
        && sock.get_type().is(class.ty.bind(py))
        && SOCKNAME_GUARD.get(py).is_some_and(|g| g.get().holds(py))
    {
        // SAFETY: sock is exactly socket.socket and the layout was confirmed.
        let (family, _, _) = unsafe { crate::cpython::socket::kind(sock) };
        if family == libc::AF_INET {
            // SAFETY: as above.
            let (fd, _) = unsafe { crate::cpython::socket::head(sock) };
            match crate::sys::getsockname_inet(fd) {
                Ok(Some(name)) => return inet_address(py, name),
                Ok(None) => {} // CPython's own conversion says what it is
                Err(e) => return Err(os_error(e)),
            }
        }
    }
    sock.call_method0(intern!(py, "getsockname"))
}

/// asyncio's `_set_nodelay(sock)` (base_events.py) for an exact `socket.socket` whose
/// `setsockopt` is `_socket.socket`'s (the guard `_transports.py` registered): `if family in
/// (AF_INET, AF_INET6) and type == SOCK_STREAM and proto == IPPROTO_TCP: setsockopt(...)`,
/// the integers read from the socket's C struct and the option set with one syscall (an
/// `OSError` from errno, as `sock.setsockopt` raises). False when it did nothing because it
/// does not apply (another socket type, a replaced `setsockopt`): the caller runs the Python.
#[pyfunction]
pub fn set_nodelay(sock: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = sock.py();
    let class = socket_class(py)?;
    if !class.direct
        || !sock.get_type().is(class.ty.bind(py))
        || !SETSOCKOPT_GUARD.get(py).is_some_and(|g| g.get().holds(py))
    {
        return Ok(false);
    }
    // SAFETY: sock is exactly socket.socket and the layout was confirmed.
    let (family, kind, proto) = unsafe { crate::cpython::socket::kind(sock) };
    if (family == libc::AF_INET || family == libc::AF_INET6)
        && kind == libc::SOCK_STREAM
        && proto == libc::IPPROTO_TCP
    {
        // SAFETY: as above.
        let (fd, _) = unsafe { crate::cpython::socket::head(sock) };
        crate::sys::set_tcp_nodelay(fd).map_err(os_error)?;
    }
    Ok(true)
}

/// Whether `socket.socket.setsockopt` is still `_socket.socket.setsockopt`.
static SETSOCKOPT_GUARD: PyOnceLock<Py<ClassGuard>> = PyOnceLock::new();

/// `_set_setsockopt_guard(guard)`: see [`set_nodelay`].
#[pyfunction]
pub fn _set_setsockopt_guard(guard: Bound<'_, ClassGuard>) {
    let py = guard.py();
    // Imported again (importlib.reload, say): the first one stays.
    drop(SETSOCKOPT_GUARD.set(py, guard.unbind()));
}

/// Whether `socket.socket.getsockname` is still `_socket.socket.getsockname`.
static SOCKNAME_GUARD: PyOnceLock<Py<ClassGuard>> = PyOnceLock::new();

/// `_set_sockname_guard(guard)`: see [`sockname`].
#[pyfunction]
pub fn _set_sockname_guard(guard: Bound<'_, ClassGuard>) {
    let py = guard.py();
    // Imported again (importlib.reload, say): the first one stays.
    drop(SOCKNAME_GUARD.set(py, guard.unbind()));
}

/// `socket.socket(family, type, proto, fd)`: where `socket.socket.__init__` is the function
/// `_loop.py` verified (socket.py's, the same on 3.10-3.15), what it does without its frame --
/// the class's `tp_new`, `_socket.socket.__init__` (CPython's `sock_initobj`, with its
/// `socket.__new__` audit event), `self._io_refs = 0`, `self._closed = False`; otherwise the
/// class is called.
fn new_socket<'py>(
    py: Python<'py>,
    class: &Bound<'py, PyType>,
    args: (i32, i32, i32, Bound<'py, PyAny>),
) -> PyResult<Bound<'py, PyAny>> {
    let init = SOCKET_INIT.get(py).filter(|init| init.init.get().holds(py));
    let Some(init) = init else {
        // As socket.py's `accept` calls it: the fd by keyword (a replaced `__init__` sees it so).
        let (family, kind, proto, fd) = args;
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "fileno"), fd)?;
        return class.call((family, kind, proto), Some(&kwargs));
    };
    let args = args.into_pyobject(py)?;
    // The accepted fd, closed below when no socket took it (socket.py's `accept` would leave
    // it open).
    let close_fd = || {
        if let Ok(fd) = args.get_item(3).and_then(|fd| fd.extract::<i32>()) {
            crate::sys::close(fd);
        }
    };
    let obj = match crate::cpython::socket::new_uninit(class) {
        Ok(obj) => obj,
        Err(e) => {
            close_fd();
            return Err(e);
        }
    };
    // SAFETY: init.base is `_socket.socket`, whose tp_init (sock_initobj) takes an instance
    // of a subtype (obj is a socket.socket, made by its tp_new) and an args tuple; it returns
    // 0, or -1 with an error set.
    let rc = unsafe {
        match (*init.base.bind(py).as_type_ptr()).tp_init {
            Some(tp_init) => tp_init(obj.as_ptr(), args.as_ptr(), std::ptr::null_mut()),
            None => -1,
        }
    };
    if rc < 0 {
        let err = PyErr::take(py).unwrap_or_else(|| {
            pyo3::exceptions::PySystemError::new_err("_socket.socket.__init__ failed")
        });
        // `sock_initobj` failed before it gave the fd to the socket (an audit hook that
        // raised): nothing owns the accepted fd, which socket.py's `accept` would leave open.
        // (Once `init_sockobject` has stored it, the socket's finalizer closes it.)
        // SAFETY: obj is an exact socket.socket (from its tp_new), whose layout the acceptor's
        // `socket_head` probe confirmed.
        if unsafe { crate::cpython::socket::head(&obj) }.0 == -1 {
            close_fd();
        }
        return Err(err);
    }
    obj.setattr(intern!(py, "_io_refs"), 0)?;
    obj.setattr(intern!(py, "_closed"), false)?;
    Ok(obj)
}

/// `socket.socket(family, type | SOCK_NONBLOCK, proto, fd)` for the fd a non-blocking accept4
/// just made on `listener`, where [`new_socket`] would call `_socket.socket.__init__`: the
/// class's `tp_new`, then `sock_initobj`'s audit event and writes without its argument parsing
/// and validating `getsockname(2)` (`crate::cpython::socket::fill_accepted`, contract entry
/// `socket_init`), then socket.py's `self._io_refs = 0` and `self._closed = False`. The fd is
/// closed when no socket owns it in the end (an audit hook that raised, say).
///
/// # Safety
/// `listener` is an exact `socket.socket` of the probed layout, `class` is `socket.socket`,
/// and `probe_init` passed for `base`.
unsafe fn accepted_socket<'py>(
    py: Python<'py>,
    class: &Bound<'py, PyType>,
    listener: &Bound<'py, PyAny>,
    base: &Bound<'py, PyType>,
    fd: i32,
) -> PyResult<Bound<'py, PyAny>> {
    let filled = crate::cpython::socket::new_uninit(class).and_then(|obj| {
        // SAFETY: obj is fresh from socket.socket's tp_new; the rest is the caller's promise.
        unsafe { crate::cpython::socket::fill_accepted(&obj, listener, base, fd) }.map(|()| obj)
    });
    let obj = match filled {
        Ok(obj) => obj,
        Err(e) => {
            // No socket holds the fd (a socket `fill_accepted` refused still has sock_new's
            // fd of -1, so its dealloc closes nothing).
            crate::sys::close(fd);
            return Err(e);
        }
    };
    // From here on the socket owns the fd (its finalizer closes it).
    obj.setattr(intern!(py, "_io_refs"), 0)?;
    obj.setattr(intern!(py, "_closed"), false)?;
    Ok(obj)
}

/// What `_loop.py` verified: the guard of socket.py's `socket.__init__` (the verified function)
/// and of `socket.socket._accept` (`_socket.socket`'s own), and `_socket.socket`; and, probed
/// at first use, whether `socket_init` holds (see [`accepted_socket`]).
struct SocketInit {
    init: Py<ClassGuard>,
    accept: Py<ClassGuard>,
    base: Py<PyType>,
    direct: PyOnceLock<bool>,
}

impl SocketInit {
    /// `_socket.socket`, when sockets may be filled without `sock_initobj`: socket.py's
    /// `__init__` is still the verified one, and the `socket_head` and `socket_init` probes
    /// passed.
    fn direct_base<'a, 'py>(&'a self, py: Python<'py>) -> Option<&'a Bound<'py, PyType>> {
        if !self.init.get().holds(py) {
            return None;
        }
        let direct = *self
            .direct
            .get_or_init(py, || probe_init(py, self.base.bind(py)));
        direct.then(|| self.base.bind(py))
    }
}

/// The `socket_init` probe, once `socket_head` holds (the one calls it for the other's layout).
fn probe_init(py: Python<'_>, base: &Bound<'_, PyType>) -> bool {
    let Ok(class) = socket_class(py) else {
        return crate::cpython::settle(crate::cpython::Entry::SocketInit, false);
    };
    let head = class.direct;
    let ty = class.ty.bind(py);
    crate::cpython::check(crate::cpython::Entry::SocketInit, || {
        head && crate::cpython::socket::probe_init(py, ty, base).unwrap_or(false)
    })
}

/// Runs the `socket_init` probe now (for `_contract_status`), if `_loop.py` verified
/// socket.py's `__init__`; otherwise the entry stays off.
pub(crate) fn probe_now(py: Python<'_>) {
    match SOCKET_INIT.get(py) {
        Some(init) => {
            init.direct
                .get_or_init(py, || probe_init(py, init.base.bind(py)));
        }
        None => {
            crate::cpython::settle(crate::cpython::Entry::SocketInit, false);
        }
    }
}

static SOCKET_INIT: PyOnceLock<SocketInit> = PyOnceLock::new();

/// `_set_verified_socket_init(init_guard, accept_guard, base)`: see [`new_socket`] and
/// [`accept_inet`].
#[pyfunction]
pub fn _set_verified_socket_init(
    init: Bound<'_, ClassGuard>,
    accept: Bound<'_, ClassGuard>,
    base: Bound<'_, PyType>,
) {
    let py = init.py();
    let init = SocketInit {
        init: init.unbind(),
        accept: accept.unbind(),
        base: base.unbind(),
        direct: PyOnceLock::new(),
    };
    // Imported again (importlib.reload, say): the first one stays.
    drop(SOCKET_INIT.set(py, init));
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
