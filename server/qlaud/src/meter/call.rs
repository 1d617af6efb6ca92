//! One metered call: admitted against the key's cap before the provider is
//! called, settled exactly once after, and settled on drop when it never
//! gets that far. Every metered operation goes through it, whatever its
//! endpoint or unit.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, watch};

use super::estimate::Estimate;
use super::ledger::{self, Admission};
use super::{Endpoint, Recorder, RequestRecord, SpendHook, Usage};
use crate::auth::{AuthCache, Caller};
use crate::clock::Clock;
use crate::config::Model;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::store::{HeldReservation, Store};
use crate::units::{Quantities, Unit};

/// What metering needs of the server: the store, the settlement queue, the
/// billing clock, and where settlements and refusals are reported.
pub struct Meter {
    pub store: Store,
    pub recorder: Arc<Recorder>,
    pub clock: Arc<Clock>,
    pub metrics: Arc<Metrics>,
    /// This process, in the ledger's reservations and heartbeats.
    pub instance_id: String,
    /// Cleared when admission finds a key changed under the cache.
    pub auth_cache: Arc<AuthCache>,
    pub hook: Arc<dyn SpendHook>,
    /// Default per-key rate limits (qlaud.toml).
    pub rate_limits: crate::config::RateLimits,
    /// This process's budget leases.
    pub leases: super::lease::Leases,
}

tokio::task_local! {
    /// The job whose call runs in this task, if any.
    static JOB: Arc<JobScope>;
}

/// What a job's call shares with the job running it: the reservation made
/// at submission, offered to the call's first admission (which takes it
/// over instead of reserving again); the cancellation, which every stream
/// of the call watches; and what the call's admissions were settled at.
/// Calls admitted inside [`JobScope::run`] carry it with them, also into
/// the tasks that stream their answers.
pub struct JobScope {
    held: Mutex<Option<HeldReservation>>,
    cancel: watch::Receiver<bool>,
    tally: Mutex<Tally>,
    settled: Notify,
}

/// What the admissions of a job's call were settled at, so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    /// Admitted and not settled yet.
    pub open: u64,
    pub cost_micros: i64,
    pub usage: Usage,
}

impl JobScope {
    /// A scope offering `held` (if any), cancelled once `cancel` turns
    /// true.
    pub fn new(held: Option<HeldReservation>, cancel: watch::Receiver<bool>) -> Arc<JobScope> {
        Arc::new(JobScope {
            held: Mutex::new(held),
            cancel,
            tally: Mutex::default(),
            settled: Notify::new(),
        })
    }

    /// Runs `call` in this scope.
    pub async fn run<F: Future>(self: &Arc<Self>, call: F) -> F::Output {
        JOB.scope(self.clone(), call).await
    }

    /// The reservation no admission took (the caller gives it back).
    pub fn left(&self) -> Option<HeldReservation> {
        self.held.lock().expect("never poisoned").take()
    }

    pub fn tally(&self) -> Tally {
        *self.tally.lock().expect("never poisoned")
    }

    /// Whether the job was cancelled.
    pub fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Waits until every call admitted in the scope is settled (a stream's
    /// task settles after its body ended), up to `timeout`.
    pub async fn wait_settled(&self, timeout: std::time::Duration) {
        let all = async {
            loop {
                let notified = self.settled.notified();
                if self.tally().open == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, all).await;
    }

    fn admitted(&self) {
        self.tally.lock().expect("never poisoned").open += 1;
    }

    fn add(&self, cost_micros: i64, usage: &Usage) {
        let mut t = self.tally.lock().expect("never poisoned");
        t.open = t.open.saturating_sub(1);
        t.cost_micros += cost_micros;
        t.usage.input_tokens += usage.input_tokens;
        t.usage.output_tokens += usage.output_tokens;
        t.usage.cache_read_tokens += usage.cache_read_tokens;
        t.usage.cache_write_tokens += usage.cache_write_tokens;
        drop(t);
        self.settled.notify_waiters();
    }
}

fn current_job() -> Option<Arc<JobScope>> {
    JOB.try_with(Arc::clone).ok()
}

fn take_held() -> Option<HeldReservation> {
    current_job().and_then(|job| job.left())
}

/// Whether the job running this task (if any) was cancelled: for work
/// between provider calls (a thread turn's tool rounds).
pub fn job_cancelled() -> bool {
    current_job().is_some_and(|job| job.cancelled())
}

/// Resolves when the job that admitted a call is cancelled; never for a
/// call that is not a job's.
pub struct Cancel(Option<watch::Receiver<bool>>);

impl Cancel {
    pub async fn cancelled(self) {
        if let Some(mut rx) = self.0
            && rx.wait_for(|c| *c).await.is_ok()
        {
            return;
        }
        // No job, or its runner is gone: nothing will cancel it.
        std::future::pending::<()>().await;
    }
}

/// An admitted call. Settling is the last thing that happens to it; when
/// that never comes (an early error, a panic), dropping it settles it: at
/// nothing if the provider was never called, at the reserved amount if it
/// was, since its usage is then unknown.
pub struct Metered {
    meter: Arc<Meter>,
    tenant_id: String,
    key_id: String,
    pub model: Arc<Model>,
    pub endpoint: Endpoint,
    pub streamed: bool,
    started: Instant,
    pub admission: Admission,
    sent: bool,
    settled: bool,
    /// The job the call runs for, if any.
    job: Option<Arc<JobScope>>,
}

impl Metered {
    /// Reserves `estimate` against the caller's cap; a domain error (cap
    /// reached, key suspended, revoked or disabled) when it cannot.
    pub async fn admit(
        meter: &Arc<Meter>,
        caller: &Caller,
        model: Arc<Model>,
        endpoint: Endpoint,
        streamed: bool,
        started: Instant,
        estimate: &Estimate,
    ) -> Result<Metered> {
        let held = match take_held() {
            Some(held) => match ledger::take_held(&held, caller, &model, estimate) {
                Some(admission) => Some(admission),
                None => {
                    // It no longer pays for the call: given back first, so
                    // the call's own admission may use that budget.
                    meter.store.release(&held.id).await?;
                    None
                }
            },
            None => None,
        };
        let job = current_job();
        let admission = match held {
            Some(admission) => Ok(admission),
            None if job.is_none() && endpoint.leases() => {
                match super::lease::admit(meter, caller, &model, endpoint.as_str(), estimate).await
                {
                    Ok(Some(admission)) => Ok(admission),
                    Ok(None) => {
                        ledger::admit(meter, caller, &model, endpoint.as_str(), estimate).await
                    }
                    Err(e) => Err(e),
                }
            }
            None => ledger::admit(meter, caller, &model, endpoint.as_str(), estimate).await,
        };
        let admission = admission.inspect_err(|e| {
            if matches!(e, crate::error::Error::SpendCapReached(_)) {
                meter.metrics.cap_refusal();
            }
            if matches!(e, crate::error::Error::RateLimited(_)) {
                meter.metrics.rate_limited();
            }
        })?;
        if admission.clamped {
            meter.metrics.clamp();
        }
        if admission.lease.is_some() {
            meter.metrics.lease_admission();
        }
        if let Some(job) = &job {
            job.admitted();
        }
        Ok(Metered {
            meter: meter.clone(),
            tenant_id: caller.tenant_id.clone(),
            key_id: caller.key_id.clone(),
            model,
            endpoint,
            streamed,
            started,
            admission,
            sent: false,
            settled: false,
            job,
        })
    }

    /// What a stream of this call watches to stop when its job is
    /// cancelled.
    pub fn cancel(&self) -> Cancel {
        Cancel(self.job.as_ref().map(|j| j.cancel.clone()))
    }

    /// The provider is being called: from here on the call may be billed.
    pub fn sent(&mut self) {
        self.sent = true;
    }

    fn record(
        &self,
        status: u16,
        usage: Usage,
        quantities: Quantities,
        cost_micros: i64,
        recovered: bool,
    ) -> RequestRecord {
        RequestRecord {
            reservation_id: self.admission.reservation_id.clone(),
            lease_id: self.admission.lease.clone(),
            tenant_id: self.tenant_id.clone(),
            key_id: self.key_id.clone(),
            model: self.model.name.clone(),
            provider: self.model.provider.name.clone(),
            endpoint: self.endpoint.clone(),
            streamed: self.streamed,
            status,
            usage,
            quantities,
            cost_micros,
            reserved_micros: self.admission.reserved_micros,
            period_start_ms: self.admission.period_start_ms,
            rate_window_ms: self.admission.rate_window_ms,
            reserved_tokens: self.admission.reserved_tokens,
            latency_ms: i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX),
            created_ms: self.meter.clock.now_ms(),
            recovered,
        }
    }

    /// Leaves the reservation open past this call: whoever takes it (a
    /// video, settled when a poll sees its outcome) settles it with
    /// [`RequestRecord`]s of its own. Dropping the call then records nothing.
    pub fn hold(&mut self) {
        self.settled = true;
        if let Some(job) = &self.job {
            job.add(0, &Usage::default());
        }
    }

    /// The record settling this call's reservation at `cost_micros` for
    /// `quantities`, as settling it here would write (for a held call).
    pub fn held_record(
        &self,
        status: u16,
        quantities: Quantities,
        cost_micros: i64,
    ) -> RequestRecord {
        self.record(status, Usage::default(), quantities, cost_micros, false)
    }

    /// Settles the call at the cost of `usage`; returns that cost. A cost
    /// above the reservation means the estimate missed something the
    /// provider bills: it is settled at the reservation, so the cap holds,
    /// and the gap is logged and counted for the operator.
    pub async fn settle(&mut self, status: u16, usage: Usage) -> i64 {
        let quantities = super::quantities(&usage);
        self.settle_at(status, usage, quantities).await
    }

    /// Settles the call at `used`, in whatever units the provider reported
    /// (audio seconds, characters, tokens, …); the request itself is
    /// counted as for every call. The same rules as [`Metered::settle`].
    pub async fn settle_units(&mut self, status: u16, used: Quantities) -> i64 {
        let mut quantities = used;
        // A call always counts as one request; that fits beside the others
        // as the model's prices bound how many units it carries.
        let _ = quantities.set(Unit::REQUESTS, 1);
        let usage = Usage {
            input_tokens: used.get(Unit::INPUT_TOKENS).unwrap_or(0),
            output_tokens: used.get(Unit::OUTPUT_TOKENS).unwrap_or(0),
            cache_read_tokens: used.get(Unit::CACHE_READ_TOKENS).unwrap_or(0),
            cache_write_tokens: used.get(Unit::CACHE_WRITE_TOKENS).unwrap_or(0),
        };
        self.settle_at(status, usage, quantities).await
    }

    /// Settles a call its provider failed or refused before answering, at
    /// nothing: providers bill no failed request, not even a per-request
    /// fee, so a retried or fallen-back attempt costs its key nothing.
    pub async fn settle_unbilled(&mut self, status: u16) -> i64 {
        self.settle_at(status, Usage::default(), Quantities::default()).await
    }

    /// Tells the lease the call was admitted under (if any) that it
    /// finished at `cost`, once its record is queued.
    fn finish_lease(&self, cost: i64) {
        if let Some(lease) = &self.admission.lease {
            self.meter.leases.finish(lease, self.admission.reserved_micros, cost);
        }
    }

    async fn settle_at(&mut self, status: u16, usage: Usage, quantities: Quantities) -> i64 {
        let mut cost = RequestRecord::cost_for(&self.model, &quantities);
        if cost > self.admission.reserved_micros {
            let over = cost - self.admission.reserved_micros;
            tracing::warn!(
                model = %self.model.name,
                key_id = %self.key_id,
                reserved_micros = self.admission.reserved_micros,
                cost_micros = cost,
                "the provider reported more than the call's reserved worst case; \
                 settled at the reservation"
            );
            self.meter.metrics.overrun(over);
            cost = self.admission.reserved_micros;
        }
        self.settled = true;
        if let Some(job) = &self.job {
            job.add(cost, &usage);
        }
        self.meter.metrics.settled(self.endpoint.as_str(), status, cost);
        self.meter.recorder.record(self.record(status, usage, quantities, cost, false)).await;
        self.finish_lease(cost);
        cost
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        if !self.settled {
            let (usage, none) = (Usage::default(), Quantities::default());
            let record = if self.sent {
                self.record(0, usage, none, self.admission.reserved_micros, true)
            } else {
                self.record(500, usage, none, 0, false)
            };
            if let Some(job) = &self.job {
                job.add(record.cost_micros, &usage);
            }
            let cost = record.cost_micros;
            self.meter.recorder.record_now(record);
            self.finish_lease(cost);
        }
    }
}
