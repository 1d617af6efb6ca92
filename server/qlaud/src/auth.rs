//! Who is calling: the key in `x-api-key` or `Authorization: Bearer`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use http::HeaderMap;
use qlaud_api::KeyScope;

use crate::error::{Error, Result};
use crate::keys::secret;
use crate::store::Store;

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant_id: String,
    pub key_id: String,
    pub scope: KeyScope,
    /// The key's cap window (as of authentication; admission re-checks it).
    pub period: qlaud_api::Period,
}

impl Caller {
    /// Refuses standard keys.
    pub fn require_admin(&self) -> Result<()> {
        match self.scope {
            KeyScope::Admin => Ok(()),
            KeyScope::Standard => Err(Error::Forbidden(
                "this operation needs an admin key; the key sent is a standard (end-user) key"
                    .to_string(),
            )),
        }
    }
}

/// The secret a request presents, if any. Each official client's own header
/// is accepted so it works unchanged: Anthropic's `x-api-key`, OpenAI's
/// `Authorization: Bearer`, ElevenLabs' `xi-api-key` and Deepgram's
/// `Authorization: Token`.
fn presented_secret(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if !v.is_empty() {
            return Some(v);
        }
    }
    // ElevenLabs' clients send `xi-api-key`.
    if let Some(v) = headers.get("xi-api-key").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if !v.is_empty() {
            return Some(v);
        }
    }
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = auth.split_once(' ')?;
    // Deepgram's clients send `Authorization: Token <key>`.
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// How long a successful lookup is reused. A key changed through this
/// process (revoked, rotated, disabled) is dropped from the cache at once;
/// one changed through another qlaud process on the same database stops
/// working here within this time. Spend caps never depend on the cache.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
const CACHE_MAX_ENTRIES: usize = 100_000;

/// Recently authenticated keys by secret hash, so the hot path does not read
/// the store for every request.
#[derive(Default)]
pub struct AuthCache {
    entries: RwLock<HashMap<String, (Caller, Instant)>>,
}

impl AuthCache {
    fn get(&self, hash: &str) -> Option<Caller> {
        let entries = self.entries.read().expect("not poisoned");
        let (caller, at) = entries.get(hash)?;
        (at.elapsed() < CACHE_TTL).then(|| caller.clone())
    }

    fn put(&self, hash: String, caller: Caller) {
        let mut entries = self.entries.write().expect("not poisoned");
        if entries.len() >= CACHE_MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        entries.insert(hash, (caller, Instant::now()));
    }

    /// Forgets every key: called on any change to a key in this process.
    pub fn clear(&self) {
        self.entries.write().expect("not poisoned").clear();
    }
}

/// Resolves the request's key to a caller, or says in a 401 what is wrong.
pub async fn authenticate(store: &Store, cache: &AuthCache, headers: &HeaderMap) -> Result<Caller> {
    let Some(presented) = presented_secret(headers) else {
        // The console's browser calls the API with its session cookie
        // instead of a key (never on the model hot path: a key comes first).
        if let Some(caller) = crate::dashboard::session::caller_from_cookie(store, headers).await? {
            return Ok(caller);
        }
        return Err(Error::Unauthenticated(
            "missing API key: send a qlaud key as `x-api-key: <key>` or \
             `Authorization: Bearer <key>`"
                .to_string(),
        ));
    };
    let invalid = || Error::Unauthenticated("invalid API key".to_string());
    if !secret::looks_like_secret(presented) {
        return Err(invalid());
    }
    let hash = secret::hash_hex(presented);
    if let Some(caller) = cache.get(&hash) {
        return Ok(caller);
    }
    let Some(row) = store.find_key_by_secret_hash(&hash).await? else {
        return Err(invalid());
    };
    // The lookup already matched the hash; comparing again in constant time
    // keeps the check itself free of timing differences.
    if !secret::hashes_match(&row.secret_hash, &hash) {
        return Err(invalid());
    }
    if row.revoked_ms.is_some() {
        return Err(Error::Unauthenticated("this API key has been revoked".to_string()));
    }
    if row.disabled != 0 {
        return Err(Error::Unauthenticated("this API key is disabled".to_string()));
    }
    let scope = crate::store::parse_scope(&row.scope).unwrap_or(KeyScope::Standard);
    let period = crate::store::parse_period(&row.period).unwrap_or_default();
    let caller = Caller { tenant_id: row.tenant_id, key_id: row.id, scope, period };
    cache.put(hash, caller.clone());
    Ok(caller)
}
