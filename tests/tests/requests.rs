//! The request log (`list_requests`) and what keys show of their activity
//! (`last_used_at`, `spend_micros`, search and sort in `list_keys`), end to
//! end on SQLite and PostgreSQL.

use futures::TryStreamExt;
use qlaud::types;
use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, TestServer, backend_tests, mock_toml};
use reqwest::Method;
use serde_json::{Value, json};

backend_tests!(
    request_log_lists_filters_and_pages,
    request_log_is_scoped_to_the_caller,
    keys_show_last_use_and_spend,
    keys_can_be_searched_and_sorted,
    usage_over_any_window_adds_up_the_log,
);

async fn get(t: &TestServer, path: &str, key: &str) -> (u16, Value) {
    t.request(Method::GET, path, Some(key), None).await
}

/// A model call with `key`; the status.
async fn call(t: &TestServer, key: &str, model: &str) -> u16 {
    let resp = t
        .http
        .post(format!("{}/v1/messages", t.base_url))
        .header("x-api-key", key)
        .json(&json!({"model": model, "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hello log"}]}))
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

fn secret(key: &Value) -> &str {
    key["secret"].as_str().unwrap()
}

fn id(key: &Value) -> &str {
    key["id"].as_str().unwrap()
}

async fn request_log_lists_filters_and_pages(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else {
        return;
    };
    let a = t.mint(json!({"name": "alice"})).await;
    let b = t.mint(json!({"name": "bob"})).await;
    for _ in 0..3 {
        assert_eq!(call(&t, secret(&a), "echo").await, 200);
    }
    assert_eq!(call(&t, secret(&b), "claude-test").await, 200);
    assert_eq!(call(&t, secret(&b), "claude-error-429").await, 429);

    let (status, page) = get(&t, "/v1/requests", &t.master_key).await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{page}");
    // Newest first, each with what a support dispute needs.
    let newest = &items[0];
    assert_eq!(newest["model"], "claude-error-429");
    assert_eq!(newest["status"], 429);
    assert_eq!(newest["cost_micros"], 0);
    assert_eq!(newest["key_name"], "bob");
    let times: Vec<&str> = items.iter().map(|i| i["created_at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let claude = &items[1];
    assert_eq!(
        (claude["model"].as_str(), claude["status"].as_u64()),
        (Some("claude-test"), Some(200))
    );
    assert!(claude["input_tokens"].as_i64().unwrap() > 0);
    assert!(claude["output_tokens"].as_i64().unwrap() > 0);
    assert!(claude["cost_micros"].as_i64().unwrap() > 0);
    assert!(claude["latency_ms"].as_i64().is_some());
    assert_eq!(claude["endpoint"], "messages");
    assert_eq!(claude["streamed"], false);
    // The log adds up to the usage report.
    let (_, usage) = get(&t, "/v1/usage", &t.master_key).await;
    let sum: i64 = items.iter().map(|i| i["cost_micros"].as_i64().unwrap()).sum();
    assert_eq!(usage["totals"]["cost_micros"], sum);

    // Filters: key, model, status (code and class), time.
    let count = |path: String| {
        let t = &t;
        async move {
            let (status, page) = get(t, &path, &t.master_key).await;
            assert_eq!(status, 200, "{path}: {page}");
            page["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(count(format!("/v1/requests?key_id={}", id(&a))).await, 3);
    assert_eq!(count("/v1/requests?model=claude-test".into()).await, 1);
    assert_eq!(count("/v1/requests?status=429".into()).await, 1);
    assert_eq!(count("/v1/requests?status=4xx".into()).await, 1);
    assert_eq!(count("/v1/requests?status=2xx".into()).await, 4);
    assert_eq!(count(format!("/v1/requests?key_id={}&status=2xx", id(&b))).await, 1);
    assert_eq!(count("/v1/requests?to=2020-01-01".into()).await, 0);
    assert_eq!(count("/v1/requests?from=2020-01-01&to=2100-01-01T00:00:00Z".into()).await, 5);
    for bad in ["status=abc", "status=9xx", "from=yesterday", "from=2026-02-01&to=2026-01-01"] {
        let (status, body) = get(&t, &format!("/v1/requests?{bad}"), &t.master_key).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error_code"], "InvalidRequest");
    }

    // Pages through the SDK: every entry once, the filter kept across pages.
    let admin = t.client(&t.master_key);
    let all: Vec<types::RequestLogEntry> = admin
        .list_requests()
        .limit(std::num::NonZeroU32::new(2).unwrap())
        .stream()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    let mut ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    let of_a: Vec<types::RequestLogEntry> = admin
        .list_requests()
        .key_id(id(&a))
        .limit(std::num::NonZeroU32::new(1).unwrap())
        .stream()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(of_a.len(), 3);
    assert!(of_a.iter().all(|e| e.key_name == "alice" && e.model == "echo"));
    t.stop().await;
}

async fn request_log_is_scoped_to_the_caller(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let a = t.mint(json!({"name": "a"})).await;
    let b = t.mint(json!({"name": "b"})).await;
    assert_eq!(call(&t, secret(&a), "echo").await, 200);
    assert_eq!(call(&t, secret(&b), "echo").await, 200);
    assert_eq!(call(&t, secret(&b), "echo").await, 200);
    // A standard key sees only itself, and may not ask for another key.
    let (status, page) = get(&t, "/v1/requests", secret(&a)).await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["key_id"], id(&a));
    let (status, _) = get(&t, &format!("/v1/requests?key_id={}", id(&a)), secret(&a)).await;
    assert_eq!(status, 200);
    let (status, body) = get(&t, &format!("/v1/requests?key_id={}", id(&b)), secret(&a)).await;
    assert_eq!(status, 403, "{body}");
    // Another tenant sees nothing of this one, and its ids are unknown there.
    let (_, other_admin) = t.create_tenant("other").await;
    let (status, page) = get(&t, "/v1/requests", &other_admin).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    let (status, _) = get(&t, &format!("/v1/requests?key_id={}", id(&a)), &other_admin).await;
    assert_eq!(status, 404);
    let (status, _) = t.request(Method::GET, "/v1/requests", None, None).await;
    assert_eq!(status, 401);
    t.stop().await;
}

async fn keys_show_last_use_and_spend(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let key = t.mint(json!({"name": "user", "max_spend_usd": 1, "period": "daily"})).await;
    assert!(key["last_used_at"].is_null(), "{key}");
    assert_eq!(key["spend_micros"], 0);
    assert_eq!(call(&t, secret(&key), "echo").await, 200);
    assert_eq!(call(&t, secret(&key), "echo").await, 200);
    let (_, got) = get(&t, &format!("/v1/keys/{}", id(&key)), &t.master_key).await;
    let (_, usage) = get(&t, &format!("/v1/usage?key_id={}", id(&key)), &t.master_key).await;
    let spent = usage["totals"]["cost_micros"].as_i64().unwrap();
    assert!(spent > 0);
    assert_eq!(got["spend_micros"], spent, "{got}");
    let last_used = got["last_used_at"].as_str().expect("set after a call").to_string();
    let (_, log) = get(&t, "/v1/requests", &t.master_key).await;
    let logged: chrono::DateTime<chrono::Utc> =
        log["items"][0]["created_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(last_used.parse::<chrono::DateTime<chrono::Utc>>().unwrap(), logged);
    // The listing shows the same; the spend is of the key's own window, so
    // a new day (for a daily cap) starts from zero.
    let (_, list) = get(&t, "/v1/keys", &t.master_key).await;
    let listed = list["items"].as_array().unwrap().iter().find(|k| k["id"] == key["id"]).unwrap();
    assert_eq!(listed["spend_micros"], spent);
    assert_eq!(listed["last_used_at"], last_used.as_str());
    t.clock.advance_ms(86_400_000);
    let (_, got) = get(&t, &format!("/v1/keys/{}", id(&key)), &t.master_key).await;
    assert_eq!(got["spend_micros"], 0, "{got}");
    assert_eq!(got["last_used_at"], last_used.as_str());
    // Rotation keeps both.
    t.clock.advance_ms(-86_400_000);
    let (status, rotated) = t
        .request(Method::POST, &format!("/v1/keys/{}/rotate", id(&key)), Some(&t.master_key), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(rotated["spend_micros"], spent);
    t.stop().await;
}

async fn keys_can_be_searched_and_sorted(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let names = ["delta", "Alpha", "charlie", "bravo", "50%_off"];
    let mut keys = Vec::new();
    for n in names {
        keys.push(t.mint(json!({"name": n})).await);
        // Distinct mint times, so the created_at order is the mint order.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    // Spend: charlie 3 calls, bravo 1, others none; bravo used last.
    for _ in 0..3 {
        assert_eq!(call(&t, secret(&keys[2]), "echo").await, 200);
    }
    assert_eq!(call(&t, secret(&keys[3]), "echo").await, 200);
    let admin = t.client(&t.master_key);
    let listed =
        |search: Option<&'static str>, sort: Option<&'static str>, dir: Option<&'static str>| {
            let admin = &admin;
            async move {
                let mut req = admin.list_keys().limit(std::num::NonZeroU32::new(2).unwrap());
                if let Some(s) = search {
                    req = req.search(s);
                }
                if let Some(s) = sort {
                    req = req.sort(s.parse::<types::KeySort>().unwrap());
                }
                if let Some(d) = dir {
                    req = req.direction(d.parse::<types::SortDirection>().unwrap());
                }
                let keys: Vec<types::Key> = req.stream().try_collect().await.unwrap();
                keys.into_iter().map(|k| k.name).filter(|n| n != "master").collect::<Vec<_>>()
            }
        };
    // Pages of two walk every key in the order asked for.
    assert_eq!(listed(None, None, None).await, names);
    assert_eq!(
        listed(None, Some("name"), None).await,
        ["50%_off", "Alpha", "bravo", "charlie", "delta"]
    );
    assert_eq!(
        listed(None, Some("name"), Some("desc")).await,
        ["delta", "charlie", "bravo", "Alpha", "50%_off"]
    );
    let by_spend = listed(None, Some("spend"), Some("desc")).await;
    assert_eq!(by_spend[..2], ["charlie", "bravo"]);
    assert_eq!(by_spend.len(), 5);
    let by_use = listed(None, Some("last_used_at"), Some("desc")).await;
    assert_eq!(by_use[..2], ["bravo", "charlie"]);
    assert_eq!(
        listed(None, Some("created_at"), Some("desc")).await,
        ["50%_off", "bravo", "charlie", "Alpha", "delta"]
    );
    // Search: case-insensitive name, exact id; LIKE's wildcards are text.
    assert_eq!(listed(Some("ALPH"), None, None).await, ["Alpha"]);
    assert_eq!(listed(Some("a"), Some("name"), None).await, ["Alpha", "bravo", "charlie", "delta"]);
    assert_eq!(listed(Some("%"), None, None).await, ["50%_off"]);
    assert_eq!(listed(Some("_"), None, None).await, ["50%_off"]);
    let delta_id: &'static str = Box::leak(id(&keys[0]).to_string().into_boxed_str());
    assert_eq!(listed(Some(delta_id), None, None).await, ["delta"]);
    assert!(listed(Some("nobody"), None, None).await.is_empty());
    let (status, body) =
        get(&t, &format!("/v1/keys?search={}", "x".repeat(101)), &t.master_key).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = get(&t, "/v1/keys?sort=size", &t.master_key).await;
    assert_eq!(status, 400);
    t.stop().await;
}

/// Reports read an hourly rollup for whole hours and the log for the rest:
/// over windows aligned to hours or not, within one hour or across days,
/// every figure equals the sum of the log's rows in the window.
async fn usage_over_any_window_adds_up_the_log(backend: Backend) {
    const MINUTE: i64 = 60_000;
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else {
        return;
    };
    let keys = [t.mint(json!({"name": "a"})).await, t.mint(json!({"name": "b"})).await];
    // From 00:10 of a day 30 days back, a call every 5 h 13 min: 14 calls
    // over three days, on two keys and two models.
    let now = t.clock_now_ms();
    let day = 86_400_000;
    t.clock.advance_ms((now / day - 30) * day + 10 * MINUTE - now);
    let mut calls = Vec::new();
    for i in 0..14 {
        let (key, model) = (&keys[i % 2], ["claude-test", "gpt-test"][(i / 2) % 2]);
        calls.push((t.clock_now_ms(), id(key).to_string(), model));
        let resp = t
            .http
            .post(format!("{}/v1/messages", t.base_url))
            .header("x-api-key", secret(key))
            .json(&json!({"model": model, "max_tokens": 16,
                          "messages": [{"role": "user", "content": format!("call {i}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        t.clock.advance_ms(313 * MINUTE);
    }
    let (_, page) = get(&t, "/v1/requests?limit=100", &t.master_key).await;
    let mut items = page["items"].as_array().unwrap().clone();
    items.reverse();
    assert_eq!(items.len(), calls.len());
    let rfc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let start = calls[0].0 - 10 * MINUTE;
    // (from, to) in minutes from the first day's midnight.
    for (from, to) in
        [(0, 5000), (60, 1440), (7, 3 * 1440), (11, 59), (200, 201 + 300), (313, 1000), (0, 60)]
    {
        let (from_ms, to_ms) = (start + from * MINUTE, start + to * MINUTE);
        let mut expected = std::collections::BTreeMap::<(String, String), (i64, i64, i64)>::new();
        for ((at, key, model), item) in calls.iter().zip(&items) {
            // Each call lands within a second of when it was made.
            if *at >= from_ms && *at < to_ms {
                let e = expected.entry((key.clone(), model.to_string())).or_default();
                e.0 += 1;
                e.1 += item["cost_micros"].as_i64().unwrap();
                e.2 += item["output_tokens"].as_i64().unwrap();
            }
        }
        let path = format!("/v1/usage?from={}&to={}", rfc(from_ms), rfc(to_ms));
        let (status, usage) = get(&t, &path, &t.master_key).await;
        assert_eq!(status, 200, "{usage}");
        let total = |f: fn(&(i64, i64, i64)) -> i64| expected.values().map(f).sum::<i64>();
        let window = format!("{from}..{to}: {usage}");
        assert_eq!(usage["totals"]["requests"], total(|e| e.0), "{window}");
        assert_eq!(usage["totals"]["cost_micros"], total(|e| e.1), "{window}");
        assert_eq!(usage["totals"]["output_tokens"], total(|e| e.2), "{window}");
        assert_eq!(usage["totals"]["units"]["requests"].as_i64().unwrap_or(0), total(|e| e.0));
        for k in &keys {
            let of_key = |f: fn(&(i64, i64, i64)) -> i64| {
                expected.iter().filter(|((key, _), _)| key == id(k)).map(|(_, e)| f(e)).sum::<i64>()
            };
            let row = usage["by_key"].as_array().unwrap().iter().find(|r| r["key_id"] == id(k));
            let cost = row.map_or(0, |r| r["cost_micros"].as_i64().unwrap());
            assert_eq!(cost, of_key(|e| e.1), "{window}");
        }
        for m in ["claude-test", "gpt-test"] {
            let of_model: i64 =
                expected.iter().filter(|((_, model), _)| model == m).map(|(_, e)| e.0).sum();
            let row = usage["by_model"].as_array().unwrap().iter().find(|r| r["model"] == m);
            let n = row.map_or(0, |r| r["requests"].as_i64().unwrap());
            assert_eq!(n, of_model, "{window}");
        }
        let by_day: i64 = usage["by_day"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["cost_micros"].as_i64().unwrap())
            .sum();
        let by_day_model: i64 = usage["by_day_and_model"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["requests"].as_i64().unwrap())
            .sum();
        assert_eq!((by_day, by_day_model), (total(|e| e.1), total(|e| e.0)), "{window}");
    }
}
