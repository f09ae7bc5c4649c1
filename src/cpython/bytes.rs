//! `bytes_reuse`: refilling a bytes object nobody else can see.
//!
//! A bytes object's whole state is its size (`ob_size`), its content (`ob_sval`, followed by
//! a NUL) and its cached hash (`ob_shash`, -1 until computed; deprecated since 3.11 but still
//! the field `bytes_hash` caches into, Objects/bytesobject.c). The read path rewrites those of
//! a spare object whose only reference it holds instead of allocating a new one.
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Puts `data` into `obj`.
///
/// # Safety
/// `obj` is an exact bytes object allocated for at least `data.len()` bytes (plus the NUL)
/// whose only reference the caller holds, and the `bytes_reuse` probe passed.
#[inline(always)]
pub(crate) unsafe fn refill(obj: &Bound<'_, PyBytes>, data: &[u8]) {
    let n = data.len();
    let p = obj.as_ptr().cast::<ffi::PyBytesObject>();
    // SAFETY: per the contract above, nothing else can observe the rewrite.
    #[allow(deprecated)]
    unsafe {
        let sval = std::ptr::addr_of_mut!((*p).ob_sval).cast::<u8>();
        std::ptr::copy_nonoverlapping(data.as_ptr(), sval, n);
        *sval.add(n) = 0;
        (*p).ob_base.ob_size = n as ffi::Py_ssize_t;
        (*p).ob_shash = -1;
    }
}

/// A bytes object with a computed hash, refilled with shorter content, must compare, hash,
/// measure and convert like a fresh object of that content.
pub(crate) fn probe(py: Python<'_>) -> PyResult<bool> {
    let old = PyBytes::new(py, b"oxloop contract probe: the first content");
    old.hash()?; // caches the hash in the object
    let new = b"second";
    // SAFETY: reading the refcount of a live object.
    if unsafe { ffi::Py_REFCNT(old.as_ptr()) } != 1 {
        return Ok(false);
    }
    // SAFETY: `old` was made here, nobody else holds it (checked just above), and it was
    // allocated for more than `new.len()` bytes.
    unsafe { refill(&old, new) };
    let fresh = PyBytes::new(py, new);
    Ok(old.as_bytes() == new
        && old.len()? == new.len()
        && old.as_any().eq(fresh.as_any())?
        && old.hash()? == fresh.hash()?
        && old.str()?.to_string() == fresh.str()?.to_string())
}
