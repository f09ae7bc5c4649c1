//! Small CPython-level helpers shared by the loop core and the transports: reading an object's
//! instance `__dict__` without the attribute protocol, and raw C methods installed over PyO3's
//! wrappers on the hottest calls.
//!
//! Invariants: every function here is called with the GIL held; a raw method body never lets
//! a Rust panic unwind into CPython (it becomes a `SystemError`).
use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PySystemError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyType};

/// `obj.__dict__` (materialising a managed one), or `None` when it has none.
pub(crate) fn instance_dict<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyDict>> {
    // SAFETY: obj is a live object; PyObject_GenericGetDict returns a new reference to its
    // __dict__ or NULL with an exception, which we clear.
    let raw = unsafe { ffi::PyObject_GenericGetDict(obj.as_ptr(), std::ptr::null_mut()) };
    if raw.is_null() {
        drop(PyErr::take(obj.py()));
        return None;
    }
    // SAFETY: raw is a new strong reference.
    unsafe { Bound::from_owned_ptr(obj.py(), raw) }
        .cast_into::<PyDict>()
        .ok()
}

/// `dict.get(name)` through `PyDict_GetItemWithError` directly: PyO3's `get_item` converts
/// and clones the key and wraps twice, a third of a lookup's cost on the transport's per-event
/// path (callgrind).
pub(crate) fn dict_get<'py>(
    dict: &Bound<'py, PyDict>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = dict.py();
    // SAFETY: dict is a live dict and name a live str; the result is a borrowed reference
    // (turned into a strong one at once) or NULL, with an error only if hashing or comparing
    // raised.
    unsafe {
        let v = ffi::PyDict_GetItemWithError(dict.as_ptr(), name.as_ptr());
        if !v.is_null() {
            return Ok(Some(Bound::from_borrowed_ptr(py, v)));
        }
        if !ffi::PyErr_Occurred().is_null() {
            return Err(PyErr::fetch(py));
        }
    }
    Ok(None)
}

/// A method table entry with a 'static address (CPython keeps the pointer).
pub(crate) struct MethodDef(pub ffi::PyMethodDef);
// SAFETY: the definitions are immutable after construction and only read by CPython.
unsafe impl Sync for MethodDef {}

/// Sets `def` on `target` as a method descriptor of `owner` (the type whose instances it
/// accepts as `self`), under the definition's own name.
pub(crate) fn install_method(
    target: &Bound<'_, PyType>,
    owner: &Bound<'_, PyType>,
    def: &'static MethodDef,
) -> PyResult<()> {
    let py = target.py();
    // SAFETY: owner is a live type object; def is a 'static, well-formed method definition
    // whose pointer CPython keeps. The result is a new reference or NULL with an error set.
    let descr = unsafe {
        let p = ffi::PyDescr_NewMethod(
            owner.as_ptr() as *mut ffi::PyTypeObject,
            &def.0 as *const ffi::PyMethodDef as *mut ffi::PyMethodDef,
        );
        Bound::from_owned_ptr_or_err(py, p)?
    };
    // SAFETY: ml_name is a 'static NUL-terminated ASCII name.
    let name = unsafe { CStr::from_ptr(def.0.ml_name) }
        .to_str()
        .unwrap_or("?");
    target.setattr(name, descr)
}

/// Runs the body of a raw C method and turns its outcome into what CPython expects: a new
/// reference, or NULL with the exception set. A panic becomes a `SystemError` naming `what`.
pub(crate) fn c_return(
    py: Python<'_>,
    what: &str,
    body: impl FnOnce() -> PyResult<*mut ffi::PyObject>,
) -> *mut ffi::PyObject {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(obj)) => obj,
        Ok(Err(e)) => {
            e.restore(py);
            std::ptr::null_mut()
        }
        Err(_) => {
            PySystemError::new_err(format!("oxloop: internal error (Rust panic) in {what}"))
                .restore(py);
            std::ptr::null_mut()
        }
    }
}
