//! Jobs: one call of a synchronous JSON endpoint, submitted now, run in the
//! background by any qlaud process on the store (`runner`), polled or
//! announced by webhook.
//!
//! A job's call is the endpoint's own handler, run in-process with the
//! submitting key's identity: the same validation, metering, cap and error
//! shapes as the synchronous call, so a job can never spend what the key
//! could not. A model endpoint's call is made streamed and read back into
//! the synchronous body (`assemble`), so that a cancellation can stop the
//! provider and bill what it produced, as for a client that left a stream.

mod assemble;
mod endpoint;
pub mod runner;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use http::HeaderMap;
use qlaud_api::{
    CreateJobRequest, Job, JobError, JobListFilter, JobPageSelector, JobResult, JobStatus, KeyScope,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::store::{JobAccess, JobInsert, JobQuery, JobRow, NewJob, job_status_str};
pub use endpoint::Endpoint;

/// How long a client should wait between polls of a job that is queued
/// or in progress.
pub const POLL_AFTER_MS: u64 = 1000;

/// The most bytes a job's body may take once stored (the request limit of
/// `create_job` bounds it too).
pub const MAX_BODY_BYTES: usize = qlaud_api::JOB_BODY_MAX_BYTES;

/// Which jobs the caller reaches: a standard key its own, an admin key its
/// tenant's.
pub fn access(caller: &Caller) -> JobAccess<'_> {
    JobAccess {
        tenant_id: &caller.tenant_id,
        owner: match caller.scope {
            KeyScope::Admin => None,
            KeyScope::Standard => Some(&caller.key_id),
        },
    }
}

/// The `Idempotency-Key` header, if sent (1 to 255 visible characters).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        _ => Err(Error::invalid("Idempotency-Key must be 1 to 255 visible ASCII characters")),
    }
}

/// `create_job`: checks the request as the endpoint would, then queues it.
/// Returns the job, and whether an earlier submission made it.
pub async fn create(
    ctx: &Context,
    caller: &Caller,
    headers: &HeaderMap,
    req: CreateJobRequest,
) -> Result<Job> {
    let idempotency_key = idempotency_key(headers)?;
    let endpoint = Endpoint::parse(&req.endpoint)?;
    let worst = endpoint.check(ctx, caller, &req.body).await?;
    if let Some(url) = &req.webhook_url {
        ctx.outbound.validate("webhook_url", url)?;
    }
    let metadata = req.metadata.clone().unwrap_or_default();
    crate::keys::validate_metadata(&metadata)?;
    let body = serde_json::to_string(&req.body).expect("a JSON value serializes");
    if body.len() > MAX_BODY_BYTES {
        return Err(Error::invalid(format!("body is larger than {MAX_BODY_BYTES} bytes")));
    }
    let fingerprint = {
        let seen = serde_json::json!([req.endpoint, req.body, req.webhook_url, metadata]);
        hex::encode(Sha256::digest(seen.to_string().as_bytes()))
    };
    // A retried submission answers with its first job before anything is
    // held, so a retry is never refused for the budget its job holds.
    if let Some(key) = &idempotency_key
        && let Some(found) = ctx.store.find_job(&caller.key_id, key, &fingerprint).await?
    {
        return answer(found);
    }
    // The budget is held now, for the job rather than this process: a queue
    // of jobs can never commit more than the cap, and one over it is
    // refused here with 402.
    let held = crate::meter::ledger::admit_for(
        &ctx.meter,
        caller,
        &worst.model,
        worst.endpoint.as_str(),
        &worst.estimate,
        crate::store::JOB_HOLDER,
    )
    .await?;
    let new = NewJob {
        tenant_id: caller.tenant_id.clone(),
        key_id: caller.key_id.clone(),
        endpoint: req.endpoint,
        body,
        webhook_url: req.webhook_url,
        metadata,
        idempotency_key,
        fingerprint,
        reservation_id: Some(held.reservation_id.clone()),
        reservation_clamped: held.clamped,
    };
    let inserted = ctx.store.insert_job(&new, crate::store::now_ms()).await;
    if !matches!(inserted, Ok(JobInsert::Created(_))) {
        // A concurrent retry made the job first (or the insert failed):
        // this submission's hold goes back.
        ctx.store.release(&held.reservation_id).await?;
    } else {
        // Wake this process's runner; the others find it on their next
        // poll.
        ctx.jobs.notify_one();
    }
    answer(inserted?)
}

fn answer(inserted: JobInsert) -> Result<Job> {
    match inserted {
        JobInsert::Created(row) | JobInsert::Replayed(row) => to_wire(row),
        JobInsert::Mismatch => Err(Error::invalid(
            "this Idempotency-Key was used for a different job; use a new key for a new job",
        )),
    }
}

/// `cancel_job`.
pub async fn cancel(ctx: &Context, caller: &Caller, job_id: &str) -> Result<Job> {
    let before = ctx.store.get_job(access(caller), job_id).await?;
    let row = ctx.store.cancel_job(access(caller), job_id, crate::store::now_ms()).await?;
    // Cancelled here (it was queued): announce it; a running job's own
    // worker announces how it ended.
    if before.status == "queued" && row.status == "cancelled" && row.webhook_pending != 0 {
        let ctx = ctx.clone();
        let row2 = row.clone();
        tokio::spawn(async move { runner::deliver(&ctx, row2).await });
    }
    to_wire(row)
}

/// A page of jobs (newest first).
pub async fn list(
    ctx: &Context,
    caller: &Caller,
    params: &dropshot::PaginationParams<JobListFilter, JobPageSelector>,
    limit: u32,
) -> Result<dropshot::ResultsPage<Job>, dropshot::HttpError> {
    let sel = match &params.page {
        dropshot::WhichPage::Next(sel) => sel.clone(),
        dropshot::WhichPage::First(filter) => {
            let key_id = match (caller.scope, &filter.key_id) {
                (_, None) => None,
                (KeyScope::Standard, Some(k)) if *k == caller.key_id => None,
                (KeyScope::Standard, Some(_)) => {
                    return Err(Error::Forbidden(
                        "a standard key sees only its own jobs; leave key_id out".to_string(),
                    )
                    .into());
                }
                (KeyScope::Admin, Some(k)) => {
                    ctx.store.get_key(&caller.tenant_id, k).await?;
                    Some(k.clone())
                }
            };
            JobPageSelector {
                status: filter.status,
                key_id,
                before_ms: i64::MAX,
                before_id: String::new(),
            }
        }
    };
    let rows = ctx
        .store
        .list_jobs(&JobQuery {
            access: access(caller),
            key_id: sel.key_id.as_deref(),
            status: sel.status.map(job_status_str),
            before: (!sel.before_id.is_empty()).then_some((sel.before_ms, sel.before_id.as_str())),
            limit: limit + 1,
        })
        .await?;
    let items = rows
        .into_iter()
        .map(|row| Ok(((row.created_ms, row.id.clone()), to_wire(row)?)))
        .collect::<Result<Vec<_>>>()?;
    let page = crate::threads::list::finish(items, limit, |((ms, id), _)| JobPageSelector {
        before_ms: *ms,
        before_id: id.clone(),
        ..sel.clone()
    })?;
    Ok(dropshot::ResultsPage {
        next_page: page.next_page,
        items: page.items.into_iter().map(|(_, j)| j).collect(),
    })
}

fn time(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| Error::Internal(format!("stored time out of range: {ms}")))
}

/// A stored job as the API shows it.
pub fn to_wire(row: JobRow) -> Result<Job> {
    let status = crate::store::parse_job_status(&row.status)
        .ok_or_else(|| Error::Internal(format!("stored job status {:?}", row.status)))?;
    let metadata: BTreeMap<String, String> = serde_json::from_str(&row.metadata)
        .map_err(|e| Error::Internal(format!("stored job metadata: {e}")))?;
    let result = match (row.result_status, &row.result_body) {
        (Some(code), Some(body)) => Some(JobResult {
            status_code: u16::try_from(code).unwrap_or(500),
            body: serde_json::from_str(body).unwrap_or(Value::String(body.clone())),
        }),
        _ => None,
    };
    let usage =
        result.as_ref().and_then(|r| r.body.get("usage")).filter(|u| u.is_object()).cloned();
    let error = row
        .error_code
        .map(|code| JobError { code, message: row.error_message.unwrap_or_default() });
    let running = matches!(status, JobStatus::Queued | JobStatus::InProgress);
    Ok(Job {
        id: row.id,
        object: "job".into(),
        key_id: row.key_id,
        endpoint: row.endpoint,
        status,
        metadata,
        webhook_url: row.webhook_url,
        result,
        usage,
        cost_micros: row.cost_micros,
        error,
        poll_after_ms: running.then_some(POLL_AFTER_MS),
        cancel_requested: row.cancel_requested != 0,
        attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
        created_at: time(row.created_ms)?,
        started_at: row.started_ms.map(time).transpose()?,
        completed_at: row.completed_ms.map(time).transpose()?,
    })
}
