//! `stream_fields`: where asyncio.streams keeps the state the native `data_received` uses.
//!
//! streams.rs does the work of `StreamReaderProtocol.data_received` and
//! `StreamReader.feed_data` / `_wakeup_waiter` (streams.py) by reading and writing their
//! private fields: the protocol's `_stream_reader_wr` (a weak reference to the reader) and the
//! reader's `_buffer` (a bytearray), `_limit`, `_eof`, `_waiter`, `_transport` and `_paused`.
//! Each is read through the attribute protocol and its type checked per event; the probe
//! checks that asyncio's own code still uses every one of those names, so that a version
//! which renamed or dropped one takes the Python calls.
use pyo3::prelude::*;
use pyo3::types::PyType;

/// The names the reader's fast path reads or writes.
const READER_FIELDS: [&str; 6] = [
    "_buffer",
    "_limit",
    "_eof",
    "_waiter",
    "_transport",
    "_paused",
];

/// Whether `name` is among the names used by the code of `cls`'s own functions (and
/// property getters).
fn uses(cls: &Bound<'_, PyType>, name: &str) -> PyResult<bool> {
    for value in cls
        .getattr("__dict__")?
        .call_method0("values")?
        .try_iter()?
    {
        let value = value?;
        let func = match value.getattr("fget") {
            Ok(getter) => getter,
            Err(_) => value,
        };
        let Ok(code) = func.getattr("__code__") else {
            continue;
        };
        if code.getattr("co_names")?.contains(name)? {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(crate) fn probe(protocol: &Bound<'_, PyType>, reader: &Bound<'_, PyType>) -> PyResult<bool> {
    for name in READER_FIELDS {
        if !uses(reader, name)? {
            return Ok(false);
        }
    }
    uses(protocol, "_stream_reader_wr")
}
