//! `handle_slots`, `transport_slots`: where a class keeps a `__slots__` field.
//!
//! A slot is a `member_descriptor` whose `PyMemberDef` (Include/descrobject.h) gives the
//! field's type code, flags and byte offset in the instance. oxloop reads and writes such
//! fields with one load or store at that offset, and takes the offset only after a value
//! stored through the descriptor on a probe instance was found there.
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType, PyWeakrefReference};

/// The offset of the object slot `name` of `cls`, checked on `probe` (an instance of `cls`
/// made without `__init__`): `None` when `name` is not a writable object slot inside the
/// instance, or when a value stored through its descriptor is not where the offset says.
pub(crate) fn slot_offset(
    cls: &Bound<'_, PyType>,
    probe: &Bound<'_, PyAny>,
    name: &str,
) -> PyResult<Option<isize>> {
    let py = cls.py();
    // The attribute as the class resolves it (a slot of a base class included), without
    // binding.
    let Some(descr) = cls
        .getattr("__mro__")?
        .try_iter()?
        .filter_map(Result::ok)
        .find_map(|c| c.getattr("__dict__").ok()?.get_item(name).ok())
    else {
        return Ok(None);
    };
    let member_type = std::ptr::addr_of_mut!(ffi::PyMemberDescr_Type);
    if descr.get_type().as_ptr() != member_type.cast::<ffi::PyObject>() {
        return Ok(None);
    }
    // SAFETY: descr is a live member descriptor (its type checked above), whose d_member
    // points at the PyMemberDef CPython made for the slot (pyo3-ffi types the field as
    // PyGetSetDef before 3.11; the C struct has always held a PyMemberDef pointer).
    let def = unsafe {
        let d = descr.as_ptr().cast::<ffi::PyMemberDescrObject>();
        *(*d).d_member.cast::<ffi::PyMemberDef>()
    };
    // SAFETY: cls is a live type object.
    let basic = unsafe { (*cls.as_type_ptr()).tp_basicsize };
    let size = std::mem::size_of::<*mut ffi::PyObject>() as isize;
    let head = std::mem::size_of::<ffi::PyObject>() as isize;
    if def.type_code != ffi::Py_T_OBJECT_EX
        || def.flags & ffi::Py_READONLY != 0
        || def.offset < head
        || def.offset + size > basic
    {
        return Ok(None);
    }
    let marker = PyDict::new(py);
    probe.setattr(name, &marker)?;
    // SAFETY: probe is a live instance of cls, whose basic size covers the offset.
    let seen = unsafe { read(probe.as_ptr(), def.offset) };
    Ok((seen == marker.as_ptr()).then_some(def.offset))
}

/// The object pointer in the slot at `offset` of `obj` (NULL when the slot is unset).
///
/// # Safety
/// `obj` is live and its type's layout has an object slot at `offset` (found by
/// [`slot_offset`] for its exact type or a base of it).
#[inline(always)]
pub(crate) unsafe fn read(obj: *mut ffi::PyObject, offset: isize) -> *mut ffi::PyObject {
    // SAFETY: per the contract above.
    unsafe { *obj.cast::<u8>().offset(offset).cast::<*mut ffi::PyObject>() }
}

/// Stores a new strong reference into the slot at `offset`, releasing the old value after.
///
/// # Safety
/// As for [`read`]; `val` must be a strong reference whose ownership passes to the slot.
#[inline(always)]
pub(crate) unsafe fn write(obj: *mut ffi::PyObject, offset: isize, val: *mut ffi::PyObject) {
    // SAFETY: per the contract above.
    unsafe {
        let p = obj.cast::<u8>().offset(offset).cast::<*mut ffi::PyObject>();
        let old = *p;
        *p = val;
        ffi::Py_XDECREF(old);
    }
}

/// Whether an instance of `cls` keeps its weak reference list at `tp_weaklistoffset` from
/// its start (positive for a `__weakref__` slot, 3.10-3.11; negative, in the pre-header, for
/// managed weak references, 3.12+), as `_PyObject_GET_WEAKREFS_LISTPTR` computes it: the
/// handles' free list takes only handles with no weak reference (handles.rs `recycle`).
pub(crate) fn weaklist_probe(cls: &Bound<'_, PyType>) -> PyResult<bool> {
    // SAFETY: cls is a live type object.
    let off = unsafe { (*cls.as_type_ptr()).tp_weaklistoffset };
    if off == 0 {
        return Ok(false);
    }
    let obj = cls.call_method1("__new__", (cls,))?;
    // SAFETY: obj is a live instance of cls, whose weak reference list pointer is at `off`
    // (a slot inside the object or the managed pre-header CPython allocated before it).
    let list = || unsafe { read(obj.as_ptr(), off) };
    let before = list().is_null();
    let wr = PyWeakrefReference::new(&obj)?;
    let during = !list().is_null();
    drop(wr);
    Ok(before && during && list().is_null())
}
