//! `Client` and `AsyncClient`: configuration, the process-safe Rust SDK
//! client they share, and the two ways of running a call (blocking with the
//! GIL released, or as an asyncio awaitable). Their operations are in
//! `generated.rs`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::convert::{CallError, Output};
use crate::runtime::{self, QlaudRuntime};
use crate::stream::{AsyncStream, Stream};

/// How often a blocking call wakes to let Python handle Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

#[derive(Clone)]
struct Config {
    base_url: String,
    api_key: String,
    max_retries: u32,
    timeout: Option<Duration>,
}

/// The Rust SDK client as calls get it: shared, so that a call costs no
/// copy of it.
pub type Sdk = Arc<qlaud::Client>;

/// What both clients hold: their settings and the Rust SDK client.
pub struct Core {
    config: Config,
    /// The SDK client and the process it was built in: a forked child
    /// must not reuse its parent's pooled connections.
    sdk: Mutex<(u32, Sdk)>,
}

impl Core {
    fn new(
        api_key: Option<String>,
        base_url: Option<String>,
        max_retries: u32,
        timeout: Option<f64>,
    ) -> PyResult<Arc<Core>> {
        let api_key = match api_key.or_else(|| std::env::var("QLAUD_API_KEY").ok()) {
            Some(k) if !k.is_empty() => k,
            _ => {
                return Err(PyValueError::new_err(
                    "no API key: pass api_key=… or set QLAUD_API_KEY",
                ));
            }
        };
        let base_url = base_url
            .or_else(|| std::env::var("QLAUD_BASE_URL").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| qlaud::DEFAULT_BASE_URL.to_string());
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(PyValueError::new_err(format!(
                "base_url must start with http:// or https://, not {base_url:?}"
            )));
        }
        let timeout = match timeout {
            None => None,
            Some(t) if t.is_finite() && t > 0.0 && t < 1e9 => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(PyValueError::new_err(format!(
                    "timeout must be a positive number of seconds or None, not {t}"
                )));
            }
        };
        let config = Config { base_url, api_key, max_retries, timeout };
        let sdk = build(&config)?;
        Ok(Arc::new(Core { config, sdk: Mutex::new((std::process::id(), sdk)) }))
    }

    /// The Rust SDK client for this process.
    pub fn sdk(&self) -> Sdk {
        let pid = std::process::id();
        let mut slot = self.sdk.lock().unwrap_or_else(|e| e.into_inner());
        if slot.0 != pid {
            Self::rebuild(&self.config, &mut slot);
        }
        slot.1.clone()
    }

    /// Drops the pooled connections: the next call opens new ones.
    fn reset(&self) {
        Self::rebuild(&self.config, &mut self.sdk.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn rebuild(config: &Config, slot: &mut (u32, Sdk)) {
        // The settings built a client once already, so they build again.
        if let Ok(sdk) = build(config) {
            *slot = (std::process::id(), sdk);
        }
    }

    /// Runs `fut` to completion with the GIL released, waking every 50 ms
    /// so that Ctrl-C (or any signal handler that raises) interrupts it.
    pub fn block_on<T: Send>(
        &self,
        py: Python<'_>,
        fut: impl Future<Output = Result<T, CallError>> + Send,
    ) -> PyResult<T> {
        let fut = limited(self.config.timeout, fut);
        let rt = runtime::get();
        let result: PyResult<Result<T, CallError>> = py.detach(|| {
            rt.block_on(async move {
                tokio::pin!(fut);
                loop {
                    match tokio::time::timeout(SIGNAL_POLL, &mut fut).await {
                        Ok(done) => return Ok(done),
                        Err(_) => Python::attach(|py| py.check_signals())?,
                    }
                }
            })
        });
        result?.map_err(|e| e.into_pyerr(py))
    }

    /// A blocking call: its answer as a Python object.
    pub fn call(
        self: &Arc<Self>,
        py: Python<'_>,
        fut: impl Future<Output = Result<Output, CallError>> + Send,
    ) -> PyResult<Py<PyAny>> {
        match self.block_on(py, fut)? {
            Output::Json(v) => crate::convert::to_py(py, &v),
            Output::Stream(events) => {
                Ok(Py::new(py, Stream::new(self.clone(), events))?.into_any())
            }
            Output::Bytes(b) => Ok(pyo3::types::PyBytes::new(py, &b).into_any().unbind()),
        }
    }

    /// An async call: an awaitable for asyncio.
    pub fn spawn<'py>(
        self: &Arc<Self>,
        py: Python<'py>,
        fut: impl Future<Output = Result<Output, CallError>> + Send + 'static,
    ) -> PyResult<Bound<'py, PyAny>> {
        let fut = limited(self.config.timeout, fut);
        pyo3_async_runtimes::generic::future_into_py::<QlaudRuntime, _, _>(py, async move {
            let out = fut.await?;
            Python::attach(|py| match out {
                Output::Json(v) => crate::convert::to_py(py, &v),
                Output::Stream(events) => Ok(Py::new(py, AsyncStream::new(events))?.into_any()),
                Output::Bytes(b) => Ok(pyo3::types::PyBytes::new(py, &b).into_any().unbind()),
            })
        })
    }

    fn repr(&self, class: &str) -> String {
        format!("{class}(base_url={:?})", self.config.base_url)
    }
}

/// `fut` under the client's timeout (for a stream: until it starts).
async fn limited<T>(
    timeout: Option<Duration>,
    fut: impl Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    match timeout {
        Some(t) => tokio::time::timeout(t, fut).await.unwrap_or(Err(CallError::Timeout)),
        None => fut.await,
    }
}

fn build(config: &Config) -> PyResult<Sdk> {
    let sdk = qlaud::Client::new(&config.base_url, &config.api_key)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(Arc::new(sdk.with_retry_policy(qlaud::RetryPolicy {
        max_retries: config.max_retries,
        ..qlaud::RetryPolicy::default()
    })))
}

/// The blocking client. Every operation of qlaud's API is a method; each
/// releases the GIL while it waits, and Ctrl-C interrupts it.
#[pyclass(module = "qlaud", frozen)]
pub struct Client {
    pub(crate) core: Arc<Core>,
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (*, api_key=None, base_url=None, max_retries=2, timeout=600.0))]
    fn new(
        api_key: Option<String>,
        base_url: Option<String>,
        max_retries: u32,
        timeout: Option<f64>,
    ) -> PyResult<Client> {
        Ok(Client { core: Core::new(api_key, base_url, max_retries, timeout)? })
    }

    /// The qlaud address requests go to.
    #[getter]
    fn base_url(&self) -> String {
        self.core.config.base_url.clone()
    }

    /// Closes idle connections. The client stays usable (it reconnects).
    #[pyo3(signature = ())]
    fn close(&self) {
        self.core.reset();
    }

    #[pyo3(signature = ())]
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) {
        self.close();
    }

    fn __repr__(&self) -> String {
        self.core.repr("Client")
    }
}

/// The asyncio client: the same methods as `Client`, as coroutines.
#[pyclass(module = "qlaud", frozen)]
pub struct AsyncClient {
    pub(crate) core: Arc<Core>,
}

#[pymethods]
impl AsyncClient {
    #[new]
    #[pyo3(signature = (*, api_key=None, base_url=None, max_retries=2, timeout=600.0))]
    fn new(
        api_key: Option<String>,
        base_url: Option<String>,
        max_retries: u32,
        timeout: Option<f64>,
    ) -> PyResult<AsyncClient> {
        Ok(AsyncClient { core: Core::new(api_key, base_url, max_retries, timeout)? })
    }

    /// The qlaud address requests go to.
    #[getter]
    fn base_url(&self) -> String {
        self.core.config.base_url.clone()
    }

    /// Closes idle connections. The client stays usable (it reconnects).
    #[pyo3(signature = ())]
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = self.core.clone();
        pyo3_async_runtimes::generic::future_into_py::<QlaudRuntime, _, _>(py, async move {
            core.reset();
            Ok(())
        })
    }

    #[pyo3(signature = ())]
    fn __aenter__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        pyo3_async_runtimes::generic::future_into_py::<QlaudRuntime, _, _>(
            py,
            async move { Ok(slf) },
        )
    }

    #[pyo3(signature = (*_args))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _args: &Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.close(py)
    }

    fn __repr__(&self) -> String {
        self.core.repr("AsyncClient")
    }
}
