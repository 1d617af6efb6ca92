//! Console sessions: an admin key signs in once and the browser then holds
//! only an `HttpOnly; SameSite=Strict` cookie with a random token (never the
//! key). API calls made with the cookie must also carry the session's CSRF
//! token in `X-Qlaud-Csrf`, which a page of another site can neither read
//! nor send, and must not come from another origin.

use http::HeaderMap;
use qlaud_api::KeyScope;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::store::{SessionRow, Store, now_ms, parse_period, parse_scope};

pub const COOKIE: &str = "qlaud_session";
pub const CSRF_HEADER: &str = "x-qlaud-csrf";
/// A session ends after this long, whatever happens.
pub const LIFETIME_MS: i64 = 12 * 3_600_000;

/// A fresh session token: 32 bytes from the OS CSPRNG, hex.
pub fn new_token() -> String {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).expect("the OS random number generator works");
    hex::encode(buf)
}

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(format!("qlaud-session\0{token}").as_bytes()))
}

/// The session's CSRF token: derived from the cookie's token, so nothing
/// more is stored, and one-way, so the page that reads it learns nothing
/// that opens the session.
pub fn csrf_token(token: &str) -> String {
    hex::encode(Sha256::digest(format!("qlaud-csrf\0{token}").as_bytes()))
}

/// The session token in the request's cookies, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Refuses requests a browser sent on behalf of another site: an `Origin`
/// other than this server's, or `Sec-Fetch-Site: cross-site`.
pub fn check_same_origin(headers: &HeaderMap) -> Result<()> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("sec-fetch-site") == Some("cross-site") {
        return Err(Error::Forbidden("cross-site requests are refused".to_string()));
    }
    if let Some(origin) = header("origin") {
        // Behind a proxy that rewrites Host, the browser's host arrives in
        // X-Forwarded-Host.
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        let ours = [header("host"), header("x-forwarded-host")].into_iter().flatten().any(|h| {
            origin_host.eq_ignore_ascii_case(h.split(',').next().unwrap_or_default().trim())
        });
        if origin == "null" || !ours {
            return Err(Error::Forbidden(format!(
                "requests from origin {origin:?} are refused; the console is served by qlaud itself"
            )));
        }
    }
    Ok(())
}

/// The live session of the request's cookie, or an error saying why not.
pub async fn lookup(store: &Store, token: &str) -> Result<SessionRow> {
    store.find_session(&token_hash(token), now_ms()).await?.ok_or_else(|| {
        Error::Unauthenticated(
            "the console session has ended (signed out, expired, or its key was revoked); \
             sign in again"
                .to_string(),
        )
    })
}

/// The caller behind a session cookie, for API calls without a key:
/// `Ok(None)` when there is no cookie. The CSRF header is required on every
/// such call, reads included, so no cross-site request can use the cookie.
pub async fn caller_from_cookie(store: &Store, headers: &HeaderMap) -> Result<Option<Caller>> {
    let Some(token) = cookie_token(headers) else {
        return Ok(None);
    };
    check_same_origin(headers)?;
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let expected = csrf_token(token);
    if !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(Error::Forbidden(format!(
            "missing or wrong {CSRF_HEADER} header: calls made with the console's session \
             cookie must carry the session's CSRF token"
        )));
    }
    let row = lookup(store, token).await?;
    Ok(Some(caller(&row)))
}

pub fn caller(row: &SessionRow) -> Caller {
    Caller {
        tenant_id: row.tenant_id.clone(),
        key_id: row.key_id.clone(),
        scope: parse_scope(&row.scope).unwrap_or(KeyScope::Standard),
        period: parse_period(&row.period).unwrap_or_default(),
    }
}

/// `Set-Cookie` for a new session; `Secure` when the browser reached qlaud
/// over https (directly or through a proxy that says so).
pub fn set_cookie(token: &str, headers: &HeaderMap) -> String {
    let secure = if is_https(headers) { "; Secure" } else { "" };
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        LIFETIME_MS / 1000
    )
}

/// `Set-Cookie` that deletes the session cookie.
pub fn clear_cookie(headers: &HeaderMap) -> String {
    let secure = if is_https(headers) { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

fn is_https(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    header("x-forwarded-proto").eq_ignore_ascii_case("https")
        || header("origin").starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_token_is_found_among_others() {
        let t = "a".repeat(64);
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, format!("x=1; {COOKIE}={t}; y=2").parse().unwrap());
        assert_eq!(cookie_token(&h), Some(t.as_str()));
        h.insert(http::header::COOKIE, format!("{COOKIE}=short").parse().unwrap());
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn other_origins_are_refused() {
        let mut h = HeaderMap::new();
        h.insert("host", "127.0.0.1:8080".parse().unwrap());
        assert!(check_same_origin(&h).is_ok());
        h.insert("origin", "http://127.0.0.1:8080".parse().unwrap());
        assert!(check_same_origin(&h).is_ok());
        h.insert("origin", "https://evil.example".parse().unwrap());
        assert!(check_same_origin(&h).is_err());
        h.insert("origin", "https://qlaud.example.com".parse().unwrap());
        h.insert("x-forwarded-host", "qlaud.example.com".parse().unwrap());
        assert!(check_same_origin(&h).is_ok());
    }

    #[test]
    fn csrf_token_differs_from_the_session_token() {
        let t = new_token();
        assert_ne!(csrf_token(&t), t);
        assert_ne!(csrf_token(&t), token_hash(&t));
    }
}
