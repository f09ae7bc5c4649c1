//! `oxloop._oxloop`: module registration only. The loop lives in `loop_core`.
use pyo3::prelude::*;

#[pymodule]
fn _oxloop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
