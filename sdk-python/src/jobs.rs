//! `wait_job`: polls `get_job` as often as the server says
//! (`poll_after_ms`) until the job is final, like the Rust SDK's
//! `Client::wait_job`.

use std::time::Duration;

use pyo3::prelude::*;

use crate::client::{AsyncClient, Client, Sdk};
use crate::convert::{CallError, Output};

/// Never waits longer than this between two polls, whatever the server says.
const MAX_POLL: Duration = Duration::from_secs(30);

async fn wait_job(sdk: Sdk, job_id: String, timeout: Option<f64>) -> Result<Output, CallError> {
    let deadline = match timeout {
        Some(t) if !(t.is_finite() && t >= 0.0) => {
            return Err(CallError::Invalid("timeout must be a number of seconds >= 0".into()));
        }
        Some(t) => Some(tokio::time::Instant::now() + Duration::from_secs_f64(t)),
        None => None,
    };
    let path = format!("/v1/jobs/{}", crate::convert::segment(&job_id));
    loop {
        let job = sdk
            .request_json(reqwest::Method::GET, &path, &[], None)
            .await
            .map_err(CallError::raw)?;
        let Some(ms) = job.get("poll_after_ms").and_then(serde_json::Value::as_u64) else {
            return Ok(Output::Json(job));
        };
        let mut wait = Duration::from_millis(ms.max(1)).min(MAX_POLL);
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Output::Json(job));
            }
            wait = wait.min(left);
        }
        tokio::time::sleep(wait).await;
    }
}

#[pymethods]
impl Client {
    /// Wait for a job: polls `get_job` as often as `poll_after_ms` says until the job is final, or `timeout` seconds have passed (the job as last seen: check its `status`).
    #[pyo3(signature = (job_id, *, timeout = None))]
    fn wait_job<'py>(
        &self,
        py: Python<'py>,
        job_id: String,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let sdk = self.core.sdk();
        self.core.call(py, wait_job(sdk, job_id, timeout))
    }
}

#[pymethods]
impl AsyncClient {
    /// Wait for a job: polls `get_job` as often as `poll_after_ms` says until the job is final, or `timeout` seconds have passed (the job as last seen: check its `status`).
    #[pyo3(signature = (job_id, *, timeout = None))]
    fn wait_job<'py>(
        &self,
        py: Python<'py>,
        job_id: String,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let sdk = self.core.sdk();
        self.core.spawn(py, wait_job(sdk, job_id, timeout))
    }
}
