//! The job runner inside every `qlaud serve`: claims queued jobs from the
//! store, runs at most `workers` at once, stores each answer and announces
//! it by webhook. A maintenance loop recovers the jobs of processes that
//! stopped, re-sends webhooks they left undelivered and deletes expired
//! jobs.
//!
//! The crash rule. A job is claimed for the claiming process's ledger
//! instance and stays claimed while that instance's heartbeat is fresh
//! (the same heartbeat and timeout as the ledger's crash recovery). Just
//! before the endpoint is called the job is marked dispatched. When a
//! process stops: its claimed jobs that were never dispatched go back to
//! the queue (their call was never sent, so running them elsewhere bills
//! nothing twice); dispatched ones end `failed` with `job_interrupted` and
//! are never sent again, their call settled by the ledger's crash recovery
//! at its reservation, as every call in flight in a stopped process is.
//!
//! Cancelling a running job. The cancellation may reach any process, so
//! the worker reads it from the store while the call runs and signals it
//! to the call's [`JobScope`]: the call's provider streams stop there and
//! are settled at what came through, as for a client that left.

use std::sync::Arc;
use std::time::Duration;

use qlaud_api::{JobStatus, KeyScope};
use serde_json::Value;
use tokio::sync::{Semaphore, watch};

use super::Endpoint;
use super::endpoint::Answer;
use crate::auth::Caller;
use crate::context::Context;
use crate::error::Error;
use crate::gateway::error::GatewayError;
use crate::meter::call::{JobScope, Tally};
use crate::outbound::{self, Backoff, Limits, Message, OutboundError, WebhookSecret};
use crate::store::{JobOutcome, JobRow, now_ms};

/// How the runner works.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Jobs this process runs at once.
    pub workers: usize,
    /// Jobs one tenant may have in progress at once, across all processes.
    pub per_tenant: usize,
    /// How long a process's heartbeat may be silent before its jobs are
    /// recovered (the ledger's instance timeout).
    pub instance_timeout: Duration,
    /// How long a job is kept after it ended.
    pub retention: Duration,
    /// How often an idle runner looks for work submitted to other
    /// processes.
    pub poll: Duration,
}

/// Job webhooks: 6 attempts over about 20 to 30 seconds.
const WEBHOOK_BACKOFF: Backoff = Backoff {
    attempts: 6,
    first_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(30),
};

/// A webhook still pending this long after its job ended was left by a
/// process that stopped: any process sends it again (same message id).
const STALE_WEBHOOK: Duration = Duration::from_secs(120);

/// A reservation held for a job that no queued or running job owns after
/// this long was left by a submission that stopped halfway: given back.
const STRAY_HOLD: Duration = Duration::from_secs(600);

/// How often a running job's worker looks for a cancellation in the store.
const CANCEL_POLL: Duration = Duration::from_millis(200);

/// The longest a finished call's settlement is waited for.
const SETTLE_WAIT: Duration = Duration::from_secs(30);

/// Attempts of a job whose provider answered 429 or a 5xx (billed nothing),
/// and the wait before the first retry (doubled each time).
const MAX_ATTEMPTS: i64 = 4;
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Starts the runner and its maintenance loop.
pub fn spawn(ctx: Context, settings: Settings) {
    let workers = Arc::new(Semaphore::new(settings.workers.max(1)));
    let claimer = ctx.clone();
    tokio::spawn(async move {
        let ctx = claimer;
        loop {
            let permit = workers.clone().acquire_owned().await.expect("never closed");
            // A process shutting down claims nothing more: queued jobs are
            // left to the other processes, or to this one's next start.
            if ctx.drain.draining() {
                break;
            }
            let per_tenant = i64::try_from(settings.per_tenant.max(1)).unwrap_or(i64::MAX);
            match ctx.store.claim_job(&ctx.meter.instance_id, now_ms(), per_tenant).await {
                Ok(Some(job)) => {
                    let ctx = ctx.clone();
                    // Tracked by the drain, so a shutdown lets running jobs
                    // finish within its deadline.
                    let drain = ctx.drain.clone();
                    drain.spawn(async move {
                        run(&ctx, job).await;
                        drop(permit);
                        // A job of a tenant at its limit may run now.
                        ctx.jobs.notify_one();
                    });
                }
                Ok(None) => {
                    drop(permit);
                    let _ = tokio::time::timeout(settings.poll, ctx.jobs.notified()).await;
                }
                Err(e) => {
                    drop(permit);
                    tracing::warn!(error = %e, "claiming a job");
                    tokio::time::sleep(settings.poll).await;
                }
            }
        }
    });
    tokio::spawn(async move {
        let every =
            (settings.instance_timeout / 4).clamp(Duration::from_millis(100), STALE_WEBHOOK);
        loop {
            maintain(&ctx, settings).await;
            tokio::time::sleep(every).await;
        }
    });
}

async fn maintain(ctx: &Context, settings: Settings) {
    // The heartbeats are written on the billing clock: compare on it.
    let cutoff = ctx.clock.now_ms() - settings.instance_timeout.as_millis() as i64;
    match ctx.store.recover_jobs(cutoff, now_ms()).await {
        Ok((requeued, failed)) => {
            if requeued > 0 {
                tracing::warn!(requeued, "jobs of a stopped qlaud process queued again");
                ctx.jobs.notify_one();
            }
            for job in failed {
                tracing::warn!(job_id = %job.id, "job interrupted by a stopped qlaud process");
                spawn_delivery(ctx, job);
            }
        }
        Err(e) => tracing::warn!(error = %e, "recovering jobs"),
    }
    let stale = now_ms() - STALE_WEBHOOK.as_millis() as i64;
    match ctx.store.claim_stale_job_webhooks(stale, now_ms()).await {
        Ok(jobs) => jobs.into_iter().for_each(|job| spawn_delivery(ctx, job)),
        Err(e) => tracing::warn!(error = %e, "looking for undelivered job webhooks"),
    }
    // Reservations are timed on the billing clock.
    let stray = ctx.clock.now_ms() - STRAY_HOLD.as_millis() as i64;
    match ctx.store.release_stray_job_reservations(stray).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(released = n, "gave back budget held for jobs that never ran"),
        Err(e) => tracing::warn!(error = %e, "releasing stray job reservations"),
    }
    let expired = now_ms() - settings.retention.as_millis() as i64;
    if let Err(e) = ctx.store.delete_expired_jobs(expired).await {
        tracing::warn!(error = %e, "deleting expired jobs");
    }
}

fn spawn_delivery(ctx: &Context, job: JobRow) {
    let ctx = ctx.clone();
    tokio::spawn(async move { deliver(&ctx, job).await });
}

/// Runs one claimed job to its end.
async fn run(ctx: &Context, job: JobRow) {
    let instance = ctx.meter.instance_id.clone();
    let outcome = match prepare(ctx, &job).await {
        Ok(Some((endpoint, caller, body))) => {
            match ctx.store.dispatch_job(&job.id, &instance, now_ms()).await {
                Ok(true) => {}
                Ok(false) => {
                    // Cancelled before it was sent: nothing to call or bill
                    // (its hold went back with the cancellation).
                    if let Ok(row) = ctx.store.job(&job.id).await
                        && row.webhook_pending != 0
                    {
                        spawn_delivery(ctx, row);
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(job_id = %job.id, error = %e, "dispatching a job");
                    return;
                }
            }
            let held = match &job.reservation_id {
                Some(id) => ctx.store.reservation(id).await.ok().flatten().map(|held| {
                    crate::store::HeldReservation { clamped: job.reservation_clamped != 0, ..held }
                }),
                None => None,
            };
            // The worker watches the store for a cancellation (it may
            // arrive at any process) while the call runs; the call's
            // streams stop when it comes.
            let (cancel_tx, cancel_rx) = watch::channel(false);
            let watcher = tokio::spawn(watch_cancel(ctx.clone(), job.id.clone(), cancel_tx));
            // The call's admission takes the job's hold over instead of
            // reserving again.
            let scope = JobScope::new(held, cancel_rx);
            // In a task of its own, so a panic in a handler fails the job
            // instead of leaving it claimed.
            let (task_ctx, task_scope, task_endpoint) =
                (ctx.clone(), scope.clone(), endpoint.clone());
            let call = tokio::spawn(async move {
                task_scope.run(task_endpoint.call(&task_ctx, caller, body)).await
            })
            .await;
            // A stream's task settles its call as its body ends: the job's
            // cost is what its calls were settled at.
            scope.wait_settled(SETTLE_WAIT).await;
            watcher.abort();
            let cancelled = scope.cancelled();
            let tally = scope.tally();
            let call = call.map(|mut answer| {
                answer.cost_micros = tally.cost_micros;
                (answer, scope.left())
            });
            if let Ok((_, Some(left))) = &call {
                // Refused before its admission: never sent, so given back.
                // (After a panic it is left alone: the call may have taken
                // it, and its settlement decides.)
                release(ctx, &left.id).await;
            }
            match call {
                Ok((answer, _)) if retryable(&answer, &job) => {
                    let delay = RETRY_DELAY * 2u32.pow(job.attempts.clamp(1, 8) as u32 - 1);
                    let at = now_ms() + delay.as_millis() as i64;
                    match ctx.store.retry_job(&job.id, &instance, at, now_ms()).await {
                        Ok(true) => {
                            tracing::info!(job_id = %job.id, status = answer.status, "job retried");
                            return;
                        }
                        Ok(false) => finished(answer),
                        Err(e) => {
                            tracing::warn!(job_id = %job.id, error = %e, "retrying a job");
                            finished(answer)
                        }
                    }
                }
                Ok((answer, _)) if answer.partial && cancelled => {
                    stopped(&endpoint, answer, &tally)
                }
                Ok((answer, _)) => finished(answer),
                Err(e) => internal(format!("the job's call failed: {e}")),
            }
        }
        Ok(None) => {
            if let Some(id) = &job.reservation_id {
                release(ctx, id).await;
            }
            unusable(&job)
        }
        Err(e) => {
            if let Some(id) = &job.reservation_id {
                release(ctx, id).await;
            }
            internal(e.to_string())
        }
    };
    // The call's settlement is written first: a job stored as completed
    // with its cost must never have that call billed again at its
    // reservation by crash recovery, should this process die now.
    ctx.meter.recorder.flush().await;
    match ctx.store.finish_job(&job.id, &instance, &outcome, now_ms()).await {
        Ok(Some(row)) if row.webhook_pending != 0 => deliver(ctx, row).await,
        Ok(_) => {}
        Err(e) => tracing::error!(job_id = %job.id, error = %e, "storing a job's result"),
    }
}

/// Gives back a job's hold its call never took (a stray one is given back
/// by maintenance if this fails).
async fn release(ctx: &Context, reservation_id: &str) {
    if let Err(e) = ctx.store.release(reservation_id).await {
        tracing::warn!(reservation_id, error = %e, "releasing a job's hold");
    }
}

/// A provider's refusal that billed nothing and may pass if asked again
/// (rate limited, overloaded, a server error), while attempts remain. A
/// timeout is not retried: the provider may have run (and billed) it.
fn retryable(answer: &Answer, job: &JobRow) -> bool {
    matches!(answer.status, 429 | 500 | 502 | 503 | 529)
        && answer.cost_micros == 0
        && job.attempts < MAX_ATTEMPTS
}

/// Polls the store for a cancellation of the job until it comes (then
/// signals it) or the watcher is stopped with the call.
async fn watch_cancel(ctx: Context, job_id: String, cancel: watch::Sender<bool>) {
    loop {
        tokio::time::sleep(CANCEL_POLL).await;
        match ctx.store.job_cancel_requested(&job_id).await {
            Ok(true) => {
                let _ = cancel.send(true);
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(job_id, error = %e, "reading a job's cancellation"),
        }
    }
}

/// A job cancelled while its call streamed: the provider call was stopped,
/// settled at what it produced (the rule for a stream its client left),
/// and the answer so far is kept with that usage and cost.
fn stopped(endpoint: &Endpoint, mut answer: Answer, tally: &Tally) -> JobOutcome {
    endpoint.set_usage(&mut answer.body, &tally.usage, tally.cost_micros);
    JobOutcome {
        status: JobStatus::Cancelled,
        result_status: Some(answer.status),
        result_body: Some(answer.body.to_string()),
        cost_micros: Some(tally.cost_micros),
        error: Some((
            "job_cancelled",
            "cancelled while in progress: the provider call was stopped; the result holds \
             what it produced, which is what was billed"
                .into(),
        )),
    }
}

fn finished(answer: Answer) -> JobOutcome {
    JobOutcome {
        status: if (200..300).contains(&answer.status) {
            JobStatus::Completed
        } else {
            JobStatus::Failed
        },
        result_status: Some(answer.status),
        result_body: Some(answer.body.to_string()),
        cost_micros: Some(answer.cost_micros),
        error: None,
    }
}

fn internal(message: String) -> JobOutcome {
    JobOutcome {
        status: JobStatus::Failed,
        result_status: None,
        result_body: None,
        cost_micros: Some(0),
        error: Some(("internal_error", message)),
    }
}

/// The key was revoked or disabled after it submitted the job: the
/// endpoint's own 401, as the key would get calling it now.
fn unusable(job: &JobRow) -> JobOutcome {
    let answer = match Endpoint::parse(&job.endpoint) {
        Ok(endpoint) => endpoint.error(GatewayError::from(Error::key_unusable())),
        Err(e) => return internal(e.to_string()),
    };
    JobOutcome {
        status: JobStatus::Failed,
        result_status: Some(answer.status),
        result_body: Some(answer.body.to_string()),
        cost_micros: Some(0),
        error: Some((
            "job_key_unusable",
            "the key that submitted this job is revoked or disabled".into(),
        )),
    }
}

/// The endpoint, the submitting key as a caller and the body; `None` when
/// the key can no longer call anything.
async fn prepare(ctx: &Context, job: &JobRow) -> Result<Option<(Endpoint, Caller, Value)>, Error> {
    let endpoint = Endpoint::parse(&job.endpoint)?;
    let body: Value = serde_json::from_str(&job.body)
        .map_err(|e| Error::Internal(format!("stored job body: {e}")))?;
    let key = ctx.store.get_key(&job.tenant_id, &job.key_id).await?;
    if key.revoked_ms.is_some() || key.disabled != 0 {
        return Ok(None);
    }
    // The key's identity without its secret (qlaud keeps only a hash): the
    // ledger checks its cap, suspension and status again at admission.
    let caller = Caller {
        tenant_id: key.tenant_id,
        key_id: key.id,
        scope: crate::store::parse_scope(&key.scope).unwrap_or(KeyScope::Standard),
        period: crate::store::parse_period(&key.period).unwrap_or_default(),
    };
    Ok(Some((endpoint, caller, body)))
}

/// POSTs the job's final state to its webhook, signed, retried with
/// backoff under one message id, then marks it delivered (or given up).
pub async fn deliver(ctx: &Context, job: JobRow) {
    let Some(url) = job.webhook_url.clone() else { return };
    let id = match ctx.store.job_webhook_id(&job.id, &outbound::message_id()).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(job_id = %job.id, error = %e, "job webhook id");
            return;
        }
    };
    let job_id = job.id.clone();
    let tenant_id = job.tenant_id.clone();
    let wire = match super::to_wire(job) {
        Ok(wire) => wire,
        Err(e) => {
            tracing::error!(job_id, error = %e, "job webhook body");
            return;
        }
    };
    let kind = match wire.status {
        JobStatus::Completed => "job.completed",
        JobStatus::Cancelled => "job.cancelled",
        _ => "job.failed",
    };
    let body = serde_json::json!({"type": kind, "job": wire}).to_string();
    let message = Message { id, body: body.into() };
    let outcome = outbound::retry(WEBHOOK_BACKOFF, |_| async {
        // Read per attempt, so a rotation applies even mid-retry.
        let row = ctx
            .store
            .webhook_secret(&tenant_id)
            .await
            .map_err(|e| OutboundError::Failed(format!("reading the signing secret: {e}")))?;
        let secret = WebhookSecret::parse(&row.secret)
            .map_err(|e| OutboundError::Failed(format!("the stored signing secret: {e}")))?;
        ctx.outbound.send(&secret, &url, &message, Limits::default(), &[]).await
    })
    .await;
    if let Err(e) = outcome {
        tracing::warn!(job_id, url, error = %e, "job webhook not delivered; giving up");
    }
    if let Err(e) = ctx.store.job_webhook_done(&job_id).await {
        tracing::warn!(job_id, error = %e, "marking a job webhook delivered");
    }
}
