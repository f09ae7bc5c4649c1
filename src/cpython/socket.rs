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
