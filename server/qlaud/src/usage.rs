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
use crate::store::{UsageCell, UsageFilter, UsageRow};

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

/// The cells summed per group (`(group, name)` of a cell).
fn group(cells: &[UsageCell], by: impl Fn(&UsageCell) -> (String, String)) -> Vec<UsageRow> {
    let mut groups: std::collections::HashMap<String, UsageRow> = Default::default();
    for cell in cells {
        let (group, name) = by(cell);
        groups
            .entry(group.clone())
            .or_insert_with(|| UsageRow { group, name, ..Default::default() })
            .add(&cell.row);
    }
    groups.into_values().collect()
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
    let cells = ctx.store.usage_cells(&f).await?;
    let mut all = UsageRow::default();
    cells.iter().for_each(|c| all.add(&c.row));
    let mut keys = group(&cells, |c| (c.key_id.clone(), c.key_name.clone()));
    let mut models = group(&cells, |c| (c.model.clone(), String::new()));
    let mut days = group(&cells, |c| (c.day.to_string(), String::new()));
    let mut day_models = group(&cells, |c| (format!("{}\t{}", c.day, c.model), String::new()));
    let by_cost = |a: &UsageRow, b: &UsageRow| {
        b.cost_micros.cmp(&a.cost_micros).then_with(|| a.group.cmp(&b.group))
    };
    keys.sort_by(by_cost);
    models.sort_by(by_cost);
    let by_day = |r: &UsageRow| {
        let (day, model) = r.group.split_once('\t').unwrap_or((&r.group, ""));
        (day.parse::<i64>().unwrap_or_default(), model.to_string())
    };
    days.sort_by_key(by_day);
    day_models.sort_by_key(by_day);
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
