//! Where pushing meter events to Stripe stands, for the billing settings
//! answer: what Stripe accepted so far, and each tenant's last push run.

use chrono::{DateTime, Utc};
use qlaud_api::{StripePushRun, StripePushState};

use crate::error::Result;
use crate::store::{PushRunRow, Store, now_ms};

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub async fn state(store: &Store, tenant_id: &str) -> Result<StripePushState> {
    let (totals, run) = store.push_state(tenant_id).await?;
    Ok(StripePushState {
        events_pushed: totals.events,
        micros_pushed: totals.micros,
        last_pushed_at: totals.last_ms.map(time),
        last_run: run.map(|r| StripePushRun {
            at: time(r.ran_ms),
            period: r.period,
            sent: r.sent,
            already_sent: r.already_sent,
            still_open: r.still_open,
            failed: r.failed,
        }),
    })
}

/// Records one tenant's share of a run: the run's counts now minus those
/// before the tenant's turn (`[sent, already_sent, still_open, failed]`).
pub async fn record(
    store: &Store,
    tenant_id: &str,
    period: &str,
    now: [usize; 4],
    before: [usize; 4],
) -> Result<()> {
    let n = |i: usize| i64::try_from(now[i] - before[i]).unwrap_or(i64::MAX);
    let run = PushRunRow {
        ran_ms: now_ms(),
        period: period.to_string(),
        sent: n(0),
        already_sent: n(1),
        still_open: n(2),
        failed: n(3),
    };
    store.record_push_run(tenant_id, &run).await
}
