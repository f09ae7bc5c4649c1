//! The per-record data path of asyncio's `sslproto.SSLProtocol` (3.11+) in Rust: the steps
//! `buffer_updated` → `_do_read` → `_do_read__copied` and `_write_appdata` → `_do_write` →
//! `_process_outgoing` take in the WRAPPED state, calling the same C methods of CPython's own
//! `_ssl._SSLSocket` and `_ssl.MemoryBIO` the Python code calls (so every certificate, context
//! setting and error is CPython's), without the Python frames around them; and `get_buffer`.
//!
//! `oxloop/_tls.py`'s `SSLProtocol` subclass gets raw METH_O `buffer_updated`,
//! `_write_appdata` and `get_buffer` ([`tls_install`]), one body ([`method_o`]): the native
//! step, or, when the case is not the plain one it handles (another state, a buffered app
//! protocol, a write backlog, an `SSLObject` subclass, an `n` that is not an int), asyncio's
//! Python method, called as on stock asyncio with nothing done before it.
//! The handshake, shutdown, flushing, errors and flow control changes stay asyncio's code.
//!
//! Each step mirrors Lib/asyncio/sslproto.py (identical on 3.11-3.15 for these methods):
//! the order of calls, what is inside the `try` that ends in `_fatal_error(ex, 'Fatal error
//! on SSL protocol')` (only `Exception`s: a `BaseException` propagates, as there), and the
//! bookkeeping of `_write_backlog` / `_write_buffer_size`. One call is skipped: after a read
//! that returned data, when the incoming BIO and the `SSL` object hold no more bytes, the next
//! `read` could only raise `SSLWantReadError` (OpenSSL reads one record at a time from a
//! memory BIO, CPython never enables read-ahead), which `_do_read__copied` ignores. The
//! decrypted chunks of one `_do_read__copied` are read into one bytes object (`read(len,
//! buffer)`) instead of one per record joined after: `data_received` gets the same bytes in
//! the same one call; asyncio's own `StreamReaderProtocol` gets them in its reader's buffer
//! (`streams::fast_feed`, as the plaintext transport does).
//!
//! Invariants: called with the GIL held, on the loop's thread; nothing is borrowed across a
//! call into Python (every field is re-read, from its slot, after one: [`Attrs`]).
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple, PyType};

use pyo3::ffi;

use crate::cpython::members;
use crate::pyutil::{dict_get, install_method, instance_dict, MethodDef};

/// Records read and application writes handled here (for tests: the native path ran).
static NATIVE_READS: AtomicU64 = AtomicU64::new(0);
static NATIVE_WRITES: AtomicU64 = AtomicU64::new(0);

/// The largest plaintext of one TLS record (2**14).
const RECORD_PLAINTEXT: isize = 16384;

/// What the data path compares against, from the running asyncio and ssl.
struct Refs {
    wrapped: Py<PyAny>,
    again: Py<PyAny>,
    ssl_object: Py<PyType>,
}

static REFS: PyOnceLock<Refs> = PyOnceLock::new();

fn refs(py: Python<'_>) -> PyResult<&Refs> {
    REFS.get_or_try_init(py, || {
        let sslproto = py.import("asyncio.sslproto")?;
        let wrapped = sslproto
            .getattr("SSLProtocolState")?
            .getattr("WRAPPED")?
            .unbind();
        let again = sslproto.getattr("SSLAgainErrors")?.unbind();
        let ssl_object = py
            .import("ssl")?
            .getattr("SSLObject")?
            .cast_into::<PyType>()?
            .unbind();
        Ok(Refs {
            wrapped,
            again,
            ssl_object,
        })
    })
}

/// The protocol attributes the data path reads, in the order of [`FIELD_NAMES`].
#[derive(Clone, Copy)]
enum Field {
    State,
    AppProtocolIsBuffer,
    Sslobj,
    Incoming,
    Outgoing,
    SslBuffer,
    SslBufferView,
    AppReadingPaused,
    AppProtocol,
    WriteBacklog,
    SslWritingPaused,
    Transport,
    WriteBufferSize,
    AppWritingPaused,
    OutgoingHighWater,
    OutgoingLowWater,
    SslReadingPaused,
    IncomingHighWater,
    IncomingLowWater,
}

/// The names of the [`Field`]s, exported as `_oxloop.TLS_FIELDS`, from which
/// `_tls.SSLProtocol.__slots__` (python/oxloop/_tls.py) is made.
pub(crate) const FIELD_NAMES: [&str; 19] = [
    "_state",
    "_app_protocol_is_buffer",
    "_sslobj",
    "_incoming",
    "_outgoing",
    "_ssl_buffer",
    "_ssl_buffer_view",
    "_app_reading_paused",
    "_app_protocol",
    "_write_backlog",
    "_ssl_writing_paused",
    "_transport",
    "_write_buffer_size",
    "_app_writing_paused",
    "_outgoing_high_water",
    "_outgoing_low_water",
    "_ssl_reading_paused",
    "_incoming_high_water",
    "_incoming_low_water",
];

/// Where `_tls.SSLProtocol` keeps each [`Field`]: the byte offset of its slot.
struct SlotTable {
    ty: Py<PyType>,
    offsets: [isize; FIELD_NAMES.len()],
}

/// Set once by [`tls_install`] when the slots were found where their descriptors say.
static SLOTS: std::sync::OnceLock<SlotTable> = std::sync::OnceLock::new();

/// `_tls._StartTLSProtocol`: the slotless class `start_tls`'s protocol is switched to (a
/// `__class__` assignment needs asyncio's layout), whose fields are in its `__dict__`.
static PLAIN: std::sync::OnceLock<Py<PyType>> = std::sync::OnceLock::new();

/// The [`FIELD_NAMES`] as interned strings, made once.
static NAMES: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();

fn names(py: Python<'_>) -> PyResult<&Vec<Py<PyString>>> {
    NAMES.get_or_try_init(py, || {
        Ok(FIELD_NAMES
            .iter()
            .map(|n| PyString::intern(py, n).unbind())
            .collect())
    })
}

/// How [`Attrs`] reads a protocol's fields.
#[derive(Clone, Copy)]
enum Store {
    /// Exactly `_tls.SSLProtocol`: from the slots.
    Slots(&'static SlotTable),
    /// Exactly `_tls._StartTLSProtocol` (asyncio's class defines no descriptor with these
    /// names): from the instance `__dict__`.
    Dict,
    /// Anything else (a subclass may have made a field a property): `getattr`.
    Attr,
}

/// Reads the protocol's fields: one load from their slot when the protocol is exactly
/// `_tls.SSLProtocol` (asyncio's code stores them through the slot descriptors), through the
/// attribute protocol for a subclass or when a slot is unset (the AttributeError is
/// asyncio's). Every read is of the current value: nothing is cached across a call into
/// Python.
#[derive(Clone, Copy)]
struct Attrs<'a, 'py> {
    p: &'a Bound<'py, PyAny>,
    store: Store,
}

impl<'a, 'py> Attrs<'a, 'py> {
    fn new(p: &'a Bound<'py, PyAny>) -> Self {
        // SAFETY: p is a live object; its type pointer is only compared.
        let ty = unsafe { ffi::Py_TYPE(p.as_ptr()) }.cast::<ffi::PyObject>();
        let store = match SLOTS.get() {
            Some(s) if ty == s.ty.as_ptr() => Store::Slots(s),
            _ if PLAIN.get().is_some_and(|c| ty == c.as_ptr()) => Store::Dict,
            _ => Store::Attr,
        };
        Self { p, store }
    }

    #[inline]
    fn get(&self, field: Field) -> PyResult<Bound<'py, PyAny>> {
        let py = self.p.py();
        if let Store::Slots(s) = self.store {
            // SAFETY: p's type is exactly the registered class, whose layout has this slot.
            let v = unsafe { members::read(self.p.as_ptr(), s.offsets[field as usize]) };
            if !v.is_null() {
                // SAFETY: a live object stored in the slot; we take a new reference.
                return Ok(unsafe { Bound::from_borrowed_ptr(py, v) });
            }
        }
        self.get_slow(field)
    }

    /// [`Attrs::get`] from the `__dict__` or by attribute (and an unset slot).
    #[inline(never)]
    fn get_slow(&self, field: Field) -> PyResult<Bound<'py, PyAny>> {
        let py = self.p.py();
        let name = names(py)?[field as usize].bind(py);
        match self.store {
            Store::Dict => {
                if let Some(d) = instance_dict(self.p) {
                    if let Some(v) = dict_get(&d, name)? {
                        return Ok(v);
                    }
                }
            }
            Store::Slots(_) | Store::Attr => {}
        }
        self.p.getattr(name)
    }

    /// `bool(self.<field>)`, without a call for the singletons.
    fn flag(&self, field: Field) -> PyResult<bool> {
        let v = self.get(field)?;
        // SAFETY: comparing with the addresses of the interpreter's singletons.
        unsafe {
            if v.as_ptr() == ffi::Py_False() || v.as_ptr() == ffi::Py_None() {
                return Ok(false);
            }
            if v.as_ptr() == ffi::Py_True() {
                return Ok(true);
            }
        }
        v.is_truthy()
    }
}

/// `_tls.SSLProtocol` declares the [`FIELD_NAMES`] as `__slots__`, so the data path reads
/// each with one load at an offset taken from the slot's member descriptor (checked on a probe
/// instance, `crate::cpython::members`) instead of a lookup in the instance `__dict__` (about
/// 3,400 of 43,600 instructions per 1 KiB echo message, callgrind). The same assumption as the
/// socket transport's slots: forcing `transport_slots` off reads them by attribute here too.
fn register_slots(cls: &Bound<'_, PyType>) -> PyResult<()> {
    let py = cls.py();
    if !cls.hasattr(FIELD_NAMES[0])? {
        // No slot descriptors: start_tls's class.
        drop(PLAIN.set(cls.clone().unbind()));
        return Ok(());
    }
    if crate::cpython::forced(crate::cpython::Entry::TransportSlots) {
        return Ok(());
    }
    // object.__new__: an instance with the class's layout and no __init__ run.
    let probe = cls.call_method1(intern!(py, "__new__"), (cls,))?;
    let mut offsets = [0isize; FIELD_NAMES.len()];
    for (i, name) in FIELD_NAMES.iter().enumerate() {
        match members::slot_offset(cls, &probe, name)? {
            Some(off) => offsets[i] = off,
            None => return Ok(()),
        }
    }
    let table = SlotTable {
        ty: cls.clone().unbind(),
        offsets,
    };
    // Installed again (importlib.reload, say): the first class keeps the fast path.
    drop(SLOTS.set(table));
    Ok(())
}

/// The `_ssl._SSLSocket` under the protocol's `SSLObject` when that is exactly
/// `ssl.SSLObject` (whose `read` / `write` / `pending` only forward to it); `None` otherwise.
fn raw_sslobj<'py>(sslobj: &Bound<'py, PyAny>, r: &Refs) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = sslobj.py();
    if !sslobj.get_type().is(r.ssl_object.bind(py)) {
        return Ok(None);
    }
    match instance_dict(sslobj) {
        Some(d) => dict_get(&d, intern!(py, "_sslobj")),
        None => Ok(None),
    }
}

/// `slice(start, stop)` (None where absent), as Python's `x[start:stop]` builds it.
/// (PyO3's `PySlice::new` leaks its three ints: `PySlice_New` does not steal them.)
fn slice<'py>(
    start: Option<&Bound<'py, PyAny>>,
    stop: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = match (start, stop) {
        (Some(a), _) | (None, Some(a)) => a.py(),
        (None, None) => return Err(pyo3::exceptions::PyValueError::new_err("empty slice")),
    };
    let ptr = |b: Option<&Bound<'py, PyAny>>| b.map_or(std::ptr::null_mut(), |b| b.as_ptr());
    // SAFETY: start and stop are live objects or NULL (None); PySlice_New takes new
    // references of its own and returns a new reference or NULL with an exception.
    unsafe {
        let raw = ffi::PySlice_New(ptr(start), ptr(stop), std::ptr::null_mut());
        Bound::from_owned_ptr_or_err(py, raw)
    }
}

/// Runs `body` as the `try:` of sslproto's `_do_read` / `_write_appdata`: an `Exception`
/// goes to `self._fatal_error(ex, 'Fatal error on SSL protocol')`, anything else propagates.
fn guarded(proto: &Bound<'_, PyAny>, body: impl FnOnce() -> PyResult<()>) -> PyResult<()> {
    let py = proto.py();
    match body() {
        Ok(()) => Ok(()),
        Err(e) if e.is_instance_of::<PyException>(py) => {
            proto.call_method1(
                intern!(py, "_fatal_error"),
                (e.into_value(py), intern!(py, "Fatal error on SSL protocol")),
            )?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `SSLProtocol.buffer_updated(nbytes)` in the WRAPPED state with a non-buffered app protocol;
/// `False` (nothing done) in any other case.
#[pyfunction]
pub(crate) fn tls_buffer_updated(
    proto: &Bound<'_, PyAny>,
    nbytes: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let py = proto.py();
    let r = refs(py)?;
    let a = Attrs::new(proto);
    if !a.get(Field::State)?.is(r.wrapped.bind(py)) {
        return Ok(false);
    }
    if a.flag(Field::AppProtocolIsBuffer)? {
        return Ok(false);
    }
    let sslobj = a.get(Field::Sslobj)?;
    let Some(raw) = raw_sslobj(&sslobj, r)? else {
        return Ok(false);
    };
    // `self._sslobj.read(self.max_size)`: a max_size that is not a positive int (a read of
    // 0 bytes returns b'', which sslproto takes for the end of the stream) is left to asyncio.
    let Some(max_size) = positive_int(&proto.getattr(intern!(py, "max_size"))?) else {
        return Ok(false);
    };
    // self._incoming.write(self._ssl_buffer_view[:nbytes])
    let incoming = a.get(Field::Incoming)?;
    let view = a.get(Field::SslBufferView)?;
    let part = view.get_item(slice(None, Some(nbytes))?)?;
    // (MemoryBIO.write returns how many bytes it took: all of them.)
    let size: isize = incoming
        .call_method1(intern!(py, "write"), (part,))?
        .extract()
        .unwrap_or(RECORD_PLAINTEXT);
    NATIVE_READS.fetch_add(1, Ordering::Relaxed);
    // self._do_read(): the state is still WRAPPED (a write to a memory BIO calls nothing).
    guarded(proto, || {
        if !a.flag(Field::AppReadingPaused)? {
            read_copied(a, &raw, &incoming, size, max_size, r)?;
            if a.flag(Field::WriteBacklog)? {
                proto.call_method0(intern!(py, "_do_write"))?;
            } else {
                process_outgoing(a)?;
            }
        }
        control_ssl_reading(a)
    })?;
    Ok(true)
}

/// An exact int above 0 that fits an isize.
fn positive_int(o: &Bound<'_, PyAny>) -> Option<isize> {
    let n: isize = o.cast_exact::<pyo3::types::PyInt>().ok()?.extract().ok()?;
    (n > 0).then_some(n)
}

/// `_do_read__copied`: every decrypted chunk, then one `data_received`; end of stream
/// (close_notify) calls `_call_eof_received` and `_start_shutdown`.
///
/// The chunks are read straight into one bytes object (`_ssl`'s `read(len, buffer)`, the
/// same `SSL_read_ex` as `read(len)`), which is what `data_received` gets: no bytes object
/// per record and no join (at 64 KiB a message is four records). asyncio's own
/// `StreamReaderProtocol` (`streams::fast_feed`) gets them in its reader's buffer instead, as
/// the plaintext transport's read path does, without its `data_received` frames.
fn read_copied(
    a: Attrs<'_, '_>,
    raw: &Bound<'_, PyAny>,
    incoming: &Bound<'_, PyAny>,
    nbytes: isize,
    max_size: isize,
    r: &Refs,
) -> PyResult<()> {
    let proto = a.p;
    let py = proto.py();
    let (data, eof) = read_records(proto, raw, incoming, nbytes, max_size, r)?;
    if let Some(data) = data {
        let app = a.get(Field::AppProtocol)?;
        // No Python code runs between fast_feed's checks and the feed (streams.rs).
        match crate::streams::fast_feed(&app) {
            Some(Some(feed)) => {
                feed.extend(data.as_bytes())?;
                feed.finish()?;
            }
            Some(None) => {} // the reader is gone: data_received drops the data
            None => {
                app.call_method1(intern!(py, "data_received"), (data,))?;
            }
        }
    }
    if eof {
        proto.call_method0(intern!(py, "_call_eof_received"))?;
        proto.call_method0(intern!(py, "_start_shutdown"))?;
    }
    Ok(())
}

/// A bytes object under construction: only this function's reference exists.
struct Building(*mut ffi::PyObject);

impl Drop for Building {
    fn drop(&mut self) {
        // SAFETY: a strong reference we own, or NULL after a failed resize.
        unsafe { ffi::Py_XDECREF(self.0) }
    }
}

impl Building {
    fn resize(&mut self, py: Python<'_>, size: isize) -> PyResult<()> {
        // SAFETY: the object is ours alone (what _PyBytes_Resize requires); on failure it
        // frees it, sets MemoryError and NULLs the pointer (Drop then does nothing).
        if unsafe { crate::transport::_PyBytes_Resize(&mut self.0, size) } < 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(())
    }
}

/// The `while True: chunk = self._sslobj.read(self.max_size)` loop of `_do_read__copied`:
/// (the decrypted bytes, if any; whether the peer's close_notify ended it).
fn read_records<'py>(
    proto: &Bound<'py, PyAny>,
    raw: &Bound<'py, PyAny>,
    incoming: &Bound<'py, PyAny>,
    nbytes: isize,
    max_size: isize,
    r: &Refs,
) -> PyResult<(Option<Bound<'py, PyBytes>>, bool)> {
    let py = proto.py();
    // sslproto asks for `max_size` (256 KiB) per read; one read returns at most one record,
    // whose plaintext is at most 2**14 bytes (RFC 8446 5.1, RFC 5246 6.2.1), so asking for
    // the space left (capped at max_size) returns the same data. A larger record (compression
    // a context turned back on) is read in pieces by the loop, which goes on while the SSL
    // object holds decrypted bytes: `data_received` gets the same bytes in the same one call.
    let read = raw.getattr(intern!(py, "read"))?;
    let in_bio = || -> PyResult<isize> { incoming.getattr(intern!(py, "pending"))?.extract() };
    let in_ssl = || -> PyResult<isize> { raw.call_method0(intern!(py, "pending"))?.extract() };
    // The plaintext waiting is at most the ciphertext just written to the BIO (`nbytes`):
    // the loop below leaves the BIO empty and nothing decrypted in the SSL object (a read
    // that stops short drains the BIO into the SSL object's own record buffer). A record
    // begun in an earlier call, or bytes left when the app paused reading, can make it more;
    // the buffer then grows by a record.
    let mut cap = nbytes.max(1);
    // SAFETY: a new bytes object of `cap` bytes (contents not yet set) or NULL + exception.
    let mut buf = Building(unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), cap) });
    if buf.0.is_null() {
        return Err(PyErr::fetch(py));
    }
    let mut len: isize = 0;
    let mut eof = false;
    loop {
        if len == cap {
            cap += RECORD_PLAINTEXT;
            buf.resize(py, cap)?;
        }
        let ask = (cap - len).min(max_size);
        // SAFETY: buf is a live bytes object of `cap` bytes and len + ask <= cap; the
        // memoryview (no owner) is only lent to `read`, which releases its buffer before it
        // returns; nothing else can reach buf while it is written.
        let view = unsafe {
            let at = ffi::PyBytes_AsString(buf.0).offset(len);
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyMemoryView_FromMemory(at, ask, ffi::PyBUF_WRITE),
            )?
        };
        let outcome = read.call1((ask, &view));
        // The view must not outlive this step (buf may move when it grows): release it
        // should anything still hold it.
        // SAFETY: reading the refcount of a live object.
        if unsafe { ffi::Py_REFCNT(view.as_ptr()) } != 1 {
            view.call_method0(intern!(py, "release"))?;
        }
        drop(view);
        let got: isize = match outcome {
            Ok(n) => n.extract()?,
            Err(e) if e.is_instance(py, r.again.bind(py)) => break,
            Err(e) => return Err(e),
        };
        if got == 0 {
            eof = true;
            break;
        }
        len += got;
        // The read that would only raise SSLWantReadError (see the module comment).
        if in_bio()? == 0 && in_ssl()? == 0 {
            break;
        }
    }
    if len == 0 {
        return Ok((None, eof));
    }
    if len != cap {
        buf.resize(py, len)?;
    }
    let obj = std::mem::replace(&mut buf.0, std::ptr::null_mut());
    // SAFETY: obj is a strong reference to a finished bytes object, handed over here.
    let bytes = unsafe { Bound::from_owned_ptr(py, obj) }.cast_into::<PyBytes>()?;
    Ok((Some(bytes), eof))
}

/// `_process_outgoing`: what the outgoing BIO holds goes to the socket transport unless SSL
/// writing is paused; then `_control_app_writing`.
fn process_outgoing(a: Attrs<'_, '_>) -> PyResult<()> {
    let py = a.p.py();
    let outgoing = a.get(Field::Outgoing)?;
    if !a.flag(Field::SslWritingPaused)? {
        let data = outgoing.call_method0(intern!(py, "read"))?;
        if data.len()? > 0 {
            a.get(Field::Transport)?
                .call_method1(intern!(py, "write"), (data,))?;
        }
    }
    // _control_app_writing, called only when it would change something. (The fields are
    // read after the transport's write, which may have run the protocol's pause_writing.)
    let pending: isize = outgoing.getattr(intern!(py, "pending"))?.extract()?;
    let size = a.get(Field::WriteBufferSize)?.add(pending)?;
    let act = if a.flag(Field::AppWritingPaused)? {
        size.le(a.get(Field::OutgoingLowWater)?)?
    } else {
        size.ge(a.get(Field::OutgoingHighWater)?)?
    };
    if act {
        a.p.call_method0(intern!(py, "_control_app_writing"))?;
    }
    Ok(())
}

/// `_control_ssl_reading`, called only when it would change something.
fn control_ssl_reading(a: Attrs<'_, '_>) -> PyResult<()> {
    let py = a.p.py();
    // `_get_read_buffer_size()`'s body (the same on 3.11-3.15), without its frame.
    let size = a.get(Field::Incoming)?.getattr(intern!(py, "pending"))?;
    let act = if a.flag(Field::SslReadingPaused)? {
        size.le(a.get(Field::IncomingLowWater)?)?
    } else {
        size.ge(a.get(Field::IncomingHighWater)?)?
    };
    if act {
        a.p.call_method0(intern!(py, "_control_ssl_reading"))?;
    }
    Ok(())
}

/// `SSLProtocol._write_appdata(list_of_data)` in the WRAPPED state with an empty backlog;
/// `False` (nothing done) in any other case.
#[pyfunction]
pub(crate) fn tls_write_appdata(
    proto: &Bound<'_, PyAny>,
    list_of_data: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let py = proto.py();
    let r = refs(py)?;
    let a = Attrs::new(proto);
    if !a.get(Field::State)?.is(r.wrapped.bind(py)) {
        return Ok(false);
    }
    let backlog = a.get(Field::WriteBacklog)?;
    if backlog.is_truthy()? {
        return Ok(false);
    }
    let sslobj = a.get(Field::Sslobj)?;
    let Some(raw) = raw_sslobj(&sslobj, r)? else {
        return Ok(false);
    };
    // asyncio's loop first appends every item and adds its len() to _write_buffer_size
    // (outside its try: a len() that raises leaves the earlier items queued), then writes.
    // Only a tuple or list (write's `(data,)`, most writelines calls) whose every item has a
    // length is taken here, so that nothing is consumed or written when asyncio's code must
    // run instead.
    if !(list_of_data.is_instance_of::<PyTuple>() || list_of_data.is_instance_of::<PyList>()) {
        return Ok(false);
    }
    let items = list_of_data
        .try_iter()?
        .collect::<PyResult<Vec<Bound<'_, PyAny>>>>()?;
    if items.iter().any(|data| data.len().is_err()) {
        return Ok(false);
    }
    NATIVE_WRITES.fetch_add(1, Ordering::Relaxed);
    guarded(proto, || {
        let write = raw.getattr(intern!(py, "write"))?;
        for (i, data) in items.iter().enumerate() {
            let len = data.len()?;
            let outcome = write.call1((&data,));
            let count: usize = match outcome {
                Ok(c) => c.extract()?,
                Err(e) => {
                    // What asyncio's loop left in the backlog at this point: this item and
                    // the ones after it, all counted in _write_buffer_size.
                    to_backlog(proto, &backlog, &items[..], i, None)?;
                    if e.is_instance(py, r.again.bind(py)) {
                        return process_outgoing(a);
                    }
                    return Err(e);
                }
            };
            if count < len {
                // A partial write: asyncio's _do_write goes on with the rest.
                to_backlog(proto, &backlog, &items[..], i, Some((data, count)))?;
                return proto.call_method0(intern!(py, "_do_write")).map(|_| ());
            }
        }
        process_outgoing(a)
    })?;
    Ok(true)
}

/// Appends `items[first:]` (the first one from byte `skip.1` on) to the write backlog and
/// their lengths to `_write_buffer_size`, as `_write_appdata` + `_do_write` would have.
fn to_backlog(
    proto: &Bound<'_, PyAny>,
    backlog: &Bound<'_, PyAny>,
    items: &[Bound<'_, PyAny>],
    first: usize,
    skip: Option<(&Bound<'_, PyAny>, usize)>,
) -> PyResult<()> {
    let py = proto.py();
    let mut size = proto.getattr(intern!(py, "_write_buffer_size"))?;
    for (i, data) in items.iter().enumerate().skip(first) {
        let data = data.clone();
        let item = match skip {
            Some((d, count)) if i == first => {
                d.get_item(slice(Some(&count.into_pyobject(py)?.into_any()), None)?)?
            }
            _ => data,
        };
        size = size.add(item.len()?)?;
        backlog.call_method1(intern!(py, "append"), (item,))?;
    }
    proto.setattr(intern!(py, "_write_buffer_size"), size)
}

/// (records fed, application writes) the native path handled, since the process started.
#[pyfunction]
pub(crate) fn tls_stats() -> (u64, u64) {
    (
        NATIVE_READS.load(Ordering::Relaxed),
        NATIVE_WRITES.load(Ordering::Relaxed),
    )
}

/// asyncio's `SSLProtocol.buffer_updated`, `_write_appdata` and `get_buffer`: what the raw
/// methods below call when the native path does not take the case.
static BASE: PyOnceLock<[Py<PyAny>; 3]> = PyOnceLock::new();

fn none() -> *mut ffi::PyObject {
    // SAFETY: a new reference to None (the GIL is held by every caller).
    unsafe {
        ffi::Py_INCREF(ffi::Py_None());
        ffi::Py_None()
    }
}

/// What a raw method runs first: `Some(result)` when the native path took the call, `None`
/// (nothing done) for asyncio's own method.
type Native =
    for<'py> fn(&Bound<'py, PyAny>, &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>>;

/// The body of every raw METH_O method below: the native path, else asyncio's method
/// (`BASE[which]`).
///
/// # Safety
/// Called by CPython through a descriptor made in `tls_install`, with the GIL held, `slf` an
/// instance of the class (the descriptor checks it) and `arg` alive.
unsafe fn method_o(
    slf: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
    what: &str,
    native: Native,
    which: usize,
) -> *mut ffi::PyObject {
    // SAFETY: per this function's contract.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: per this function's contract, both pointers are live borrowed references.
    let (proto, arg) = unsafe {
        (
            Bound::from_borrowed_ptr(py, slf),
            Bound::from_borrowed_ptr(py, arg),
        )
    };
    crate::pyutil::c_return(py, what, || {
        if let Some(result) = native(&proto, &arg)? {
            return Ok(result.into_ptr());
        }
        match BASE.get(py) {
            Some(base) => Ok(base[which].bind(py).call1((&proto, &arg))?.into_ptr()),
            None => Ok(none()),
        }
    })
}

/// [`tls_buffer_updated`] / [`tls_write_appdata`] as a [`Native`]: `None` (the result of
/// asyncio's methods) when taken.
fn done<'py>(py: Python<'py>, taken: bool) -> Option<Bound<'py, PyAny>> {
    taken.then(|| py.None().into_bound(py))
}

/// `SSLProtocol.get_buffer(n)` (the same body on 3.11-3.15): the receive buffer's view,
/// replaced by a larger one when `n` asks for more than it holds; `None` (asyncio's method)
/// for an `n` that is not an int or a `max_size` that is not one.
fn get_buffer<'py>(
    proto: &Bound<'py, PyAny>,
    n: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = proto.py();
    let a = Attrs::new(proto);
    let exact_int = |o: &Bound<'py, PyAny>| -> Option<isize> {
        o.cast_exact::<pyo3::types::PyInt>().ok()?.extract().ok()
    };
    let max_size = proto.getattr(intern!(py, "max_size"))?;
    let (Some(mut want), Some(max_size)) = (exact_int(n), exact_int(&max_size)) else {
        return Ok(None);
    };
    if want <= 0 || want > max_size {
        want = max_size;
    }
    let Ok(want) = usize::try_from(want) else {
        return Ok(None); // a negative max_size: bytearray's ValueError is asyncio's to raise
    };
    let buffer = a.get(Field::SslBuffer)?;
    if buffer.len()? < want {
        let buffer = pyo3::types::PyByteArray::new_with(py, want, |_| Ok(()))?;
        let view = pyo3::types::PyMemoryView::from(&buffer)?;
        proto.setattr(intern!(py, "_ssl_buffer"), buffer)?;
        proto.setattr(intern!(py, "_ssl_buffer_view"), view)?;
    }
    a.get(Field::SslBufferView).map(Some)
}

/// `buffer_updated(self, nbytes)` as a raw METH_O method: the transport calls it once per
/// read, and a Python wrapper frame around [`tls_buffer_updated`] cost more than its body.
unsafe extern "C" fn buffer_updated_o(
    slf: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls this through BUFFER_UPDATED_DEF's descriptor (method_o's contract).
    unsafe {
        method_o(
            slf,
            arg,
            "SSLProtocol.buffer_updated",
            |p, a| Ok(done(p.py(), tls_buffer_updated(p, a)?)),
            0,
        )
    }
}

/// `_write_appdata(self, list_of_data)` as a raw METH_O method (see [`buffer_updated_o`]).
unsafe extern "C" fn write_appdata_o(
    slf: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls this through WRITE_APPDATA_DEF's descriptor (method_o's contract).
    unsafe {
        method_o(
            slf,
            arg,
            "SSLProtocol._write_appdata",
            |p, a| Ok(done(p.py(), tls_write_appdata(p, a)?)),
            1,
        )
    }
}

/// `get_buffer(self, n)` as a raw METH_O method: the transport calls it before every read.
unsafe extern "C" fn get_buffer_o(
    slf: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls this through GET_BUFFER_DEF's descriptor (method_o's contract).
    unsafe { method_o(slf, arg, "SSLProtocol.get_buffer", get_buffer, 2) }
}

static BUFFER_UPDATED_DEF: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"buffer_updated".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunction: buffer_updated_o,
    },
    ml_flags: ffi::METH_O,
    ml_doc: c"buffer_updated($self, nbytes, /)\n--\n\nsslproto's, WRAPPED data path in Rust."
        .as_ptr(),
});

static WRITE_APPDATA_DEF: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"_write_appdata".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunction: write_appdata_o,
    },
    ml_flags: ffi::METH_O,
    ml_doc: c"_write_appdata($self, list_of_data, /)\n--\n\nsslproto's, WRAPPED data path in Rust."
        .as_ptr(),
});

/// Installs the raw `buffer_updated` and `_write_appdata` on `cls` (oxloop._tls.SSLProtocol,
/// a subclass of asyncio's `base`).
#[pyfunction]
pub(crate) fn tls_install(cls: &Bound<'_, PyType>, base: &Bound<'_, PyType>) -> PyResult<()> {
    let py = cls.py();
    let pair = [
        base.getattr("buffer_updated")?.unbind(),
        base.getattr("_write_appdata")?.unbind(),
        base.getattr("get_buffer")?.unbind(),
    ];
    let _ = BASE.set(py, pair);
    register_slots(cls)?;
    install_method(cls, cls, &BUFFER_UPDATED_DEF)?;
    install_method(cls, cls, &WRITE_APPDATA_DEF)?;
    install_method(cls, cls, &GET_BUFFER_DEF)
}

static GET_BUFFER_DEF: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"get_buffer".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunction: get_buffer_o,
    },
    ml_flags: ffi::METH_O,
    ml_doc: c"get_buffer($self, n, /)\n--\n\nsslproto's, in Rust.".as_ptr(),
});

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(tls_install, m)?)?;
    m.add_function(wrap_pyfunction!(tls_buffer_updated, m)?)?;
    m.add_function(wrap_pyfunction!(tls_write_appdata, m)?)?;
    m.add_function(wrap_pyfunction!(tls_stats, m)?)?;
    m.add("TLS_FIELDS", PyTuple::new(m.py(), FIELD_NAMES)?)?;
    Ok(())
}
