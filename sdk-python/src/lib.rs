//! The Python wheel `qlaud`: pyo3 bindings over the Rust SDK.
//!
//! `qlaud.Client` (blocking) and `qlaud.AsyncClient` (asyncio) have a method
//! per operation of the spec (`generated.rs`, written by `cargo xtask
//! generate`); each runs the Rust SDK's call on one tokio runtime
//! (`runtime.rs`). The Python package around this module
//! (`python/qlaud`) adds only the exception classes and the typed dicts.

mod client;
mod convert;
mod jobs;
mod media;
// Generated: one argument per API field, kept as the spec orders them.
#[allow(clippy::too_many_arguments, clippy::clone_on_copy)]
#[rustfmt::skip]
mod generated;
mod pager;
mod runtime;
mod stream;

use pyo3::prelude::*;

#[pymodule]
fn _qlaud(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Client>()?;
    m.add_class::<client::AsyncClient>()?;
    m.add_class::<stream::Stream>()?;
    m.add_class::<stream::AsyncStream>()?;
    m.add_class::<pager::Pager>()?;
    m.add_class::<pager::AsyncPager>()?;
    m.add("DEFAULT_BASE_URL", qlaud::DEFAULT_BASE_URL)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Awaitables finishing on the runtime's threads must be done before
    // the interpreter finalizes (see `runtime::drain`).
    let drain = pyo3::types::PyCFunction::new_closure(m.py(), None, None, |args, _kwargs| {
        args.py().detach(|| runtime::drain(std::time::Duration::from_secs(5)));
    })?;
    m.py().import("atexit")?.call_method1("register", (drain,))?;
    Ok(())
}
