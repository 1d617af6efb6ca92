//! Waiting for a job: poll `get_job` as often as the server says.

use std::time::Duration;

use crate::Client;
use crate::generated::{Error, types};

/// Polls at this interval when the server names none.
const DEFAULT_POLL: Duration = Duration::from_secs(1);

impl Client {
    /// Polls `get_job` until the job is final (`completed`, `failed` or
    /// `cancelled`) or `timeout` has passed, waiting `poll_after_ms`
    /// between polls as the server asks. Returns the job as last seen:
    /// check its `status` when a timeout was given.
    pub async fn wait_job(
        &self,
        job_id: &str,
        timeout: Option<Duration>,
    ) -> Result<types::Job, Error<types::Error>> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let job = self.get_job().job_id(job_id).send().await?.into_inner();
            let Some(ms) = job.poll_after_ms else { return Ok(job) };
            let mut wait = Duration::from_millis(ms.max(1)).min(DEFAULT_POLL * 30);
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return Ok(job);
                }
                wait = wait.min(left);
            }
            tokio::time::sleep(wait).await;
        }
    }
}
