//! Error conversions: one place turns errno and loop states into the exceptions asyncio raises.
use std::io;

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::PyErr;

/// `io::Error` -> `OSError(errno, strerror)`; CPython's OSError constructor picks the subclass
/// for the errno (EBADF stays OSError, EPERM becomes PermissionError, ...), as asyncio sees.
pub fn os_error(err: io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(code) => {
            // Strip Rust's " (os error N)" suffix so the message matches strerror(3).
            let msg = err.to_string();
            let msg = msg
                .rsplit_once(" (os error ")
                .map(|(m, _)| m.to_owned())
                .unwrap_or(msg);
            PyOSError::new_err((code, msg))
        }
        None => PyOSError::new_err(err.to_string()),
    }
}

pub fn closed_error() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}
