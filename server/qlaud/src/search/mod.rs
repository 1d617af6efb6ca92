//! Semantic search over thread turns: `POST /v1/search`.
//!
//! Turns are embedded in the background ([`indexer`]) by the in-process
//! model ([`crate::embed`]) into the store's vector index: sqlite-vec's
//! cosine distance over the caller's rows on SQLite (an exact scan), an
//! HNSW index of pgvector on PostgreSQL.

pub mod billing;
pub mod indexer;
pub mod sqlite_vec;

use std::sync::Arc;

use qlaud_api::{
    KeyScope, MAX_QUERY_BYTES, MAX_SEARCH_LIMIT, SearchHit, SearchRequest, SearchResults,
};

use crate::auth::Caller;
use crate::context::Context;
use crate::embed::{Embedder, MODEL_NAME};
use crate::error::{Error, Result};
use crate::meter::estimate::Estimate;
use crate::meter::{Endpoint, Metered, Usage};
use crate::store::{VectorIndex, VectorQuery, parse_role, role_str};

/// Search's state in the server.
pub struct Search {
    pub embedder: Arc<Embedder>,
    /// `None` on a PostgreSQL store without pgvector: search answers 503.
    pub index: Option<VectorIndex>,
}

impl Search {
    /// No model, no index: every search is 503 (a server built by hand
    /// without search).
    pub fn off() -> Search {
        Search { embedder: Embedder::off(), index: None }
    }
}

/// Hits when the request names no limit.
const DEFAULT_LIMIT: u32 = 10;

/// Embeds the query with the local model, metered to the caller as one
/// call of that model (at its price, $0 unless the operator sets one), so a
/// priced search is capped like any other call.
async fn embed_query(ctx: &Context, caller: &Caller, query: &str) -> Result<Vec<f32>> {
    let started = std::time::Instant::now();
    let embedder = &ctx.search.embedder;
    let model = ctx
        .gateway
        .catalog
        .model(MODEL_NAME)
        .cloned()
        .ok_or_else(|| Error::Unavailable(format!("the catalog has no model {MODEL_NAME}")))?;
    let tokens = embedder.count_tokens(vec![query.to_string()]).await?;
    let tokens = tokens.iter().map(|n| *n as u64).sum();
    let estimate = Estimate {
        prompt_tokens: tokens,
        max_output: 0,
        choices: 1,
        extra_output: 0,
        units: Default::default(),
    };
    let mut call =
        Metered::admit(&ctx.meter, caller, model, Endpoint::Embeddings, false, started, &estimate)
            .await?;
    match embedder.embed(vec![query.to_string()]).await {
        Ok(mut v) => {
            call.settle(200, Usage { input_tokens: tokens, ..Default::default() }).await;
            v.pop().map(|(v, _)| v).ok_or_else(|| Error::Internal("no vector".into()))
        }
        Err(e) => {
            call.settle(503, Usage::default()).await;
            Err(e.into())
        }
    }
}

pub async fn search(ctx: &Context, caller: &Caller, req: SearchRequest) -> Result<SearchResults> {
    let query = req.query.trim();
    if query.is_empty() {
        return Err(Error::invalid("query must not be empty"));
    }
    if req.query.len() > MAX_QUERY_BYTES {
        return Err(Error::invalid(format!(
            "query is {} bytes long; the limit is {MAX_QUERY_BYTES}",
            req.query.len()
        )));
    }
    let limit = req.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_SEARCH_LIMIT).contains(&limit) {
        return Err(Error::invalid(format!("limit must be 1 to {MAX_SEARCH_LIMIT}")));
    }
    let owner = match caller.scope {
        KeyScope::Admin => None,
        KeyScope::Standard => Some(caller.key_id.as_str()),
    };
    if let (Some(own), Some(named)) = (owner, req.key_id.as_deref())
        && named != own
    {
        return Err(Error::Forbidden(
            "a standard key searches only its own threads: key_id must be its own id or absent"
                .into(),
        ));
    }
    if owner.is_none()
        && let Some(key_id) = req.key_id.as_deref()
    {
        // An unknown id, or another tenant's, is the same 404.
        ctx.store.get_key(&caller.tenant_id, key_id).await?;
    }
    if let Some(thread_id) = req.thread_id.as_deref() {
        ctx.store.get_thread(crate::threads::access(caller), thread_id).await?;
    }
    let from_ms = req.from.as_deref().map(|s| crate::usage::parse_time("from", s)).transpose()?;
    let to_ms = req.to.as_deref().map(|s| crate::usage::parse_time("to", s)).transpose()?;
    if let (Some(f), Some(t)) = (from_ms, to_ms)
        && f >= t
    {
        return Err(Error::invalid("from must be before to"));
    }
    let search = &ctx.search;
    let Some(index) = search.index else {
        return Err(Error::Unavailable(
            "search is unavailable: this server's PostgreSQL has no pgvector extension \
             (install pgvector; every managed PostgreSQL offers it)"
                .into(),
        ));
    };
    let vector = embed_query(ctx, caller, query).await?;
    let rows = ctx
        .store
        .search_vectors(
            &VectorQuery {
                tenant_id: &caller.tenant_id,
                owner,
                key_id: req.key_id.as_deref(),
                thread_id: req.thread_id.as_deref(),
                role: req.role.map(role_str),
                from_ms: from_ms.unwrap_or(i64::MIN),
                to_ms: to_ms.unwrap_or(i64::MAX),
                limit,
                vector: &vector,
            },
            index,
        )
        .await?;
    let data = rows
        .into_iter()
        .filter_map(|r| {
            Some(SearchHit {
                role: parse_role(&r.role)?,
                created_at: chrono::DateTime::from_timestamp_millis(r.created_ms)?,
                thread_id: r.thread_id,
                message_id: r.message_id,
                text: r.text,
                score: r.score,
            })
        })
        .collect();
    Ok(SearchResults { object: "list".into(), data, model: MODEL_NAME.into() })
}
