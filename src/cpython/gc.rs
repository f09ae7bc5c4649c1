//! `gc_untrack`: hiding a live object from the cyclic collector and showing it again.
//!
//! The loop untracks the handles only it holds, their context copies and atomic `args`
//! tuples (handles.rs says why); that relies on `PyObject_GC_UnTrack` / `PyObject_GC_Track`
//! only flipping the object's membership in the GC lists, and on the tracking state being
//! what `PyObject_GC_IsTracked` reports.
use pyo3::ffi;
use pyo3::prelude::*;

/// Untracks and re-tracks `obj` (a fresh, tracked GC object that nothing else holds) and
/// checks that each step shows.
pub(crate) fn probe(obj: &Bound<'_, PyAny>) -> bool {
    let p = obj.as_ptr();
    // SAFETY: p is a live GC object owned by the caller; it is tracked again before return
    // (tracking an untracked object is always allowed, and it is checked first).
    unsafe {
        if ffi::PyObject_IS_GC(p) == 0 || ffi::PyObject_GC_IsTracked(p) == 0 {
            return false;
        }
        ffi::PyObject_GC_UnTrack(p.cast());
        let hidden = ffi::PyObject_GC_IsTracked(p) == 0;
        if ffi::PyObject_GC_IsTracked(p) == 0 {
            ffi::PyObject_GC_Track(p.cast());
        }
        hidden && ffi::PyObject_GC_IsTracked(p) != 0
    }
}
