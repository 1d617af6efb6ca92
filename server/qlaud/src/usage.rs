//! Usage reports: what each key spent, read from the settled request log.

use chrono::{DateTime, NaiveDate, Utc};
use qlaud_api::{
    DayModelUsage, DayUsage, KeyScope, KeyUsage, ModelUsage, UsagePeriod, UsageQuery, UsageReport,
    UsageTotals,
};

use crate::auth::Caller;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::meter::period;
use crate::store::{UnitGroup, UsageFilter, UsageRow};

const DAY_MS: i64 = 86_400_000;

/// An RFC 3339 time or a `YYYY-MM-DD` date, as Unix ms.
pub(crate) fn parse_time(field: &str, s: &str) -> Result<i64> {
    // Four-digit years only: chrono's %Y also takes `-2026-…` and `+12026-…`.
    let plain_year = s.len() >= 10 && s.as_bytes()[..4].iter().all(u8::is_ascii_digit);
    if !plain_year {
        return Err(Error::invalid(format!(
            "{field} must be an RFC 3339 time (2026-11-01T00:00:00Z) or a date (2026-11-01), got {s:?}"
        )));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis());
    }
    Err(Error::invalid(format!(
        "{field} must be an RFC 3339 time (2026-11-01T00:00:00Z) or a date (2026-11-01), got {s:?}"
    )))
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn totals(r: &UsageRow) -> UsageTotals {
    UsageTotals {
        cost_micros: r.cost_micros,
        requests: r.requests,
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        cache_read_tokens: r.cache_read_tokens,
        cache_write_tokens: r.cache_write_tokens,
        units: r.units.clone(),
    }
}

pub async fn report(ctx: &Context, caller: &Caller, q: UsageQuery) -> Result<UsageReport> {
    let now = ctx.clock.now_ms();
    let month = period::window_start(qlaud_api::Period::Monthly, now);
    let from = q.from.as_deref().map(|s| parse_time("from", s)).transpose()?.unwrap_or(month);
    let to = match q.to.as_deref() {
        Some(s) => parse_time("to", s)?,
        None => period::window_end(qlaud_api::Period::Monthly, month).expect("months end"),
    };
    if to <= from {
        return Err(Error::invalid("to must be later than from"));
    }
    let key_id = match (caller.scope, q.key_id) {
        (KeyScope::Standard, Some(k)) if k != caller.key_id => {
            return Err(Error::Forbidden(
                "a standard key sees only its own usage; leave key_id out".to_string(),
            ));
        }
        (KeyScope::Standard, _) => Some(caller.key_id.clone()),
        (KeyScope::Admin, Some(k)) => {
            // 404 for ids of other tenants, as everywhere.
            ctx.store.get_key(&caller.tenant_id, &k).await?;
            Some(k)
        }
        (KeyScope::Admin, None) => None,
    };
    // Requests this process finished are settled before the report reads.
    ctx.meter.recorder.flush().await;
    let f = UsageFilter {
        tenant_id: &caller.tenant_id,
        from_ms: from,
        to_ms: to,
        key_id: key_id.as_deref(),
    };
    let (mut all, mut keys, mut models, mut days, day_models) = (
        [ctx.store.usage_totals(&f).await?],
        ctx.store.usage_by_key(&f).await?,
        ctx.store.usage_by_model(&f).await?,
        ctx.store.usage_by_day(&f).await?,
        ctx.store.usage_by_day_and_model(&f).await?,
    );
    ctx.store.add_unit_sums(&f, UnitGroup::Total, &mut all).await?;
    ctx.store.add_unit_sums(&f, UnitGroup::Key, &mut keys).await?;
    ctx.store.add_unit_sums(&f, UnitGroup::Model, &mut models).await?;
    ctx.store.add_unit_sums(&f, UnitGroup::Day, &mut days).await?;
    let [all] = all;
    let date = |day: &str| {
        day.parse::<i64>()
            .map(|d| time(d * DAY_MS).format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    };
    Ok(UsageReport {
        period: UsagePeriod { from: time(from), to: time(to) },
        totals: totals(&all),
        by_key: keys
            .iter()
            .map(|r| KeyUsage {
                key_id: r.group.clone(),
                key_name: r.name.clone(),
                usage: totals(r),
            })
            .collect(),
        by_model: models
            .iter()
            .map(|r| ModelUsage { model: r.group.clone(), usage: totals(r) })
            .collect(),
        by_day: days.iter().map(|r| DayUsage { date: date(&r.group), usage: totals(r) }).collect(),
        by_day_and_model: day_models
            .iter()
            .map(|r| {
                let (day, model) = r.group.split_once('\t').unwrap_or_default();
                DayModelUsage { date: date(day), model: model.to_string(), usage: totals(r) }
            })
            .collect(),
    })
}
