//! `type_version_tag`: a type's `tp_version_tag` changes whenever the type changes.
//!
//! CPython gives a type a version tag on lookup and a new tag (3.11+: first 0) whenever one of
//! its attributes or a base's changes (`PyType_Modified`, Objects/typeobject.c); before 3.11
//! a modified type keeps its tag and only loses `Py_TPFLAGS_VALID_VERSION_TAG` until a lookup
//! assigns a new one, and 3.13 stopped using the flag. `TimePatch` (loop_core/mod.rs) caches
//! whether `type(loop).time` is `LoopCore.time` under the type's pointer and tag.
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};

/// `Py_TPFLAGS_VALID_VERSION_TAG` (Include/object.h); meaningful before 3.13.
pub(crate) const VALID_VERSION_TAG: std::ffi::c_ulong = 1 << 19;

/// Whether `tp`'s current tag may be trusted: nonzero and (before 3.11) flagged valid.
#[inline(always)]
pub(crate) fn tag(tp: *mut ffi::PyTypeObject, check_valid_flag: bool) -> u32 {
    // SAFETY: tp is a live type object; two plain fields are read.
    let (tag, flags) = unsafe { ((*tp).tp_version_tag, (*tp).tp_flags) };
    if check_valid_flag && flags & VALID_VERSION_TAG == 0 {
        return 0;
    }
    tag
}

/// A probe class's tag after a lookup, then after a class attribute of its base changes: the
/// second is nonzero (after a new lookup) and differs, or was invalidated in between.
pub(crate) fn probe(py: Python<'_>) -> PyResult<bool> {
    let ns = PyDict::new(py);
    py.run(
        c"class B:\n    def time(self): pass\nclass C(B): pass\n",
        Some(&ns),
        None,
    )?;
    let (Some(b), Some(c)) = (ns.get_item("B")?, ns.get_item("C")?) else {
        return Ok(false);
    };
    let c = c.cast_into::<PyType>()?;
    let check_valid_flag = py.version_info() < (3, 11);
    let tp = c.as_type_ptr();
    c.getattr("time")?;
    let before = tag(tp, check_valid_flag);
    b.setattr("time", py.None())?;
    let invalidated = tag(tp, check_valid_flag) != before;
    c.getattr("time")?;
    let after = tag(tp, check_valid_flag);
    Ok(before != 0 && after != 0 && invalidated && after != before)
}
