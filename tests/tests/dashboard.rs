//! The console's server side, end to end on SQLite and PostgreSQL: pages
//! and headers, sign-in with an admin key only, the session cookie, CSRF
//! and origin checks on API calls made with it, and sign-out.

use qlaud_tests::{Backend, TestServer, backend_tests};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

backend_tests!(
    pages_are_served_with_a_strict_policy,
    admin_key_signs_in_and_standard_keys_cannot,
    cookie_calls_need_the_csrf_token_and_same_origin,
    sign_out_and_key_revocation_end_the_session,
);

/// A client that follows no redirects, so they can be checked.
fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

struct Session {
    cookie: String,
    csrf: String,
    set_cookie: String,
    body: Value,
}

async fn sign_in(
    t: &TestServer,
    key: &str,
    extra: &[(&str, &str)],
) -> Result<Session, (u16, Value)> {
    let mut req =
        http().post(format!("{}/dashboard/session", t.base_url)).json(&json!({"admin_key": key}));
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let set_cookie = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status != 200 {
        return Err((status, body));
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let csrf = body["csrf_token"].as_str().unwrap().to_string();
    Ok(Session { cookie, csrf, set_cookie, body })
}

/// An API call with the session cookie (and the CSRF header when given).
async fn with_cookie(
    t: &TestServer,
    method: reqwest::Method,
    path: &str,
    s: &Session,
    csrf: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut headers = HeaderMap::new();
    headers.insert("cookie", HeaderValue::from_str(&s.cookie).unwrap());
    if let Some(c) = csrf {
        headers.insert("x-qlaud-csrf", HeaderValue::from_str(c).unwrap());
    }
    let mut req = http().request(method, format!("{}{path}", t.base_url)).headers(headers);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn pages_are_served_with_a_strict_policy(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let resp = http().get(format!("{}/", t.base_url)).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "/dashboard");
    let resp = http().get(format!("{}/dashboard", t.base_url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = resp.text().await.unwrap();
    // No inline script: every script is a file of the console's own.
    assert!(html.contains("<script src=\"/dashboard/assets/app.js\""), "{html}");
    assert!(!html.contains("<script>") && !html.contains("style=\""), "{html}");
    for (file, kind) in
        [("app.js", "text/javascript"), ("app.css", "text/css"), ("logo.svg", "image/svg+xml")]
    {
        let resp =
            http().get(format!("{}/dashboard/assets/{file}", t.base_url)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{file}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with(kind), "{file}");
    }
    let resp = http().get(format!("{}/dashboard/assets/nope.js", t.base_url)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    // Not signed in: the session endpoint says so.
    let resp = http().get(format!("{}/dashboard/session", t.base_url)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    t.stop().await;
}

async fn admin_key_signs_in_and_standard_keys_cannot(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let s = sign_in(&t, &t.master_key, &[]).await.unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(s.set_cookie.contains(attr), "{}", s.set_cookie);
    }
    assert!(!s.set_cookie.contains("Secure"), "plain http: {}", s.set_cookie);
    assert_eq!(s.body["tenant_id"], t.tenant_id.as_str());
    assert_eq!(s.body["key_name"], "master");
    // Neither the answer nor the cookie carries the key.
    assert!(!s.body.to_string().contains(&t.master_key));
    assert!(!s.set_cookie.contains(&t.master_key));
    // Behind TLS (a proxy that says so) the cookie is Secure.
    let tls = sign_in(&t, &t.master_key, &[("x-forwarded-proto", "https")]).await.unwrap();
    assert!(tls.set_cookie.contains("; Secure"), "{}", tls.set_cookie);
    // The session endpoint hands the page its CSRF token.
    let (status, info) =
        with_cookie(&t, reqwest::Method::GET, "/dashboard/session", &s, None, None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["csrf_token"], s.csrf.as_str());

    let user = t.mint(json!({"name": "end user"})).await;
    let (status, body) = sign_in(&t, user["secret"].as_str().unwrap(), &[]).await.err().unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("standard"), "{body}");
    let (status, _) = sign_in(&t, "qlk_live_not_a_key", &[]).await.err().unwrap();
    assert_eq!(status, 401);
    // A form post (what another site could send without a preflight) is refused.
    let resp = http()
        .post(format!("{}/dashboard/session", t.base_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("admin_key={}", t.master_key))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (status, _) =
        sign_in(&t, &t.master_key, &[("origin", "https://evil.example")]).await.err().unwrap();
    assert_eq!(status, 403);
    t.stop().await;
}

async fn cookie_calls_need_the_csrf_token_and_same_origin(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let s = sign_in(&t, &t.master_key, &[]).await.unwrap();
    let csrf = s.csrf.clone();
    let (status, keys) =
        with_cookie(&t, reqwest::Method::GET, "/v1/keys", &s, Some(&csrf), None).await;
    assert_eq!(status, 200, "{keys}");
    let count = keys["items"].as_array().unwrap().len();
    // A state change without the token, or with a wrong one, fails and
    // changes nothing.
    let mint = json!({"name": "from the console"});
    for bad in [None, Some("0".repeat(64).as_str()), Some("")] {
        let (status, body) =
            with_cookie(&t, reqwest::Method::POST, "/v1/keys", &s, bad, Some(mint.clone())).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["message"].as_str().unwrap().contains("x-qlaud-csrf"), "{body}");
    }
    let (_, keys) = with_cookie(&t, reqwest::Method::GET, "/v1/keys", &s, Some(&csrf), None).await;
    assert_eq!(keys["items"].as_array().unwrap().len(), count);
    // With the token it works.
    let (status, minted) =
        with_cookie(&t, reqwest::Method::POST, "/v1/keys", &s, Some(&csrf), Some(mint)).await;
    assert_eq!(status, 201, "{minted}");
    // Another origin is refused even with the token.
    let resp = http()
        .get(format!("{}/v1/keys", t.base_url))
        .header("cookie", &s.cookie)
        .header("x-qlaud-csrf", &csrf)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // A key in the headers still wins over the cookie (API clients).
    let user = t.mint(json!({"name": "u"})).await;
    let resp = http()
        .get(format!("{}/v1/keys", t.base_url))
        .header("cookie", &s.cookie)
        .header("x-qlaud-csrf", &csrf)
        .bearer_auth(user["secret"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "the standard key is the caller");
    t.stop().await;
}

async fn sign_out_and_key_revocation_end_the_session(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let s = sign_in(&t, &t.master_key, &[]).await.unwrap();
    let csrf = s.csrf.clone();
    // Sign-out is a state change too.
    let (status, _) =
        with_cookie(&t, reqwest::Method::DELETE, "/dashboard/session", &s, None, None).await;
    assert_eq!(status, 403);
    let (status, _) =
        with_cookie(&t, reqwest::Method::GET, "/v1/keys", &s, Some(&csrf), None).await;
    assert_eq!(status, 200);
    let resp = http()
        .delete(format!("{}/dashboard/session", t.base_url))
        .header("cookie", &s.cookie)
        .header("x-qlaud-csrf", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    // The session is revoked in the store, not just forgotten by the browser.
    let (status, body) =
        with_cookie(&t, reqwest::Method::GET, "/v1/keys", &s, Some(&csrf), None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) =
        with_cookie(&t, reqwest::Method::GET, "/dashboard/session", &s, None, None).await;
    assert_eq!(status, 401);

    // Revoking the admin key behind a session ends it at once.
    let other = t.mint(json!({"name": "ops", "scope": "admin"})).await;
    let s2 = sign_in(&t, other["secret"].as_str().unwrap(), &[]).await.unwrap();
    let (status, _) =
        with_cookie(&t, reqwest::Method::GET, "/v1/keys", &s2, Some(&s2.csrf), None).await;
    assert_eq!(status, 200);
    let (status, _) = t
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/keys/{}", other["id"].as_str().unwrap()),
            Some(&t.master_key),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) =
        with_cookie(&t, reqwest::Method::GET, "/v1/keys", &s2, Some(&s2.csrf), None).await;
    assert_eq!(status, 401);
    // Sessions live in the store: the row is there, revoked.
    let pool = qlaud_tests::store_pool(&t.db.url).await;
    let revoked: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM dashboard_sessions WHERE revoked_ms IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(revoked, 1);
    pool.close().await;
    t.stop().await;
}
