//! Values and errors across the boundary: Python arguments into JSON, JSON
//! answers into Python objects, and every failure into the exception classes
//! of `qlaud._exceptions`.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;
use serde_json::{Map, Value};

/// What a call produced.
pub enum Output {
    /// A JSON answer (`None` in Python for 204).
    Json(Value),
    /// A model stream that has started.
    Stream(qlaud::EventStream),
    /// A binary answer (audio), read whole.
    Bytes(Vec<u8>),
}

/// Why a call failed.
pub enum CallError {
    /// qlaud answered with an error status; `body` in the endpoint's shape.
    Api { status: u16, body: Value },
    /// No answer: qlaud could not be reached or the connection broke.
    Connection(String),
    /// No answer within the client's timeout.
    Timeout,
    /// An argument the Rust SDK's types refuse, caught before sending.
    Invalid(String),
    /// An answer that is not what the spec promises.
    Decode(String),
    /// An error event in a model stream (the provider failed mid-way).
    StreamEvent(Value),
}

impl CallError {
    /// From a JSON or streaming call's error.
    pub fn raw(e: qlaud::RawError) -> CallError {
        match e {
            qlaud::RawError::Status { status, body } => CallError::Api { status, body },
            qlaud::RawError::Http(e) if e.is_decode() => CallError::Decode(e.to_string()),
            qlaud::RawError::Http(e) => CallError::connection(&e),
        }
    }

    fn connection(e: &reqwest::Error) -> CallError {
        if e.is_timeout() {
            return CallError::Timeout;
        }
        // reqwest's own message is terse ("error sending request"); the
        // cause says what happened ("Connection refused").
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        CallError::Connection(text)
    }

    /// The Python exception, built by `qlaud._exceptions._make`.
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let (kind, status, body) = match self {
            CallError::Api { status, body } => ("api", status, body),
            CallError::Connection(m) => ("connection", 0, Value::String(m)),
            CallError::Timeout => {
                ("timeout", 0, Value::String("no answer within the client's timeout".into()))
            }
            CallError::Invalid(m) => ("invalid", 0, Value::String(m)),
            CallError::Decode(m) => ("decode", 0, Value::String(m)),
            CallError::StreamEvent(body) => ("stream", 0, body),
        };
        let made = (|| -> PyResult<PyErr> {
            let body = pythonize::pythonize(py, &body)?;
            let exc = make_fn(py)?.call1((kind, status, body))?;
            Ok(PyErr::from_value(exc))
        })();
        made.unwrap_or_else(|e| e)
    }
}

impl From<CallError> for PyErr {
    fn from(e: CallError) -> PyErr {
        Python::attach(|py| e.into_pyerr(py))
    }
}

fn make_fn(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static MAKE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    MAKE.get_or_try_init(py, || Ok(py.import("qlaud._exceptions")?.getattr("_make")?.unbind()))
        .map(|f| f.bind(py))
}

/// Adds a keyword argument to a request body, unless it is absent or `None`.
pub fn put(
    body: &mut Map<String, Value>,
    name: &str,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    if let Some(v) = value.filter(|v| !v.is_none()) {
        body.insert(name.to_string(), to_json(v)?);
    }
    Ok(())
}

/// A Python value as JSON. A `Decimal` becomes the JSON number it prints
/// as, digit for digit, so money given exactly stays exact.
fn to_json(value: &Bound<'_, PyAny>) -> PyResult<Value> {
    static DECIMAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = value.py();
    let decimal = DECIMAL.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("decimal")?.getattr("Decimal")?.unbind())
    })?;
    if value.is_instance(decimal.bind(py))? {
        let text: String = value.str()?.extract()?;
        return text.parse::<serde_json::Number>().map(Value::Number).map_err(|_| {
            pyo3::exceptions::PyValueError::new_err(format!("{text} is not a finite number"))
        });
    }
    Ok(pythonize::depythonize(value)?)
}

/// Adds `**extra` to a request body, as given.
pub fn put_all(body: &mut Map<String, Value>, extra: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
    for (k, v) in extra.into_iter().flatten() {
        body.insert(k.extract::<String>()?, to_json(&v)?);
    }
    Ok(())
}

/// A request body, once the Rust SDK's type for it accepts it (so a wrong
/// type or an unknown field fails here, before anything is sent).
pub fn checked<T: serde::de::DeserializeOwned>(
    body: Map<String, Value>,
) -> Result<Value, CallError> {
    let body = Value::Object(body);
    T::deserialize(&body).map_err(|e| CallError::Invalid(e.to_string()))?;
    Ok(body)
}

/// A path parameter, percent-encoded as one segment.
pub fn segment(value: &str) -> String {
    qlaud::encode_path(value)
}

/// An enum parameter from its string.
pub fn parse<T: serde::de::DeserializeOwned>(value: String) -> Result<T, CallError> {
    serde_json::from_value(Value::String(value)).map_err(|e| CallError::Invalid(e.to_string()))
}

/// A JSON value as a Python object (dicts, lists, str, int, float, None).
pub fn to_py(py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
    Ok(pythonize::pythonize(py, value)?.unbind())
}
