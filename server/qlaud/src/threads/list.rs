//! Listing threads and a thread's messages, a page at a time in either
//! direction. `after` and `before` are chronological bounds whatever the
//! order; a page token carries the bounds narrowed by the page just read.

use dropshot::{HttpError, PaginationParams, RequestContext, ResultsPage, WhichPage};
use qlaud_api::{
    KeyScope, SortDirection, Thread, ThreadCursor, ThreadListFilter, ThreadMessage,
    ThreadMessageListFilter, ThreadMessagePageSelector, ThreadPageSelector,
};
use serde::Serialize;

use crate::auth::Caller;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::store::{MessageQuery, ThreadQuery, ThreadRow};

use super::{access, message_to_wire, to_wire};

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

/// `limit` of a listing: 1 to 100, 20 when omitted; refused above the
/// maximum rather than silently cut. dropshot's page limit answers its own
/// default for an omitted limit, so the query says whether one was sent.
pub fn page_limit<S, P>(
    rqctx: &RequestContext<Context>,
    params: &PaginationParams<S, P>,
) -> Result<u32, HttpError>
where
    S: Send + Sync + serde::de::DeserializeOwned + Serialize,
    P: Send + Sync + serde::de::DeserializeOwned + Serialize,
{
    let sent = rqctx
        .request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair.split('=').next() == Some("limit")));
    if !sent {
        return Ok(DEFAULT_LIMIT);
    }
    let n = rqctx.page_limit(params)?.get();
    if n > MAX_LIMIT {
        return Err(
            Error::invalid(format!("limit is {n}; it must be between 1 and {MAX_LIMIT}")).into()
        );
    }
    Ok(n)
}

/// Items of a page plus its token. One row more than the page is read, so
/// the last page says it is the last (`next_page` null) instead of leaving
/// an empty page to be fetched.
pub(crate) fn finish<T, S: Serialize>(
    mut items: Vec<T>,
    limit: u32,
    selector: impl Fn(&T) -> S,
) -> Result<ResultsPage<T>, HttpError> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let mut page = ResultsPage::new(items, &(), |item, _| selector(item))?;
    if !more {
        page.next_page = None;
    }
    Ok(page)
}

/// A page of `rows` (fetched `limit + 1` at a time, to tell whether more
/// follow) in wire form; `next` makes the selector of the page that
/// continues after the cursor of its last row.
pub(crate) fn page_of<R, W, C, S: Serialize>(
    rows: Vec<R>,
    limit: u32,
    cursor: impl Fn(&R) -> C,
    to_wire: impl Fn(R) -> Result<W>,
    next: impl Fn(&C) -> S,
) -> Result<ResultsPage<W>, HttpError> {
    let items = rows
        .into_iter()
        .map(|row| Ok((cursor(&row), to_wire(row)?)))
        .collect::<Result<Vec<_>>>()?;
    let page = finish(items, limit, |(last, _)| next(last))?;
    Ok(ResultsPage {
        next_page: page.next_page,
        items: page.items.into_iter().map(|(_, w)| w).collect(),
    })
}

fn cursor(row: &ThreadRow) -> ThreadCursor {
    ThreadCursor { created_ms: row.created_ms, id: row.id.clone() }
}

pub async fn threads(
    ctx: &Context,
    caller: &Caller,
    params: &PaginationParams<ThreadListFilter, ThreadPageSelector>,
    limit: u32,
) -> Result<ResultsPage<Thread>, HttpError> {
    let access = access(caller);
    let sel = match &params.page {
        WhichPage::Next(sel) => sel.clone(),
        WhichPage::First(filter) => {
            let key_id = match (caller.scope, &filter.key_id) {
                (_, None) => None,
                (KeyScope::Standard, Some(k)) if *k == caller.key_id => None,
                (KeyScope::Standard, Some(_)) => {
                    return Err(Error::Forbidden(
                        "a standard key sees only its own threads; leave key_id out".to_string(),
                    )
                    .into());
                }
                (KeyScope::Admin, Some(k)) => {
                    // 404 for ids of other tenants, as everywhere.
                    ctx.store.get_key(&caller.tenant_id, k).await?;
                    Some(k.clone())
                }
            };
            let bound = async |name: &str, id: &Option<String>| -> Result<Option<ThreadCursor>> {
                let Some(id) = id else { return Ok(None) };
                match ctx.store.get_thread(access, id).await {
                    Ok(row) => Ok(Some(cursor(&row))),
                    Err(Error::NotFound { .. }) => {
                        Err(Error::invalid(format!("{name}: no thread {id:?}")))
                    }
                    Err(e) => Err(e),
                }
            };
            ThreadPageSelector {
                key_id,
                order: filter.order.unwrap_or(SortDirection::Desc),
                after: bound("after", &filter.after).await?,
                before: bound("before", &filter.before).await?,
            }
        }
    };
    let rows = ctx
        .store
        .list_threads(&ThreadQuery {
            access,
            key_id: sel.key_id.as_deref(),
            order: sel.order,
            after: sel.after.as_ref().map(|c| (c.created_ms, c.id.as_str())),
            before: sel.before.as_ref().map(|c| (c.created_ms, c.id.as_str())),
            limit: limit + 1,
        })
        .await?;
    page_of(rows, limit, cursor, to_wire, |last| {
        let mut next = sel.clone();
        match sel.order {
            SortDirection::Asc => next.after = Some(last.clone()),
            SortDirection::Desc => next.before = Some(last.clone()),
        }
        next
    })
}

pub async fn messages(
    ctx: &Context,
    caller: &Caller,
    thread_id: &str,
    params: &PaginationParams<ThreadMessageListFilter, ThreadMessagePageSelector>,
    limit: u32,
) -> Result<ResultsPage<ThreadMessage>, HttpError> {
    // Access first: another key's thread is 404 before any parameter is
    // looked at.
    let thread = ctx.store.get_thread(access(caller), thread_id).await?;
    let sel = match &params.page {
        WhichPage::Next(sel) => sel.clone(),
        WhichPage::First(filter) => {
            let bound = async |name: &str, id: &Option<String>| -> Result<Option<i64>> {
                let Some(id) = id else { return Ok(None) };
                match ctx.store.get_message(&thread.tenant_id, &thread.id, id).await {
                    Ok(row) => Ok(Some(row.seq)),
                    Err(Error::NotFound { .. }) => {
                        Err(Error::invalid(format!("{name}: no message {id:?} in this thread")))
                    }
                    Err(e) => Err(e),
                }
            };
            ThreadMessagePageSelector {
                order: filter.order.unwrap_or(SortDirection::Desc),
                after_seq: bound("after", &filter.after).await?,
                before_seq: bound("before", &filter.before).await?,
            }
        }
    };
    let rows = ctx
        .store
        .list_messages(&MessageQuery {
            tenant_id: &thread.tenant_id,
            thread_id: &thread.id,
            order: sel.order,
            after_seq: sel.after_seq,
            before_seq: sel.before_seq,
            limit: limit + 1,
        })
        .await?;
    let items = rows
        .into_iter()
        .map(|row| Ok((row.seq, message_to_wire(row)?)))
        .collect::<Result<Vec<_>>>()?;
    let page = finish(items, limit, |(seq, _)| {
        let mut next = sel.clone();
        match sel.order {
            SortDirection::Asc => next.after_seq = Some(*seq),
            SortDirection::Desc => next.before_seq = Some(*seq),
        }
        next
    })?;
    Ok(ResultsPage {
        next_page: page.next_page,
        items: page.items.into_iter().map(|(_, m)| m).collect(),
    })
}
