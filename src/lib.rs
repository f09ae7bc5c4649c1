//! `oxloop._oxloop`: module registration only. The loop lives in `loop_core`, on the pure-Rust
//! engine (`engine/`, the `oxloop-engine` crate: ready queue, timer heap, fd table, poller,
//! clock), whose modules are re-exported here under the names the binding has always used.
use pyo3::prelude::*;

pub(crate) use oxloop_engine::{io, sys, time};

mod accept;
mod cpython;
mod errors;
mod guard;
mod handles;
mod loop_core;
mod pyutil;
mod sock;
mod streams;
mod tls;
mod transport;
mod transport_life;
mod transport_setup;
mod writebuf;

// The module declares that it needs the GIL. `gil_used = true` makes PyO3 set the module's
// `Py_mod_gil` slot (3.13+, PEP 703; https://docs.python.org/3/c-api/module.html#c.Py_mod_gil)
// to `Py_MOD_GIL_USED`; without it PyO3 0.28 and later set `Py_MOD_GIL_NOT_USED`, a claim that
// the module is thread-safe without the GIL (PyO3 guide, "Supporting Free-Threaded CPython",
// and its 0.27 -> 0.28 migration note). That claim would be false: the loop state is a
// `GilCell` (loop_core/cell.rs) and the free lists, refcount-1 reuse, GC untracking and raw
// slot reads all rely on the GIL (docs/free-threading.md lists each and what replaces it).
// A free-threaded interpreter that loads the module anyway re-enables the GIL, with a
// RuntimeWarning, unless PYTHON_GIL=0 / -X gil=0 overrides it; oxloop/_compat.py refuses such
// builds before this module is imported at all. tests/test_interpreter.py reads the slot back.
#[pymodule(gil_used = true)]
fn _oxloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    cpython::init(m.py())?;
    transport::enable_bytes_reuse(cpython::outcome(cpython::Entry::BytesReuse) == Some(true));
    m.add_function(wrap_pyfunction!(cpython::_contract_status, m)?)?;
    m.add(
        "CONTRACT_ENTRIES",
        pyo3::types::PyTuple::new(m.py(), cpython::ENTRIES.map(cpython::Entry::name))?,
    )?;
    m.add_class::<loop_core::LoopCore>()?;
    m.add_function(wrap_pyfunction!(
        loop_core::fastcall::_install_fast_methods,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(loop_core::_set_io_context_keyword, m)?)?;
    m.add_function(wrap_pyfunction!(handles::_set_verified_handle_cancel, m)?)?;
    m.add_function(wrap_pyfunction!(loop_core::fileno_of, m)?)?;
    m.add_class::<guard::ClassGuard>()?;
    m.add_class::<transport::SocketReader>()?;
    m.add_class::<transport::SocketWriter>()?;
    m.add_class::<transport::ReadState>()?;
    m.add_class::<writebuf::WriteBuffer>()?;
    transport::install_fast_write(m.py())?;
    m.add_function(wrap_pyfunction!(transport::register_transport_slots, m)?)?;
    m.add_function(wrap_pyfunction!(transport_setup::setup_transport, m)?)?;
    m.add_function(wrap_pyfunction!(transport_setup::_set_transport_setup, m)?)?;
    m.add_function(wrap_pyfunction!(transport_life::_set_transport_life, m)?)?;
    m.add_function(wrap_pyfunction!(transport_life::_start_reading, m)?)?;
    m.add_function(wrap_pyfunction!(transport_setup::_set_accept_now, m)?)?;
    m.add_function(wrap_pyfunction!(transport_setup::accept_now, m)?)?;
    m.add_function(wrap_pyfunction!(
        transport_setup::_transport_setup_counts,
        m
    )?)?;
    m.add(
        "TRANSPORT_FIELDS",
        pyo3::types::PyTuple::new(m.py(), transport::FIELD_NAMES)?,
    )?;
    m.add_class::<sock::SockWaiter>()?;
    m.add_class::<accept::Acceptor>()?;
    m.add_function(wrap_pyfunction!(accept::acceptor, m)?)?;
    m.add_function(wrap_pyfunction!(accept::_set_verified_socket_init, m)?)?;
    m.add_function(wrap_pyfunction!(accept::_set_sockname_guard, m)?)?;
    m.add_function(wrap_pyfunction!(accept::sockname, m)?)?;
    m.add_function(wrap_pyfunction!(accept::set_nodelay, m)?)?;
    m.add_function(wrap_pyfunction!(accept::_set_setsockopt_guard, m)?)?;
    m.add_function(wrap_pyfunction!(sock::sock_recv, m)?)?;
    m.add_function(wrap_pyfunction!(sock::sock_recv_into, m)?)?;
    m.add_function(wrap_pyfunction!(sock::sock_sendall, m)?)?;
    tls::register(m)?;
    // The handlers the loop runs without tp_call (loop_core/native.rs).
    loop_core::native::register(&[
        loop_core::native::entry::<transport::SocketReader>(m.py()),
        loop_core::native::entry::<sock::SockWaiter>(m.py()),
    ])?;
    Ok(())
}
