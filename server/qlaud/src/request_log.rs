//! The request log as the API shows it (`list_requests`): newest first,
//! filtered, a page at a time. Admin keys read their tenant's log; a
//! standard key reads only its own requests.

use chrono::{DateTime, Utc};
use dropshot::{PaginationParams, ResultsPage, WhichPage};
use qlaud_api::{KeyScope, RequestLogEntry, RequestLogFilter, RequestLogPageSelector};

use crate::auth::Caller;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::store::{RequestLogQuery, RequestLogRow};
use crate::usage::parse_time;

/// Longest model name a filter may carry (the page token repeats it).
const MAX_MODEL_CHARS: usize = 100;

/// `200` → (200, 200); `4xx` → (400, 499).
fn status_range(s: &str) -> Result<(i64, i64)> {
    let bad = || {
        Error::invalid(format!(
            "status must be an HTTP status (200) or a class (2xx, 4xx, 5xx), got {s:?}"
        ))
    };
    let s = s.trim().to_ascii_lowercase();
    if let Some(class) = s.strip_suffix("xx") {
        let d: i64 = class.parse().map_err(|_| bad())?;
        return if (1..=5).contains(&d) { Ok((d * 100, d * 100 + 99)) } else { Err(bad()) };
    }
    let code: i64 = s.parse().map_err(|_| bad())?;
    if (100..=599).contains(&code) { Ok((code, code)) } else { Err(bad()) }
}

fn wire(r: RequestLogRow) -> RequestLogEntry {
    RequestLogEntry {
        id: r.id,
        key_id: r.key_id,
        key_name: r.key_name,
        model: r.model,
        endpoint: r.endpoint,
        streamed: r.streamed != 0,
        status: u16::try_from(r.status).unwrap_or(0),
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        cache_read_tokens: r.cache_read_tokens,
        cache_write_tokens: r.cache_write_tokens,
        cost_micros: r.cost_micros,
        latency_ms: r.latency_ms,
        created_at: DateTime::<Utc>::from_timestamp_millis(r.created_ms).unwrap_or_default(),
        recovered: r.recovered != 0,
    }
}

pub async fn page(
    ctx: &Context,
    caller: &Caller,
    params: &PaginationParams<RequestLogFilter, RequestLogPageSelector>,
    limit: u32,
) -> Result<ResultsPage<RequestLogEntry>, dropshot::HttpError> {
    let (mut filter, before) = match &params.page {
        WhichPage::First(f) => (f.clone(), None),
        WhichPage::Next(sel) => (sel.filter.clone(), Some((sel.created_ms, sel.id.as_str()))),
    };
    filter.key_id = match (caller.scope, filter.key_id.take()) {
        (KeyScope::Standard, Some(k)) if k != caller.key_id => {
            return Err(Error::Forbidden(
                "a standard key sees only its own requests; leave key_id out".to_string(),
            )
            .into());
        }
        (KeyScope::Standard, _) => Some(caller.key_id.clone()),
        (KeyScope::Admin, Some(k)) => {
            // 404 for ids of other tenants, as everywhere.
            ctx.store.get_key(&caller.tenant_id, &k).await?;
            Some(k)
        }
        (KeyScope::Admin, None) => None,
    };
    if filter.model.as_ref().is_some_and(|m| m.chars().count() > MAX_MODEL_CHARS) {
        return Err(
            Error::invalid(format!("model is limited to {MAX_MODEL_CHARS} characters")).into()
        );
    }
    let status = filter.status.as_deref().map(status_range).transpose()?.unwrap_or((0, 999));
    let from_ms = filter.from.as_deref().map(|s| parse_time("from", s)).transpose()?;
    let to_ms = filter.to.as_deref().map(|s| parse_time("to", s)).transpose()?;
    if let (Some(from), Some(to)) = (from_ms, to_ms)
        && to <= from
    {
        return Err(Error::invalid("to must be later than from").into());
    }
    // Requests this process finished are written before the log is read.
    ctx.meter.recorder.flush().await;
    let rows = ctx
        .store
        .list_request_log(&RequestLogQuery {
            tenant_id: &caller.tenant_id,
            key_id: filter.key_id.as_deref().unwrap_or(""),
            model: filter.model.as_deref().unwrap_or(""),
            status,
            from_ms: from_ms.unwrap_or(i64::MIN),
            to_ms: to_ms.unwrap_or(i64::MAX),
            before,
            limit,
        })
        .await?;
    let items: Vec<RequestLogEntry> = rows.into_iter().map(wire).collect();
    ResultsPage::new(items, &filter, |e: &RequestLogEntry, f: &RequestLogFilter| {
        RequestLogPageSelector {
            filter: f.clone(),
            created_ms: e.created_at.timestamp_millis(),
            id: e.id.clone(),
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn statuses_and_classes() {
        assert_eq!(super::status_range("402").unwrap(), (402, 402));
        assert_eq!(super::status_range("4xx").unwrap(), (400, 499));
        assert_eq!(super::status_range("2XX").unwrap(), (200, 299));
        assert!(super::status_range("9xx").is_err());
        assert!(super::status_range("abc").is_err());
        assert!(super::status_range("42").is_err());
    }
}
