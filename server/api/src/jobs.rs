//! Wire types of the job endpoints: one call of a synchronous JSON endpoint
//! (`/v1/messages`, `/v1/chat/completions`, `/v1/responses`,
//! `/v1/embeddings`, `/v1/threads/{id}/messages`) submitted now and run in
//! the background, billed to the key that submitted it exactly as if that
//! key had made the call.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Body limit of `create_job`: the wrapped body may be as large as the
/// model endpoints take.
pub const JOB_BODY_MAX_BYTES: usize = crate::MODEL_BODY_MAX_BYTES;

/// Where a job stands. `queued` and `in_progress` change; the other three
/// are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker is running its call.
    InProgress,
    /// The endpoint answered 2xx; `result` holds its answer.
    Completed,
    /// The endpoint answered with an error (in its own error shape, in
    /// `result`), or the job could not run to the end (`error` says why).
    Failed,
    /// Cancelled before its call was sent (nothing billed), or while it
    /// ran (its call finished and was billed; its answer is kept).
    Cancelled,
}

/// Parameters for submitting a job.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobRequest {
    /// The path of the endpoint to call: `/v1/messages`,
    /// `/v1/chat/completions`, `/v1/responses`, `/v1/embeddings` or
    /// `/v1/threads/{thread_id}/messages`.
    pub endpoint: String,
    /// The endpoint's JSON request body, exactly as it would be sent to it.
    /// It is checked now (a bad body is a 400 here, not a failed job
    /// later); `"stream": true` is refused, since jobs are polled.
    pub body: Value,
    /// Where to POST `{"type": "job.completed" | "job.failed" |
    /// "job.cancelled", "job": {…}}` when the job ends, signed with
    /// Standard Webhooks and the tenant's `whsec_…` secret, retried with
    /// backoff. Must pass the outgoing webhook policy (https, a public
    /// address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Free-form string pairs kept with the job (at most 50 pairs; keys up
    /// to 40 characters, values up to 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// What the endpoint answered.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct JobResult {
    /// The HTTP status the endpoint answered with (200, or its error
    /// status: 400, 402 for a spent cap, 429, 5xx, …).
    pub status_code: u16,
    /// The endpoint's JSON answer, exactly as the synchronous call would
    /// have returned it, or its error body in that endpoint's own shape.
    pub body: Value,
}

/// Why a job ended without an answer from its endpoint.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct JobError {
    /// `job_interrupted` (the qlaud process running it stopped after its
    /// call may have been sent), `job_key_unusable` (the key was revoked or
    /// disabled before it ran) or `internal_error`.
    pub code: String,
    /// What happened.
    pub message: String,
}

/// A job: one call of a synchronous endpoint, run in the background.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct Job {
    /// The job's id (`job_…`).
    pub id: String,
    /// Always `job`.
    pub object: String,
    /// The key that submitted it, pays for it and owns it.
    pub key_id: String,
    /// The endpoint it calls.
    pub endpoint: String,
    /// Where it stands.
    pub status: JobStatus,
    /// The job's metadata.
    pub metadata: BTreeMap<String, String>,
    /// Where its completion webhook goes, or null for none.
    pub webhook_url: Option<String>,
    /// The endpoint's answer, once it answered.
    pub result: Option<JobResult>,
    /// The answer's `usage` object (tokens and `cost_micros`), when it has
    /// one.
    pub usage: Option<Value>,
    /// What the call cost, once it ended (0 when the endpoint refused it).
    pub cost_micros: Option<i64>,
    /// Why the job ended without an answer, when it did.
    pub error: Option<JobError>,
    /// How long to wait before polling again, while the job is queued or
    /// in progress; null once it is final.
    pub poll_after_ms: Option<u64>,
    /// Whether a cancellation was asked for while the job ran.
    pub cancel_requested: bool,
    /// How many times a worker claimed it (more than 1 only after a qlaud
    /// process stopped before sending its call).
    pub attempts: u32,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When a worker first took it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its final status.
    pub completed_at: Option<DateTime<Utc>>,
}

/// The `qlaud-poll-after-ms` header of `get_job`: how long to wait before
/// polling again (absent once the job is final).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct JobPollHeaders {
    /// Milliseconds to wait before polling again, in decimal digits.
    #[serde(rename = "qlaud-poll-after-ms", default, skip_serializing_if = "Option::is_none")]
    pub poll_after_ms: Option<String>,
}

/// Path parameters naming one job.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct JobPath {
    /// The job's id (`job_…`).
    pub job_id: String,
}

/// Filters for listing jobs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct JobListFilter {
    /// Only jobs in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    /// Only this key's jobs. Admin keys only: a standard key always sees
    /// only its own jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// Where a page of jobs continues (opaque to clients).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct JobPageSelector {
    /// The status filter of the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    /// The key filter of the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Creation time (Unix ms) of the last job of the page before.
    pub before_ms: i64,
    /// Id of the last job of the page before.
    pub before_id: String,
}
