//! Keys end to end: the seed's demo, the SDK's key lifecycle, auth, tenant
//! isolation and bad input, on SQLite and PostgreSQL.

use futures::TryStreamExt;
use qlaud::types;
use qlaud_tests::{Backend, RawBody, TestServer, backend_tests};
use reqwest::Method;
use serde_json::json;

backend_tests!(
    seed_demo_mints_a_capped_key,
    key_lifecycle_through_the_sdk,
    list_pages_through_every_key,
    auth_is_required_and_checked,
    standard_keys_cannot_manage_keys,
    tenants_cannot_see_each_other,
    bad_input_is_refused_and_changes_nothing,
    update_changes_only_what_is_sent,
);

async fn seed_demo_mints_a_capped_key(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let (status, body) = t
        .request(
            Method::POST,
            "/v1/keys",
            Some(&t.master_key),
            Some(RawBody::Text(r#"{"name":"user_42","max_spend_usd":5}"#.into())),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("key_"));
    let secret = body["secret"].as_str().unwrap();
    assert!(secret.starts_with("qlk_live_") && secret.len() >= 9 + 32, "{secret}");
    assert_eq!(body["scope"], "standard");
    // Whole dollars come back as the integer the client sent.
    assert_eq!(serde_json::to_string(&body["max_spend_usd"]).unwrap(), "5");
    assert_eq!(body["max_spend_micros"], 5_000_000);
    assert_eq!(body["period"], "monthly");
    assert_eq!(body["status"], "active");
    assert_eq!(body["name"], "user_42");
    // The secret is shown once: fetching the key never returns it.
    let (status, got) = t
        .request(
            Method::GET,
            &format!("/v1/keys/{}", body["id"].as_str().unwrap()),
            Some(&t.master_key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(got.get("secret").is_none());
    assert!(!got.to_string().contains(secret));
    // The same with `x-api-key`, as the Anthropic clients send it.
    let resp = t
        .http
        .post(format!("{}/v1/keys", t.base_url))
        .header("x-api-key", &t.master_key)
        .json(&json!({"name": "user_43", "max_spend_usd": 0.25}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["max_spend_micros"], 250_000);
    assert_eq!(body["max_spend_usd"], 0.25);
    t.stop().await;
}

async fn key_lifecycle_through_the_sdk(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let admin = t.client(&t.master_key);
    let minted = admin
        .mint_key()
        .body(
            types::MintKeyRequest::builder()
                .name("user_42")
                .max_spend_usd(Some(types::Usd(5.0)))
                .period(Some(types::Period::Daily))
                .metadata(Some([("stripe_customer_id".to_string(), "cus_123".to_string())].into())),
        )
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(minted.scope, types::KeyScope::Standard);
    assert_eq!(minted.max_spend_micros, Some(5_000_000));
    assert_eq!(minted.period, types::Period::Daily);
    assert_eq!(minted.metadata["stripe_customer_id"], "cus_123");

    // The new key authenticates (it is refused on an admin endpoint with 403,
    // not 401).
    let user = t.client(&minted.secret);
    let err = user.list_keys().send().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(403));

    // Rotate: same id, new secret; the old one stops working at once.
    let rotated = admin.rotate_key().key_id(&minted.id).send().await.unwrap().into_inner();
    assert_eq!(rotated.id, minted.id);
    assert_ne!(rotated.secret, minted.secret);
    assert!(rotated.rotated_at.is_some());
    assert_eq!(rotated.max_spend_micros, Some(5_000_000));
    let err = user.list_keys().send().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
    let err = t.client(&rotated.secret).list_keys().send().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(403));

    // Disable and enable.
    let disabled = admin
        .update_key()
        .key_id(&minted.id)
        .body(types::UpdateKeyRequest::builder().disabled(Some(true)))
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(disabled.status, types::KeyStatus::Disabled);
    let err = t.client(&rotated.secret).list_keys().send().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
    admin
        .update_key()
        .key_id(&minted.id)
        .body(types::UpdateKeyRequest::builder().disabled(Some(false)))
        .send()
        .await
        .unwrap();
    let err = t.client(&rotated.secret).list_keys().send().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(403));

    // Revoke: gone from the default list, still fetchable, never usable.
    admin.revoke_key().key_id(&minted.id).send().await.unwrap();
    let err = t.client(&rotated.secret).list_keys().send().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
    let got = admin.get_key().key_id(&minted.id).send().await.unwrap().into_inner();
    assert_eq!(got.status, types::KeyStatus::Revoked);
    assert!(got.revoked_at.is_some());
    let listed: Vec<types::Key> = admin.list_keys().stream().try_collect().await.unwrap();
    assert!(listed.iter().all(|k| k.id != minted.id));
    let listed: Vec<types::Key> =
        admin.list_keys().include_revoked(true).stream().try_collect().await.unwrap();
    assert!(listed.iter().any(|k| k.id == minted.id));
    // A revoked key can be neither revoked again, rotated nor changed.
    for status in [
        admin.revoke_key().key_id(&minted.id).send().await.unwrap_err().status(),
        admin.rotate_key().key_id(&minted.id).send().await.unwrap_err().status(),
        admin
            .update_key()
            .key_id(&minted.id)
            .body(types::UpdateKeyRequest::builder().name(Some("x".into())))
            .send()
            .await
            .unwrap_err()
            .status(),
    ] {
        assert_eq!(status.map(|s| s.as_u16()), Some(409));
    }
    // The master key cannot lock itself out.
    let master_id = listed.iter().find(|k| k.scope == types::KeyScope::Admin).unwrap().id.clone();
    let err = admin.revoke_key().key_id(&master_id).send().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(409));
    t.stop().await;
}

async fn list_pages_through_every_key(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let admin = t.client(&t.master_key);
    let mut minted = Vec::new();
    for i in 0..7 {
        let k = admin
            .mint_key()
            .body(types::MintKeyRequest::builder().name(format!("user_{i}")))
            .send()
            .await
            .unwrap()
            .into_inner();
        minted.push(k.id);
    }
    // Pages of 3 by hand, then the SDK's stream helper.
    let mut seen = Vec::new();
    let mut page = admin
        .list_keys()
        .limit(std::num::NonZeroU32::new(3).unwrap())
        .send()
        .await
        .unwrap()
        .into_inner();
    loop {
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|k| k.id.clone()));
        let Some(token) = page.next_page.clone() else {
            break;
        };
        page = admin
            .list_keys()
            .limit(std::num::NonZeroU32::new(3).unwrap())
            .page_token(token)
            .send()
            .await
            .unwrap()
            .into_inner();
    }
    let streamed: Vec<String> = admin
        .list_keys()
        .limit(std::num::NonZeroU32::new(2).unwrap())
        .stream()
        .map_ok(|k| k.id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(seen, streamed);
    // The master key plus the seven, each once, oldest first.
    assert_eq!(seen.len(), 8);
    assert_eq!(&seen[1..], &minted[..]);
    t.stop().await;
}

async fn auth_is_required_and_checked(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let (status, body) = t.request(Method::GET, "/v1/keys", None, None).await;
    assert_eq!(status, 401);
    assert!(body["message"].as_str().unwrap().contains("missing API key"), "{body}");
    assert_eq!(body["error_code"], "Unauthorized");
    for bad in
        ["qlk_live_0000000000000000000000000000000000000000", "sk-something", "qlk_live_", ""]
    {
        let (status, _) = t.request(Method::GET, "/v1/keys", Some(bad), None).await;
        assert_eq!(status, 401, "{bad:?}");
    }
    let resp = t
        .http
        .get(format!("{}/v1/keys", t.base_url))
        .header("authorization", format!("Basic {}", t.master_key))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Both header forms work for a valid key.
    let resp = t
        .http
        .get(format!("{}/v1/keys", t.base_url))
        .header("x-api-key", &t.master_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, _) = t.request(Method::GET, "/v1/keys", Some(&t.master_key), None).await;
    assert_eq!(status, 200);
    t.stop().await;
}

async fn standard_keys_cannot_manage_keys(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let (_, user) = t
        .request(
            Method::POST,
            "/v1/keys",
            Some(&t.master_key),
            Some(RawBody::Json(json!({"name": "u"}))),
        )
        .await;
    let user_key = user["secret"].as_str().unwrap();
    let id = user["id"].as_str().unwrap();
    let attempts = [
        (Method::POST, "/v1/keys".to_string(), Some(RawBody::Json(json!({"name": "x"})))),
        (Method::GET, "/v1/keys".to_string(), None),
        (Method::GET, format!("/v1/keys/{id}"), None),
        (
            Method::PATCH,
            format!("/v1/keys/{id}"),
            Some(RawBody::Json(json!({"max_spend_usd": 1000}))),
        ),
        (Method::POST, format!("/v1/keys/{id}/rotate"), None),
        (Method::DELETE, format!("/v1/keys/{id}"), None),
    ];
    for (method, path, body) in attempts {
        let (status, body) = t.request(method.clone(), &path, Some(user_key), body).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(body["message"].as_str().unwrap().contains("admin key"));
    }
    // Nothing changed: the key kept its cap and secret.
    let (_, after) =
        t.request(Method::GET, &format!("/v1/keys/{id}"), Some(&t.master_key), None).await;
    assert_eq!(after["max_spend_usd"], serde_json::Value::Null);
    assert_eq!(after["rotated_at"], serde_json::Value::Null);
    t.stop().await;
}

async fn tenants_cannot_see_each_other(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let (other_tenant, other_master) = t.create_tenant("other").await;
    assert_ne!(other_tenant, t.tenant_id);
    let (_, mine) = t
        .request(
            Method::POST,
            "/v1/keys",
            Some(&t.master_key),
            Some(RawBody::Json(json!({"name": "mine"}))),
        )
        .await;
    let id = mine["id"].as_str().unwrap();
    let attempts = [
        (Method::GET, format!("/v1/keys/{id}"), None),
        (Method::PATCH, format!("/v1/keys/{id}"), Some(RawBody::Json(json!({"disabled": true})))),
        (Method::POST, format!("/v1/keys/{id}/rotate"), None),
        (Method::DELETE, format!("/v1/keys/{id}"), None),
    ];
    for (method, path, body) in attempts {
        let again = body.as_ref().map(|b| match b {
            RawBody::Json(v) => RawBody::Json(v.clone()),
            RawBody::Text(t) => RawBody::Text(t.clone()),
        });
        let (status, body) = t.request(method.clone(), &path, Some(&other_master), body).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        // The same answer as for an id that never existed: the same status
        // and body, but for the id it names and its own request id.
        let (status_missing, body_missing) = t
            .request(method.clone(), &path.replace(id, "key_0000"), Some(&other_master), again)
            .await;
        assert_eq!(status_missing, 404, "{body_missing}");
        let normalise = |mut v: serde_json::Value, key_id: &str| {
            assert!(v["request_id"].is_string(), "{v}");
            v["request_id"] = json!("…");
            let message = v["message"].as_str().unwrap_or_default().replace(key_id, "{id}");
            v["message"] = json!(message);
            v
        };
        assert_eq!(
            normalise(body, id),
            normalise(body_missing, "key_0000"),
            "{method} {path}: another tenant's key is told apart from a missing one"
        );
    }
    let (_, list) = t.request(Method::GET, "/v1/keys", Some(&other_master), None).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "only the other tenant's master key: {list}");
    // Mine is untouched.
    let (_, after) =
        t.request(Method::GET, &format!("/v1/keys/{id}"), Some(&t.master_key), None).await;
    assert_eq!(after["status"], "active");
    assert_eq!(after["rotated_at"], serde_json::Value::Null);
    t.stop().await;
}

async fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let key = t.master_key.clone();
    let count = || async {
        let (_, list) = t
            .request(Method::GET, "/v1/keys?include_revoked=true&limit=100", Some(&key), None)
            .await;
        list["items"].as_array().unwrap().len()
    };
    let before = count().await;
    let long_name = "x".repeat(10 * 1024);
    let huge_metadata: serde_json::Map<String, serde_json::Value> =
        (0..60).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases: Vec<(String, &str)> = vec![
        ("{\"name\": \"x\"".into(), "parse"),
        ("not json".into(), "parse"),
        (r#"{"name":"x","colour":"red"}"#.into(), "unknown field"),
        (r#"{"max_spend_usd":5}"#.into(), "name"),
        (r#"{"name":""}"#.into(), "empty"),
        (r#"{"name":"   "}"#.into(), "empty"),
        (json!({"name": long_name}).to_string(), "limit"),
        (r#"{"name":"a\u0000b"}"#.into(), "control"),
        (r#"{"name":"x","max_spend_usd":-1}"#.into(), "negative"),
        (r#"{"name":"x","max_spend_usd":-0.000001}"#.into(), "negative"),
        (r#"{"name":"x","max_spend_usd":NaN}"#.into(), "parse"),
        (r#"{"name":"x","max_spend_usd":"5"}"#.into(), "number"),
        (r#"{"name":"x","max_spend_usd":1e12}"#.into(), "maximum"),
        (r#"{"name":"x","max_spend_usd":1e400}"#.into(), "parse"),
        (r#"{"name":"x","max_spend_usd":0.0000001}"#.into(), "micro-dollar"),
        (r#"{"name":"x","period":"hourly"}"#.into(), "period"),
        (r#"{"name":"x","scope":"root"}"#.into(), "scope"),
        (json!({"name": "x", "metadata": huge_metadata}).to_string(), "pairs"),
        (json!({"name": "x", "metadata": {"k": "v".repeat(600)}}).to_string(), "longer"),
        (json!({"name": "x", "metadata": {"k": 5}}).to_string(), "metadata"),
    ];
    for (body, expect) in &cases {
        let (status, resp) = t
            .request(Method::POST, "/v1/keys", Some(&key), Some(RawBody::Text(body.clone())))
            .await;
        assert_eq!(status, 400, "{body}: {resp}");
        let msg = resp["message"].as_str().unwrap_or_default().to_lowercase();
        assert!(msg.contains(expect), "{body}: message {msg:?} should mention {expect:?}");
    }
    // Bodies over the limit are refused before parsing.
    let oversized = json!({"name": "x", "metadata": {"k": "v".repeat(100 * 1024)}}).to_string();
    let (status, resp) =
        t.request(Method::POST, "/v1/keys", Some(&key), Some(RawBody::Text(oversized))).await;
    assert_eq!(status, 413, "{resp}");
    assert!(resp["message"].as_str().unwrap().contains("maximum size"), "{resp}");
    // A form-encoded body gets a message that names the fix.
    let resp = t
        .http
        .post(format!("{}/v1/keys", t.base_url))
        .bearer_auth(&key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("application/json"));
    assert_eq!(count().await, before, "no bad request created a key");

    // The same checks on update, against a real key that must stay as it is.
    let (_, k) = t
        .request(
            Method::POST,
            "/v1/keys",
            Some(&key),
            Some(RawBody::Json(json!({"name": "keep", "max_spend_usd": 3}))),
        )
        .await;
    let path = format!("/v1/keys/{}", k["id"].as_str().unwrap());
    for body in [
        r#"{"max_spend_usd":-3}"#,
        r#"{"name":""}"#,
        r#"{"nme":"typo"}"#,
        r#"{"max_spend_usd":1,"remove_max_spend":true}"#,
        r#"{"disabled":"yes"}"#,
        "{}",
        "[]",
    ] {
        let (status, resp) =
            t.request(Method::PATCH, &path, Some(&key), Some(RawBody::Text(body.into()))).await;
        assert_eq!(status, 400, "{body}: {resp}");
    }
    let (_, after) = t.request(Method::GET, &path, Some(&key), None).await;
    assert_eq!(after["name"], "keep");
    assert_eq!(after["max_spend_micros"], 3_000_000);
    assert_eq!(after["updated_at"], k["updated_at"]);
    // Ids that do not exist.
    let (status, _) = t.request(Method::GET, "/v1/keys/key_nope", Some(&key), None).await;
    assert_eq!(status, 404);
    let (status, _) = t.request(Method::GET, "/v1/keys?page_token=garbage", Some(&key), None).await;
    assert_eq!(status, 400);
    t.stop().await;
}

async fn update_changes_only_what_is_sent(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let admin = t.client(&t.master_key);
    // Each update must move `updated_at` forward; a pause between calls
    // makes "forward" visible at the API's millisecond precision.
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(5));
    let k = admin
        .mint_key()
        .body(
            types::MintKeyRequest::builder()
                .name("a")
                .max_spend_usd(Some(types::Usd(2.5)))
                .metadata(Some([("plan".to_string(), "pro".to_string())].into())),
        )
        .send()
        .await
        .unwrap()
        .into_inner();
    pause().await;
    let u = admin
        .update_key()
        .key_id(&k.id)
        .body(types::UpdateKeyRequest::builder().name(Some("b".into())))
        .send()
        .await
        .unwrap()
        .into_inner();
    assert!(u.updated_at > k.updated_at, "{} !> {}", u.updated_at, k.updated_at);
    assert_eq!(u.created_at, k.created_at);
    let previous = u.updated_at;
    assert_eq!(u.name, "b");
    assert_eq!(u.max_spend_micros, Some(2_500_000));
    assert_eq!(u.metadata["plan"], "pro");
    pause().await;
    let u = admin
        .update_key()
        .key_id(&k.id)
        .body(
            types::UpdateKeyRequest::builder()
                .max_spend_usd(Some(types::Usd(10.0)))
                .period(Some(types::Period::Total))
                .metadata(Some(Default::default())),
        )
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (u.name.as_str(), u.max_spend_micros, u.period),
        ("b", Some(10_000_000), types::Period::Total)
    );
    assert!(u.metadata.is_empty());
    assert!(u.updated_at > previous, "{} !> {previous}", u.updated_at);
    let previous = u.updated_at;
    pause().await;
    let u = admin
        .update_key()
        .key_id(&k.id)
        .body(types::UpdateKeyRequest::builder().remove_max_spend(Some(true)))
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.max_spend_micros, None);
    assert_eq!(u.max_spend_usd, None);
    assert!(u.updated_at > previous, "{} !> {previous}", u.updated_at);
    // The stored key says the same as the answers did.
    let got = admin.get_key().key_id(&k.id).send().await.unwrap().into_inner();
    assert_eq!((got.updated_at, got.created_at), (u.updated_at, k.created_at));
    t.stop().await;
}
