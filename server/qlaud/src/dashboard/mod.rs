//! The tenant's console, served by `qlaud serve` itself at `/dashboard`
//! from files compiled into the binary (no CDN, works offline).
//!
//! These routes sit outside the published API, like `/health`: they are
//! the page, its files, and signing in and out. Everything the page shows
//! or changes goes through the public API (`/v1/…`), authenticated by the
//! session cookie plus the CSRF header, so the console shows exactly what
//! the API says.

mod assets;
pub mod session;

use dropshot::{ApiDescription, Body, HttpError, Path, RequestContext, endpoint};
use http::{HeaderMap, Response, StatusCode, header};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::Error;
use crate::store::{SessionRow, now_ms};

/// Adds the console's routes to the server's API.
pub fn register(api: &mut ApiDescription<Context>) -> anyhow::Result<()> {
    let err = |e: dropshot::ApiDescriptionRegisterError| anyhow::anyhow!("{e}");
    api.register(root).map_err(err)?;
    api.register(index).map_err(err)?;
    api.register(asset).map_err(err)?;
    api.register(sign_in).map_err(err)?;
    api.register(session_info).map_err(err)?;
    api.register(sign_out).map_err(err)?;
    Ok(())
}

/// Headers every console response carries: a strict CSP (only the
/// console's own files; no inline script or style, no framing), and no
/// caching of anything that may hold tenant data.
fn secured(status: StatusCode, content_type: &str) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::CACHE_CONTROL, "no-store")
}

fn redirect(to: &str) -> Result<Response<Body>, HttpError> {
    Ok(secured(StatusCode::FOUND, "text/plain; charset=utf-8")
        .header(header::LOCATION, to)
        .body(Body::from(format!("see {to}")))
        .expect("a valid response"))
}

/// `/` leads to the console.
#[endpoint { method = GET, path = "/", unpublished = true }]
async fn root(_rqctx: RequestContext<Context>) -> Result<Response<Body>, HttpError> {
    redirect("/dashboard")
}

/// The console's page (one page; views are chosen by the URL fragment).
#[endpoint { method = GET, path = "/dashboard", unpublished = true }]
async fn index(_rqctx: RequestContext<Context>) -> Result<Response<Body>, HttpError> {
    Ok(secured(StatusCode::OK, "text/html; charset=utf-8")
        .body(Body::from(assets::INDEX))
        .expect("a valid response"))
}

#[derive(Deserialize, JsonSchema)]
struct AssetPath {
    file: String,
}

/// The console's scripts, styles and images.
#[endpoint { method = GET, path = "/dashboard/assets/{file}", unpublished = true }]
async fn asset(
    _rqctx: RequestContext<Context>,
    path: Path<AssetPath>,
) -> Result<Response<Body>, HttpError> {
    let file = path.into_inner().file;
    let Some((content_type, body)) = assets::get(&file) else {
        return Err(Error::not_found("asset", file).into());
    };
    Ok(secured(StatusCode::OK, content_type).body(Body::from(body)).expect("a valid response"))
}

/// What the page learns about its session: who is signed in, and the CSRF
/// token its API calls must carry.
#[derive(Serialize)]
struct SessionInfo {
    tenant_id: String,
    key_id: String,
    key_name: String,
    csrf_token: String,
    expires_at: chrono::DateTime<chrono::Utc>,
}

fn info(row: &SessionRow, token: &str) -> SessionInfo {
    SessionInfo {
        tenant_id: row.tenant_id.clone(),
        key_id: row.key_id.clone(),
        key_name: row.key_name.clone(),
        csrf_token: session::csrf_token(token),
        expires_at: chrono::DateTime::from_timestamp_millis(row.expires_ms).unwrap_or_default(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    admin_key: String,
}

/// Signs in with an admin key (in the JSON body, never the URL) and sets
/// the session cookie. Standard keys are refused.
#[endpoint {
    method = POST,
    path = "/dashboard/session",
    unpublished = true,
    request_body_max_bytes = 4096,
}]
async fn sign_in(
    rqctx: RequestContext<Context>,
    body: qlaud_api::BytesBody,
) -> Result<Response<Body>, HttpError> {
    let ctx = rqctx.context();
    let headers = rqctx.request.headers();
    session::check_same_origin(headers)?;
    // A JSON body needs a CORS preflight from another site, which qlaud
    // never grants: no other page can sign a browser in.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(
            Error::invalid("send {\"admin_key\": \"qlk_live_…\"} as application/json").into()
        );
    }
    let SignIn { admin_key } = serde_json::from_slice(body.as_bytes())
        .map_err(|e| Error::invalid(format!("expected {{\"admin_key\": \"…\"}}: {e}")))?;
    let mut key_headers = HeaderMap::new();
    let value = admin_key
        .trim()
        .parse()
        .map_err(|_| Error::Unauthenticated("invalid API key".to_string()))?;
    key_headers.insert("x-api-key", value);
    let caller = ctx.authenticate(&key_headers).await?;
    if caller.scope != qlaud_api::KeyScope::Admin {
        return Err(Error::Forbidden(
            "standard (end-user) keys cannot sign in to the console; use an admin key".to_string(),
        )
        .into());
    }
    let token = session::new_token();
    let now = now_ms();
    let hash = session::token_hash(&token);
    ctx.store
        .create_session(&hash, &caller.tenant_id, &caller.key_id, now, now + session::LIFETIME_MS)
        .await?;
    let row = session::lookup(&ctx.store, &token).await?;
    let out = info(&row, &token);
    tracing::info!(tenant_id = row.tenant_id, key_id = row.key_id, "console sign-in");
    Ok(secured(StatusCode::OK, "application/json")
        .header(header::SET_COOKIE, session::set_cookie(&token, headers))
        .body(Body::from(serde_json::to_vec(&out).expect("serializes")))
        .expect("a valid response"))
}

/// Who is signed in, and the session's CSRF token (readable only by the
/// console's own page: browsers keep other sites from reading it).
#[endpoint { method = GET, path = "/dashboard/session", unpublished = true }]
async fn session_info(rqctx: RequestContext<Context>) -> Result<Response<Body>, HttpError> {
    let ctx = rqctx.context();
    let headers = rqctx.request.headers();
    session::check_same_origin(headers)?;
    let Some(token) = session::cookie_token(headers) else {
        return Err(Error::Unauthenticated("not signed in".to_string()).into());
    };
    let row = session::lookup(&ctx.store, token).await?;
    let out = info(&row, token);
    Ok(secured(StatusCode::OK, "application/json")
        .body(Body::from(serde_json::to_vec(&out).expect("serializes")))
        .expect("a valid response"))
}

/// Signs out: the session is revoked in the store (in every qlaud process
/// at once) and the cookie cleared. Needs the CSRF header.
#[endpoint { method = DELETE, path = "/dashboard/session", unpublished = true }]
async fn sign_out(rqctx: RequestContext<Context>) -> Result<Response<Body>, HttpError> {
    let ctx = rqctx.context();
    let headers = rqctx.request.headers();
    if let Some(token) = session::cookie_token(headers) {
        // Checks origin and CSRF; an ended session has nothing to revoke.
        match session::caller_from_cookie(&ctx.store, headers).await {
            Ok(_) | Err(Error::Unauthenticated(_)) => {}
            Err(e) => return Err(e.into()),
        }
        ctx.store.revoke_session(&session::token_hash(token), now_ms()).await?;
    }
    Ok(secured(StatusCode::NO_CONTENT, "text/plain; charset=utf-8")
        .header(header::SET_COOKIE, session::clear_cookie(headers))
        .body(Body::empty())
        .expect("a valid response"))
}
