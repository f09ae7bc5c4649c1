//! `fastcall`: raw `METH_FASTCALL | METH_KEYWORDS` and `METH_NOARGS` method descriptors.
//!
//! `loop_core/fastcall.rs` and `SocketWriter.write` (transport.rs) install C functions over
//! PyO3's wrappers with `PyDescr_NewMethod`, reading the vectorcall arguments themselves: the
//! positional ones first in `args`, `PyVectorcall_NARGS(nargsf)` of them, then one value per
//! name of the `kwnames` tuple (NULL without keywords). The probe calls such a descriptor with
//! positional and keyword arguments and checks it saw them so.
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::pyutil::MethodDef;

/// Returns `(self, nargs, kwnames, *values)`.
unsafe extern "C" fn echo(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: called by CPython through the probe descriptor, GIL held, with `args` holding
    // nargs positional values then one per keyword name, all alive for the call.
    unsafe {
        let py = Python::assume_attached();
        let nargs = ffi::PyVectorcall_NARGS(nargsf as usize);
        let nkw = if kwnames.is_null() {
            0
        } else {
            ffi::PyTuple_GET_SIZE(kwnames)
        };
        let mut items: Vec<Bound<'_, PyAny>> = vec![
            Bound::from_borrowed_ptr(py, slf),
            nargs
                .into_pyobject(py)
                .map_or_else(|_| py.None().into_bound(py), |n| n.into_any()),
            if kwnames.is_null() {
                py.None().into_bound(py)
            } else {
                Bound::from_borrowed_ptr(py, kwnames)
            },
        ];
        for i in 0..(nargs + nkw) {
            items.push(Bound::from_borrowed_ptr(py, *args.offset(i)));
        }
        match PyTuple::new(py, items) {
            Ok(t) => t.into_ptr(),
            Err(e) => {
                e.restore(py);
                std::ptr::null_mut()
            }
        }
    }
}

static ECHO_DEF: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"echo".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionFastWithKeywords: echo,
    },
    ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
    ml_doc: std::ptr::null(),
});

/// Calls a probe descriptor (a method of `object`) bound to a fresh object, with and
/// without keywords.
pub(crate) fn probe(py: Python<'_>) -> PyResult<bool> {
    // SAFETY: ECHO_DEF is a 'static, well-formed definition whose pointer CPython keeps;
    // PyBaseObject_Type is the static `object` type. A new reference or NULL with an error.
    let descr = unsafe {
        let p = ffi::PyDescr_NewMethod(
            std::ptr::addr_of_mut!(ffi::PyBaseObject_Type),
            &ECHO_DEF.0 as *const ffi::PyMethodDef as *mut ffi::PyMethodDef,
        );
        Bound::from_owned_ptr_or_err(py, p)?
    };
    let obj = py.import("builtins")?.getattr("object")?.call0()?;
    let bound: Bound<'_, PyAny> = descr.call_method1("__get__", (&obj,))?;
    let kw = PyDict::new(py);
    kw.set_item("k", 3)?;
    type Seen<'py> = (Bound<'py, PyAny>, isize, Option<Vec<String>>, i64, i64, i64);
    let (me, nargs, names, a, b, c): Seen<'_> = bound.call((1, 2), Some(&kw))?.extract()?;
    let with_kw =
        me.is(&obj) && nargs == 2 && names == Some(vec!["k".into()]) && (a, b, c) == (1, 2, 3);
    type Plain<'py> = (Bound<'py, PyAny>, isize, Option<Vec<String>>, i64);
    let (me, nargs, names, a): Plain<'_> = bound.call1((7,))?.extract()?;
    let plain = me.is(&obj) && nargs == 1 && names.is_none() && a == 7;
    Ok(with_kw && plain)
}
