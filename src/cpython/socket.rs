//! `socket_head`: the fields `sock.recv` reads, at the head of a `socket.socket`.
//!
//! CPython's `PySocketSockObject` (Modules/socketmodule.h, the same head on 3.10-3.15) starts
//! with the fd, family, type, protocol, error handler and timeout (a `_PyTime_t` of
//! nanoseconds: negative when blocking, 0 when non-blocking). The `sock_*` fast paths read the
//! fd and timeout there, as `sock.recv` itself does, once a probe socket showed them where
//! this struct says in every state that matters.
use std::ffi::c_void;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

#[repr(C)]
struct SockHead {
    ob_base: ffi::PyObject,
    sock_fd: std::ffi::c_int,
    sock_family: std::ffi::c_int,
    sock_type: std::ffi::c_int,
    sock_proto: std::ffi::c_int,
    errorhandler: *mut c_void,
    sock_timeout: i64,
}

/// The fd and the timeout (ns) of a socket.
///
/// # Safety
/// `sock` must be an instance of exactly `socket.socket`, and [`probe`] must have passed.
#[inline(always)]
pub(crate) unsafe fn head(sock: &Bound<'_, PyAny>) -> (i32, i64) {
    // SAFETY: per the contract, the object starts with a SockHead.
    let h = unsafe { &*(sock.as_ptr() as *const SockHead) };
    (h.sock_fd, h.sock_timeout)
}

/// The family, type and protocol of a socket (what `sock.family` / `.type` / `.proto` convert).
///
/// # Safety
/// As for [`head`].
#[inline(always)]
pub(crate) unsafe fn kind(sock: &Bound<'_, PyAny>) -> (i32, i32, i32) {
    // SAFETY: per the contract, the object starts with a SockHead.
    let h = unsafe { &*(sock.as_ptr() as *const SockHead) };
    (h.sock_family, h.sock_type, h.sock_proto)
}

/// Whether a `socket.socket` made here shows its fd and timeout where `SockHead` says, in
/// every state that matters (blocking, non-blocking, with a timeout, closed).
pub(crate) fn probe(py: Python<'_>, ty: &Bound<'_, PyType>) -> PyResult<bool> {
    // SAFETY: ty is a live type object.
    let basic = unsafe { (*ty.as_type_ptr()).tp_basicsize };
    if usize::try_from(basic).unwrap_or(0) < std::mem::size_of::<SockHead>() {
        return Ok(false);
    }
    let socket = py.import("socket")?;
    let s = ty.call1((socket.getattr("AF_UNIX")?, socket.getattr("SOCK_STREAM")?))?;
    let check = || -> PyResult<bool> {
        let fd: i32 = s.call_method0("fileno")?.extract()?;
        // SAFETY: s is an exact socket.socket (made from ty just above); only the fields
        // within tp_basicsize (checked above) are read.
        let read = || unsafe { head(&s) };
        let mut ok = read().0 == fd;
        // SAFETY: as for `read`.
        let (family, kind_, proto) = unsafe { kind(&s) };
        ok &= family == libc::AF_UNIX && kind_ == libc::SOCK_STREAM && proto == 0;
        s.call_method1("settimeout", (py.None(),))?;
        ok &= read().1 < 0; // -1 s in 3.11's nanoseconds

        s.call_method1("setblocking", (false,))?;
        ok &= read().1 == 0;
        s.call_method1("settimeout", (2.5,))?;
        ok &= read().1 == 2_500_000_000;
        s.call_method0("close")?;
        ok &= read().0 == -1;
        Ok(ok)
    };
    let ok = check();
    let _ = s.call_method0("close");
    ok
}

/// `class.__new__(class)` as `type_call` makes it before `__init__`: the type's `tp_new` with
/// empty arguments. For `socket.socket`, `sock_new`'s object: fd -1, timeout -1, the error
/// handler set, every other byte zero.
pub(crate) fn new_uninit<'py>(class: &Bound<'py, PyType>) -> PyResult<Bound<'py, PyAny>> {
    let py = class.py();
    let tp = class.as_type_ptr();
    let empty = pyo3::types::PyTuple::empty(py);
    // SAFETY: tp is a live type; tp_new is read from it and called as type_call would, with
    // an args tuple and no keywords; its result is a new reference or NULL with an error set.
    unsafe {
        match (*tp).tp_new {
            Some(new) => {
                Bound::from_owned_ptr_or_err(py, new(tp, empty.as_ptr(), std::ptr::null_mut()))
            }
            None => Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "cannot create '{}' instances",
                class.name()?
            ))),
        }
    }
}

// -- socket_init -------------------------------------------------------------------------------
// `_socket.socket.__init__(family, type | SOCK_NONBLOCK, proto, fileno=fd)` (Modules/
// socketmodule.c `sock_initobj`) on an object fresh from `sock_new` does, for a valid socket
// fd, nothing but: audit `socket.__new__`, validate the fd with `getsockname(2)`, and
// `init_sockobject`'s writes -- the fd, the family, the type without SOCK_NONBLOCK and
// SOCK_CLOEXEC, the protocol, `errorhandler = &set_error` (which `sock_new` already wrote),
// the timeout 0 (SOCK_NONBLOCK's), and on 3.12+ `state`, the module's state, the one field
// after the timeout. An accepted fd is a socket (accept4 just made it), so the accept path
// writes those fields itself ([`fill_accepted`]) and saves the validating syscall and the
// argument parsing.

extern "C" {
    // Include/sysmodule.h (public C API since 3.8): runs the audit hooks, if any.
    fn PySys_Audit(
        event: *const std::ffi::c_char,
        format: *const std::ffi::c_char,
        ...
    ) -> std::ffi::c_int;
}

/// What follows `sock_timeout` in `_socket.socket`'s C struct: nothing (3.10, 3.11) or the
/// module state pointer (3.12+), told apart by the type's `tp_basicsize`; None for any other
/// size (a field this module does not know: `sock_initobj` then makes every socket).
fn tail_len(base: &Bound<'_, PyType>) -> Option<usize> {
    // SAFETY: base is a live type object.
    let basic = usize::try_from(unsafe { (*base.as_type_ptr()).tp_basicsize }).ok()?;
    let tail = basic.checked_sub(std::mem::size_of::<SockHead>())?;
    (tail == 0 || tail == std::mem::size_of::<*mut c_void>()).then_some(tail)
}

/// Fills `obj`, fresh from `socket.socket`'s `tp_new`, as `sock_initobj` would for the
/// accepted socket fd `fd` of the listener `listener` made non-blocking by accept4 (see the
/// section's comment): the audit event first (an `Err` then, and `obj` is left as `sock_new`
/// made it), then the fields.
///
/// # Safety
/// `obj` and `listener` are exact `socket.socket` instances, `obj` fresh from `tp_new`, and
/// [`probe_init`] passed for `base` (`_socket.socket`).
pub(crate) unsafe fn fill_accepted(
    obj: &Bound<'_, PyAny>,
    listener: &Bound<'_, PyAny>,
    base: &Bound<'_, PyType>,
    fd: i32,
) -> PyResult<()> {
    let py = obj.py();
    // SAFETY: per the contract, both objects start with a SockHead.
    let from = unsafe { &*(listener.as_ptr() as *const SockHead) };
    let (family, kind, proto) = (from.sock_family, from.sock_type, from.sock_proto);
    // What socket.py's `accept` passes on asyncio: the listener's family, type and protocol
    // (the type as init_sockobject left it, without SOCK_NONBLOCK).
    // SAFETY: obj is a live object; the format matches the arguments (an object, three ints).
    let rc = unsafe {
        PySys_Audit(
            c"socket.__new__".as_ptr(),
            c"Oiii".as_ptr(),
            obj.as_ptr(),
            family,
            kind,
            proto,
        )
    };
    if rc < 0 {
        return Err(PyErr::take(py)
            .unwrap_or_else(|| pyo3::exceptions::PySystemError::new_err("audit hook failed")));
    }
    let tail = tail_len(base).unwrap_or(0);
    // SAFETY: obj starts with a SockHead (the contract), followed within the base's basic size
    // by `tail` bytes (the module state pointer) that the listener has too; nothing else holds
    // a reference to the fresh object's C fields.
    unsafe {
        let to = obj.as_ptr() as *mut SockHead;
        (*to).sock_fd = fd;
        (*to).sock_family = family;
        (*to).sock_type = kind & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        (*to).sock_proto = proto;
        (*to).sock_timeout = 0;
        if tail != 0 {
            let at = std::mem::size_of::<SockHead>();
            let state = *((listener.as_ptr() as *const u8).add(at) as *const *mut c_void);
            *((obj.as_ptr() as *mut u8).add(at) as *mut *mut c_void) = state;
        }
    }
    Ok(())
}

/// Whether [`fill_accepted`] writes what `sock_initobj` writes: two sockets on `dup`s of one
/// fd, one made by `socket.socket(..., fileno=)`, the other by `tp_new` and `fill_accepted`
/// (copying the tail from a third, made the usual way), hold the same bytes from the end of
/// the object header to the end of `_socket.socket`'s struct, but for the fd.
pub(crate) fn probe_init<'py>(
    py: Python<'py>,
    class: &Bound<'py, PyType>,
    base: &Bound<'py, PyType>,
) -> PyResult<bool> {
    let Some(tail) = tail_len(base) else {
        return Ok(false);
    };
    let socket = py.import("socket")?;
    let os = py.import("os")?;
    let family = socket.getattr("AF_INET")?;
    let stream: i32 = socket.getattr("SOCK_STREAM")?.extract()?;
    let template = class.call1((&family, stream))?;
    let mut made: Vec<Bound<'py, PyAny>> = vec![template.clone()];
    let check = |made: &mut Vec<Bound<'py, PyAny>>| -> PyResult<bool> {
        let fd: i32 = template.call_method0("fileno")?.extract()?;
        let usual = class.call1((
            &family,
            stream | libc::SOCK_NONBLOCK,
            0,
            os.call_method1("dup", (fd,))?,
        ))?;
        made.push(usual.clone());
        let dup: i32 = os.call_method1("dup", (fd,))?.extract()?;
        let fresh = match new_uninit(class) {
            Ok(fresh) => fresh,
            Err(e) => {
                crate::sys::close(dup);
                return Err(e);
            }
        };
        // SAFETY: fresh is an exact socket.socket from tp_new, template one made the usual
        // way; the layout assumptions checked here are only read back below.
        if let Err(e) = unsafe { fill_accepted(&fresh, &template, base, dup) } {
            crate::sys::close(dup);
            return Err(e);
        }
        made.push(fresh.clone());
        let start = std::mem::size_of::<ffi::PyObject>();
        let end = std::mem::size_of::<SockHead>() + tail;
        let fd_at = std::mem::offset_of!(SockHead, sock_fd);
        // SAFETY: both are live objects of at least `end` bytes (the base's basic size).
        let bytes = |o: &Bound<'_, PyAny>| unsafe {
            std::slice::from_raw_parts(o.as_ptr() as *const u8, end).to_vec()
        };
        let (mut a, mut b) = (bytes(&usual), bytes(&fresh));
        // The fds differ (two dups); each must be the one it was given.
        let fd_of =
            |v: &[u8]| i32::from_ne_bytes([v[fd_at], v[fd_at + 1], v[fd_at + 2], v[fd_at + 3]]);
        let fds_ok =
            fd_of(&b) == dup && fd_of(&a) == usual.call_method0("fileno")?.extract::<i32>()?;
        a[fd_at..fd_at + 4].fill(0);
        b[fd_at..fd_at + 4].fill(0);
        Ok(fds_ok && a[start..] == b[start..])
    };
    let ok = check(&mut made);
    // `_socket.socket.close`: socket.py's would need the slots `socket.__init__` sets.
    if let Ok(close) = base.getattr("close") {
        for s in made {
            let _ = close.call1((s,));
        }
    }
    ok
}
