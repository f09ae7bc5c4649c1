//! `gc_untrack`: hiding a live object from the cyclic collector and showing it again, and
//! reading whether it is hidden.
//!
//! The loop untracks the handles only it holds, their context copies and atomic `args`
//! tuples (handles.rs says why); that relies on `PyObject_GC_UnTrack` / `PyObject_GC_Track`
//! only flipping the object's membership in the GC lists, and on the tracking state being
//! what `PyObject_GC_IsTracked` reports. The hot paths read that state themselves
//! ([`is_tracked`]): `PyObject_GC_IsTracked` is an exported function, and the three calls per
//! callback were ~40 of call_soon's 2,473 instructions (3.11, `benches/callgrind.py
//! call_soon`).
use pyo3::ffi;
use pyo3::prelude::*;

/// Whether the GC object `p` is tracked, read as CPython's own `_PyObject_GC_IS_TRACKED`
/// does on a GIL-enabled build: its `PyGC_Head` (`_gc_next`, `_gc_prev`) lies right before
/// the object and `_gc_next` is nonzero exactly while it is tracked
/// (Include/internal/pycore_gc.h, `_Py_AS_GC`, 3.10-3.15; the managed dict and weakref
/// pointers of 3.11+ sit before the `PyGC_Head`, not between it and the object).
///
/// # Safety
/// The GIL is held, `p` is a live object whose type has `Py_TPFLAGS_HAVE_GC` (a handle, a
/// context, a tuple), and the `gc_untrack` probe passed (it checks this layout).
#[inline(always)]
pub(crate) unsafe fn is_tracked(p: *mut ffi::PyObject) -> bool {
    // SAFETY: per the contract above, the two words before a GC object are its PyGC_Head,
    // part of the same allocation; `_gc_next` is the first.
    unsafe { *(p as *const usize).sub(2) != 0 }
}

/// Untracks and re-tracks `obj` (a fresh, tracked GC object that nothing else holds) and
/// checks that each step shows, through `PyObject_GC_IsTracked` and through [`is_tracked`]
/// alike.
pub(crate) fn probe(obj: &Bound<'_, PyAny>) -> bool {
    let p = obj.as_ptr();
    // SAFETY: p is a live GC object owned by the caller; it is tracked again before return
    // (tracking an untracked object is always allowed, and it is checked first). is_tracked
    // reads two words inside the GC object's allocation (checked to be one first).
    unsafe {
        if ffi::PyObject_IS_GC(p) == 0 || ffi::PyObject_GC_IsTracked(p) == 0 {
            return false;
        }
        let seen_tracked = is_tracked(p);
        ffi::PyObject_GC_UnTrack(p.cast());
        let hidden = ffi::PyObject_GC_IsTracked(p) == 0 && !is_tracked(p);
        if ffi::PyObject_GC_IsTracked(p) == 0 {
            ffi::PyObject_GC_Track(p.cast());
        }
        seen_tracked && hidden && ffi::PyObject_GC_IsTracked(p) != 0 && is_tracked(p)
    }
}
