//! Admission against the hard cap, and recovery of reservations left by
//! processes that died.
//!
//! Before a request goes upstream, its worst-case cost (the prompt's upper
//! bound plus the output limit, at the model's prices) is reserved in the
//! store by one conditional statement that also reads the key's current
//! cap, so concurrent requests and several qlaud processes can never commit
//! more than the cap between them. When the full output limit does not fit
//! but the prompt and a short answer do, the output limit is lowered to what
//! the budget pays for (clamping) instead of refusing.

use std::sync::Arc;
use std::time::Duration;

use qlaud_api::{Period, Usd};

use super::call::Meter;
use super::estimate::Estimate;
use super::{Unreported, period};
use crate::auth::Caller;
use crate::config::Model;
use crate::error::{Error, RateBudget, RateLimit, Result};
use crate::store::{CapState, HeldReservation, NewReservation, RateCount, Store, new_id};
use crate::units::{Prices, Unit};

/// The shortest answer worth admitting: below this the request is refused
/// with 402 rather than clamped.
pub const MIN_OUTPUT_TOKENS: u64 = 16;

/// An admitted request.
#[derive(Clone, Debug)]
pub struct Admission {
    /// Its reservation, or with a lease only its id in the request log.
    pub reservation_id: String,
    /// The lease it was admitted under, if any (see `meter::lease`).
    pub lease: Option<String>,
    pub reserved_micros: i64,
    pub period_start_ms: i64,
    /// The output limit (per choice) to send upstream.
    pub max_output_tokens: u64,
    /// How an answer without usage is billed.
    pub unreported: Unreported,
    /// Whether that limit is lower than the client asked for.
    pub clamped: bool,
    /// The rate-limit window it was counted in, and its tokens there.
    pub rate_window_ms: i64,
    pub reserved_tokens: i64,
    /// The key's rate limits and what is left of them once this request
    /// was counted, for the answer's headers (none set: empty).
    pub rate_budget: RateBudget,
}

/// The worst case of `e` with an output limit of `per_choice`: the prompt
/// at the dearest input price, every output token, and every other unit a
/// call always costs (a per-request fee).
pub(super) fn worst_case(p: &Prices, e: &Estimate, per_choice: u64) -> i64 {
    let pico = fixed_pico(p, e)
        + i128::from(e.output_tokens(per_choice)) * i128::from(p.of(Unit::OUTPUT_TOKENS));
    i64::try_from((pico + 999_999) / 1_000_000).unwrap_or(i64::MAX)
}

/// What a call costs before any output, in pico-dollars: its prompt, the
/// request itself, and its worst case in every other unit.
fn fixed_pico(p: &Prices, e: &Estimate) -> i128 {
    let units: i128 = e
        .units
        .iter()
        .filter(|(u, _)| *u != Unit::REQUESTS)
        .map(|(u, n)| i128::from(n) * i128::from(p.of(u)))
        .sum();
    i128::from(e.prompt_tokens) * i128::from(p.dearest_input())
        + i128::from(p.of(Unit::REQUESTS))
        + units
}

/// The largest output limit per choice that `remaining` micro-dollars pay
/// for after the rest of the call, with every choice billed to it plus its
/// extra.
fn affordable(p: &Prices, e: &Estimate, remaining: i64) -> u64 {
    let budget = i128::from(remaining.max(0)) * 1_000_000;
    let fixed = fixed_pico(p, e);
    if budget < fixed {
        return 0;
    }
    let output_price = p.of(Unit::OUTPUT_TOKENS);
    if output_price == 0 {
        return u64::MAX;
    }
    let total = u64::try_from((budget - fixed) / i128::from(output_price)).unwrap_or(u64::MAX);
    (total / e.choices.max(1)).saturating_sub(e.extra_output)
}

fn usd(micros: i64) -> String {
    Usd::from_micros(micros.max(0)).map_or_else(|| format!("{micros} µ$"), |u| format!("${u}"))
}

fn over_cap(key_id: &str, p: Period, start: i64, cap: i64, committed: i64) -> Error {
    let resets = match period::window_end(p, start) {
        Some(end) => format!(
            "; it resets at {}",
            chrono::DateTime::from_timestamp_millis(end)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        ),
        None => " (a lifetime cap: it never resets)".to_string(),
    };
    Error::SpendCapReached(format!(
        "spend cap reached for key {key_id}: {} of its {} {} cap is spent or held by requests \
         in flight{resets}",
        usd(committed),
        usd(cap),
        crate::store::period_str(p)
    ))
}

/// The tokens a request counts against its key's tokens-per-minute limit
/// at admission: its prompt bound and every output token it may produce.
fn reserved_tokens(e: &Estimate, per_choice: u64) -> i64 {
    let n = e.prompt_tokens.saturating_add(e.output_tokens(per_choice));
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The budget of limits `(limit, used)` in a window ending at `reset_ms`.
fn budget(
    reset_ms: i64,
    now: i64,
    requests: (Option<i64>, i64),
    tokens: (Option<i64>, i64),
) -> RateBudget {
    let left = |(limit, used): (Option<i64>, i64)| limit.map(|l| (l, (l - used).max(0)));
    RateBudget {
        reset_ms,
        reset_in_ms: (reset_ms - now).max(1),
        requests: left(requests),
        tokens: left(tokens),
    }
}

/// Why a refused admission was over a rate limit, if it was: the 429 to
/// answer, with what the limits, the window and the time to wait are.
fn rate_limited(
    state: &CapState,
    rate: &RateCount,
    defaults: (Option<i64>, Option<i64>),
    window_ms: i64,
    now: i64,
) -> Option<RateLimit> {
    let requests_limit = state.max_requests_per_minute.or(defaults.0);
    let tokens_limit = state.max_tokens_per_minute.or(defaults.1);
    let current = state.rate_window_ms >= rate.window_ms;
    let (used_requests, used_tokens) =
        if current { (state.rate_requests, state.rate_tokens) } else { (0, 0) };
    let window = if current { state.rate_window_ms } else { rate.window_ms };
    let reset_ms = window + window_ms;
    let over_requests = requests_limit.is_some_and(|l| used_requests + 1 > l);
    let over_tokens = tokens_limit.is_some_and(|l| used_tokens.saturating_add(rate.tokens) > l);
    if !over_requests && !over_tokens {
        return None;
    }
    let per = format!("per {} s", window_ms / 1000);
    let wait = format!("try again in {:.1} s", (reset_ms - now).max(0) as f64 / 1000.0);
    let message = if over_requests {
        format!(
            "rate limit reached: this key may send {} requests {per}; {wait}",
            requests_limit.unwrap_or_default()
        )
    } else if tokens_limit.is_some_and(|l| rate.tokens > l) {
        format!(
            "rate limit reached: this key may send {} tokens {per}, and this request alone \
             counts {} (its prompt and its output limit): lower max_tokens",
            tokens_limit.unwrap_or_default(),
            rate.tokens
        )
    } else {
        format!(
            "rate limit reached: this key may send {} tokens {per}; {wait}",
            tokens_limit.unwrap_or_default()
        )
    };
    Some(RateLimit {
        message,
        retry_after_ms: (reset_ms - now).max(1),
        budget: budget(reset_ms, now, (requests_limit, used_requests), (tokens_limit, used_tokens)),
    })
}

/// Reserves the worst case of a request to `model` (`estimate`), clamping
/// the output limit when only less fits. 402 when not even a minimal answer
/// fits.
pub async fn admit(
    meter: &Meter,
    caller: &Caller,
    model: &Model,
    endpoint: &str,
    estimate: &Estimate,
) -> Result<Admission> {
    admit_for(meter, caller, model, endpoint, estimate, &meter.instance_id).await
}

/// [`admit`], with the reservation held under `holder` instead of this
/// process (a job's, held from its submission: see `store::jobs::HELD`).
pub async fn admit_for(
    meter: &Meter,
    caller: &Caller,
    model: &Model,
    endpoint: &str,
    estimate: &Estimate,
    holder: &str,
) -> Result<Admission> {
    let max_output = estimate.max_output;
    let prices = model.prices.ok_or_else(|| {
        Error::Unpriced(format!("model {:?} has no price configured", model.name))
    })?;
    let mut period = caller.period;
    let mut output = max_output;
    let mut flushed = false;
    let defaults = {
        let (r, t) = meter.rate_limits.for_tenant(&caller.tenant_id);
        let stored = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        (r.map(stored), t.map(stored))
    };
    // A few rounds: another request may take the budget between reading it
    // and reserving, and the key's period may have changed under the cache.
    for _ in 0..8 {
        let now = meter.clock.now_ms();
        let start = period::window_start(period, now);
        let micros = worst_case(&prices, estimate, output);
        let id = new_id("req");
        let window_ms = meter.rate_limits.window_ms();
        let rate = RateCount {
            window_ms: now - now.rem_euclid(window_ms),
            tokens: reserved_tokens(estimate, output),
            default_requests: defaults.0,
            default_tokens: defaults.1,
        };
        let reservation = NewReservation {
            id: &id,
            tenant_id: &caller.tenant_id,
            key_id: &caller.key_id,
            period: crate::store::period_str(period),
            period_start_ms: start,
            model: &model.name,
            provider: &model.provider.name,
            endpoint,
            micros,
            instance_id: holder,
            now_ms: now,
            rate,
        };
        if let Some(counted) = meter.store.reserve(&reservation).await? {
            let rate_budget = budget(
                counted.window_ms + window_ms,
                now,
                (counted.requests_limit.or(defaults.0), counted.requests),
                (counted.tokens_limit.or(defaults.1), counted.tokens),
            );
            return Ok(Admission {
                reservation_id: id,
                lease: None,
                reserved_micros: micros,
                period_start_ms: start,
                max_output_tokens: output,
                unreported: Unreported {
                    prompt_tokens: estimate.prompt_tokens,
                    hidden_output_tokens: estimate.extra_output * estimate.choices,
                    max_output_tokens: estimate.output_tokens(output),
                },
                clamped: output < max_output,
                rate_window_ms: rate.window_ms,
                reserved_tokens: rate.tokens,
                rate_budget,
            });
        }
        if !flushed {
            // This process's finished requests may still hold their worst
            // case while their settlement is queued: settle them and retry
            // before refusing anyone.
            flushed = true;
            meter.recorder.flush().await;
            // And the room this process's lease on the key holds.
            super::lease::give_back(&meter.store, &meter.leases, now, Some(&caller.key_id)).await;
            continue;
        }
        let Some(state) = meter.store.cap_state(&caller.key_id, start).await? else {
            return Err(Error::Unauthenticated("invalid API key".into()));
        };
        if state.suspended {
            return Err(Error::key_suspended());
        }
        if !state.usable {
            meter.auth_cache.clear();
            return Err(Error::key_unusable());
        }
        if let Some(limited) = rate_limited(&state, &rate, defaults, window_ms, now) {
            return Err(Error::RateLimited(limited));
        }
        let current = crate::store::parse_period(&state.period).unwrap_or_default();
        if current != period {
            meter.auth_cache.clear();
            period = current;
            output = max_output;
            continue;
        }
        let Some(cap) = state.cap_micros else { continue };
        let remaining = cap - state.committed_micros;
        let fits = affordable(&prices, estimate, remaining).min(max_output);
        // A call without output tokens (audio, characters) is all fixed
        // cost: it fits whole or not at all.
        let fixed_fits = i128::from(remaining.max(0)) * 1_000_000 >= fixed_pico(&prices, estimate);
        if !fixed_fits || fits < MIN_OUTPUT_TOKENS.min(max_output) {
            // The 100 % alert: settled spend leaves no room, not merely
            // requests in flight holding it.
            if state.reserved_micros == 0 {
                meter.hook.cap_reached(&caller.tenant_id, &caller.key_id, start);
            }
            return Err(over_cap(&caller.key_id, period, start, cap, state.committed_micros));
        }
        output = fits;
    }
    Err(Error::SpendCapReached(
        "spend cap reached: the key's budget is taken by requests in flight".into(),
    ))
}

/// Takes over `held` (a reservation made earlier for this call: a job's,
/// at submission) when it is the caller's, for `model`, and pays for the
/// whole call; when admission clamped it, for at least a minimal answer,
/// the output limit being what it pays for (as the synchronous call would
/// have been clamped). `None` otherwise (prices or stored history changed
/// since): the call is then admitted as any other.
pub fn take_held(
    held: &HeldReservation,
    caller: &Caller,
    model: &Model,
    estimate: &Estimate,
) -> Option<Admission> {
    let prices = model.prices.as_ref()?;
    // Another key may pay for the call (an admin's job posting into a
    // standard key's thread): that key admits its own.
    if held.key_id != caller.key_id || held.model != model.name {
        return None;
    }
    let max_output = estimate.max_output;
    let output = if worst_case(prices, estimate, max_output) <= held.reserved_micros {
        max_output
    } else if held.clamped {
        let fits = affordable(prices, estimate, held.reserved_micros).min(max_output);
        let fixed_fits =
            i128::from(held.reserved_micros.max(0)) * 1_000_000 >= fixed_pico(prices, estimate);
        if !fixed_fits || fits < MIN_OUTPUT_TOKENS.min(max_output) {
            return None;
        }
        fits
    } else {
        return None;
    };
    Some(Admission {
        reservation_id: held.id.clone(),
        lease: None,
        reserved_micros: held.reserved_micros,
        period_start_ms: held.period_start_ms,
        max_output_tokens: output,
        unreported: Unreported {
            prompt_tokens: estimate.prompt_tokens,
            hidden_output_tokens: estimate.extra_output * estimate.choices,
            max_output_tokens: estimate.output_tokens(output),
        },
        clamped: output < max_output,
        // Counted against the rate limits when it was submitted.
        rate_window_ms: 0,
        reserved_tokens: 0,
        rate_budget: RateBudget::default(),
    })
}

/// Keeps this process's heartbeat fresh and settles reservations of
/// processes whose heartbeat stopped more than `timeout` ago, at their
/// reserved amount: their usage was never seen, and charging the worst case
/// loses nothing the provider may have billed. Each is settled exactly once
/// (settling deletes the reservation).
pub fn spawn_recovery(
    store: Store,
    clock: Arc<crate::clock::Clock>,
    instance_id: String,
    timeout: Duration,
) {
    tokio::spawn(async move {
        let beat = Duration::from_millis((timeout.as_millis() as u64 / 4).clamp(100, 5_000));
        loop {
            let now = clock.now_ms();
            if let Err(e) = store.heartbeat(&instance_id, now).await {
                tracing::warn!(error = %e, "heartbeat");
            }
            let cutoff = now - timeout.as_millis() as i64;
            if let Err(e) = store.prune_instances(now - 86_400_000).await {
                tracing::warn!(error = %e, "pruning stopped instances");
            }
            match store.release_orphaned_turn_embeddings(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    released = n,
                    "gave back the turn-embedding reservations of a stopped qlaud (its turns \
                     are embedded again)"
                ),
                Err(e) => tracing::error!(error = %e, "releasing turn-embedding reservations"),
            }
            match store.recover_orphaned_leases(cutoff).await {
                Ok((0, _)) => {}
                Ok((n, micros)) => tracing::warn!(
                    settled = n,
                    micros,
                    "settled the leases of a stopped qlaud at what they held"
                ),
                Err(e) => tracing::error!(error = %e, "recovering leases"),
            }
            match store.orphaned_reservations(cutoff, 1000).await {
                Ok(orphans) if !orphans.is_empty() => match store.settle(&orphans).await {
                    Ok(n) => tracing::warn!(
                        settled = n,
                        "settled reservations of a stopped qlaud at their reserved amount"
                    ),
                    Err(e) => tracing::error!(error = %e, "recovering reservations"),
                },
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "looking for orphaned reservations"),
            }
            tokio::time::sleep(beat).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamping_never_exceeds_the_budget() {
        let p = Prices::tokens(3_000_000, 15_000_000, 300_000, 3_750_000);
        for remaining in [0, 1, 100, 12_345, 5_000_000] {
            for prompt in [0, 10, 1000] {
                for (choices, extra) in [(1, 0), (8, 0), (3, 100), (128, 7)] {
                    let e = Estimate {
                        prompt_tokens: prompt,
                        max_output: u64::MAX,
                        choices,
                        extra_output: extra,
                        units: Default::default(),
                    };
                    let n = affordable(&p, &e, remaining);
                    if n > 0 && n < u64::MAX {
                        assert!(worst_case(&p, &e, n) <= remaining, "{remaining} {prompt} {n}");
                        assert!(worst_case(&p, &e, n + 1) > remaining);
                    }
                }
            }
        }
    }
}
