//! [`ClassGuard`]: whether some class attributes are still the objects `_transports.py`
//! verified, asked once per connection.
//!
//! oxloop runs asyncio's code itself (the transport set-up and close, `Handle.cancel`, the
//! streams' `_stream_reader`) only while each method it stands for is still the verified
//! function on its class (a method patched after import must run).
//! Asking Python (`cls.name is func`, ten times, in a tuple) cost about 1,500 instructions
//! per connection on 3.11 (benches/net_callgrind.sh churn-protocol). A class's
//! `tp_version_tag` changes whenever an attribute of it or of a base changes
//! (`cpython::typetag`, the `type_version_tag` contract), so an entry whose class still has
//! the tag it had when the lookup last found the expected object needs no lookup.
//!
//! Invariants: an entry's tag is stored only right after a lookup found the expected object,
//! and read as `typetag::tag` does (0, never trusted, when the tag is unset or invalid);
//! without the contract every call looks every entry up. A failed lookup is a "no".
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use pyo3::prelude::*;
use pyo3::types::{PyString, PyType};

use crate::cpython::{self, typetag, Entry};

struct GuardEntry {
    class: Py<PyType>,
    name: Py<PyString>,
    expected: Py<PyAny>,
    /// The class's tag when `class.name` was last `expected`; 0: look up.
    tag: AtomicU32,
}

/// `ClassGuard([(cls, name, obj), ...])()`: whether every `getattr(cls, name) is obj`.
#[pyclass(module = "oxloop._oxloop", frozen)]
pub struct ClassGuard {
    entries: Vec<GuardEntry>,
    /// The `type_version_tag` contract holds: tags may be trusted.
    tags: bool,
    /// Before 3.11 a modified type keeps its tag and loses `Py_TPFLAGS_VALID_VERSION_TAG`.
    check_valid_flag: bool,
}

#[pymethods]
impl ClassGuard {
    #[new]
    pub(crate) fn new(
        py: Python<'_>,
        entries: Vec<(Bound<'_, PyType>, Bound<'_, PyString>, Bound<'_, PyAny>)>,
    ) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|(class, name, expected)| GuardEntry {
                    class: class.unbind(),
                    name: name.unbind(),
                    expected: expected.unbind(),
                    tag: AtomicU32::new(0),
                })
                .collect(),
            tags: cpython::outcome(Entry::TypeVersionTag) == Some(true),
            check_valid_flag: py.version_info() < (3, 11),
        }
    }

    fn __call__(&self, py: Python<'_>) -> bool {
        self.holds(py)
    }
}

impl ClassGuard {
    /// Whether every entry's class still holds its object (what calling the guard says).
    pub(crate) fn holds(&self, py: Python<'_>) -> bool {
        for e in &self.entries {
            let class = e.class.bind(py);
            let tp = class.as_type_ptr();
            if self.tags {
                let now = typetag::tag(tp, self.check_valid_flag);
                if now != 0 && now == e.tag.load(Relaxed) {
                    continue;
                }
            }
            match class.getattr(e.name.bind(py)) {
                Ok(found) if found.is(e.expected.bind(py)) => {}
                // Another object, or a lookup that raised: not the verified one.
                _ => return false,
            }
            if self.tags {
                // The lookup gave the class a tag, if it can have one.
                e.tag
                    .store(typetag::tag(tp, self.check_valid_flag), Relaxed);
            }
        }
        true
    }
}
