//! `get_method`: `_PyObject_GetMethod`, the method resolution of `obj.name(...)`.
//!
//! `_PyObject_GetMethod` (Objects/object.c) returns 1 with the type's function when `name` is
//! a method found on the type and no instance attribute shadows it (the resolution the
//! interpreter's LOAD_METHOD and `PyObject_VectorcallMethod` use), 0 with the attribute
//! otherwise. Exported by 3.10-3.15 (declared in Include/cpython/object.h, since 3.13 in
//! Include/internal/pycore_object.h); pyo3's ffi does not declare it. streams.rs asks it
//! whether asyncio's stream methods are still the ones asyncio defined, without materialising
//! the instance `__dict__` that 3.11+ keep inline.
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyString;

extern "C" {
    fn _PyObject_GetMethod(
        obj: *mut ffi::PyObject,
        name: *mut ffi::PyObject,
        method: *mut *mut ffi::PyObject,
    ) -> std::ffi::c_int;
}

/// What `obj.name` resolves to: `(true, function)` for an unshadowed method of the type,
/// `(false, attribute)` otherwise, `None` when the lookup raised (the error is cleared: the
/// caller then takes the Python call, which reports it).
#[inline]
pub(crate) fn get_method<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> Option<(bool, Bound<'py, PyAny>)> {
    let py = obj.py();
    let mut m: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: obj and name are live; on return `m` holds a new reference or NULL (with an
    // exception set).
    let found = unsafe { _PyObject_GetMethod(obj.as_ptr(), name.as_ptr(), &mut m) };
    if m.is_null() {
        drop(PyErr::take(py));
        return None;
    }
    // SAFETY: m is a new strong reference, owned by the result.
    Some((found == 1, unsafe { Bound::from_owned_ptr(py, m) }))
}

/// On an instance of a probe class: an unshadowed method answers 1 and the class's function,
/// a shadowing instance attribute 0 and that attribute.
pub(crate) fn probe(py: Python<'_>) -> PyResult<bool> {
    let ns = pyo3::types::PyDict::new(py);
    py.run(
        c"class P:\n    def m(self): pass\np = P()\nq = P()\nq.m = len\n",
        Some(&ns),
        None,
    )?;
    let cls = ns
        .get_item("P")?
        .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err("P"))?;
    let func = cls.getattr("__dict__")?.get_item("m")?;
    let name = PyString::new(py, "m");
    let Some(p) = ns.get_item("p")? else {
        return Ok(false);
    };
    let Some(q) = ns.get_item("q")? else {
        return Ok(false);
    };
    let plain = get_method(&p, &name).is_some_and(|(is_m, f)| is_m && f.is(&func));
    // streams.rs reads a class attribute from `tp_dict` without the attribute protocol: for a
    // heap type that is the dict behind its `__dict__` proxy.
    let cls = cls.cast_into::<pyo3::types::PyType>()?;
    // SAFETY: cls is a live heap type; a borrowed pointer read under the GIL and turned into
    // a strong reference at once.
    let tp_dict = unsafe {
        let d = (*cls.as_type_ptr()).tp_dict;
        if d.is_null() {
            return Ok(false);
        }
        Bound::from_borrowed_ptr(py, d)
    };
    let own = tp_dict
        .cast_into::<pyo3::types::PyDict>()
        .ok()
        .and_then(|d| d.get_item("m").ok().flatten())
        .is_some_and(|f| f.is(&func));
    let len = py.import("builtins")?.getattr("len")?;
    let shadowed = get_method(&q, &name).is_some_and(|(is_m, f)| !is_m && f.is(&len));
    Ok(plain && shadowed && own)
}
