//! Native fast paths of the stream socket transport (`python/oxloop/_transports.py`).
//!
//! The transport is asyncio's own `selector_events._SelectorSocketTransport` (subclassed), so
//! its state, flow control, closing and error paths stay CPython's code of the running version.
//! Two per-event paths run here instead of in Python: reading ([`SocketReader`]: recv, then
//! `data_received`, or `get_buffer` / recv_into / `buffer_updated` for a BufferedProtocol) and
//! the common case of `write` ([`SocketWriter`]: nothing queued, one `send`). The transport
//! hands a `SocketReader` to `_add_reader` where asyncio hands its bound `_read_ready`, and
//! installs the writer's bound `write` as an instance attribute, the way 3.13's transport
//! itself installs `_write_ready`.
//!
//! Invariants:
//! - Every step mirrors `_read_ready__data_received`, `_read_ready__get_buffer` and `write` of
//!   selector_events.py, with the same messages to `_fatal_error`. Anything outside the common
//!   case (a non-bytes argument, a queued buffer, write_eof called, a lost connection, a
//!   sendfile in progress, a would-block or partial send) goes to the Python `write`, so the
//!   exceptions, warnings and buffering are asyncio's.
//! - References mirror asyncio's: the reader holds the transport strongly, as the bound
//!   `_read_ready` in the loop's reader handle does (that handle is what keeps a transport
//!   nobody else holds alive); the writer, stored on the transport itself, holds it weakly, so
//!   it adds no reference cycle and an unclosed transport is still freed (and warned about) as
//!   soon as its last reference goes.
//! - Both support the cyclic GC as the bound method does: the reader is part of the cycle
//!   loop -> fd table -> reader handle -> reader -> transport -> loop, which a loop dropped
//!   without `close()` leaves behind (tests/test_gc.py); the reader traverses and clears its
//!   transport, the writer traverses its weak reference (which holds nothing strongly, so the
//!   writer can be in no cycle and needs no clear, as a tuple has none).
//! - The socket fd is read from the transport once per reader and writer (asyncio never changes
//!   `_sock_fd`) and used only while `_conn_lost` is 0, i.e. while the transport's socket is
//!   open (asyncio closes it after counting the loss).
//! - The other fields these paths read live in `_SocketTransport`'s slots and are read by
//!   offset only when the transport's type is exactly that class ([`register_transport_slots`]
//!   checked the layout); anything else goes through `getattr`, so the values are always the
//!   ones Python code would see.
//! - A bytes object is refilled ([`bytes_for`]) only while the thread's spare slot holds its
//!   one reference: nothing else can have seen it since its last `data_received` returned.
//! - Neither path changes `_buffer` (the writer only reads its length), so 3.15's
//!   `_buffer_size`, which `get_write_buffer_size` returns, stays asyncio's bookkeeping.
//! - Neither path enters a context: the reader runs inside the loop's reader handle, whose
//!   context the loop enters (3.15: the connection's `_context`, which the transport hands to
//!   `_add_reader`), and the writer runs in its caller's, as asyncio's `write` does.
use std::cell::RefCell;
use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PySystemExit, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyString, PyType, PyWeakrefReference};
use pyo3::{PyTraverseError, PyVisit};

use crate::cpython::members::{read as read_slot, slot_offset};
use crate::cpython::{self, Entry};
use crate::errors::os_error;
use crate::pyutil::{install_method, MethodDef};
use crate::streams;

/// `_SelectorSocketTransport.max_size`: the most one `recv` asks for (selector_events.py).
pub(crate) const DEFAULT_MAX_SIZE: usize = 256 * 1024;

/// The read-event callback of one transport (what the loop's reader handle calls).
#[pyclass(module = "oxloop._oxloop", frozen)]
pub struct SocketReader {
    /// Traversed, never cleared: see `__traverse__`.
    transport: Py<PyAny>,
    max_size: usize,
    fd: FdCache,
    /// How the transport's reads went, shared by its successive readers (see [`ReadState`]).
    state: Py<ReadState>,
}

/// The socket object a transport's reader registration may be kept for (`FdEntry::owner`,
/// engine/src/io/mod.rs): the transport's `_sock` when `callback` is a [`SocketReader`] (made
/// only for a socket that is exactly `socket.socket`, see `_SocketTransport._read_ready`) and
/// that socket's `fileno()` is `fd` now. A stream paused and resumed on every read then
/// re-arms its kept registration with no `epoll_ctl`. Anything unexpected (an attribute
/// missing or raising) gives None: the loop then asks the kernel, as for any fd.
pub(crate) fn reader_owner<'py>(
    callback: &Bound<'py, PyAny>,
    fd: i32,
) -> Option<Bound<'py, PyAny>> {
    let reader = callback.cast::<SocketReader>().ok()?;
    let py = callback.py();
    let sock = reader
        .get()
        .transport
        .bind(py)
        .getattr(intern!(py, "_sock"))
        .ok()?;
    let current: i32 = sock
        .call_method0(intern!(py, "fileno"))
        .ok()?
        .extract()
        .ok()?;
    (current == fd).then_some(sock)
}

/// What a transport's reads learnt about its traffic, which picks how the next read is made.
/// The transport keeps it (`_oxloop_read_state`) and hands it to every reader it registers:
/// `resume_reading` registers a new one (asyncio's `_add_reader(fd, self._read_ready)`), and a
/// stream paused and resumed on every read (a `StreamReader` more than twice its limit
/// behind, which is every read of a bulk transfer) would otherwise start each read knowing
/// nothing and copy it through the shared buffer. It holds no object, so the transport that
/// holds it gains no cycle.
#[pyclass(module = "oxloop._oxloop", frozen)]
pub struct ReadState {
    /// The size of the last read ([`SIZED_READ_MIN`]).
    last_read: AtomicUsize,
    /// What the last read asked for when its size was predicted ([`PREDICTED_READ_MAX`]); 0
    /// when it was not.
    last_asked: AtomicUsize,
}

#[pymethods]
impl ReadState {
    #[new]
    pub(crate) fn new() -> Self {
        Self {
            last_read: AtomicUsize::new(0),
            last_asked: AtomicUsize::new(0),
        }
    }
}

/// The `write` of one transport, stored on it as an instance attribute.
#[pyclass(module = "oxloop._oxloop", frozen)]
pub struct SocketWriter {
    transport: Py<PyWeakrefReference>,
    fd: FdCache,
    /// False when the transport's socket is not exactly `socket.socket` (a subclass may
    /// override `send`, as a wrapper counting or logging I/O does): every write is then
    /// asyncio's, which calls the object's `send`.
    native: bool,
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// SystemExit and KeyboardInterrupt escape the transport, as asyncio re-raises them.
pub(crate) fn escapes(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<PySystemExit>(py) || e.is_instance_of::<PyKeyboardInterrupt>(py)
}

/// `transport._fatal_error(exc, message)`; only SystemExit and KeyboardInterrupt propagate.
pub(crate) fn fatal(t: &Bound<'_, PyAny>, err: PyErr, message: &str) -> PyResult<()> {
    let py = t.py();
    if escapes(py, &err) {
        return Err(err);
    }
    t.call_method1(intern!(py, "_fatal_error"), (err.into_value(py), message))?;
    Ok(())
}

/// The transport attributes the per-event paths read, in the order of [`FIELD_NAMES`].
#[derive(Clone, Copy)]
enum Field {
    ConnLost,
    Eof,
    EmptyWaiter,
    Buffer,
    Protocol,
    Buffered,
}

/// The names of the [`Field`]s, exported as `_oxloop.TRANSPORT_FIELDS`, from which
/// `_SocketTransport.__slots__` (python/oxloop/_transports.py) is made.
pub(crate) const FIELD_NAMES: [&str; 6] = [
    "_conn_lost",
    "_eof",
    "_empty_waiter",
    "_buffer",
    "_protocol",
    "_oxloop_buffered",
];

/// Where `_SocketTransport` keeps each [`Field`]: the byte offset of its slot in the instance.
struct SlotTable {
    ty: Py<PyType>,
    offsets: [isize; FIELD_NAMES.len()],
    /// The int 0 (a cached small int, so `_conn_lost == 0` is one comparison).
    zero: Py<PyAny>,
}

/// Set once, by [`register_transport_slots`] when `_transports.py` is imported.
static SLOTS: OnceLock<SlotTable> = OnceLock::new();

/// `_transports.py` declares the fields as `__slots__`, so asyncio's transport code stores
/// them at fixed offsets in the object, where the per-event paths read them with one load
/// each. (They lived in the instance `__dict__` before; a dict lookup per field was the
/// largest user-space cost of an echo after the syscalls, about 2,000 instructions of 3,900
/// per message.) The offsets come from the slots' member descriptors (`PyMemberDef.offset`,
/// Include/descrobject.h) and are checked against a probe instance before use.
/// Without the `transport_slots` contract (`crate::cpython`) nothing is registered and every
/// transport's fields are read through the attribute protocol.
#[pyfunction]
pub(crate) fn register_transport_slots(cls: &Bound<'_, PyType>) -> PyResult<()> {
    let py = cls.py();
    let offsets = if cpython::forced(Entry::TransportSlots) {
        None
    } else {
        // object.__new__: an instance with the class's layout and no __init__ run.
        let probe = cls.call_method1(intern!(py, "__new__"), (cls,))?;
        let mut offsets = Some([0isize; FIELD_NAMES.len()]);
        for (i, name) in FIELD_NAMES.iter().enumerate() {
            match slot_offset(cls, &probe, name)? {
                Some(off) => {
                    if let Some(o) = offsets.as_mut() {
                        o[i] = off;
                    }
                }
                None => offsets = None,
            }
        }
        offsets
    };
    if !cpython::settle(Entry::TransportSlots, offsets.is_some()) {
        return Ok(());
    }
    let Some(offsets) = offsets else {
        return Ok(());
    };
    let table = SlotTable {
        ty: cls.clone().unbind(),
        offsets,
        zero: 0i32.into_pyobject(py)?.into_any().unbind(),
    };
    if let Err(table) = SLOTS.set(table) {
        // Imported again (importlib.reload, say): the first class keeps the fast path.
        drop(table);
    }
    Ok(())
}

/// Reads the transport's fields: from their slots when the transport is exactly
/// `_SocketTransport`, through the attribute protocol otherwise (a subclass may have made one
/// a property) or when a slot is unset (the AttributeError is asyncio's).
struct Attrs<'a, 'py> {
    t: &'a Bound<'py, PyAny>,
    slots: Option<&'static SlotTable>,
}

impl<'a, 'py> Attrs<'a, 'py> {
    fn new(t: &'a Bound<'py, PyAny>) -> Self {
        // SAFETY: t is a live object; its type pointer is only compared.
        let ty = unsafe { ffi::Py_TYPE(t.as_ptr()) }.cast::<ffi::PyObject>();
        let slots = SLOTS.get().filter(|s| ty == s.ty.as_ptr());
        Self { t, slots }
    }

    /// The field's object, borrowed from its slot; NULL when it must be read with `get`.
    fn raw(&self, field: Field) -> *mut ffi::PyObject {
        match self.slots {
            // SAFETY: t's type is exactly the registered class, whose layout has these slots.
            Some(s) => unsafe { read_slot(self.t.as_ptr(), s.offsets[field as usize]) },
            None => std::ptr::null_mut(),
        }
    }

    fn get(&self, field: Field) -> PyResult<Bound<'py, PyAny>> {
        let py = self.t.py();
        let p = self.raw(field);
        if !p.is_null() {
            // SAFETY: a live object stored in the slot; we take a new reference.
            return Ok(unsafe { Bound::from_borrowed_ptr(py, p) });
        }
        self.t
            .getattr(PyString::intern(py, FIELD_NAMES[field as usize]))
    }

    /// `bool(getattr(t, name))`.
    fn flag(&self, field: Field) -> PyResult<bool> {
        let p = self.raw(field);
        // The fields read this way are bools and ints (`_conn_lost`); the singletons and a
        // zero need no call.
        // SAFETY: reading the addresses of the interpreter's singletons.
        unsafe {
            if p == ffi::Py_False() || p == ffi::Py_None() {
                return Ok(false);
            }
            if p == ffi::Py_True() {
                return Ok(true);
            }
        }
        if !p.is_null() && self.slots.is_some_and(|s| p == s.zero.as_ptr()) {
            return Ok(false);
        }
        self.get(field)?.is_truthy()
    }

    /// `getattr(t, name) is None`.
    fn is_none(&self, field: Field) -> PyResult<bool> {
        let p = self.raw(field);
        if !p.is_null() {
            // SAFETY: comparing with the address of None.
            return Ok(p == unsafe { ffi::Py_None() });
        }
        Ok(self.get(field)?.is_none())
    }

    fn sock_fd(&self) -> PyResult<i32> {
        self.t.getattr(intern!(self.t.py(), "_sock_fd"))?.extract()
    }
}

/// A transport's `_sock_fd`, read once: asyncio sets it in `_SelectorTransport.__init__` and
/// never changes it, and the fast paths only use it while the transport is open. `-1` until
/// known.
struct FdCache(AtomicI32);

impl FdCache {
    fn get(&self, a: &Attrs<'_, '_>) -> PyResult<i32> {
        let fd = self.0.load(Relaxed);
        if fd >= 0 {
            return Ok(fd);
        }
        let fd = a.sock_fd()?;
        self.0.store(fd, Relaxed);
        Ok(fd)
    }
}

thread_local! {
    /// The receive buffer of the loop thread: one per thread, reused by every transport, as
    /// libuv's loop-wide read buffer. Receiving straight into a fresh `max_size` bytes object
    /// (what `socket.recv` does) costs an mmap, an mremap and an munmap per read once
    /// `max_size` passes glibc's mmap threshold (256 KiB does); one copy of what arrived is
    /// far cheaper.
    static RECV_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Once a transport's read brought at least this much, its next read asks the kernel how much
/// is queued (`FIONREAD`) and receives straight into the object handed to the protocol: one
/// ioctl instead of copying what arrived out of the shared buffer. A 100 KiB copy (with its
/// allocation) costs ~2.8 us here, the ioctl a few tenths; below this size the copy is the
/// cheaper of the two.
const SIZED_READ_MIN: usize = 64 * 1024;

/// A sized read that follows one which did not fill what it asked for skips the ioctl (329 ns
/// per call here, 1.3 % of a 100 KiB echo): it asks for the last size plus an eighth. A read
/// that comes back short drained the socket, as FIONREAD would have said; one that fills its
/// buffer may have left more queued, which the next event (epoll is level-triggered) reads,
/// and that read asks FIONREAD again. Predictions stay below glibc's default mmap threshold
/// (128 KiB), so the allocation is a heap chunk and shrinking it to what arrived is in place.
/// Only a bytes object is shrunk so: a `StreamReader`'s bytearray keeps the allocation a read
/// grew it by when shrunk by less than half (bytearrayobject.c `PyByteArray_Resize`), and
/// buffers an eighth larger than the bytes `read()` copies out of them defeated glibc's reuse
/// of freed chunks (0.26 `brk` and 12 page faults per 100 KiB echo message over 100
/// connections; 0.05 and 2 with FIONREAD), so stream reads always ask.
const PREDICTED_READ_MAX: usize = 124 * 1024;

/// After a read that filled `max_size`, a read into a `StreamReader`'s buffer
/// ([`SocketReader::feed_stream`]) asks for this many times `max_size` (512 KiB for asyncio's
/// 256 KiB). Every read event of a bulk stream costs the same fixed work whatever its size:
/// the reader goes over twice its limit, so the transport is paused (`pause_reading`), the
/// waiter's task runs `read()`, which resumes it (`resume_reading` registers a new reader),
/// and the loop polls once more between the two: about 37,000 user-space instructions and two
/// `epoll_wait` per event. A sender that is ahead keeps 1.5-1.8 MiB queued on loopback, so
/// fewer, larger reads are possible. Nothing else changes: the bytes go into the reader's
/// buffer, not to a `data_received`, and `read(n)` returns up to n bytes of what is buffered,
/// which depends on timing on every loop; the buffer may hold `2 * max_size` past the pause
/// threshold instead of `max_size` (docs/compatibility.md). Not more: `read()` copies the
/// buffer into new objects, and at 1 MiB per read glibc handed those allocations back to the
/// kernel and faulted them in again (85,000 page faults per GiB against 17,000 at 512 KiB and
/// 9,500 at 256 KiB), which cost what the fewer events saved; 512 KiB took 0.408 s of CPU per
/// GiB in one process against 0.455 s at 256 KiB and 0.412 s at 1 MiB
/// (`benches/streams_bulk.py`, median of 7, 3.11).
const STREAM_BULK_READ: usize = 2;

/// The block [`adapt_malloc_thresholds`] frees: 1 MiB, so glibc keeps up to 2 MiB of freed
/// heap at the top instead of 128 KiB.
const MALLOC_ADAPT_BLOCK: usize = 1024 * 1024;

/// Leaves glibc's malloc as it is in a process that has freed one 1 MiB block: glibc's `free`
/// of a block it had mapped (above its 128 KiB mmap threshold) raises that threshold to the
/// block's size and the heap-trim threshold to twice it (malloc/malloc.c, "dynamic mmap
/// threshold", up to 32 MiB), which a Python program reaching a 1 MiB `bytes` already gets.
/// A stream's messages go through three heap blocks each (the reader's bytearray, then
/// `read()`'s slice and bytes, asyncio's streams.py): with 10 connections of 100 KiB
/// messages the heap's free top swings by more than 1 MiB, and at the default 128 KiB glibc
/// gave it back with `brk` and faulted the pages in again on the next message (3.4 page
/// faults per message; 0 with a 2 MiB trim threshold). `mallopt` would fix the thresholds
/// and turn glibc's adaptation off for the process; this only does what glibc does for any
/// program. Once per process, when the first socket transport reader is made; glibc only.
fn adapt_malloc_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: a plain malloc/free pair of a block nothing else sees; black_box keeps
            // the compiler from eliding the pair (it may drop an unused allocation).
            unsafe {
                let p = std::hint::black_box(libc::malloc(MALLOC_ADAPT_BLOCK));
                libc::free(p);
            }
        });
    }
}

// `_PyBytes_Resize` (Include/cpython/bytesobject.h, exported by every CPython 3.x); pyo3's ffi
// keeps its declaration private.
extern "C" {
    pub(crate) fn _PyBytes_Resize(
        bytes: *mut *mut ffi::PyObject,
        newsize: ffi::Py_ssize_t,
    ) -> std::ffi::c_int;
}

/// One `recv` of up to `len` bytes straight into a new bytes object of that size, shrunk to
/// what arrived. The outer error is the allocation's (a MemoryError, which `sock.recv` would
/// raise too), the inner one the syscall's.
fn recv_sized(
    py: Python<'_>,
    fd: i32,
    len: usize,
) -> PyResult<Result<Bound<'_, PyBytes>, io::Error>> {
    let size = ffi::Py_ssize_t::try_from(len).unwrap_or(ffi::Py_ssize_t::MAX);
    // SAFETY: a NULL source makes PyBytes_FromStringAndSize return an uninitialised bytes
    // object of `size` bytes (or NULL with MemoryError); nothing else sees it until it is
    // filled and shrunk below.
    let mut raw = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), size) };
    if raw.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: raw is a fresh bytes object of `len` writable bytes, owned here.
    let got = crate::sys::recv(
        fd,
        unsafe { ffi::PyBytes_AsString(raw) }.cast::<c_void>(),
        len,
    );
    let keep = match &got {
        Ok(n) => ffi::Py_ssize_t::try_from(*n).unwrap_or(0),
        Err(_) => 0,
    };
    if keep != size {
        // SAFETY: raw is still the only reference (what _PyBytes_Resize requires); on failure
        // it frees the object, sets MemoryError and NULLs the pointer.
        if unsafe { _PyBytes_Resize(&mut raw, keep) } < 0 {
            return Err(PyErr::fetch(py));
        }
    }
    // SAFETY: raw is a new strong reference to a bytes object.
    let bytes = unsafe { Bound::from_owned_ptr(py, raw) }.cast_into::<PyBytes>()?;
    Ok(got.map(|_| bytes))
}

/// One `recv` of up to `max_size` bytes into the thread's receive buffer; `with` gets what
/// arrived (empty at end of stream) and must not run Python code.
pub(crate) fn recv_with<R>(
    fd: i32,
    max_size: usize,
    with: impl FnOnce(&[u8]) -> R,
) -> Result<R, io::Error> {
    RECV_BUF.with(|cell| {
        // Held only for the syscall and `with`; no Python code runs in between, so a nested
        // read on this thread cannot find it borrowed.
        let mut buf = cell
            .try_borrow_mut()
            .map_err(|_| io::Error::from(io::ErrorKind::WouldBlock))?;
        if buf.len() < max_size {
            buf.resize(max_size, 0);
        }
        let n = crate::sys::recv(fd, buf.as_mut_ptr().cast::<c_void>(), max_size)?;
        Ok(with(&buf[..n]))
    })
}

/// One `recv` of up to `max_size` bytes, returned as a bytes object of the size received.
pub(crate) fn recv_bytes(
    py: Python<'_>,
    fd: i32,
    max_size: usize,
) -> Result<Bound<'_, PyBytes>, io::Error> {
    recv_with(fd, max_size, |data| PyBytes::new(py, data))
}

thread_local! {
    /// A bytes object the read path handed to `data_received` and got back as its only holder,
    /// with the size it was allocated for: the next read's bytes, when they fit.
    static SPARE: RefCell<Option<(Py<PyBytes>, usize)>> = const { RefCell::new(None) };
}

/// The largest allocation kept as the spare; bigger reads are sized reads anyway
/// ([`SIZED_READ_MIN`]).
const SPARE_MAX: usize = SIZED_READ_MIN;

/// One past the largest allocation kept as the spare: `SPARE_MAX + 1` with the `bytes_reuse`
/// contract (`crate::cpython`), 0 (nothing kept) without; set at import.
static SPARE_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Turns the spare on when the `bytes_reuse` contract holds (called once, at import).
pub(crate) fn enable_bytes_reuse(on: bool) {
    SPARE_LIMIT.store(if on { SPARE_MAX + 1 } else { 0 }, Relaxed);
}

/// A bytes object holding `data`, and the size it was allocated for: the spare one refilled
/// when nothing but the spare slot refers to it and `data` fits without wasting more than half
/// of it, a new one otherwise. A 1 KiB bytes object is past glibc's tcache (1,032 bytes), so
/// its malloc and free were ~450 of an echo's ~2,750 user-space instructions per message;
/// reusing it is what CPython's own free lists do for floats and tuples. Refilling is
/// invisible: an object only this thread's slot refers to cannot be seen by anyone (bytes are
/// not tracked by the GC), and its cached hash is reset.
fn bytes_for<'py>(py: Python<'py>, data: &[u8]) -> (Bound<'py, PyBytes>, usize) {
    let n = data.len();
    if let Some((spare, cap)) = SPARE.with(|s| s.borrow_mut().take()) {
        let spare = spare.into_bound(py);
        if n <= cap && n * 2 >= cap && refcnt(&spare) == 1 {
            // SAFETY: the object is a bytes object allocated for `cap` bytes plus the NUL
            // (PyBytes_FromStringAndSize), n <= cap, we hold its only reference, and it was
            // kept only with the `bytes_reuse` contract holding (`SPARE_LIMIT`).
            unsafe { cpython::bytes::refill(&spare, data) };
            return (spare, cap);
        }
    }
    (PyBytes::new(py, data), n)
}

fn refcnt(obj: &Bound<'_, PyAny>) -> ffi::Py_ssize_t {
    // SAFETY: obj is a live object.
    unsafe { ffi::Py_REFCNT(obj.as_ptr()) }
}

/// Keeps `data` (allocated for `cap` bytes) as the spare when the read path holds its only
/// reference, i.e. the protocol kept nothing of it.
fn recycle(data: Bound<'_, PyBytes>, cap: usize) {
    if cap < SPARE_LIMIT.load(Relaxed) && refcnt(&data) == 1 {
        let old = SPARE.with(|s| s.borrow_mut().replace((data.unbind(), cap)));
        // Freed after the slot is released (a bytes object's dealloc runs no Python code).
        drop(old);
    }
}

impl crate::loop_core::native::NativeCallback for SocketReader {
    #[inline]
    fn run_native(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.get().read_event(slf.py())
    }
}

impl SocketReader {
    /// What a read into a stream reader's buffer asks for after one that filled `max_size`.
    fn stream_bulk_read(&self) -> usize {
        self.max_size.saturating_mul(STREAM_BULK_READ)
    }

    /// How much the next read should take straight into its destination, 0 for a read through
    /// the shared buffer (see [`SIZED_READ_MIN`]). `bulk`: what to ask for after a read that
    /// filled `max_size` (see [`STREAM_BULK_READ`]). `predict`: the size may be guessed from
    /// the last read ([`PREDICTED_READ_MAX`]), for a destination that is shrunk to what
    /// arrived.
    fn sized_read(&self, fd: i32, bulk: usize, predict: bool) -> usize {
        let st = self.state.get();
        let last = st.last_read.load(Relaxed);
        if last < SIZED_READ_MIN {
            return 0;
        }
        let predicted = (last + last / 8).min(self.max_size);
        if predict && last != st.last_asked.load(Relaxed) && predicted <= PREDICTED_READ_MAX {
            st.last_asked.store(predicted, Relaxed);
            return predicted;
        }
        st.last_asked.store(0, Relaxed);
        if last >= self.max_size {
            // The last read filled all a read may take: a bulk sender, whose socket FIONREAD
            // would say holds at least that much again (it said 1.5-1.8 MiB on each read of a
            // 1 GiB stream); a short read is shrunk as any sized read.
            return bulk;
        }
        // An error (a closed fd, say) or nothing queued: the plain recv reports it.
        crate::sys::bytes_queued(fd).unwrap_or(0).min(self.max_size)
    }

    /// One read event (the body of `__call__`; the loop calls it directly).
    pub(crate) fn read_event(&self, py: Python<'_>) -> PyResult<()> {
        let t = self.transport.bind(py);
        let a = Attrs::new(t);
        if a.flag(Field::ConnLost)? {
            return Ok(());
        }
        if a.flag(Field::Buffered)? {
            self.buffer_updated(&a)
        } else {
            self.data_received(&a)
        }
    }

    fn data_received(&self, a: &Attrs<'_, '_>) -> PyResult<()> {
        let t = a.t;
        let py = t.py();
        let fd = self.fd.get(a)?;
        let proto = a.get(Field::Protocol)?;
        if let Some(feed) = streams::fast_feed(&proto) {
            return self.feed_stream(t, fd, feed);
        }
        let sized = self.sized_read(fd, self.max_size, true);
        // The bytes and the size they were allocated for (0: not to be kept as the spare).
        let got = if sized > 0 {
            match recv_sized(py, fd, sized) {
                Ok(r) => r.map(|d| (d, 0)),
                Err(e) => return fatal(t, e, "Fatal read error on socket transport"),
            }
        } else {
            recv_with(fd, self.max_size, |data| {
                if data.is_empty() {
                    (PyBytes::new(py, data), 0)
                } else {
                    bytes_for(py, data)
                }
            })
        };
        let (data, cap) = match got {
            Ok(d) => d,
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) => return fatal(t, os_error(e), "Fatal read error on socket transport"),
        };
        self.state
            .get()
            .last_read
            .store(data.as_bytes().len(), Relaxed);
        if data.as_bytes().is_empty() {
            crate::transport_life::on_eof(t)?;
            return Ok(());
        }
        if let Err(e) = proto.call_method1(intern!(py, "data_received"), (&data,)) {
            return fatal(t, e, "Fatal error: protocol.data_received() call failed.");
        }
        if cap > 0 {
            recycle(data, cap);
        }
        Ok(())
    }

    /// The read event of a transport serving asyncio's `StreamReaderProtocol` (see
    /// [`streams`]): the same steps, with the bytes going straight into the reader's buffer.
    fn feed_stream(
        &self,
        t: &Bound<'_, PyAny>,
        fd: i32,
        feed: Option<streams::Feed<'_>>,
    ) -> PyResult<()> {
        // (bytes received, the outcome of adding them to the reader's buffer); 0 bytes is the
        // end of the stream. A sized read lands in the buffer itself; otherwise the bytes are
        // copied in from the shared receive buffer.
        let sized = feed
            .as_ref()
            .and_then(|f| f.recv_into(fd, self.sized_read(fd, self.stream_bulk_read(), false)));
        let got = match sized {
            Some(r) => r.map(|n| (n, Ok(()))),
            None => recv_with(fd, self.max_size, |data| {
                let added = match &feed {
                    Some(f) if !data.is_empty() => f.extend(data),
                    _ => Ok(()),
                };
                (data.len(), added)
            }),
        };
        let extended = match got {
            Ok((0, _)) => {
                crate::transport_life::on_eof(t)?;
                return Ok(());
            }
            Ok((n, added)) => {
                self.state.get().last_read.store(n, Relaxed);
                added
            }
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) => return fatal(t, os_error(e), "Fatal read error on socket transport"),
        };
        if let Err(e) = extended.and_then(|()| feed.map_or(Ok(()), streams::Feed::finish)) {
            return fatal(t, e, "Fatal error: protocol.data_received() call failed.");
        }
        Ok(())
    }

    fn buffer_updated(&self, a: &Attrs<'_, '_>) -> PyResult<()> {
        let t = a.t;
        let py = t.py();
        let proto = a.get(Field::Protocol)?;
        let buf = match proto
            .call_method1(intern!(py, "get_buffer"), (-1,))
            .and_then(|b| match b.len() {
                Ok(0) => Err(PyRuntimeError::new_err(
                    "get_buffer() returned an empty buffer",
                )),
                Ok(_) => Ok(b),
                Err(e) => Err(e),
            }) {
            Ok(b) => b,
            Err(e) => return fatal(t, e, "Fatal error: protocol.get_buffer() call failed."),
        };
        let fd = self.fd.get(a)?;
        let nbytes = match recv_into(&buf, fd) {
            Ok(Ok(n)) => n,
            Ok(Err(e)) if would_block(&e) => return Ok(()),
            Ok(Err(e)) => return fatal(t, os_error(e), "Fatal read error on socket transport"),
            // The object is not a writable buffer: socket.recv_into's TypeError.
            Err(e) => return fatal(t, e, "Fatal read error on socket transport"),
        };
        if nbytes == 0 {
            crate::transport_life::on_eof(t)?;
            return Ok(());
        }
        let proto = a.get(Field::Protocol)?;
        if let Err(e) = proto.call_method1(intern!(py, "buffer_updated"), (nbytes,)) {
            return fatal(t, e, "Fatal error: protocol.buffer_updated() call failed.");
        }
        Ok(())
    }
}

/// `memoryview(data)[n:len]`: what a partial send leaves for asyncio's `write` to queue. A view,
/// not a copy: a large write (megabytes, of which the kernel takes what fits in the socket
/// buffer) used to copy its rest into a new bytes object, whose fresh pages then faulted in;
/// asyncio 3.12+ queues exactly this view (selector_events.py `write`: `data =
/// memoryview(data)[n:]`), and 3.10/3.11 copy it into their `bytearray` buffer as they copy
/// `data[n:]`.
fn tail_view<'py>(data: &Bound<'py, PyAny>, n: usize, len: usize) -> PyResult<Bound<'py, PyAny>> {
    let py = data.py();
    let view = if data.is_exact_instance_of::<PyMemoryView>() {
        data.clone()
    } else {
        // SAFETY: data is a live bytes or bytearray; a new reference or NULL with an error.
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyMemoryView_FromObject(data.as_ptr()))? }
    };
    let lo = ffi::Py_ssize_t::try_from(n).unwrap_or(ffi::Py_ssize_t::MAX);
    let hi = ffi::Py_ssize_t::try_from(len).unwrap_or(ffi::Py_ssize_t::MAX);
    // SAFETY: view is a live memoryview; PySequence_GetSlice slices it through its
    // mp_subscript (a new reference, or NULL with an error set).
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PySequence_GetSlice(view.as_ptr(), lo, hi)) }
}

/// The Python `write` of asyncio's transport, for every case the fast path leaves alone.
fn write_slow(t: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<()> {
    t.call_method1(intern!(t.py(), "_write_slow"), (data,))?;
    Ok(())
}

/// `socket.recv_into(buf)`: the outer error is the buffer request failing (a TypeError for
/// an object that is not a writable contiguous buffer), the inner one the syscall's.
pub(crate) fn recv_into(buf: &Bound<'_, PyAny>, fd: i32) -> PyResult<Result<usize, io::Error>> {
    let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
    // SAFETY: buf is a live object; on success the view is filled and must be released.
    let rc =
        unsafe { ffi::PyObject_GetBuffer(buf.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_WRITABLE) };
    if rc != 0 {
        // socket.recv_into's "w*" converter turns any refusal (read-only, not contiguous, not
        // a buffer) into this TypeError (Python/getargs.c), which asyncio reports.
        drop(PyErr::fetch(buf.py()));
        return Err(PyTypeError::new_err(format!(
            "recv_into() argument 1 must be read-write bytes-like object, not {}",
            buf.get_type().name()?
        )));
    }
    // SAFETY: PyObject_GetBuffer succeeded, so the view is initialised.
    let mut view = unsafe { view.assume_init() };
    let len = usize::try_from(view.len).unwrap_or(0);
    // As socket.recv_into: a zero length makes no syscall (`sock_recv_guts` returns 0,
    // Modules/socketmodule.c), so an empty buffer gets 0 on any socket.
    let res = if len == 0 {
        Ok(0)
    } else {
        crate::sys::recv(fd, view.buf, len)
    };
    // SAFETY: the view came from a successful PyObject_GetBuffer and is released once.
    unsafe { ffi::PyBuffer_Release(&mut view) };
    Ok(res)
}

#[pymethods]
impl SocketReader {
    /// `state`: the transport's [`ReadState`], kept across its readers; a fresh one when
    /// `None`.
    #[new]
    #[pyo3(signature = (transport, state = None))]
    pub(crate) fn new(
        transport: &Bound<'_, PyAny>,
        state: Option<Py<ReadState>>,
    ) -> PyResult<Self> {
        let py = transport.py();
        let max_size = transport
            .getattr(intern!(py, "max_size"))
            .and_then(|v| v.extract::<usize>())
            .unwrap_or(DEFAULT_MAX_SIZE);
        let state = match state {
            Some(s) => s,
            None => Py::new(py, ReadState::new())?,
        };
        adapt_malloc_thresholds();
        Ok(Self {
            transport: transport.clone().unbind(),
            max_size: max_size.max(1),
            fd: FdCache(AtomicI32::new(-1)),
            state,
        })
    }

    /// `_read_ready`: one read event, for a Protocol or a BufferedProtocol (as the
    /// transport's `_read_ready_cb` would choose).
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        self.read_event(py)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "<SocketReader of {}>",
            self.transport.bind(py).repr()?
        ))
    }

    /// What asyncio's handle repr (format_helpers._format_callback) prints for the reader:
    /// the name of the method it stands for, as with stock asyncio's bound `_read_ready`.
    #[getter]
    fn __qualname__(&self) -> &'static str {
        "_SelectorSocketTransport._read_ready"
    }

    #[getter]
    fn __name__(&self) -> &'static str {
        "_read_ready"
    }

    /// The reader is in every cycle a loop dropped without `close()` leaves (loop -> fd table
    /// -> reader handle -> reader -> transport -> loop), so the collector must see its
    /// reference. It needs no `__clear__` (as tuples have none): the transport in the same
    /// cycle is an instance of a Python class, whose `tp_clear` empties its slots and dict and
    /// so breaks the cycle; and a reader that is never cleared keeps its transport as one
    /// field read per event, without a cell to borrow and a reference to take (+1.5 % of a
    /// 1 KiB echo's instructions with one).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.transport)
    }
}

#[pymethods]
impl SocketWriter {
    #[new]
    #[pyo3(signature = (transport, native = true))]
    pub(crate) fn new(transport: &Bound<'_, PyAny>, native: bool) -> PyResult<Self> {
        Ok(Self {
            transport: PyWeakrefReference::new(transport)?.unbind(),
            fd: FdCache(AtomicI32::new(-1)),
            native,
        })
    }

    /// `write(data)`: sends at once when nothing is queued; otherwise asyncio's `write`.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(t) = self.transport.bind(py).upgrade() else {
            return Ok(());
        };
        if !self.native {
            return write_slow(&t, data);
        }
        let is_memoryview = data.is_exact_instance_of::<PyMemoryView>();
        if !data.is_exact_instance_of::<PyBytes>()
            && !data.is_exact_instance_of::<PyByteArray>()
            && !is_memoryview
        {
            return write_slow(&t, data);
        }
        // The checks may run Python code (a property on a subclass), so the buffer pointer
        // is taken after them, right before the send.
        let a = Attrs::new(&t);
        let data_len = if is_memoryview {
            data.len()?
        } else {
            // SAFETY: data is exactly a bytes or a bytearray, whose `ob_size` is its length.
            unsafe { ffi::Py_SIZE(data.as_ptr()) as usize }
        };
        if data_len == 0
            || a.flag(Field::ConnLost)?
            || a.flag(Field::Eof)?
            || !a.is_none(Field::EmptyWaiter)?
            || queued(&a.get(Field::Buffer)?)? != 0
        {
            return write_slow(&t, data);
        }
        let fd = self.fd.get(&a)?;
        if is_memoryview {
            return self.write_memoryview(&t, data, fd);
        }
        let (ptr, len): (*const u8, usize) = if let Ok(b) = data.cast_exact::<PyBytes>() {
            let s = b.as_bytes();
            (s.as_ptr(), s.len())
        } else if let Ok(b) = data.cast_exact::<PyByteArray>() {
            // SAFETY: the pointer is used for one send below, with the GIL held and no
            // Python code running in between, so the bytearray cannot be resized meanwhile.
            let s = unsafe { b.as_bytes() };
            (s.as_ptr(), s.len())
        } else {
            return write_slow(&t, data);
        };
        match crate::sys::send(fd, ptr.cast::<c_void>(), len) {
            Ok(n) if n == len => Ok(()),
            Ok(n) => write_slow(&t, &tail_view(data, n, len)?),
            Err(e) if would_block(&e) => write_slow(&t, data),
            Err(e) => fatal(&t, os_error(e), "Fatal write error on socket transport"),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.transport)
    }
}

/// `len(transport._buffer)`: read from the Rust struct when it is the 3.10/3.11
/// [`WriteBuffer`](crate::writebuf::WriteBuffer) (its `__len__` through PyO3's trampoline was
/// ~60 of a streams echo's instructions per message); `len()` otherwise (3.12+'s deque).
#[inline]
fn queued(buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
    if let Ok(wb) = buffer.cast_exact::<crate::writebuf::WriteBuffer>() {
        if let Ok(b) = wb.try_borrow() {
            return Ok(b.queued());
        }
    }
    buffer.len()
}

/// A buffer export, released when dropped (the GIL is held wherever these live).
struct BufferView(ffi::Py_buffer);

impl Drop for BufferView {
    fn drop(&mut self) {
        // SAFETY: self.0 came from a successful PyObject_GetBuffer and is released once.
        unsafe { ffi::PyBuffer_Release(&mut self.0) };
    }
}

impl SocketWriter {
    /// The nothing-queued `write` of a memoryview (what a BufferedProtocol echoing its own
    /// buffer passes): one `send` from the exported buffer when it is one C-contiguous run of
    /// bytes whose length is `len(view)`, so that `data[n:]`, which asyncio queues after a
    /// partial send, means the same bytes; anything else is asyncio's `write`.
    fn write_memoryview(
        &self,
        t: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        fd: i32,
    ) -> PyResult<()> {
        let py = t.py();
        let mut raw = std::mem::MaybeUninit::<ffi::Py_buffer>::zeroed();
        // SAFETY: data is a live memoryview; on success the export is owned by `view` below.
        if unsafe { ffi::PyObject_GetBuffer(data.as_ptr(), raw.as_mut_ptr(), ffi::PyBUF_SIMPLE) }
            != 0
        {
            // Not contiguous (or released): asyncio's write raises or copes as it does.
            drop(PyErr::take(py));
            return write_slow(t, data);
        }
        // SAFETY: PyObject_GetBuffer succeeded, so the struct is initialized.
        let view = BufferView(unsafe { raw.assume_init() });
        let len = view.0.len as usize;
        if data.len()? != len {
            drop(view);
            return write_slow(t, data);
        }
        let ptr = view.0.buf as *const u8;
        match crate::sys::send(fd, ptr.cast::<c_void>(), len) {
            Ok(n) if n == len => Ok(()),
            Ok(n) => {
                drop(view);
                write_slow(t, &tail_view(data, n, len)?)
            }
            Err(e) if would_block(&e) => {
                drop(view);
                write_slow(t, data)
            }
            Err(e) => {
                drop(view);
                fatal(t, os_error(e), "Fatal write error on socket transport")
            }
        }
    }
}

/// `SocketWriter.write` as a raw vectorcall method (installed over PyO3's wrapper by
/// `install_fast_write`): protocols call it once per message, and PyO3's trampoline and
/// argument extraction were about 4 % of an echo's user-space instructions.
unsafe extern "C" fn write_fast(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls this through the method descriptor made in `install_fast_write`,
    // with the GIL held, `slf` a live SocketWriter (the descriptor checks the type) and the
    // vectorcall arguments alive for the call.
    let py = unsafe { Python::assume_attached() };
    let run = || -> PyResult<()> {
        // SAFETY: as above; `data` is the one positional argument, or the value of the one
        // keyword argument, which must be named "data" (asyncio's `def write(self, data)`).
        let (w, data) = unsafe {
            let nargs = ffi::PyVectorcall_NARGS(nargsf as usize) as usize;
            let nkw = if kwnames.is_null() {
                0
            } else {
                ffi::PyTuple_GET_SIZE(kwnames) as usize
            };
            let named_data = nkw == 1
                && ffi::PyUnicode_CompareWithASCIIString(
                    ffi::PyTuple_GET_ITEM(kwnames, 0),
                    c"data".as_ptr(),
                ) == 0;
            if !((nargs == 1 && nkw == 0) || (nargs == 0 && named_data)) {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "write() takes exactly one argument 'data' ({} given)",
                    nargs + nkw
                )));
            }
            (
                Bound::from_borrowed_ptr(py, slf).cast_into_unchecked::<SocketWriter>(),
                Bound::from_borrowed_ptr(py, *args),
            )
        };
        w.get().write(py, &data)
    };
    crate::pyutil::c_return(py, "transport write", || {
        run()?;
        // SAFETY: a new reference to None.
        Ok(unsafe {
            ffi::Py_INCREF(ffi::Py_None());
            ffi::Py_None()
        })
    })
}

static WRITE_DEF: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"write".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionFastWithKeywords: write_fast,
    },
    ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
    ml_doc: c"write($self, data)\n--\n\nSend data now when nothing is queued; otherwise asyncio's write.".as_ptr(),
});

/// Replaces PyO3's `SocketWriter.write` with the raw descriptor above.
pub(crate) fn install_fast_write(py: Python<'_>) -> PyResult<()> {
    let tp = py.get_type::<SocketWriter>();
    install_method(&tp, &tp, &WRITE_DEF)
}
