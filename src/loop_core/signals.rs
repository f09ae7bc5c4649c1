//! Signals, the binding's side: what an iteration does once the poll saw the signal wake-up
//! socket readable or was interrupted (EINTR).
//!
//! The OS side is the engine's (`engine/src/signal.rs`: the socket pair whose write end
//! `signal.set_wakeup_fd` gets from `LoopCore._signal_wakeup_fd`); the Python side, with
//! asyncio's semantics, is `python/oxloop/_signals.py` (`add_signal_handler`,
//! `remove_signal_handler`, `_process_signals`).
//!
//! Order, as CPython's loop gets it: Python-level handlers run first (`PyErr_CheckSignals`;
//! the default SIGINT handler raises KeyboardInterrupt out of `run_forever` here, as the eval
//! loop would in asyncio's `_run_once`), then the signal numbers read from the socket go to
//! `_process_signals`, which queues each registered handler's handle for this iteration.
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::os_error;

/// Runs Python's signal handlers, then hands the numbers waiting on `ready_fd` (the wake-up
/// socket's read end, when the poll found it readable) to the loop's `_process_signals`.
#[cold]
pub(super) fn deliver(slf: &Bound<'_, PyAny>, ready_fd: Option<i32>) -> PyResult<()> {
    let py = slf.py();
    let mut bytes = Vec::new();
    if let Some(fd) = ready_fd {
        oxloop_engine::signal::read_available(fd, &mut bytes).map_err(os_error)?;
    }
    // SAFETY: called with the GIL held on the loop thread.
    if unsafe { ffi::PyErr_CheckSignals() } < 0 {
        return Err(PyErr::fetch(py));
    }
    if !bytes.is_empty() {
        slf.call_method1(
            pyo3::intern!(py, "_process_signals"),
            (PyBytes::new(py, &bytes),),
        )?;
    }
    Ok(())
}
