//! Billing the search index's turn embeddings: each turn is embedded at
//! the local model's price and billed to its thread's owner key, through
//! the same admission as every metered call, so a priced model is capped
//! like anything else.
//!
//! The turns of one key in a pass are one request (`turn_embeddings` in
//! the request log), admitted for their exact token count before they are
//! embedded and settled in the transaction that stores their vectors:
//! billed once, whatever crashes in between. A key that cannot pay now
//! (cap reached, suspended, disabled, over a rate limit, model unpriced)
//! keeps its turns queued, unindexed, and they are tried again later; a
//! revoked key pays for nothing more, so its queued turns are dropped
//! unindexed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use qlaud_api::KeyScope;

use crate::auth::Caller;
use crate::config::Model;
use crate::error::{Error, Result};
use crate::meter::estimate::Estimate;
use crate::meter::{Endpoint, Meter, Metered, RequestRecord, Usage};
use crate::store::PendingTurn;

/// A claimed turn with text, and the tokens the model reads of it.
pub struct Turn<'a> {
    pub turn: &'a PendingTurn,
    pub text: String,
    pub tokens: u64,
}

/// What admission made of some turns of one key.
pub enum Billed<'a> {
    /// Admitted as one request: embed them, then settle it.
    Admitted(Box<Metered>, Vec<Turn<'a>>),
    /// Not now: back in the queue until `until` (billing clock, Unix ms).
    Deferred { turns: Vec<Turn<'a>>, until: i64, reason: &'static str },
    /// Never: the key is revoked or gone. Off the queue, unindexed.
    Dropped(Vec<Turn<'a>>),
}

pub struct Biller {
    pub meter: Arc<Meter>,
    /// The local model as the catalog prices it (`None`: not in the
    /// catalog, treated as unpriced).
    pub model: Option<Arc<Model>>,
    /// How long turns a key cannot pay for wait before they are tried again.
    pub defer: Duration,
}

impl Biller {
    /// Admits the turns of the key `key_id` (all of them, in order, with
    /// text). One request when the budget holds them all; when it does not,
    /// each turn is tried on its own, so the key gets as many as its cap
    /// pays for, and never more. `Err` only for a store failure.
    pub async fn admit<'a>(
        &self,
        tenant_id: &str,
        key_id: &str,
        turns: Vec<Turn<'a>>,
    ) -> Result<Vec<Billed<'a>>> {
        let key = match self.meter.store.get_key(tenant_id, key_id).await {
            Ok(k) => k,
            Err(Error::NotFound { .. }) => return Ok(vec![Billed::Dropped(turns)]),
            Err(e) => return Err(e),
        };
        if key.revoked_ms.is_some() {
            return Ok(vec![Billed::Dropped(turns)]);
        }
        // The key's identity without its secret: admission checks its cap,
        // suspension and status again in the store.
        let caller = Caller {
            tenant_id: key.tenant_id,
            key_id: key.id,
            scope: crate::store::parse_scope(&key.scope).unwrap_or(KeyScope::Standard),
            period: crate::store::parse_period(&key.period).unwrap_or_default(),
        };
        let mut out = Vec::new();
        match self.admit_one(&caller, turns).await? {
            Billed::Deferred { turns, reason: "spend_cap", .. } if turns.len() > 1 => {
                // Not all at once: one at a time, in order, as far as the
                // cap goes; the rest wait with the first one refused.
                let mut singles = turns.into_iter();
                let mut refused = None;
                for turn in singles.by_ref() {
                    let billed = self.admit_one(&caller, vec![turn]).await?;
                    if let Billed::Deferred { until, reason, .. } = &billed {
                        refused = Some((*until, *reason));
                    }
                    out.push(billed);
                    if refused.is_some() {
                        break;
                    }
                }
                if let Some((until, reason)) = refused {
                    let turns: Vec<Turn<'a>> = singles.collect();
                    if !turns.is_empty() {
                        out.push(Billed::Deferred { turns, until, reason });
                    }
                }
            }
            billed => out.push(billed),
        }
        Ok(out)
    }

    async fn admit_one<'a>(&self, caller: &Caller, turns: Vec<Turn<'a>>) -> Result<Billed<'a>> {
        let now = self.meter.clock.now_ms();
        let later = now.saturating_add(i64::try_from(self.defer.as_millis()).unwrap_or(i64::MAX));
        let Some(model) = self.model.clone() else {
            tracing::warn!(
                model = crate::embed::MODEL_NAME,
                "the catalog has no local embedding model: turns stay queued, unindexed"
            );
            return Ok(Billed::Deferred { turns, until: later, reason: "unpriced" });
        };
        let estimate = Estimate {
            prompt_tokens: turns.iter().map(|t| t.tokens).sum(),
            max_output: 0,
            choices: 1,
            extra_output: 0,
            units: Default::default(),
        };
        let admitted = Metered::admit(
            &self.meter,
            caller,
            model,
            Endpoint::TurnEmbeddings,
            false,
            Instant::now(),
            &estimate,
        )
        .await;
        let (until, reason) = match admitted {
            Ok(call) => return Ok(Billed::Admitted(Box::new(call), turns)),
            Err(Error::SpendCapReached(_)) => (later, "spend_cap"),
            Err(Error::KeySuspended(_)) => (later, "key_suspended"),
            Err(Error::RateLimited(r)) => (r.budget.reset_ms.max(now + 1), "rate_limited"),
            Err(Error::Unpriced(m)) => {
                tracing::warn!("{m}: turns stay queued, unindexed, until it has a price");
                (later, "unpriced")
            }
            // Revoked since it was read, or disabled (which may be undone).
            Err(Error::Unauthenticated(_)) => (later, "key_disabled"),
            Err(e) => return Err(e),
        };
        Ok(Billed::Deferred { turns, until, reason })
    }
}

/// The record settling `call` for `input_tokens` embedded (at most its
/// reservation: the estimate is the exact count, so that never binds).
pub fn record(call: &mut Metered, input_tokens: u64) -> RequestRecord {
    let usage = Usage { input_tokens, ..Default::default() };
    let quantities = crate::meter::quantities(&usage);
    let cost =
        RequestRecord::cost_for(&call.model, &quantities).min(call.admission.reserved_micros);
    call.hold();
    let mut record = call.held_record(200, quantities, cost);
    record.usage = usage;
    record
}

/// Gives back the reservations of calls that will not be settled (the
/// pass failed before storing): their turns are embedded, and billed,
/// again later.
pub async fn release(meter: &Meter, calls: impl Iterator<Item = &mut Metered>) {
    for call in calls {
        call.hold();
        if let Err(e) = meter.store.release(&call.admission.reservation_id).await {
            // Left open, it holds its budget until this process stops and
            // crash recovery gives it back; it is never billed.
            tracing::warn!(error = %e, "releasing a turn-embedding reservation");
        }
    }
}
