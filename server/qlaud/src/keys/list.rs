//! Listing keys (search, sort, pages) and reading a key's activity.

use dropshot::{PaginationParams, ResultsPage, WhichPage};
use qlaud_api::{Key, KeyListFilter, KeyPageSelector, Period};

use crate::auth::Caller;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::meter::period::window_start;
use crate::store::{KeyActivity, KeyQuery, WindowStarts};

const MAX_SEARCH_CHARS: usize = 100;

/// The current window of each cap period, by the billing clock.
pub fn windows(ctx: &Context) -> WindowStarts {
    let now = ctx.clock.now_ms();
    WindowStarts {
        monthly: window_start(Period::Monthly, now),
        weekly: window_start(Period::Weekly, now),
        daily: window_start(Period::Daily, now),
    }
}

/// One key's activity, after this process's finished requests are written.
pub async fn activity(ctx: &Context, tenant_id: &str, key_id: &str) -> Result<KeyActivity> {
    ctx.meter.recorder.flush().await;
    ctx.store.key_activity(tenant_id, key_id, windows(ctx)).await
}

pub async fn page(
    ctx: &Context,
    caller: &Caller,
    params: &PaginationParams<KeyListFilter, KeyPageSelector>,
    limit: u32,
) -> Result<ResultsPage<Key>, dropshot::HttpError> {
    let (filter, after) = match &params.page {
        WhichPage::First(filter) => (filter.clone(), None),
        WhichPage::Next(sel) => (
            KeyListFilter {
                include_revoked: Some(sel.include_revoked),
                search: sel.search.clone(),
                sort: Some(sel.sort),
                direction: Some(sel.direction),
            },
            Some((sel.after_value, sel.id.as_str())),
        ),
    };
    let search = filter.search.as_deref().unwrap_or("").trim();
    if search.chars().count() > MAX_SEARCH_CHARS {
        return Err(
            Error::invalid(format!("search is limited to {MAX_SEARCH_CHARS} characters")).into()
        );
    }
    let sort = filter.sort.unwrap_or_default();
    let direction = filter.direction.unwrap_or_default();
    ctx.meter.recorder.flush().await;
    let rows = ctx
        .store
        .list_keys(&KeyQuery {
            tenant_id: &caller.tenant_id,
            include_revoked: filter.include_revoked.unwrap_or(false),
            search,
            sort,
            direction,
            after,
            limit,
            windows: windows(ctx),
        })
        .await?;
    let mut keyed = Vec::with_capacity(rows.len());
    for row in rows {
        let value = row.sort_value(sort, direction);
        keyed.push((value, super::to_wire(row.key, row.activity)?));
    }
    let selector = |(value, key): &(i64, Key), _: &KeyListFilter| KeyPageSelector {
        include_revoked: filter.include_revoked.unwrap_or(false),
        search: (!search.is_empty()).then(|| search.to_string()),
        sort,
        direction,
        after_value: *value,
        id: key.id.clone(),
    };
    let page = ResultsPage::new(keyed, &filter, selector)?;
    Ok(ResultsPage {
        next_page: page.next_page,
        items: page.items.into_iter().map(|(_, k)| k).collect(),
    })
}
