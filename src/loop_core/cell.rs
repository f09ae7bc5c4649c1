//! `GilCell`: loop state shared between threads under the GIL.
//!
//! Every access to the loop's mutable state happens with the GIL held (a `Python<'_>` token is
//! required to borrow), so threads calling `call_soon_threadsafe` never race the loop thread,
//! which holds no borrow while it waits in the poller with the GIL released. The inner
//! `RefCell` turns an accidental re-entrant borrow (loop state borrowed while Python code runs)
//! into a Python `RuntimeError` instead of undefined behaviour. The rule that keeps it from
//! firing: never call into Python, nor drop a Python object, while a borrow is alive.
use std::cell::{RefCell, RefMut};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

pub struct GilCell<T>(RefCell<T>);

// SAFETY: the RefCell is only reached through `borrow`, which requires the GIL, so at most one
// thread touches it at a time; T: Send makes moving that access between threads sound. oxloop
// is built for GIL-enabled CPython only (no free-threaded build).
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub fn new(v: T) -> Self {
        Self(RefCell::new(v))
    }

    #[inline]
    pub fn borrow<'a>(&'a self, _py: Python<'_>) -> PyResult<RefMut<'a, T>> {
        self.0
            .try_borrow_mut()
            .map_err(|_| PyRuntimeError::new_err("oxloop: re-entrant access to loop state"))
    }

    /// For the garbage collector's traverse, which runs with the GIL held but without a token.
    pub fn try_peek(&self) -> Option<std::cell::Ref<'_, T>> {
        self.0.try_borrow().ok()
    }
}
