//! One metered call: admitted against the key's cap before the provider is
//! called, settled exactly once after, and settled on drop when it never
//! gets that far. Every metered operation goes through it, whatever its
//! endpoint or unit.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
}

tokio::task_local! {
    /// A reservation made before the call ran (a job's, at submission),
    /// offered to the call's first admission.
    static HELD: Arc<Mutex<Option<HeldReservation>>>;
}

/// Runs `call` with `held` offered to its first admission, which takes it
/// over instead of reserving again. Returns the call's output, and the
/// reservation when no admission took it (the caller gives it back).
pub async fn with_held<F: Future>(
    held: HeldReservation,
    call: F,
) -> (F::Output, Option<HeldReservation>) {
    let slot = Arc::new(Mutex::new(Some(held)));
    let out = HELD.scope(slot.clone(), call).await;
    let left = slot.lock().expect("never poisoned").take();
    (out, left)
}

fn take_held() -> Option<HeldReservation> {
    HELD.try_with(|slot| slot.lock().expect("never poisoned").take()).ok().flatten()
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
        let admission = match held {
            Some(admission) => Ok(admission),
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
        })
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
        self.meter.metrics.settled(self.endpoint.as_str(), status, cost);
        self.meter.recorder.record(self.record(status, usage, quantities, cost, false)).await;
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
            self.meter.recorder.record_now(record);
        }
    }
}
