//! `oxloop._oxloop`: module registration only. The loop lives in `loop_core`.
use pyo3::prelude::*;

mod errors;
mod handles;
mod io;
mod loop_core;
mod pyutil;
mod sock;
mod streams;
mod sys;
mod time;
mod tls;
mod transport;

// gil_used = true: the loop's state is a RefCell-guarded single-threaded design that relies on
// the GIL to serialise every entry from Python. On a free-threaded build this makes CPython
// re-enable the GIL (with a RuntimeWarning) rather than run it unserialised; oxloop/_compat.py
// refuses such builds before this module is imported at all.
#[pymodule(gil_used = true)]
fn _oxloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<loop_core::LoopCore>()?;
    m.add_function(wrap_pyfunction!(
        loop_core::fastcall::_install_fast_methods,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(loop_core::_set_io_context_keyword, m)?)?;
    m.add_class::<transport::SocketReader>()?;
    m.add_class::<transport::SocketWriter>()?;
    transport::install_fast_write(m.py())?;
    m.add_function(wrap_pyfunction!(transport::register_transport_slots, m)?)?;
    m.add(
        "TRANSPORT_FIELDS",
        pyo3::types::PyTuple::new(m.py(), transport::FIELD_NAMES)?,
    )?;
    m.add_class::<sock::SockWaiter>()?;
    m.add_function(wrap_pyfunction!(sock::sock_recv, m)?)?;
    m.add_function(wrap_pyfunction!(sock::sock_recv_into, m)?)?;
    m.add_function(wrap_pyfunction!(sock::sock_sendall, m)?)?;
    tls::register(m)?;
    Ok(())
}
