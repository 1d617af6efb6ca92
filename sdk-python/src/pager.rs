//! Pagination: `iter_keys()` walks every page of `list_keys()`, fetching
//! the next page only when the last one runs out.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::client::{Core, Sdk};
use crate::convert::{CallError, Output};
use crate::runtime::QlaudRuntime;

type PageFuture = Pin<Box<dyn Future<Output = Result<Output, CallError>> + Send>>;
type Fetch = Arc<dyn Fn(Sdk, Option<String>) -> PageFuture + Send + Sync>;

struct State {
    items: VecDeque<Value>,
    next_page: Option<String>,
    done: bool,
}

#[derive(Clone)]
struct Pages {
    core: Arc<Core>,
    fetch: Fetch,
    state: Arc<Mutex<State>>,
}

impl Pages {
    fn new(
        core: Arc<Core>,
        fetch: impl Fn(Sdk, Option<String>) -> PageFuture + Send + Sync + 'static,
    ) -> Pages {
        let state = State { items: VecDeque::new(), next_page: None, done: false };
        Pages { core, fetch: Arc::new(fetch), state: Arc::new(Mutex::new(state)) }
    }

    async fn next(self) -> Result<Option<Value>, CallError> {
        let mut state = self.state.lock().await;
        loop {
            if let Some(item) = state.items.pop_front() {
                return Ok(Some(item));
            }
            if state.done {
                return Ok(None);
            }
            let Output::Json(mut page) =
                (self.fetch)(self.core.sdk(), state.next_page.take()).await?
            else {
                return Err(CallError::Decode("a page was not JSON".into()));
            };
            let items = match page.get_mut("items").map(Value::take) {
                Some(Value::Array(items)) => items,
                _ => return Err(CallError::Decode("a page without items".into())),
            };
            state.items.extend(items);
            state.next_page = page.get("next_page").and_then(Value::as_str).map(str::to_string);
            state.done = state.next_page.is_none();
        }
    }
}

/// Every item of a paginated listing, for the blocking client.
#[pyclass(module = "qlaud", frozen)]
pub struct Pager {
    pages: Pages,
}

impl Pager {
    pub fn new(
        core: Arc<Core>,
        fetch: impl Fn(Sdk, Option<String>) -> PageFuture + Send + Sync + 'static,
    ) -> Pager {
        Pager { pages: Pages::new(core, fetch) }
    }
}

#[pymethods]
impl Pager {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let pages = self.pages.clone();
        match pages.core.clone().block_on(py, pages.next())? {
            Some(v) => Ok(Some(crate::convert::to_py(py, &v)?)),
            None => Ok(None),
        }
    }
}

/// Every item of a paginated listing, for the asyncio client.
#[pyclass(module = "qlaud", frozen)]
pub struct AsyncPager {
    pages: Pages,
}

impl AsyncPager {
    pub fn new(
        core: Arc<Core>,
        fetch: impl Fn(Sdk, Option<String>) -> PageFuture + Send + Sync + 'static,
    ) -> AsyncPager {
        AsyncPager { pages: Pages::new(core, fetch) }
    }
}

#[pymethods]
impl AsyncPager {
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pages = self.pages.clone();
        pyo3_async_runtimes::generic::future_into_py::<QlaudRuntime, _, _>(py, async move {
            match pages.next().await? {
                Some(v) => Python::attach(|py| crate::convert::to_py(py, &v)),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }
}
