//! The CPython contract: every assumption the Rust side makes about CPython's internals, in
//! one place, each probed before the fast path that needs it runs.
//!
//! | entry | what is assumed | used by | probe | off: what runs instead |
//! |---|---|---|---|---|
//! | `handle_slots` | `asyncio.Handle` / `TimerHandle` (and 3.14+'s `_ThreadSafeHandle._lock`) keep their fields in `__slots__` whose `PyMemberDef.offset` is where the object stores them; `tp_alloc` returns a zeroed instance; the weak reference list is at `tp_weaklistoffset` (negative: the managed pre-header, 3.12+) | `handles.rs` (build, read, cancel, recycle handles; the loop's traverse) | [`members`]: each descriptor is a writable object member inside `tp_basicsize`, and a value stored through it is read back at the offset on a probe instance; a weak reference to a probe shows at `tp_weaklistoffset` | handles are made by calling the class and read through their attributes; no free list |
//! | `gc_untrack` | `PyObject_GC_UnTrack` / `PyObject_GC_Track` on a tracked object only hide it from (show it to) the collector; a context's dealloc unlinks it from the GC list unconditionally (why a hidden context copy is kept alive by the queue entry); a GC object's `PyGC_Head` lies right before it and its `_gc_next` is nonzero exactly while it is tracked (pycore_gc.h `_PyObject_GC_IS_TRACKED`, read by `gc::is_tracked` instead of calling `PyObject_GC_IsTracked`) | `handles.rs` (queued handles, their context copies, atomic `args` tuples) | [`gc`]: untrack, track round trip on a probe handle, each state seen by both readings; needs `handle_slots` (the loop's traverse reads hidden handles by offset) | every handle stays tracked, as asyncio's are |
//! | `transport_slots` | `_SocketTransport`'s per-event fields (`transport::FIELD_NAMES`) and `_tls.SSLProtocol`'s per-record fields (`tls::FIELD_NAMES`) are `T_OBJECT_EX` slots at their descriptors' offsets | `transport.rs` (`Attrs`, `register_transport_slots`), `transport_setup.rs` (`Setup::set`, offsets of the set-up's fields taken the same way), `tls/mod.rs` (`Attrs`, `register_slots`) | [`members`] on `_SocketTransport` at `_transports.py`'s import, on `_tls.SSLProtocol` at `_tls.py`'s (a TLS probe that fails leaves only TLS on `getattr`) | fields read with `getattr` (what a subclass gets) |
//! | `bytes_reuse` | a bytes object whose only reference we hold can be refilled in place: `ob_sval`, `ob_size` (smaller than allocated), the trailing NUL and the cached hash `ob_shash` (-1 = not computed) are all its state | `transport.rs` (`bytes_for`, the spare of `data_received`) | [`bytes`]: a rewritten probe compares and hashes equal to a fresh bytes of the same content | a new bytes object per read |
//! | `socket_head` | `PySocketSockObject` (Modules/socketmodule.h) starts with `sock_fd`, `sock_family`, `sock_type`, `sock_proto`, `errorhandler`, `sock_timeout` (ns) | `sock.rs` (fd and timeout of `sock_*` sockets) | [`socket`]: a probe socket's fd and timeout read at the offsets in each state (blocking, non-blocking, timeout, closed), at first use | `fileno()` / `gettimeout()` calls |
//! | `socket_init` | `_socket.socket.__init__(family, type \| SOCK_NONBLOCK, proto, fileno=fd)` (`sock_initobj`) of a socket fd does nothing but audit `socket.__new__`, validate the fd with `getsockname(2)` and write `init_sockobject`'s fields: the fd, family, type less SOCK_NONBLOCK and SOCK_CLOEXEC, protocol, `errorhandler` (as `sock_new` did), timeout 0, and on 3.12+ `state`, the module's, the one field after the timeout; `_socket.socket`'s `tp_basicsize` is the head's size, or that and one pointer | `accept.rs` (`accepted_socket`: the socket of each connection an IPv4 listener accepts) | [`socket`] `probe_init`: two sockets on `dup`s of one fd, one made by the constructor, the other by `tp_new` and `fill_accepted`, hold the same bytes after the object header but for the fd; needs `socket_head`, and socket.py's `__init__` the verified one | `sock_initobj` called (its syscall and argument parsing) |
//! | `get_method` | `_PyObject_GetMethod` (exported, Objects/object.c) answers 1 and the class's function for an unshadowed method, 0 and the attribute otherwise; a heap type's `tp_dict` is the dict behind its `__dict__` | `streams.rs` (per-event identity checks of `StreamReaderProtocol.data_received`, `StreamReader.feed_data`, `_wakeup_waiter`) | [`method`]: both answers on a probe instance, and `tp_dict` of its class, at first use | no native `data_received` for streams: asyncio's Python frames |
//! | `stream_fields` | `asyncio.streams` keeps the reader's state in `_buffer` (a bytearray), `_limit`, `_eof`, `_waiter`, `_transport`, `_paused`, and the protocol's reader in `_stream_reader_wr` (each read by attribute and its type checked per event) | `streams.rs` (`fast_feed`, `Feed::finish`) | [`streams`]: asyncio's own code of both classes uses every one of those names, at first use | asyncio's Python frames |
//! | `asyncio_call_soon` | asyncio's C module (Modules/_asynciomodule.c, 3.10-3.15) makes every `call_soon` of its own through one helper, `call_soon`, which passes the module's one keyword-name tuple `("context",)` (made once with Py_BuildValue) and drops the handle the call returns (the helper returns an int): a C Task's steps, a C Future's done callbacks | `loop_core/fastcall.rs` (`ASYNCIO_KWNAMES`: a call with that tuple), `loop_core/mod.rs` (`schedule_unseen`: queued with no Handle and no `*args` tuple) | `fastcall.rs` `learn_asyncio_kwnames`: an `_asyncio.Future` on a probe loop gets a done callback and a result, and the tuple its `call_soon` receives is recorded, at import | each such call gets a Handle, but a C Task's steps and wakeups, recognised by their callback (`is_task_step`, `is_task_wakeup`) |
//! | `type_version_tag` | `tp_version_tag` is nonzero after a lookup and changes (or drops to 0; before 3.11 `Py_TPFLAGS_VALID_VERSION_TAG` is cleared) whenever the type or a base is modified | `loop_core/mod.rs` (`TimePatch`: whether `type(loop).time` is still `LoopCore.time`); `guard.rs` (`ClassGuard`: whether the methods of the transport set-up and close, `Handle.cancel` and `StreamReaderProtocol._stream_reader` are still the verified ones) | [`typetag`]: a probe class's tag before and after a class attribute is set | `type(loop).time` is looked up every iteration; each guarded method looked up on every use |
//!
//! Verified: every entry holds (`tests/test_contract.py::test_every_probe_passes`) on CPython
//! 3.10, 3.11, 3.12, 3.13, 3.14, 3.14d (debug build) and 3.15. Not probed, because a mismatch
//! is a load-time error rather than a wrong result: the exported private symbols
//! `_PyBytes_Resize` (`transport.rs`) and `_PyObject_GetMethod` (`streams.rs`, declared in
//! [`method`]). Not in the contract, because they are CPython's documented C API rather than
//! its internals: the raw `METH_FASTCALL | METH_KEYWORDS` / `METH_NOARGS` method descriptors
//! (`PyDescr_NewMethod`) of `loop_core/fastcall.rs` and `SocketWriter.write` (the calling
//! convention is in the stable ABI since 3.10, docs "Implementing functions and methods"); they
//! are the one binder of those methods' arguments, with no second one to fall back to.
//! Nor is streams.rs's direct call of `_asyncio.Future`'s `cancelled` / `set_result` method
//! descriptors: it relies on `tp_dictoffset` (a positive one is where an instance keeps its
//! `__dict__` pointer), `Py_TPFLAGS_IMMUTABLETYPE` and, on 3.13+, `PyObject_VisitManagedDict`,
//! all documented C API, checked when first needed (the method calls run otherwise).
//!
//! A probe that fails turns off only the fast path that needs it; what runs then is asyncio's
//! code or the generic path, whose behaviour is the same. Each entry's result is read once per
//! registration or creation, or is a flag beside data the path reads anyway (the handle
//! layout's, the spare's size limit), so the hot paths cost what they did (callgrind). `OXLOOP_CONTRACT_FAIL=name[,name...]` (read once, at import) makes the
//! named probes fail, which is how `tests/test_contract.py` runs each fast path's tests with
//! the fallback; `_oxloop._contract_status()` says which entries hold (`python/oxloop/
//! _contract.py` has the Python side's table, and shares the variable).
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::PyDict;

pub(crate) mod bytes;
pub(crate) mod gc;
pub(crate) mod members;
pub(crate) mod method;
pub(crate) mod socket;
pub(crate) mod streams;
pub(crate) mod typetag;

/// One assumption of the table above.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Entry {
    HandleSlots,
    GcUntrack,
    TransportSlots,
    BytesReuse,
    SocketHead,
    SocketInit,
    GetMethod,
    StreamFields,
    AsyncioCallSoon,
    TypeVersionTag,
}

/// Every entry, in the table's order.
pub(crate) const ENTRIES: [Entry; 10] = [
    Entry::HandleSlots,
    Entry::GcUntrack,
    Entry::TransportSlots,
    Entry::BytesReuse,
    Entry::SocketHead,
    Entry::SocketInit,
    Entry::GetMethod,
    Entry::StreamFields,
    Entry::AsyncioCallSoon,
    Entry::TypeVersionTag,
];

impl Entry {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Entry::HandleSlots => "handle_slots",
            Entry::GcUntrack => "gc_untrack",
            Entry::TransportSlots => "transport_slots",
            Entry::BytesReuse => "bytes_reuse",
            Entry::SocketHead => "socket_head",
            Entry::SocketInit => "socket_init",
            Entry::GetMethod => "get_method",
            Entry::StreamFields => "stream_fields",
            Entry::AsyncioCallSoon => "asyncio_call_soon",
            Entry::TypeVersionTag => "type_version_tag",
        }
    }
}

const UNPROBED: u8 = 0;
const HOLDS: u8 = 1;
const FAILED: u8 = 2;

/// Each entry's outcome, set once by its probe (the entries are probed with the GIL held,
/// once per process; a second probe of the same entry, after a reload, agrees).
static STATE: [AtomicU8; ENTRIES.len()] = [const { AtomicU8::new(UNPROBED) }; ENTRIES.len()];

/// The entries `OXLOOP_CONTRACT_FAIL` names, as a bit set.
static FORCED: OnceLock<u32> = OnceLock::new();

/// The environment variable naming probes to fail.
pub(crate) const FAIL_VAR: &str = "OXLOOP_CONTRACT_FAIL";

fn forced_set() -> u32 {
    *FORCED.get_or_init(|| {
        let Ok(spec) = std::env::var(FAIL_VAR) else {
            return 0;
        };
        // Names of the Python side's entries are the Python module's to check.
        spec.split(',')
            .map(str::trim)
            .filter_map(|n| ENTRIES.iter().position(|e| e.name() == n))
            .fold(0, |set, i| set | (1 << i))
    })
}

/// Whether `OXLOOP_CONTRACT_FAIL` names `e`.
pub(crate) fn forced(e: Entry) -> bool {
    forced_set() & (1 << e as u32) != 0
}

/// Records the outcome of `e`'s probe (failed when forced) and returns whether the fast path
/// may run.
pub(crate) fn settle(e: Entry, holds: bool) -> bool {
    let holds = holds && !forced(e);
    STATE[e as usize].store(if holds { HOLDS } else { FAILED }, Relaxed);
    holds
}

/// Runs `probe` for `e` unless it is forced to fail, and records the outcome.
pub(crate) fn check(e: Entry, probe: impl FnOnce() -> bool) -> bool {
    if forced(e) {
        return settle(e, false);
    }
    settle(e, probe())
}

/// The recorded outcome of `e`: `None` before its probe ran.
pub(crate) fn outcome(e: Entry) -> Option<bool> {
    match STATE[e as usize].load(Relaxed) {
        HOLDS => Some(true),
        FAILED => Some(false),
        _ => None,
    }
}

/// Reads `OXLOOP_CONTRACT_FAIL` and runs the probes that need nothing but the interpreter.
/// Called once from the module's init.
pub(crate) fn init(py: Python<'_>) -> PyResult<()> {
    forced_set();
    check(Entry::BytesReuse, || bytes::probe(py).unwrap_or(false));
    check(Entry::TypeVersionTag, || {
        typetag::probe(py).unwrap_or(false)
    });
    Ok(())
}

/// `_contract_status()`: each entry's name and whether it holds (its fast path is on). Runs
/// the probes that are otherwise run at first use.
#[pyfunction]
pub(crate) fn _contract_status(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    crate::handles::layout(py)?;
    crate::sock::probe_now(py)?;
    crate::accept::probe_now(py);
    crate::streams::probe_now(py);
    if outcome(Entry::TransportSlots).is_none() {
        // Registered when oxloop._transports is imported.
        py.import("oxloop._transports")?;
    }
    let d = PyDict::new(py);
    for e in ENTRIES {
        d.set_item(e.name(), outcome(e).unwrap_or(false))?;
    }
    Ok(d)
}
