//! Budget leases: admission at memory speed.
//!
//! A per-request reservation costs a durable conditional write before every
//! provider call. Instead, this process takes a *lease*: a slice of a key's
//! budget (room for `--lease-requests` worst cases) held in the store by one
//! conditional statement, exactly like a reservation. The key's requests
//! are then admitted against the lease in memory: each takes its worst case
//! out of the lease's room, and settling moves its cost from the lease to
//! settled spend (the rest comes back to the room). Settled + reserved +
//! leased never passes the cap, so neither does settled spend.
//!
//! What stays exact:
//! - A key change (cap lowered below what is committed, suspension,
//!   revocation, disabling, a new period, rate limits) applies to the next
//!   request in every process: each request admitted under a lease is
//!   first checked by a read of the lease and its key that started after
//!   it arrived (a read, no write, shared by the requests waiting for it;
//!   see `Store::lease_usable` and `Checks`). A lease that fails it takes
//!   no more requests.
//! - Near the cap there is no lease: one is only taken or topped up while
//!   at least as much again is left, so the last of a budget is reserved
//!   request by request, clamped as before.
//! - Keys with rate limits, jobs, videos and turn embeddings keep their
//!   per-request reservations.
//!
//! What changes is the crash rule: a stopped process's lease is settled at
//! what it still holds (its requests in flight, at their worst case, and the
//! room left in it, at most `--lease-requests` worst cases). A lease idle for
//! [`IDLE`] gives its room back, and a graceful shutdown gives every lease
//! back, so only a crash bills the room.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use qlaud_api::Period;

use super::call::Meter;
use super::estimate::Estimate;
use super::ledger::{Admission, worst_case};
use super::{Unreported, period};
use crate::auth::Caller;
use crate::config::Model;
use crate::error::{RateBudget, Result};
use crate::store::{NewReservation, RateCount, Store, new_id, period_str};

/// A lease not used for this long gives its room back: a crash bills the
/// room of a lease, so it is kept only while requests keep coming.
pub const IDLE: Duration = Duration::from_secs(1);

/// How often leases are looked after (room given back, empty ones ended).
const SWEEP: Duration = Duration::from_millis(250);

/// After a key refused a lease (near its cap, rate limits), how long its
/// requests are reserved one by one before a lease is tried again.
const REFUSED_FOR_MS: i64 = 1_000;

/// Reads checking one lease at a time, at most.
const CHECKS: usize = 2;

/// No lease above this (caps are at most 10^15 micro-dollars).
const MAX_LEASE: i64 = 1_000_000_000_000_000;

/// This process's leases.
#[derive(Default)]
pub struct Leases {
    /// Worst cases a lease has room for; 0: no leases.
    size: AtomicU64,
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    leases: HashMap<String, Lease>,
    /// The lease each key's new requests go to.
    current: HashMap<String, String>,
    /// Keys that refused a lease, until when.
    refused: HashMap<String, i64>,
    /// Keys a lease is being taken for.
    taking: std::collections::HashSet<String>,
}

struct Lease {
    key_id: String,
    period_start_ms: i64,
    period: Period,
    /// What the store holds for it, less the cost of requests finished
    /// (written or not).
    unspent: i64,
    /// The worst cases of its requests in flight.
    in_flight: i64,
    requests: u64,
    /// The room it is topped up to.
    target: i64,
    topping_up: bool,
    /// Takes no requests; its room goes back, and it ends once empty.
    draining: bool,
    last_used_ms: i64,
    checks: Checks,
}

/// The reads that check a lease before it admits a request: up to
/// [`CHECKS`] at a time per lease. Requests that arrive while that many run
/// wait for the next, which starts after they arrived, so each still sees
/// every key change committed before it came; under load one read admits
/// many requests, and at a moderate rate none waits for another's read.
#[derive(Default)]
struct Checks {
    /// Reads running.
    running: usize,
    /// The next read's waiters.
    next: Option<Round>,
}

/// One read's answer, for every request waiting on it.
type Round = tokio::sync::watch::Sender<Checked>;
type Checked = Option<std::result::Result<bool, String>>;

/// A request's part in its lease's checks.
enum Join {
    /// Fewer than [`CHECKS`] reads run: this request reads.
    Read,
    /// Wait for the next read.
    Wait(tokio::sync::watch::Receiver<Checked>),
}

impl Checks {
    fn join(&mut self) -> Join {
        if self.running >= CHECKS {
            Join::Wait(self.next.get_or_insert_with(|| Round::new(None)).subscribe())
        } else {
            self.running += 1;
            Join::Read
        }
    }
}

impl Lease {
    fn room(&self) -> i64 {
        self.unspent - self.in_flight
    }
}

/// What the key's lease did for a request.
struct Taken {
    lease_id: String,
    /// Top the lease up by this much (in the background).
    top_up: Option<i64>,
    /// The request's part in the lease's checks; `None`: no room left for
    /// it until the lease is topped up, and it is reserved on its own.
    join: Option<Join>,
}

impl Leases {
    /// Leases with room for `size` worst cases; 0 turns them off.
    pub fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Relaxed);
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().expect("never poisoned")
    }

    /// The request's worst case out of the key's lease; `None`: no lease
    /// for it (take one, or reserve it on its own).
    fn take(
        &self,
        key_id: &str,
        start: i64,
        period: Period,
        micros: i64,
        now: i64,
    ) -> Option<Taken> {
        let mut book = self.book();
        let id = book.current.get(key_id)?.clone();
        let refused = book.refused.get(key_id).is_some_and(|until| *until > now);
        let lease = book.leases.get_mut(&id)?;
        if lease.draining || lease.period_start_ms != start || lease.period != period {
            return None;
        }
        if lease.room() < micros {
            // Sized for this request but spent by those in flight: wait
            // for room rather than replace it (no lease churns under load).
            if micros > lease.target || refused {
                return None;
            }
            let top_up = (!lease.topping_up).then(|| {
                lease.topping_up = true;
                lease.target - lease.room()
            });
            return Some(Taken { lease_id: id, top_up, join: None });
        }
        lease.in_flight += micros;
        lease.requests += 1;
        lease.last_used_ms = now;
        let room = lease.room();
        let top_up = (room < lease.target / 2 && !lease.topping_up).then(|| {
            lease.topping_up = true;
            lease.target - room
        });
        let join = Some(lease.checks.join());
        Some(Taken { lease_id: id, top_up, join })
    }

    /// A request admitted under `lease_id` with `reserved` finished at
    /// `cost` (its record is queued for settlement).
    pub fn finish(&self, lease_id: &str, reserved: i64, cost: i64) {
        if let Some(lease) = self.book().leases.get_mut(lease_id) {
            lease.in_flight -= reserved;
            lease.unspent -= cost;
            lease.requests = lease.requests.saturating_sub(1);
        }
    }

    /// A lease just taken in the store.
    fn install(&self, id: &str, key_id: &str, start: i64, period: Period, amount: i64, now: i64) {
        let mut book = self.book();
        if let Some(old) = book.current.insert(key_id.to_string(), id.to_string())
            && let Some(old) = book.leases.get_mut(&old)
        {
            old.draining = true;
        }
        book.leases.insert(
            id.to_string(),
            Lease {
                key_id: key_id.to_string(),
                period_start_ms: start,
                period,
                unspent: amount,
                in_flight: 0,
                requests: 0,
                target: amount,
                topping_up: false,
                draining: false,
                last_used_ms: now,
                checks: Checks::default(),
            },
        );
    }

    fn topped_up(&self, id: &str, added: Option<i64>) {
        if let Some(lease) = self.book().leases.get_mut(id) {
            lease.topping_up = false;
            lease.unspent += added.unwrap_or(0);
        }
    }

    /// The lease takes no more requests.
    fn drain(&self, id: &str) {
        let mut book = self.book();
        if let Some(lease) = book.leases.get_mut(id) {
            lease.draining = true;
            let key = lease.key_id.clone();
            if book.current.get(&key).is_some_and(|c| c == id) {
                book.current.remove(&key);
            }
        }
    }

    /// Whether this request takes the key's next lease (no other is
    /// taking one).
    fn start_taking(&self, key_id: &str) -> bool {
        self.book().taking.insert(key_id.to_string())
    }

    fn done_taking(&self, key_id: &str) {
        self.book().taking.remove(key_id);
    }

    fn refused(&self, key_id: &str, now: i64) -> bool {
        self.book().refused.get(key_id).is_some_and(|until| *until > now)
    }

    fn note_refused(&self, key_id: &str, now: i64) {
        let mut book = self.book();
        book.refused.retain(|_, until| *until > now);
        book.refused.insert(key_id.to_string(), now + REFUSED_FOR_MS);
    }

    /// Marks idle leases (and with `key`, that key's; with `all`, every
    /// one) draining, and takes the room of every draining lease out of
    /// memory: the room to give back in the store, and the leases that
    /// hold nothing any more, to end.
    fn sweep(&self, now: i64, key: Option<&str>, all: bool) -> (Vec<(String, i64)>, Vec<String>) {
        let mut book = self.book();
        let Book { leases, current, .. } = &mut *book;
        let (mut give, mut end) = (Vec::new(), Vec::new());
        for (id, lease) in leases.iter_mut() {
            if all
                || key == Some(lease.key_id.as_str())
                || now - lease.last_used_ms >= IDLE.as_millis() as i64
            {
                lease.draining = true;
                if current.get(&lease.key_id).is_some_and(|c| c == id) {
                    current.remove(&lease.key_id);
                }
            }
            if !lease.draining || lease.topping_up {
                continue;
            }
            let room = lease.room();
            if room > 0 {
                lease.unspent -= room;
                give.push((id.clone(), room));
            } else if lease.requests == 0 && lease.unspent == 0 {
                end.push(id.clone());
            }
        }
        (give, end)
    }

    fn given_back(&self, id: &str, micros: i64, done: std::result::Result<bool, ()>) {
        let mut book = self.book();
        match done {
            Ok(true) => {}
            // Gone: crash recovery settled it, room and all.
            Ok(false) => {
                book.leases.remove(id);
            }
            // Try again next time.
            Err(()) => {
                if let Some(lease) = book.leases.get_mut(id) {
                    lease.unspent += micros;
                }
            }
        }
    }

    fn ended(&self, id: &str) {
        self.book().leases.remove(id);
    }
}

/// Admits a request against this process's lease on the caller's key,
/// taking a lease first if there is none with room. `None`: no lease for
/// this request (leases off, the key has rate limits or is near its cap,
/// the key changed), and it is reserved on its own instead, which also
/// gives the refusals and their messages.
pub async fn admit(
    meter: &Arc<Meter>,
    caller: &Caller,
    model: &Model,
    endpoint: &str,
    estimate: &Estimate,
) -> Result<Option<Admission>> {
    let size = meter.leases.size.load(Ordering::Relaxed);
    let defaults = meter.rate_limits.for_tenant(&caller.tenant_id);
    let Some(prices) = model.prices.as_ref() else { return Ok(None) };
    if size == 0 || defaults.0.is_some() || defaults.1.is_some() {
        return Ok(None);
    }
    let now = meter.clock.now_ms();
    let start = period::window_start(caller.period, now);
    let micros = worst_case(prices, estimate, estimate.max_output);
    let admission = |lease_id: String| Admission {
        reservation_id: new_id("req"),
        lease: Some(lease_id),
        reserved_micros: micros,
        period_start_ms: start,
        max_output_tokens: estimate.max_output,
        unreported: Unreported {
            prompt_tokens: estimate.prompt_tokens,
            hidden_output_tokens: estimate.extra_output * estimate.choices,
            max_output_tokens: estimate.output_tokens(estimate.max_output),
        },
        clamped: false,
        rate_window_ms: 0,
        reserved_tokens: 0,
        rate_budget: RateBudget::default(),
    };
    let leases = &meter.leases;
    for first in [true, false] {
        if let Some(taken) = leases.take(&caller.key_id, start, caller.period, micros, now) {
            if let Some(more) = taken.top_up {
                spawn_top_up(meter.clone(), taken.lease_id.clone(), caller, start, more);
            }
            let Some(join) = taken.join else { return Ok(None) };
            // Given back if this future is dropped before it answers. (No
            // await before `check` guards the read this request joined.)
            let mut held = Held { leases, lease_id: &taken.lease_id, micros, armed: true };
            return match check(meter, &taken.lease_id, caller.period, join).await? {
                true => {
                    held.armed = false;
                    drop(held);
                    Ok(Some(admission(taken.lease_id)))
                }
                false => {
                    drop(held);
                    leases.drain(&taken.lease_id);
                    Ok(None)
                }
            };
        }
        if !first {
            break;
        }
        let amount = micros.saturating_mul(i64::try_from(size).unwrap_or(i64::MAX));
        if micros == 0 || amount > MAX_LEASE || leases.refused(&caller.key_id, now) {
            return Ok(None);
        }
        // One lease taken at a time per key; meanwhile requests are
        // reserved on their own. In a task of its own, so that a request
        // dropped meanwhile cannot leave a lease in the store that this
        // process does not know of.
        if !leases.start_taking(&caller.key_id) {
            return Ok(None);
        }
        let lease = LeaseToTake {
            id: new_id("lease"),
            tenant_id: caller.tenant_id.clone(),
            key_id: caller.key_id.clone(),
            period: caller.period,
            period_start_ms: start,
            model: model.name.clone(),
            provider: model.provider.name.clone(),
            endpoint: endpoint.to_string(),
            micros: amount,
            now_ms: now,
        };
        match tokio::spawn(take_lease(meter.clone(), lease)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Ok(None),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(crate::error::Error::Internal(format!("taking a lease: {e}"))),
        }
    }
    Ok(None)
}

/// Whether the lease may still admit (`Store::lease_usable`), read once
/// for every request that arrived before the read started (see [`Checks`]).
async fn check(meter: &Arc<Meter>, lease_id: &str, period: Period, join: Join) -> Result<bool> {
    let mut waiting = match join {
        Join::Wait(waiting) => waiting,
        Join::Read => {
            // Hands the waiters over even if this request is dropped.
            let _leading = Leading { meter, lease_id, period };
            return meter.store.lease_usable(lease_id, period_str(period)).await;
        }
    };
    match waiting.wait_for(Option::is_some).await {
        Ok(answer) => match answer.as_ref().expect("waited for") {
            Ok(usable) => Ok(*usable),
            Err(e) => Err(crate::error::Error::Internal(format!("checking a lease: {e}"))),
        },
        // The lease left the book (crash recovery settled it): not usable.
        Err(_) => Ok(false),
    }
}

/// The request whose read is running: when it ends (answered or dropped),
/// the requests that came meanwhile get a read of their own.
struct Leading<'a> {
    meter: &'a Arc<Meter>,
    lease_id: &'a str,
    period: Period,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if let Some(round) = next_round(&self.meter.leases, self.lease_id) {
            let (meter, id) = (self.meter.clone(), self.lease_id.to_string());
            tokio::spawn(rounds(meter, id, self.period, round));
        }
    }
}

/// A read ended: the waiters for the lease's next read, if any, which
/// the caller reads for.
fn next_round(leases: &Leases, lease_id: &str) -> Option<Round> {
    let mut book = leases.book();
    let checks = &mut book.leases.get_mut(lease_id)?.checks;
    let next = checks.next.take();
    if next.is_none() {
        checks.running -= 1;
    }
    next
}

/// Reads for waiting requests until none are left.
async fn rounds(meter: Arc<Meter>, lease_id: String, period: Period, mut round: Round) {
    loop {
        let usable = meter.store.lease_usable(&lease_id, period_str(period)).await;
        round.send_replace(Some(usable.map_err(|e| e.to_string())));
        match next_round(&meter.leases, &lease_id) {
            Some(next) => round = next,
            None => return,
        }
    }
}

/// A request's worst case taken out of a lease: given back on drop unless
/// the request was admitted.
struct Held<'a> {
    leases: &'a Leases,
    lease_id: &'a str,
    micros: i64,
    armed: bool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.leases.finish(self.lease_id, self.micros, 0);
        }
    }
}

/// A lease to take, owned (for its own task).
struct LeaseToTake {
    id: String,
    tenant_id: String,
    key_id: String,
    period: Period,
    period_start_ms: i64,
    model: String,
    provider: String,
    endpoint: String,
    micros: i64,
    now_ms: i64,
}

/// Takes a lease in the store and, when the key allows it, puts it in
/// this process's book as the key's lease; else notes the refusal.
async fn take_lease(meter: Arc<Meter>, l: LeaseToTake) -> Result<bool> {
    let taken = meter
        .store
        .take_lease(&NewReservation {
            id: &l.id,
            tenant_id: &l.tenant_id,
            key_id: &l.key_id,
            period: period_str(l.period),
            period_start_ms: l.period_start_ms,
            model: &l.model,
            provider: &l.provider,
            endpoint: &l.endpoint,
            micros: l.micros,
            instance_id: &meter.instance_id,
            now_ms: l.now_ms,
            rate: RateCount::default(),
        })
        .await;
    let leases = &meter.leases;
    match &taken {
        Ok(true) => {
            leases.install(&l.id, &l.key_id, l.period_start_ms, l.period, l.micros, l.now_ms)
        }
        Ok(false) => leases.note_refused(&l.key_id, l.now_ms),
        Err(_) => {}
    }
    leases.done_taking(&l.key_id);
    taken
}

fn spawn_top_up(meter: Arc<Meter>, id: String, caller: &Caller, start: i64, micros: i64) {
    let (key_id, period) = (caller.key_id.clone(), caller.period);
    tokio::spawn(async move {
        let added = meter
            .store
            .top_up_lease(&id, &key_id, period_str(period), start, micros)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "topping up a lease");
                false
            });
        if !added {
            meter.leases.note_refused(&key_id, meter.clock.now_ms());
        }
        meter.leases.topped_up(&id, added.then_some(micros));
    });
}

/// Gives back the room of `key`'s leases (before refusing one of its
/// requests: the room may be what it needs), or with `key` `None` of every
/// lease (at shutdown), and ends the leases that hold nothing.
pub async fn give_back(store: &Store, leases: &Leases, now: i64, key: Option<&str>) {
    // At shutdown a lease may be topping up, and one ends only after its
    // room is back: a few passes, until nothing moves.
    let passes = if key.is_some() { 1 } else { 40 };
    for _ in 0..passes {
        let (give, end) = leases.sweep(now, key, key.is_none());
        if give.is_empty() && end.is_empty() {
            if !leases.book().leases.values().any(|l| l.topping_up) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        settle_sweep(store, leases, give, end).await;
    }
}

async fn settle_sweep(store: &Store, leases: &Leases, give: Vec<(String, i64)>, end: Vec<String>) {
    for (id, micros) in give {
        let done = store.give_back_lease(&id, micros).await.map_err(|e| {
            tracing::warn!(error = %e, "giving back a lease's room");
        });
        leases.given_back(&id, micros, done);
    }
    for id in end {
        match store.end_lease(&id).await {
            // Ended, or gone already.
            Ok(Some(true) | None) => leases.ended(&id),
            // A settlement not written yet: next time.
            Ok(Some(false)) => {}
            Err(e) => tracing::warn!(error = %e, "ending a lease"),
        }
    }
}

/// Looks after this process's leases: gives back the room of idle ones
/// and ends those that hold nothing.
pub fn spawn_sweeper(meter: Arc<Meter>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SWEEP).await;
            let (give, end) = meter.leases.sweep(meter.clock.now_ms(), None, false);
            settle_sweep(&meter.store, &meter.leases, give, end).await;
        }
    });
}
