//! Model streams: `for event in stream` and `async for event in stream`.
//!
//! Each event is the parsed JSON of one server-sent event, as the official
//! SDKs' raw streams give them: Anthropic's `message_start`,
//! `content_block_delta`, … (their `type` field names them) or OpenAI's
//! `chat.completion.chunk`s. OpenAI's `[DONE]` ends the iteration; an error
//! event (the provider failed mid-stream) raises `ApiError`. Leaving a
//! stream early (`close()`, the `with` block, or dropping it) closes the
//! connection, and qlaud stops the provider's call and bills what was made.

use std::sync::Arc;

use futures::StreamExt;
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::client::Core;
use crate::convert::CallError;
use crate::runtime::QlaudRuntime;

type Events = Arc<Mutex<Option<qlaud::EventStream>>>;

/// The next event, or `None` at the end.
async fn next_event(events: Events) -> Result<Option<Value>, CallError> {
    let mut slot = events.lock().await;
    let Some(stream) = slot.as_mut() else { return Ok(None) };
    let item = stream.next().await;
    let event = match item {
        Some(Ok(event)) if !event.is_done() => event,
        Some(Err(e)) => {
            *slot = None;
            return Err(CallError::raw(e));
        }
        _ => {
            *slot = None;
            return Ok(None);
        }
    };
    let value: Value = event.json().map_err(|e| CallError::Decode(e.to_string()))?;
    let is_error = event.event.as_deref() == Some("error")
        || (value.get("error").is_some() && value.get("choices").is_none());
    if is_error {
        *slot = None;
        return Err(CallError::StreamEvent(value));
    }
    Ok(Some(value))
}

/// A model stream for the blocking client.
#[pyclass(module = "qlaud")]
pub struct Stream {
    core: Arc<Core>,
    events: Events,
}

impl Stream {
    pub fn new(core: Arc<Core>, events: qlaud::EventStream) -> Stream {
        Stream { core, events: Arc::new(Mutex::new(Some(events))) }
    }
}

#[pymethods]
impl Stream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.core.block_on(py, next_event(self.events.clone()))? {
            Some(v) => Ok(Some(crate::convert::to_py(py, &v)?)),
            None => Ok(None),
        }
    }

    /// Stops reading and closes the connection.
    #[pyo3(signature = ())]
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let events = self.events.clone();
        self.core.block_on(py, async move {
            *events.lock().await = None;
            Ok(())
        })
    }

    #[pyo3(signature = ())]
    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        self.close(py)
    }
}

/// A model stream for the asyncio client.
#[pyclass(module = "qlaud")]
pub struct AsyncStream {
    events: Events,
}

impl AsyncStream {
    pub fn new(events: qlaud::EventStream) -> AsyncStream {
        AsyncStream { events: Arc::new(Mutex::new(Some(events))) }
    }
}

#[pymethods]
impl AsyncStream {
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let events = self.events.clone();
        pyo3_async_runtimes::generic::future_into_py::<QlaudRuntime, _, _>(py, async move {
            match next_event(events).await? {
                Some(v) => Python::attach(|py| crate::convert::to_py(py, &v)),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }

    /// Stops reading and closes the connection.
    #[pyo3(signature = ())]
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let events = self.events.clone();
        pyo3_async_runtimes::generic::future_into_py::<QlaudRuntime, _, _>(py, async move {
            *events.lock().await = None;
            Ok(())
        })
    }

    #[pyo3(signature = ())]
    fn __aenter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
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
        self.aclose(py)
    }
}
