//! Native callbacks: the one interface through which a Rust handler reaches the run loop.
//!
//! A stream transport's read event (`transport::SocketReader`) and a `sock_*` readiness waiter
//! (`sock::SockWaiter`) are pyclasses registered as ordinary handle callbacks (asyncio's
//! `_add_reader` takes any callable), so every Python path that inspects or cancels them sees
//! what asyncio would. When the loop runs such a handle with no arguments, calling the object
//! through `tp_call` would cost PyO3's trampoline and argument parsing (about a twentieth of a
//! 1 KiB echo's user-space instructions); instead the loop finds the handler's Rust body here,
//! by the callback's exact type, and calls it.
//!
//! The core names no handler type: each handler implements [`NativeCallback`] and is listed
//! once, at module init (`lib.rs`), with [`register`]. The table is a handful of
//! (type pointer, function) pairs, read per callback with one atomic load and a compare per
//! entry (the registered types are immortal heap types: `add_class` keeps them in the module).
//!
//! Invariants:
//! - an entry is used only for an object whose type is *exactly* the registered one (a
//!   subclass may override `__call__`, and goes through `tp_call`);
//! - the body runs inside the handle's context, entered by the loop, and reports errors as the
//!   `__call__` it replaces would (the loop treats them as the callback's).
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::PyClass;

/// A pyclass whose `__call__()` (no arguments) the loop may run directly.
pub(crate) trait NativeCallback: PyClass {
    /// What `__call__()` does.
    fn run_native(slf: &Bound<'_, Self>) -> PyResult<()>;
}

type RunFn = fn(&Bound<'_, PyAny>) -> PyResult<()>;

/// At most this many native callback types (two today).
const MAX: usize = 4;

struct Table {
    len: usize,
    entries: [(usize, RunFn); MAX],
}

static TABLE: OnceLock<Table> = OnceLock::new();

fn trampoline<T: NativeCallback>(obj: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: `find` hands out this function only for an object whose type is exactly `T`'s
    // type object (the pointer it was registered under).
    let slf = unsafe { obj.cast_unchecked::<T>() };
    T::run_native(slf)
}

/// One registration: `T`'s type object and its body.
pub(crate) fn entry<T: NativeCallback>(py: Python<'_>) -> (usize, RunFn) {
    (py.get_type::<T>().as_type_ptr() as usize, trampoline::<T>)
}

/// Sets the table, once, at module init. A second call (a re-import in the same process)
/// keeps the first table: the types are the same objects.
pub(crate) fn register(entries: &[(usize, RunFn)]) -> PyResult<()> {
    if entries.len() > MAX {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "too many native callback types",
        ));
    }
    let noop: RunFn = |_| Ok(());
    let mut table = Table {
        len: entries.len(),
        entries: [(0, noop); MAX],
    };
    table.entries[..entries.len()].copy_from_slice(entries);
    let _ = TABLE.set(table);
    Ok(())
}

/// The Rust body of `cb`'s `__call__`, when its exact type is a registered native callback.
#[inline]
pub(crate) fn find(cb: &Bound<'_, PyAny>) -> Option<RunFn> {
    let table = TABLE.get()?;
    let tp = cb.get_type_ptr() as usize;
    table.entries[..table.len]
        .iter()
        .find(|(t, _)| *t == tp)
        .map(|(_, f)| *f)
}
