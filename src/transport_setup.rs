//! The set-up of a plain stream socket transport in one native call (`_SocketTransport.__init__`
//! in python/oxloop/_transports.py).
//!
//! Where `_transports.py` verified asyncio's `_SelectorSocketTransport.__init__` and its chain
//! (`_INIT_VARIANT`, `_SELECTOR_VARIANT`, `_WEAK_VARIANT`, `_DEEP`: the running CPython's
//! functions compared, bytecode for bytecode, with the reference sources there), it ran that
//! code inlined in Python (`_selector_init` and the rest of `__init__`): about 320 bytecodes
//! and two frames per connection, the largest share of a churning server's eval loop
//! (benches/net_callgrind.sh churn-protocol). [`setup_transport`] makes the same stores, calls
//! and schedules in the same order, so the transport's fields, the extra dict, the server's
//! count or client set, the loop's `_transports` map and the ready queue hold what asyncio's
//! own `__init__` leaves there.
//!
//! Invariants:
//! - Every precondition is checked before the first store: the exact `_SocketTransport` over
//!   an exact `socket.socket`, a protocol that is not asyncio's `SSLProtocol` (which the Python
//!   path converts for native TLS), every verified method still on its class ([`ClassGuard`]),
//!   `base_events._set_nodelay` still the verified one, and the loop outside debug mode (whose
//!   handles keep asyncio's bound `_add_reader`, as in the Python path). Otherwise nothing is
//!   touched and `False` sends the caller down the Python path.
//! - A field that is a slot of the exact class is stored at its offset (taken from its member
//!   descriptor and checked on a probe, the `transport_slots` contract entry), which is what
//!   the descriptor's `__set__` does; any other goes through `setattr` by name.
//! - Exceptions propagate at the statement where asyncio's would, leaving what was set before.
//! - On an exact `oxloop.Loop` outside debug mode, `call_soon` is the core's own scheduling
//!   while it is not patched (else looked up by name), and `extra['socket']`'s
//!   `TransportSocket` is made as `object.__new__` and its `_sock` store only where its
//!   `__init__` is the verified code and the guard still sees it and `object.__new__`.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use pyo3::exceptions::PyOSError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyModule, PyString, PyTuple, PyType};

use crate::cpython::members::{read as read_slot, slot_offset, write as write_slot};
use crate::cpython::{self, Entry};
use crate::guard::ClassGuard;
use crate::loop_core::LoopCore;
use crate::pyutil::{dict_get, instance_dict};
use crate::transport::{ReadState, SocketReader, SocketWriter};
use crate::writebuf::WriteBuffer;

/// The attributes the set-up stores, in the order of [`FIELD_NAMES`].
#[derive(Clone, Copy)]
pub(crate) enum F {
    Write,
    ReadState,
    ReadReadyCb,
    Extra,
    Loop,
    ProtocolPaused,
    HighWater,
    LowWater,
    SockFd,
    ProtocolConnected,
    Buffered,
    Protocol,
    Server,
    Buffer,
    ConnLost,
    Closing,
    Paused,
    Eof,
    EmptyWaiter,
    WriteReady,
}

const FIELD_NAMES: [&str; 20] = [
    "write",
    "_oxloop_read_state",
    "_read_ready_cb",
    "_extra",
    "_loop",
    "_protocol_paused",
    "_high_water",
    "_low_water",
    "_sock_fd",
    "_protocol_connected",
    "_oxloop_buffered",
    "_protocol",
    "_server",
    "_buffer",
    "_conn_lost",
    "_closing",
    "_paused",
    "_eof",
    "_empty_waiter",
    "_write_ready",
];

/// What `_transports.py` verified, registered once at its import ([`_set_transport_setup`]).
pub(crate) struct Setup {
    /// Where the exact class keeps each of [`FIELD_NAMES`] (`None`: not a slot, or the
    /// `transport_slots` contract does not hold; stored with `setattr`).
    offsets: [Option<isize>; FIELD_NAMES.len()],
    names: [Py<PyString>; FIELD_NAMES.len()],
    /// `_set_write_buffer_limits()`'s defaults, as ints made once.
    high_water: Py<PyAny>,
    low_water: Py<PyAny>,
    /// `_SocketTransport`.
    transport: Py<PyType>,
    /// The set-up chain's methods and the class's `_add_reader` and asyncio's `__init__`.
    guard: Py<ClassGuard>,
    /// `asyncio.base_events`, whose `_set_nodelay` must still be `nodelay`.
    base_events: Py<PyModule>,
    nodelay: Py<PyAny>,
    /// `asyncio.selector_events`, for `_HAS_SENDMSG` (read per call, as asyncio does).
    selector_events: Py<PyModule>,
    socket: Py<PyType>,
    ssl_protocol: Py<PyType>,
    buffered_protocol: Py<PyType>,
    transport_socket: Py<PyType>,
    /// Where `TransportSocket` keeps `_sock`, when its construction is made here
    /// (`object.__new__` and that one store: its `__init__` verified by `_transports.py`,
    /// guarded with its `__new__`); `None`: the class is called.
    trsock_sock: Option<isize>,
    weak_value_dict: Py<PyType>,
    deque: Py<PyAny>,
    start_reading: Py<PyAny>,
    set_result_unless_cancelled: Py<PyAny>,
    /// `_SelectorTransport.__init__` sets `_paused` (3.11+).
    selector_paused: bool,
    /// The write buffer is a `collections.deque()` (3.12+), not `self._buffer_factory()`.
    deque_buffer: bool,
    /// `server._attach(self)` (3.13+), not `server._attach()`.
    attach_self: bool,
    /// `WeakValueDictionary.__setitem__` commits pending removals first (3.10-3.13).
    weak_pending: bool,
    /// `_SelectorSocketTransport.__init__` sets `_paused` (3.10).
    init_paused: bool,
    /// `_SelectorSocketTransport.__init__` sets `_write_ready` (3.12+).
    write_ready: bool,
}

pub(crate) static SETUP: PyOnceLock<Setup> = PyOnceLock::new();

/// How many transports [`setup_transport`] set up, and how many connections [`accept_now`]
/// made without the Python `_accept_now`: what tests read to see that the native paths ran
/// (`_transport_setup_counts`).
static NATIVE_SETUPS: AtomicU64 = AtomicU64::new(0);
static NATIVE_ACCEPTS: AtomicU64 = AtomicU64::new(0);

/// `_transport_setup_counts()`: `(native set-ups, native accepts)` since import.
#[pyfunction]
pub(crate) fn _transport_setup_counts() -> (u64, u64) {
    (NATIVE_SETUPS.load(Relaxed), NATIVE_ACCEPTS.load(Relaxed))
}

/// `module.name`, read from the module's dict (a module's attributes live there; the generic
/// lookup first searches the module type), else looked up (a module `__getattr__`, an error).
fn module_attr<'py>(
    module: &Bound<'py, PyModule>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    match dict_get(&module.dict(), name)? {
        Some(v) => Ok(v),
        None => module.as_any().getattr(name),
    }
}

/// `_set_transport_setup(...)`: the verified pieces [`setup_transport`] stands for. Called once
/// by `_transports.py`, only where its checks all passed.
#[pyfunction]
#[pyo3(signature = (
    transport, guard, base_events, nodelay, selector_events, socket, ssl_protocol,
    buffered_protocol, transport_socket, weak_value_dict, deque,
    start_reading, set_result_unless_cancelled, *, selector_paused, deque_buffer, attach_self,
    weak_pending, init_paused, write_ready, trsock_direct
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn _set_transport_setup(
    transport: Bound<'_, PyType>,
    guard: Bound<'_, ClassGuard>,
    base_events: Bound<'_, PyModule>,
    nodelay: Bound<'_, PyAny>,
    selector_events: Bound<'_, PyModule>,
    socket: Bound<'_, PyType>,
    ssl_protocol: Bound<'_, PyType>,
    buffered_protocol: Bound<'_, PyType>,
    transport_socket: Bound<'_, PyType>,
    weak_value_dict: Bound<'_, PyType>,
    deque: Bound<'_, PyAny>,
    start_reading: Bound<'_, PyAny>,
    set_result_unless_cancelled: Bound<'_, PyAny>,
    selector_paused: bool,
    deque_buffer: bool,
    attach_self: bool,
    weak_pending: bool,
    init_paused: bool,
    write_ready: bool,
    trsock_direct: bool,
) -> PyResult<()> {
    let py = transport.py();
    let mut offsets = [None; FIELD_NAMES.len()];
    if cpython::outcome(Entry::TransportSlots) == Some(true) {
        // object.__new__: an instance with the class's layout and no __init__ run.
        let probe = transport.call_method1(intern!(py, "__new__"), (&transport,))?;
        for (off, name) in offsets.iter_mut().zip(FIELD_NAMES) {
            *off = slot_offset(&transport, &probe, name)?;
        }
    }
    let trsock_sock = if trsock_direct && cpython::outcome(Entry::TransportSlots) == Some(true) {
        let probe = cpython::socket::new_uninit(&transport_socket)?;
        slot_offset(&transport_socket, &probe, "_sock")?
    } else {
        None
    };
    let setup = Setup {
        offsets,
        names: FIELD_NAMES.map(|n| PyString::intern(py, n).unbind()),
        high_water: (64i32 * 1024).into_pyobject(py)?.into_any().unbind(),
        low_water: (16i32 * 1024).into_pyobject(py)?.into_any().unbind(),
        transport: transport.unbind(),
        guard: guard.unbind(),
        base_events: base_events.unbind(),
        nodelay: nodelay.unbind(),
        selector_events: selector_events.unbind(),
        socket: socket.unbind(),
        ssl_protocol: ssl_protocol.unbind(),
        buffered_protocol: buffered_protocol.unbind(),
        transport_socket: transport_socket.unbind(),
        trsock_sock,
        weak_value_dict: weak_value_dict.unbind(),
        deque: deque.unbind(),
        start_reading: start_reading.unbind(),
        set_result_unless_cancelled: set_result_unless_cancelled.unbind(),
        selector_paused,
        deque_buffer,
        attach_self,
        weak_pending,
        init_paused,
        write_ready,
    };
    // Imported again (importlib.reload, say): the first one stays.
    drop(SETUP.set(py, setup));
    Ok(())
}

impl Setup {
    /// Whether `t` is exactly `_SocketTransport` (whose slots `get` and `set` read by offset).
    pub(crate) fn is_exact(&self, t: &Bound<'_, PyAny>) -> bool {
        // SAFETY: t is a live object; its type pointer is only compared.
        unsafe { ffi::Py_TYPE(t.as_ptr()) }.cast::<ffi::PyObject>() == self.transport.as_ptr()
    }

    /// `t.<field>`: one load where `t` is exactly `_SocketTransport` and the field a slot
    /// (what its member descriptor's `__get__` does, an unset slot its AttributeError),
    /// `getattr` otherwise.
    pub(crate) fn get<'py>(&self, t: &Bound<'py, PyAny>, f: F) -> PyResult<Bound<'py, PyAny>> {
        let py = t.py();
        if let Some(off) = self.offsets[f as usize].filter(|_| self.is_exact(t)) {
            // SAFETY: t's type is exactly the class whose layout slot_offset checked; the slot
            // holds a borrowed reference or NULL.
            let p = unsafe { read_slot(t.as_ptr(), off) };
            if !p.is_null() {
                // SAFETY: a live object stored in the slot; we take a new reference.
                return Ok(unsafe { Bound::from_borrowed_ptr(py, p) });
            }
        }
        t.getattr(self.names[f as usize].bind(py))
    }

    /// `t.<field> = val`: one store where `t` is exactly `_SocketTransport` and the field a
    /// slot (what its member descriptor's `__set__` does), `setattr` otherwise. The type is
    /// asked per store: Python code the set-up calls (a protocol's `__getattr__`, say) may
    /// have assigned `t.__class__` meanwhile.
    pub(crate) fn set(&self, t: &Bound<'_, PyAny>, f: F, val: Bound<'_, PyAny>) -> PyResult<()> {
        let py = t.py();
        match self.offsets[f as usize] {
            Some(off) if self.is_exact(t) => {
                // SAFETY: t's type is exactly the class whose layout slot_offset checked.
                unsafe { write_slot(t.as_ptr(), off, val.into_ptr()) }
            }
            _ => t.setattr(self.names[f as usize].bind(py), val)?,
        }
        Ok(())
    }
}

/// `_SocketTransport.__init__(t, loop, sock, protocol, waiter, extra, server)` for the plain
/// case, as asyncio's `__init__` (the verified variant) and its chain would run it; `False`,
/// with nothing done, when a precondition does not hold (see the module's invariants).
#[pyfunction]
#[pyo3(signature = (t, loop_, sock, protocol, waiter, extra, server))]
pub(crate) fn setup_transport(
    t: &Bound<'_, PyAny>,
    loop_: &Bound<'_, PyAny>,
    sock: &Bound<'_, PyAny>,
    protocol: &Bound<'_, PyAny>,
    waiter: &Bound<'_, PyAny>,
    extra: &Bound<'_, PyAny>,
    server: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let py = t.py();
    let Some(s) = SETUP.get(py) else {
        return Ok(false);
    };
    // An exact `oxloop.Loop` outside debug mode: its debug flag is read and `call_soon`
    // scheduled without looking either up by name, and without the Handles asyncio's
    // `__init__` drops (`LoopCore::call_soon_dropped`).
    let core = crate::sock::fast_loop(loop_);
    if !t.get_type().is(s.transport.bind(py))
        || !sock.get_type().is(s.socket.bind(py))
        || protocol.get_type().is(s.ssl_protocol.bind(py))
        || !s.guard.get().holds(py)
        || !module_attr(s.base_events.bind(py), intern!(py, "_set_nodelay"))?.is(s.nodelay.bind(py))
        || (core.is_none() && loop_.call_method0(intern!(py, "get_debug"))?.is_truthy()?)
    {
        return Ok(false);
    }
    // `loop.call_soon(callback, *args)`.
    let call_soon = |callback: &Bound<'_, PyAny>, args: Bound<'_, PyTuple>| -> PyResult<()> {
        if let Some(done) = core.and_then(|c| LoopCore::call_soon_dropped(c, callback, &args)) {
            return done;
        }
        let all: Vec<Bound<'_, PyAny>> = std::iter::once(callback.clone())
            .chain(args.iter())
            .collect();
        loop_
            .getattr(intern!(py, "call_soon"))?
            .call1(PyTuple::new(py, all)?)
            .map(drop)
    };
    let none = py.None().into_bound(py);
    let no = PyBool::new(py, false).to_owned().into_any();
    // _SocketTransport.__init__: the native write and the read state.
    let writer = Bound::new(py, SocketWriter::new(t, true)?)?;
    s.set(t, F::Write, writer.getattr(intern!(py, "write"))?)?;
    let state = Py::new(py, ReadState::new())?;
    s.set(
        t,
        F::ReadState,
        state.clone_ref(py).into_bound(py).into_any(),
    )?;
    // _SelectorSocketTransport.__init__
    s.set(t, F::ReadReadyCb, none.clone())?;
    // _SelectorTransport.__init__ -> _FlowControlMixin.__init__ -> BaseTransport.__init__
    let extra = if extra.is_none() {
        PyDict::new(py).into_any()
    } else {
        extra.clone()
    };
    s.set(t, F::Extra, extra.clone())?;
    s.set(t, F::Loop, loop_.clone())?;
    s.set(t, F::ProtocolPaused, no.clone())?;
    // _set_write_buffer_limits() with no arguments
    s.set(t, F::HighWater, s.high_water.bind(py).clone())?;
    s.set(t, F::LowWater, s.low_water.bind(py).clone())?;
    let transport_socket = match s.trsock_sock {
        Some(off) => {
            let o = cpython::socket::new_uninit(s.transport_socket.bind(py))?;
            // SAFETY: o is a fresh TransportSocket, whose `_sock` slot slot_offset found at
            // `off`; the store takes a new reference to sock (TransportSocket.__init__).
            unsafe { write_slot(o.as_ptr(), off, sock.clone().into_ptr()) };
            o
        }
        None => s.transport_socket.bind(py).call1((sock,))?,
    };
    extra.set_item(intern!(py, "socket"), transport_socket)?;
    let sockname = match crate::accept::sockname(sock) {
        Ok(name) => name,
        Err(e) if e.is_instance_of::<PyOSError>(py) => py.None().into_bound(py),
        Err(e) => return Err(e),
    };
    extra.set_item(intern!(py, "sockname"), sockname)?;
    if !extra.contains(intern!(py, "peername"))? {
        let peername = match sock.call_method0(intern!(py, "getpeername")) {
            Ok(name) => name,
            Err(e) if e.is_instance_of::<PyOSError>(py) => py.None().into_bound(py),
            Err(e) => return Err(e),
        };
        extra.set_item(intern!(py, "peername"), peername)?;
    }
    t.setattr(intern!(py, "_sock"), sock)?;
    // sock.fileno(): read from the socket object (an exact socket.socket, checked above).
    let fd = crate::sock::fileno(sock)?.into_pyobject(py)?.into_any();
    s.set(t, F::SockFd, fd.clone())?;
    s.set(t, F::ProtocolConnected, no.clone())?;
    // set_protocol(protocol): _SocketTransport's (not an SSLProtocol, checked above), then
    // asyncio's two.
    let buffered = protocol.is_instance(s.buffered_protocol.bind(py))?;
    s.set(
        t,
        F::Buffered,
        PyBool::new(py, buffered).to_owned().into_any(),
    )?;
    let read_ready_cb = if buffered {
        t.getattr(intern!(py, "_read_ready__get_buffer"))?
    } else {
        t.getattr(intern!(py, "_read_ready__data_received"))?
    };
    s.set(t, F::ReadReadyCb, read_ready_cb)?;
    s.set(t, F::Protocol, protocol.clone())?;
    s.set(
        t,
        F::ProtocolConnected,
        PyBool::new(py, true).to_owned().into_any(),
    )?;
    s.set(t, F::Server, server.clone())?;
    let buffer = if s.deque_buffer {
        s.deque.bind(py).call0()?
    } else {
        // `self._buffer_factory()`: `_SocketTransport`'s is `_oxloop.WriteBuffer` (3.10/3.11),
        // made here while `t._buffer_factory` is still that class: `type_call` and PyO3's
        // argument parsing cost about 1,500 instructions per connection, this about 600.
        let name = intern!(py, "_buffer_factory");
        let own = cpython::outcome(Entry::GetMethod) == Some(true)
            && cpython::method::get_method(t, name)
                .is_some_and(|(method, f)| !method && f.is(py.get_type::<WriteBuffer>()));
        if own {
            Bound::new(py, WriteBuffer::new())?.into_any()
        } else {
            t.call_method0(name)?
        }
    };
    s.set(t, F::Buffer, buffer)?;
    s.set(t, F::ConnLost, 0i32.into_pyobject(py)?.into_any())?;
    s.set(t, F::Closing, no.clone())?;
    if s.selector_paused {
        s.set(t, F::Paused, no.clone())?;
    }
    if !server.is_none() {
        if s.attach_self {
            server.call_method1(intern!(py, "_attach"), (t,))?;
        } else {
            server.call_method0(intern!(py, "_attach"))?;
        }
    }
    // loop._transports[self._sock_fd] = self: on an exact `oxloop.Loop` (whose classes define
    // no `_transports`) the instance dict's entry, as sock.rs reads it.
    let transports = match core.and_then(|_| instance_dict(loop_)) {
        Some(d) => match dict_get(&d, intern!(py, "_transports"))? {
            Some(t) => t,
            None => loop_.getattr(intern!(py, "_transports"))?,
        },
        None => loop_.getattr(intern!(py, "_transports"))?,
    };
    if transports.get_type().is(s.weak_value_dict.bind(py)) {
        // WeakValueDictionary.__setitem__, with a plain weak reference (below).
        if s.weak_pending
            && transports
                .getattr(intern!(py, "_pending_removals"))?
                .is_truthy()?
        {
            transports.call_method0(intern!(py, "_commit_removals"))?;
        }
        // A weak reference with no callback: `WeakValueDictionary`'s `KeyedRef` calls the
        // dictionary's `remove` (a Python function, ~1,800 instructions per connection) when
        // the transport dies, to delete its entry. Left dead, the entry reads as absent to
        // every lookup (`__getitem__`, `get`, `in`, iteration all call the reference), and the
        // next transport on the fd (the kernel reuses the lowest free one) replaces it; only
        // `len()` counts it (docs/compatibility.md).
        // SAFETY: t is a live object; PyWeakref_NewRef returns a new reference or NULL with
        // an error set (a TypeError for an object without weak reference support).
        let wr = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyWeakref_NewRef(t.as_ptr(), std::ptr::null_mut()),
            )?
        };
        // `self.data`: an instance attribute (the class defines no `data`).
        let data = match instance_dict(&transports) {
            Some(d) => dict_get(&d, intern!(py, "data"))?,
            None => None,
        };
        match data {
            Some(data) => data.set_item(&fd, wr)?,
            None => transports.getattr(intern!(py, "data"))?.set_item(&fd, wr)?,
        }
    } else {
        transports.set_item(&fd, t)?;
    }
    // The rest of _SelectorSocketTransport.__init__.
    s.set(t, F::Eof, no.clone())?;
    if s.init_paused {
        s.set(t, F::Paused, no.clone())?;
    }
    s.set(t, F::EmptyWaiter, none)?;
    if s.write_ready {
        let sendmsg = s
            .selector_events
            .bind(py)
            .getattr(intern!(py, "_HAS_SENDMSG"))?
            .is_truthy()?;
        let write_ready = if sendmsg {
            t.getattr(intern!(py, "_write_sendmsg"))?
        } else {
            t.getattr(intern!(py, "_write_send"))?
        };
        s.set(t, F::WriteReady, write_ready)?;
    }
    // base_events._set_nodelay(self._sock): the test on the socket's C fields where
    // `setsockopt` is _socket's (src/accept.rs), asyncio's function otherwise.
    if !crate::accept::set_nodelay(sock)? {
        s.nodelay.bind(py).call1((sock,))?;
    }
    call_soon(
        &protocol.getattr(intern!(py, "connection_made"))?,
        PyTuple::new(py, [t])?,
    )?;
    // `self._add_reader(self._sock_fd, self._read_ready)`: `_read_ready` is a SocketReader
    // for an exact socket.socket, registered by `_start_reading` (the verified
    // `_add_reader` without its three calls; debug mode took the Python path).
    let reader = Bound::new(py, SocketReader::new(t, Some(state))?)?;
    call_soon(
        &crate::transport_life::start_reading_callback(py, s.start_reading.bind(py)),
        PyTuple::new(py, [t.clone(), fd, reader.into_any()])?,
    )?;
    if !waiter.is_none() {
        call_soon(
            s.set_result_unless_cancelled.bind(py),
            PyTuple::new(py, [waiter, &py.None().into_bound(py)])?,
        )?;
    }
    NATIVE_SETUPS.fetch_add(1, Relaxed);
    Ok(true)
}

/// What `_accept_now` (python/oxloop/_loop.py) needs to run natively, registered by
/// [`_set_accept_now`] where the native set-up is on and the `get_method` contract holds.
struct AcceptNow {
    /// `oxloop.Loop`: the loop must be exactly this class.
    loop_class: Py<PyType>,
    /// `Loop._make_socket_transport`: what `loop._make_socket_transport` must resolve to (the
    /// class's function, not shadowed on the instance; `_PyObject_GetMethod`).
    make_transport: Py<PyAny>,
    /// `_SocketTransport.__init__` and its `__new__` (object's) still the ones
    /// `_SocketTransport(...)` would run.
    guard: Py<ClassGuard>,
    /// `Loop._make_socket_transport` calls `self._ensure_fd_no_transport(sock)` first (3.12+).
    ensure_fd: bool,
    /// The Python `_accept_now`, for every other case.
    fallback: Py<PyAny>,
}

static ACCEPT_NOW: PyOnceLock<AcceptNow> = PyOnceLock::new();

/// `_set_accept_now(loop_class, guard, ensure_fd, fallback)`: registers what [`accept_now`]
/// stands for (once, by `_loop.py`, where the native set-up is registered); whether it took
/// it (the `get_method` contract holds).
#[pyfunction]
pub(crate) fn _set_accept_now(
    loop_class: Bound<'_, PyType>,
    guard: Bound<'_, ClassGuard>,
    ensure_fd: bool,
    fallback: Bound<'_, PyAny>,
) -> PyResult<bool> {
    let py = loop_class.py();
    if !cpython::check(Entry::GetMethod, || {
        cpython::method::probe(py).unwrap_or(false)
    }) {
        return Ok(false);
    }
    let a = AcceptNow {
        make_transport: loop_class
            .getattr(intern!(py, "__dict__"))?
            .get_item(intern!(py, "_make_socket_transport"))?
            .unbind(),
        loop_class: loop_class.unbind(),
        guard: guard.unbind(),
        ensure_fd,
        fallback: fallback.unbind(),
    };
    drop(ACCEPT_NOW.set(py, a));
    Ok(true)
}

/// `_accept_now(loop, protocol_factory, conn, extra, server, context)` (python/oxloop/_loop.py)
/// without its three Python frames (`_accept_now`, `Loop._make_socket_transport` and
/// `_SocketTransport.__init__`), for an exact `oxloop.Loop` whose `_make_socket_transport` is
/// still its own (on the class and not shadowed on the instance): the protocol made, then
/// `_ensure_fd_no_transport` (3.12+) by name, then the transport as `type_call` makes it,
/// `object.__new__` and its `__init__`, which is [`setup_transport`] or, where that declines,
/// the class's `__init__`. As in `_accept_now`, an error other than SystemExit and
/// KeyboardInterrupt is dropped (asyncio reports it in debug mode only, which keeps its Task);
/// every other case calls the Python `_accept_now`.
#[pyfunction]
#[pyo3(signature = (loop_, protocol_factory, conn, extra, server, context=None))]
pub(crate) fn accept_now(
    loop_: &Bound<'_, PyAny>,
    protocol_factory: &Bound<'_, PyAny>,
    conn: &Bound<'_, PyAny>,
    extra: &Bound<'_, PyAny>,
    server: &Bound<'_, PyAny>,
    context: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let py = loop_.py();
    let (Some(a), Some(s)) = (ACCEPT_NOW.get(py), SETUP.get(py)) else {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "oxloop: accept_now before its registration",
        ));
    };
    let none = py.None().into_bound(py);
    let fast = loop_.get_type().is(a.loop_class.bind(py))
        && a.guard.get().holds(py)
        && cpython::method::get_method(loop_, intern!(py, "_make_socket_transport"))
            .is_some_and(|(found, f)| found && f.is(&a.make_transport));
    if !fast {
        a.fallback.bind(py).call1((
            loop_,
            protocol_factory,
            conn,
            extra,
            server,
            context.unwrap_or(&none),
        ))?;
        return Ok(());
    }
    NATIVE_ACCEPTS.fetch_add(1, Relaxed);
    let made = (|| -> PyResult<()> {
        let protocol = protocol_factory.call0()?;
        // `self._ensure_fd_no_transport(sock)` (3.12+): nothing to ask where the loop's
        // `_transports` has no entry for the fd and the method is not patched (as the `sock_*`
        // paths ask it, src/sock.rs); the method, with the socket, otherwise.
        if a.ensure_fd {
            let known_free = crate::sock::fast_loop(loop_)
                .is_some_and(|core| !LoopCore::io_patched(core))
                && crate::sock::no_transport_entry(loop_, crate::sock::fileno(conn)?)?;
            if !known_free {
                loop_.call_method1(intern!(py, "_ensure_fd_no_transport"), (conn,))?;
            }
        }
        let class = s.transport.bind(py);
        let t = cpython::socket::new_uninit(class)?;
        if !setup_transport(&t, loop_, conn, &protocol, &none, extra, server)? {
            class
                .getattr(intern!(py, "__init__"))?
                .call1((&t, loop_, conn, &protocol, &none, extra, server))?;
        }
        Ok(())
    })();
    match made {
        Err(e) if crate::transport::escapes(py, &e) => Err(e),
        _ => Ok(()),
    }
}
