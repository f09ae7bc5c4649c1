//! A native `data_received` for asyncio's own `StreamReaderProtocol`, the protocol behind
//! `asyncio.open_connection` / `start_server` / `open_unix_connection` / `start_unix_server`.
//!
//! For every read event asyncio runs four Python frames after the `recv`
//! (`StreamReaderProtocol.data_received`, its `_stream_reader` property,
//! `StreamReader.feed_data`, `StreamReader._wakeup_waiter`) and allocates a bytes object that
//! `feed_data` copies into the reader's `bytearray` and drops. With the classes as asyncio
//! ships them (streams.py, the same code on 3.10-3.13), the socket transport's read path
//! ([`crate::transport`]) does those steps here: received bytes go into `reader._buffer`
//! (copied from the thread's receive buffer, or received there directly by a sized read), then
//! the waiter is woken and flow control applied, exactly as `feed_data` does.
//!
//! Invariants:
//! - The fast path runs only when the outcome is provably the Python code's: the protocol is
//!   exactly `StreamReaderProtocol` and the reader exactly `StreamReader`; `data_received`,
//!   `_stream_reader`, `feed_data` and `_wakeup_waiter` are still the functions asyncio
//!   defined (checked per event by identity against the ones taken when first needed, and
//!   no instance attribute shadows them, so `mock.patch` of either kind is honoured); the
//!   reader's `_eof` is `False` (else `feed_data`'s assertion is due), its `_buffer` is a
//!   `bytearray` and its `_limit` an `int`. [`fast_feed`] decides before the `recv`, and no
//!   Python code runs between the decision and the feed. Anything else takes the Python call.
//! - Errors raised on the way (a `bytearray` with live exports refuses to grow; a waiter's
//!   `set_result` raising; `pause_reading` failing) reach the transport's `_fatal_error` with
//!   the `data_received` message, as they would from the Python frames.
use std::ffi::c_int;

use pyo3::exceptions::PyNotImplementedError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyDict, PyInt, PyString, PyType, PyWeakrefReference};

use crate::cpython::{self, Entry};
use crate::guard::ClassGuard;
use crate::pyutil::dict_get;

/// asyncio.streams' classes and the functions the fast path stands in for, as imported.
struct Layout {
    protocol: Py<PyType>,
    reader: Py<PyType>,
    data_received: Py<PyAny>,
    /// Whether `StreamReaderProtocol._stream_reader` is still asyncio's property. A property is
    /// a data descriptor, so no instance attribute can shadow it and the class's is what
    /// `self._stream_reader` runs; the guard looks it up only when the class's version tag
    /// changed (the class lookup was ~140 of a 1 KiB streams echo's instructions per message).
    stream_reader: ClassGuard,
    feed_data: Py<PyAny>,
    wakeup_waiter: Py<PyAny>,
    /// How the waiter is woken without the method lookups (see [`CFuture`]); `None` without
    /// asyncio's C module.
    future: Option<CFuture>,
}

/// `_asyncio.Future` and its `cancelled` / `set_result` method descriptors, taken from the
/// type's own dict. `_wakeup_waiter` runs `waiter.cancelled()` and `waiter.set_result(None)`:
/// two `PyObject_VectorcallMethod` calls, each a lookup on the type and in the instance dict
/// (~330 of a 1 KiB streams echo's ~20,900 instructions per message). For a waiter whose type
/// is exactly this one (what `loop.create_future()` returns unless `asyncio.futures.Future`
/// was replaced) and that has no attribute of its own (see [`NoAttrs`]: none can shadow
/// either name), those lookups can only find these descriptors: the type is immutable
/// (`Py_TPFLAGS_IMMUTABLETYPE`, its attributes cannot be set), and a method descriptor is not
/// a data descriptor, so only the instance dict could come first. Calling the descriptor with
/// the waiter as its first argument is what the bound call does (`method_vectorcall_*`,
/// Objects/descrobject.c, checks the type and calls the C function).
struct CFuture {
    cls: Py<PyType>,
    /// How to tell that an instance has no attributes of its own.
    no_attrs: NoAttrs,
    cancelled: Py<PyAny>,
    set_result: Py<PyAny>,
}

/// Where `_asyncio.Future` keeps an instance's own attributes.
enum NoAttrs {
    /// 3.10/3.11: at a positive `tp_dictoffset`, a `__dict__` pointer that is NULL until an
    /// attribute is set (C API docs, "PyTypeObject.tp_dictoffset").
    DictOffset(isize),
    /// 3.13+: a managed dict (`Py_TPFLAGS_MANAGED_DICT`), whose dict or inline values
    /// `PyObject_VisitManagedDict` (public since 3.13) visits; nothing visited = no attribute.
    /// Resolved at run time: the symbol does not exist before 3.13, and each version's build
    /// must load on its own interpreter.
    Managed(VisitManagedDict),
}

type VisitManagedDict =
    unsafe extern "C" fn(*mut ffi::PyObject, ffi::visitproc, *mut std::ffi::c_void) -> c_int;

/// `PyObject_VisitManagedDict` of the running interpreter, from 3.13 on.
fn visit_managed_dict(py: Python<'_>) -> Option<VisitManagedDict> {
    if py.version_info() < (3, 13) {
        return None;
    }
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads the loaded
    // objects' symbol tables; the interpreter (executable or libpython, both loaded
    // globally) defines this function with the signature above (Include/cpython/object.h).
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c"PyObject_VisitManagedDict".as_ptr());
        (!f.is_null()).then(|| std::mem::transmute::<*mut std::ffi::c_void, VisitManagedDict>(f))
    }
}

/// The visitor of [`NoAttrs::Managed`]: records that something was visited.
unsafe extern "C" fn saw(_obj: *mut ffi::PyObject, arg: *mut std::ffi::c_void) -> c_int {
    // SAFETY: arg is the `bool` that `NoAttrs::holds` passes, alive for the visit.
    unsafe { *arg.cast::<bool>() = true };
    0
}

impl NoAttrs {
    /// Whether `obj`, an instance of the type this was made for, has no attribute of its own.
    fn holds(&self, obj: *mut ffi::PyObject) -> bool {
        match *self {
            // SAFETY: obj is a live instance of a type whose instances hold a dict pointer
            // (NULL or a dict) at this positive offset.
            NoAttrs::DictOffset(off) => unsafe {
                (*obj.cast::<u8>().offset(off).cast::<*mut ffi::PyObject>()).is_null()
            },
            NoAttrs::Managed(visit) => {
                let mut seen = false;
                // SAFETY: obj is a live instance of a managed-dict type; the visitor only
                // writes the local flag.
                unsafe { visit(obj, saw, (&raw mut seen).cast()) };
                !seen
            }
        }
    }
}

/// `Py_TPFLAGS_MANAGED_DICT` (Include/object.h, 3.12+).
const MANAGED_DICT: std::ffi::c_ulong = 1 << 4;

/// `_asyncio.Future` when it fits [`CFuture`]'s conditions.
fn c_future(py: Python<'_>) -> Option<CFuture> {
    let cls = py
        .import("_asyncio")
        .and_then(|m| m.getattr("Future"))
        .ok()?
        .cast_into::<PyType>()
        .ok()?;
    let tp = cls.as_type_ptr();
    // SAFETY: tp is a live type object; plain fields are read.
    let (flags, dictoffset) = unsafe { ((*tp).tp_flags, (*tp).tp_dictoffset) };
    if flags & ffi::Py_TPFLAGS_IMMUTABLETYPE == 0 {
        return None;
    }
    let no_attrs = if dictoffset > 0 {
        NoAttrs::DictOffset(dictoffset)
    } else if flags & MANAGED_DICT != 0 {
        NoAttrs::Managed(visit_managed_dict(py)?)
    } else {
        return None; // 3.12's managed dict has no public visitor: the method calls
    };
    let descriptor = |name: &str| {
        let d = class_attr(&cls, &PyString::new(py, name))?;
        // A method descriptor of this very type (`PyMethodDescr_Type`): not a data
        // descriptor, and its call checks that the first argument is an instance.
        let kind = d.get_type();
        (kind.name().ok()?.to_str().ok()? == "method_descriptor"
            && d.getattr("__objclass__").ok()?.is(&cls))
        .then(|| d.unbind())
    };
    Some(CFuture {
        cancelled: descriptor("cancelled")?,
        set_result: descriptor("set_result")?,
        no_attrs,
        cls: cls.unbind(),
    })
}

impl CFuture {
    /// `if not waiter.cancelled(): waiter.set_result(None)` when `waiter` fits (see the type's
    /// comment); `None` when it does not (the caller then makes the method calls).
    fn wake(&self, waiter: &Bound<'_, PyAny>) -> Option<PyResult<()>> {
        let py = waiter.py();
        let w = waiter.as_ptr();
        let plain = waiter.get_type().is(self.cls.bind(py)) && self.no_attrs.holds(w);
        if !plain {
            return None;
        }
        let call = |descr: &Py<PyAny>, nargs: usize| {
            // SAFETY: descr is a live method descriptor, args holds `nargs` live objects
            // (None, borrowed, lives as long as the interpreter); the result is a new
            // reference or NULL with an exception.
            unsafe {
                let args = [w, ffi::Py_None()];
                Bound::from_owned_ptr_or_err(
                    py,
                    ffi::PyObject_Vectorcall(
                        descr.as_ptr(),
                        args.as_ptr(),
                        nargs,
                        std::ptr::null_mut(),
                    ),
                )
            }
        };
        Some((|| {
            if !call(&self.cancelled, 1)?.is_truthy()? {
                call(&self.set_result, 2)?;
            }
            Ok(())
        })())
    }
}

/// `None` when asyncio.streams was already patched when first needed (or looks different):
/// the fast path then stays off for the life of the process.
static LAYOUT: PyOnceLock<Option<Layout>> = PyOnceLock::new();

/// `cls.__dict__[name]` without the attribute protocol (no descriptor binding).
fn class_attr<'py>(
    cls: &Bound<'py, PyType>,
    name: &Bound<'py, PyString>,
) -> Option<Bound<'py, PyAny>> {
    let py = cls.py();
    // SAFETY: cls is a live heap type (a Python class), whose tp_dict is its attribute dict;
    // a borrowed pointer read under the GIL and turned into a strong reference at once.
    let dict = unsafe {
        let d = (*cls.as_type_ptr()).tp_dict;
        if d.is_null() {
            return None;
        }
        Bound::from_borrowed_ptr(py, d)
    };
    let dict = dict.cast_into::<PyDict>().ok()?;
    dict_get(&dict, name).ok().flatten()
}

/// The function `cls.__dict__[name]` when asyncio.streams defined it (`__module__` and
/// `__qualname__` as in streams.py).
fn own_function<'py>(cls: &Bound<'py, PyType>, name: &str) -> Option<Bound<'py, PyAny>> {
    let py = cls.py();
    let f = class_attr(cls, &PyString::new(py, name))?;
    let code_owner = if f.hasattr("fget").ok()? {
        f.getattr("fget").ok()? // a property: its getter carries the names
    } else {
        f.clone()
    };
    let module: String = code_owner.getattr("__module__").ok()?.extract().ok()?;
    let qualname: String = code_owner.getattr("__qualname__").ok()?.extract().ok()?;
    let expected = format!("{}.{name}", cls.name().ok()?);
    (module == "asyncio.streams" && qualname == expected).then_some(f)
}

/// Runs the `get_method` and `stream_fields` probes now (for `_contract_status`).
pub(crate) fn probe_now(py: Python<'_>) {
    LAYOUT.get_or_init(py, || load(py));
}

fn load(py: Python<'_>) -> Option<Layout> {
    // The identity checks ask `_PyObject_GetMethod` (the `get_method` contract) and the feed
    // uses asyncio's private fields (`stream_fields`); without either the fast path stays off.
    let method = cpython::check(Entry::GetMethod, || {
        cpython::method::probe(py).unwrap_or(false)
    });
    let streams = py.import("asyncio.streams").ok()?;
    let protocol = streams
        .getattr("StreamReaderProtocol")
        .ok()?
        .cast_into::<PyType>()
        .ok()?;
    let reader = streams
        .getattr("StreamReader")
        .ok()?
        .cast_into::<PyType>()
        .ok()?;
    let fields = cpython::check(Entry::StreamFields, || {
        cpython::streams::probe(&protocol, &reader).unwrap_or(false)
    });
    if !(method && fields) {
        return None;
    }
    Some(Layout {
        data_received: own_function(&protocol, "data_received")?.unbind(),
        stream_reader: ClassGuard::new(
            py,
            vec![(
                protocol.clone(),
                intern!(py, "_stream_reader").clone(),
                own_function(&protocol, "_stream_reader")?,
            )],
        ),
        feed_data: own_function(&reader, "feed_data")?.unbind(),
        wakeup_waiter: own_function(&reader, "_wakeup_waiter")?.unbind(),
        future: c_future(py),
        protocol: protocol.unbind(),
        reader: reader.unbind(),
    })
}

/// True when `obj.name` is still `original` bound to `obj`: the class attribute unchanged and
/// no instance attribute shadowing it. Asked through the attribute protocol rather than the
/// instance `__dict__`: materialising that dict (3.11+ keep attributes inline until someone
/// asks for it) would slow down every attribute access the Python side of the stream makes.
fn unpatched<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    original: &Py<PyAny>,
) -> bool {
    cpython::method::get_method(obj, name).is_some_and(|(found, m)| found && m.is(original))
}

/// A `StreamReader` about to be fed, its state checked (see the module invariants).
pub(crate) struct Feed<'py> {
    reader: Bound<'py, PyAny>,
    buffer: Bound<'py, PyByteArray>,
    limit: i64,
    future: Option<&'static CFuture>,
}

/// What the fast path will do for `protocol`'s next data: `None` = not applicable, take the
/// Python call; `Some(None)` = the protocol has no reader any more (`data_received` drops the
/// data); `Some(Some(feed))` = feed that reader.
pub(crate) fn fast_feed<'py>(protocol: &Bound<'py, PyAny>) -> Option<Option<Feed<'py>>> {
    let py = protocol.py();
    let lay = LAYOUT.get_or_init(py, || load(py)).as_ref()?;
    let proto_cls = lay.protocol.bind(py);
    if !protocol.get_type().is(proto_cls) {
        return None;
    }
    if !unpatched(protocol, intern!(py, "data_received"), &lay.data_received)
        || !lay.stream_reader.holds(py)
    {
        return None;
    }
    // The property's body: `_stream_reader_wr` is None or a weakref to the reader.
    let wr = protocol.getattr(intern!(py, "_stream_reader_wr")).ok()?;
    if wr.is_none() {
        return Some(None);
    }
    let wr = wr.cast_exact::<PyWeakrefReference>().ok()?;
    let Some(reader) = wr.upgrade() else {
        return Some(None);
    };
    if !reader.get_type().is(lay.reader.bind(py))
        || !unpatched(&reader, intern!(py, "feed_data"), &lay.feed_data)
        || !unpatched(&reader, intern!(py, "_wakeup_waiter"), &lay.wakeup_waiter)
    {
        return None;
    }
    let eof = reader.getattr(intern!(py, "_eof")).ok()?;
    // SAFETY: comparing against the address of the interpreter's False singleton.
    if eof.as_ptr() != unsafe { ffi::Py_False() } {
        return None; // feed_data's assertion (or, under -O, its odd continuation) is Python's
    }
    let buffer = reader
        .getattr(intern!(py, "_buffer"))
        .ok()?
        .cast_into_exact::<PyByteArray>()
        .ok()?;
    let limit = reader
        .getattr(intern!(py, "_limit"))
        .ok()?
        .cast_exact::<PyInt>()
        .ok()?
        .extract::<i64>()
        .ok()?;
    Some(Some(Feed {
        reader,
        buffer,
        limit,
        future: lay.future.as_ref(),
    }))
}

impl<'py> Feed<'py> {
    /// `self._buffer.extend(data)`: the one step that must happen while `data` is borrowed
    /// from the receive buffer. Runs no Python code.
    pub(crate) fn extend(&self, data: &[u8]) -> PyResult<()> {
        let buf = self.buffer.as_ptr();
        // SAFETY: buffer is a live bytearray; PyByteArray_Resize keeps its contents, fails
        // with BufferError while the bytearray has exports (as `extend` does), and on
        // success leaves `old + data.len()` bytes at PyByteArray_AS_STRING, of which we
        // write the last `data.len()`.
        unsafe {
            let old = ffi::PyByteArray_Size(buf);
            let add = isize::try_from(data.len()).unwrap_or(isize::MAX);
            if ffi::PyByteArray_Resize(buf, old.saturating_add(add)) < 0 {
                return Err(PyErr::fetch(self.buffer.py()));
            }
            let dst = ffi::PyByteArray_AsString(buf).cast::<u8>().offset(old);
            std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
        }
        Ok(())
    }

    /// `self._buffer.extend(sock.recv(len))` without the intermediate bytes: grows the
    /// buffer by `len`, receives into the new tail and shrinks it to what arrived. `None` when
    /// `len` is 0 or the buffer cannot grow (it has exports): the caller then receives through
    /// the shared buffer, and `extend` reports the error after the receive, as asyncio would.
    pub(crate) fn recv_into(&self, fd: i32, len: usize) -> Option<std::io::Result<usize>> {
        if len == 0 {
            return None;
        }
        let buf = self.buffer.as_ptr();
        // SAFETY: buffer is a live bytearray. After a successful resize its storage holds
        // `old + len` bytes at PyByteArray_AS_STRING and the receive writes only the last
        // `len`; no Python code runs until it is shrunk back to `old + got`.
        unsafe {
            let old = ffi::PyByteArray_Size(buf);
            let add = isize::try_from(len).ok()?;
            if ffi::PyByteArray_Resize(buf, old.checked_add(add)?) < 0 {
                drop(PyErr::take(self.buffer.py()));
                return None;
            }
            let dst = ffi::PyByteArray_AsString(buf).cast::<u8>().offset(old);
            let got = crate::sys::recv(fd, dst.cast(), len);
            let kept = got.as_ref().map_or(0, |n| isize::try_from(*n).unwrap_or(0));
            if ffi::PyByteArray_Resize(buf, old + kept) < 0 {
                // Only a failed realloc of a major downsize gets here (bytearrayobject.c),
                // leaving the unfilled tail in place: the stream cannot go on.
                drop(PyErr::take(self.buffer.py()));
                return Some(Err(std::io::Error::from(std::io::ErrorKind::OutOfMemory)));
            }
            Some(got)
        }
    }

    /// The rest of `feed_data` after the extend: `_wakeup_waiter()`, then pausing the
    /// transport when more than twice the limit is buffered.
    pub(crate) fn finish(self) -> PyResult<()> {
        let py = self.reader.py();
        let r = &self.reader;
        let waiter = r.getattr(intern!(py, "_waiter"))?;
        if !waiter.is_none() {
            r.setattr(intern!(py, "_waiter"), py.None())?;
            let woken = self.future.and_then(|f| f.wake(&waiter));
            match woken {
                Some(done) => done?,
                None => {
                    if !waiter.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
                        waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
                    }
                }
            }
        }
        // `len(self._buffer) > 2 * self._limit`, with Python's unbounded ints. feed_data tests
        // it last, after `_transport` and `_paused`; it is tested first here because it
        // is almost always false and needs no lookup (reading two instance attributes has no
        // effect to keep in order: the class is exactly asyncio's StreamReader, whose
        // `__init__` sets both). Two getattrs were ~460 of a 1 KiB echo's ~21,500
        // instructions.
        let len = i64::try_from(self.buffer.len()).unwrap_or(i64::MAX);
        let over = self.limit.checked_mul(2).is_some_and(|twice| len > twice);
        if !over {
            return Ok(());
        }
        let transport = r.getattr(intern!(py, "_transport"))?;
        if transport.is_none() || r.getattr(intern!(py, "_paused"))?.is_truthy()? {
            return Ok(());
        }
        match transport.call_method0(intern!(py, "pause_reading")) {
            Ok(_) => r.setattr(intern!(py, "_paused"), true),
            // The transport can't be paused: feed_data forgets it and buffers everything.
            Err(e) if e.is_instance_of::<PyNotImplementedError>(py) => {
                r.setattr(intern!(py, "_transport"), py.None())
            }
            Err(e) => Err(e),
        }
    }
}
