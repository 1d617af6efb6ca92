//! Semantic search over thread turns, end to end: the real server with the
//! real embedding model (all-MiniLM-L6-v2, fetched once per machine into
//! the target directory), on SQLite (sqlite-vec) and PostgreSQL (pgvector,
//! on the server `QLAUD_TEST_PGVECTOR_URL` names).

use std::time::{Duration, Instant};

use qlaud::types;
use qlaud_api::MessageRole;
use qlaud_server::store::NewMessage;
use qlaud_tests::{Backend, QlaudProcess, RawBody, TestServer, store_pool};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

macro_rules! search_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(qlaud_tests::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(qlaud_tests::Backend::Postgres).await
                }
            )*
        }
    };
}

search_tests!(
    finds_by_meaning_not_words,
    every_key_sees_only_what_it_may,
    deleting_a_thread_or_purging_a_key_removes_exactly_their_data,
    limit_holds_among_many_other_tenants_rows,
    turns_stored_before_search_existed_are_embedded_once,
    a_killed_process_loses_no_turn_and_indexes_none_twice,
    bad_searches_are_refused,
    the_local_model_serves_embeddings,
    a_priced_search_is_metered_and_capped,
    turn_embeddings_are_billed_to_the_owner_and_capped,
    a_revoked_keys_queued_turns_are_dropped_unbilled,
);

/// A server with search on, its model ready (the first start on a
/// machine fetches the model: minutes, once).
async fn start(backend: Backend) -> Option<TestServer> {
    let t = TestServer::start_search(backend).await?;
    wait_model(&t, &t.master_key).await;
    Some(t)
}

/// Waits until search answers `key` (a restarted server's tests keep
/// the first start's keys).
async fn wait_model(t: &TestServer, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let (status, body) = search_raw(t, key, json!({"query": "x"})).await;
        if status != 503 {
            assert_eq!(status, 200, "{body}");
            return;
        }
        assert!(
            body.to_string().contains("loading"),
            "503 for another reason than loading: {body}"
        );
        assert!(Instant::now() < deadline, "the embedding model never became ready");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn search_raw(t: &TestServer, key: &str, body: Value) -> (u16, Value) {
    t.request(Method::POST, "/v1/search", Some(key), Some(RawBody::Json(body))).await
}

/// The message ids of a search that must succeed.
async fn hits(t: &TestServer, key: &str, body: Value) -> Vec<String> {
    let (status, v) = search_raw(t, key, body.clone()).await;
    assert_eq!(status, 200, "{body} → {v}");
    v["data"].as_array().unwrap().iter().map(|h| h["message_id"].as_str().unwrap().into()).collect()
}

/// Waits until every queued turn of the store is embedded.
async fn wait_indexed(url: &str) {
    let pool = store_pool(url).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM embed_queue")
            .fetch_one(&pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} turns still queued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
}

async fn count(url: &str, sql: &'static str) -> i64 {
    let pool = store_pool(url).await;
    let n = sqlx::query(sql).fetch_one(&pool).await.unwrap().try_get("n").unwrap();
    pool.close().await;
    n
}

/// A key of the tenant whose admin key is `admin`: (secret, id).
async fn mint(t: &TestServer, admin: &str, name: &str) -> (String, String) {
    let (status, key) = t
        .request(Method::POST, "/v1/keys", Some(admin), Some(RawBody::Json(json!({"name": name}))))
        .await;
    assert_eq!(status, 201, "{key}");
    (key["secret"].as_str().unwrap().into(), key["id"].as_str().unwrap().into())
}

/// A new thread of the key `secret`; its id.
async fn thread(t: &TestServer, secret: &str) -> String {
    let (status, v) =
        t.request(Method::POST, "/v1/threads", Some(secret), Some(RawBody::Json(json!({})))).await;
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().unwrap().into()
}

/// Stores turns in a thread (through the store, as a turn does); their ids.
async fn turns(t: &TestServer, tenant: &str, thread: &str, texts: &[&str]) -> Vec<String> {
    let messages: Vec<NewMessage> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| NewMessage {
            id: qlaud_server::store::new_id("msg"),
            role: if i % 2 == 0 { MessageRole::User } else { MessageRole::Assistant },
            content: vec![json!({"type": "text", "text": text})],
            model: None,
            stop_reason: None,
            usage: None,
            request_id: None,
            metadata: Default::default(),
            response_id: None,
        })
        .collect();
    let stored = t.server().store().append_messages(tenant, thread, &messages, None).await.unwrap();
    stored.into_iter().map(|m| m.id).collect()
}

const DECOYS: [&str; 8] = [
    "The weather in Lisbon is sunny with a light breeze this afternoon.",
    "Boil the pasta for nine minutes, then toss it with garlic and olive oil.",
    "The football match ended in a draw after extra time.",
    "Python lists are mutable, while tuples cannot be changed.",
    "Water the tomato plants early in the morning during summer.",
    "The train to Porto leaves from platform four at 8:15.",
    "Our office is closed on public holidays.",
    "Jupiter is the largest planet in the solar system.",
];

async fn finds_by_meaning_not_words(backend: Backend) {
    let Some(t) = start(backend).await else { return };
    let (user, _) = mint(&t, &t.master_key, "user_1").await;
    let thr = thread(&t, &user).await;
    let mut texts: Vec<&str> = DECOYS.to_vec();
    texts.insert(
        3,
        "Refund policy: purchases can be returned within 30 days for a full reimbursement \
         to the original payment method.",
    );
    let ids = turns(&t, &t.tenant_id, &thr, &texts).await;
    let refund = ids[3].clone();
    // A turn through the API as well: the echo model answers with the text.
    let (status, v) = t
        .request(
            Method::POST,
            &format!("/v1/threads/{thr}/messages"),
            Some(&user),
            Some(RawBody::Json(json!({
                "model": "echo",
                "content": [{"type": "text", "text": "Saturn has the most visible rings."}],
            }))),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    wait_indexed(&t.db.url).await;

    // Through the SDK: no content word shared with the refund turn.
    let results = t
        .client(&user)
        .search()
        .body(types::SearchRequest::builder().query("how do I get my money back").limit(3))
        .send()
        .await
        .unwrap()
        .into_inner();
    let found: Vec<&str> = results.data.iter().map(|h| h.message_id.as_str()).collect();
    assert!(found.contains(&refund.as_str()), "refund turn not in the top 3: {results:?}");
    assert_eq!(results.data.len(), 3);
    assert_eq!(results.model, "all-minilm-l6-v2");
    for pair in results.data.windows(2) {
        assert!(pair[0].score >= pair[1].score, "not best first: {results:?}");
    }
    assert!(results.data.iter().all(|h| (-1.0..=1.0).contains(&h.score)));
    assert_eq!(results.data[0].message_id, refund, "{results:?}");
    assert!(results.data[0].text.starts_with("Refund policy"));

    // The turn written through the API is found as well, by either role.
    let hits_rings = hits(&t, &user, json!({"query": "ringed planet", "limit": 2})).await;
    let (_, msgs) = t
        .request(Method::GET, &format!("/v1/threads/{thr}/messages?limit=2"), Some(&user), None)
        .await;
    let api_ids: Vec<String> = msgs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().into())
        .collect();
    assert!(hits_rings.iter().all(|h| api_ids.contains(h)), "{hits_rings:?} vs {api_ids:?}");
    // Role and time filters.
    let (status, v) =
        search_raw(&t, &user, json!({"query": "ringed planet", "role": "assistant"})).await;
    assert_eq!(status, 200);
    assert!(v["data"].as_array().unwrap().iter().all(|h| h["role"] == "assistant"), "{v}");
    let future = hits(&t, &user, json!({"query": "refund", "from": "2999-01-01"})).await;
    assert!(future.is_empty());
    t.stop().await;
}

async fn every_key_sees_only_what_it_may(backend: Backend) {
    let Some(t) = start(backend).await else { return };
    let (tenant_b, admin_b) = t.create_tenant("tenant b").await;
    let admin_a = t.master_key.clone();
    let mut keys = Vec::new(); // (tenant, admin, secret, key id, thread, message ids)
    for (tenant, admin) in [(&t.tenant_id, &admin_a), (&tenant_b, &admin_b)] {
        for n in 1..=2 {
            let (secret, id) = mint(&t, admin, &format!("user_{n}")).await;
            let thr = thread(&t, &secret).await;
            let ids = turns(
                &t,
                tenant,
                &thr,
                &[
                    "My package arrived damaged and I would like a replacement.",
                    "Sorry to hear that; a replacement is on its way.",
                ],
            )
            .await;
            keys.push((tenant.clone(), admin.clone(), secret, id, thr, ids));
        }
    }
    wait_indexed(&t.db.url).await;
    let q = "broken parcel delivery";
    for (tenant, admin, secret, id, thr, ids) in &keys {
        let own: Vec<String> = ids.clone();
        let tenants: Vec<String> =
            keys.iter().filter(|k| &k.0 == tenant).flat_map(|k| k.5.clone()).collect();
        // A standard key: its own turns, however it asks.
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        assert_eq!(
            sorted(hits(&t, secret, json!({"query": q, "limit": 100})).await),
            sorted(own.clone())
        );
        assert_eq!(
            sorted(hits(&t, secret, json!({"query": q, "key_id": id, "limit": 100})).await),
            sorted(own.clone())
        );
        assert_eq!(
            sorted(hits(&t, secret, json!({"query": q, "thread_id": thr})).await),
            sorted(own.clone())
        );
        // The admin of its tenant: every key of the tenant, or just this one.
        assert_eq!(
            sorted(hits(&t, admin, json!({"query": q, "limit": 100})).await),
            sorted(tenants.clone())
        );
        assert_eq!(
            sorted(hits(&t, admin, json!({"query": q, "key_id": id})).await),
            sorted(own.clone())
        );
        assert_eq!(
            sorted(hits(&t, admin, json!({"query": q, "thread_id": thr})).await),
            sorted(own.clone())
        );
        // Everyone else: refused, never a hit.
        for (o_tenant, o_admin, o_secret, _, _, _) in &keys {
            if o_secret == secret {
                continue;
            }
            let (status, v) = search_raw(&t, o_secret, json!({"query": q, "key_id": id})).await;
            assert_eq!(status, 403, "{v}");
            let (status, v) = search_raw(&t, o_secret, json!({"query": q, "thread_id": thr})).await;
            assert_eq!(status, 404, "{v}");
            if o_tenant != tenant {
                let (status, v) = search_raw(&t, o_admin, json!({"query": q, "key_id": id})).await;
                assert_eq!(status, 404, "{v}");
                let (status, v) =
                    search_raw(&t, o_admin, json!({"query": q, "thread_id": thr})).await;
                assert_eq!(status, 404, "{v}");
            }
        }
    }
    t.stop().await;
}

async fn deleting_a_thread_or_purging_a_key_removes_exactly_their_data(backend: Backend) {
    let Some(t) = start(backend).await else { return };
    let (a, a_id) = mint(&t, &t.master_key, "a").await;
    let (b, b_id) = mint(&t, &t.master_key, "b").await;
    let (c, c_id) = mint(&t, &t.master_key, "c").await;
    let text = ["Please cancel my subscription at the end of the month."];
    let a1 = thread(&t, &a).await;
    let a2 = thread(&t, &a).await;
    let b1 = thread(&t, &b).await;
    let c1 = thread(&t, &c).await;
    let a1_ids = turns(&t, &t.tenant_id, &a1, &text).await;
    let a2_ids = turns(&t, &t.tenant_id, &a2, &text).await;
    let b1_ids = turns(&t, &t.tenant_id, &b1, &text).await;
    let c1_ids = turns(&t, &t.tenant_id, &c1, &text).await;
    // A metered call, so the key has usage to keep.
    let (status, _) = t
        .request(
            Method::POST,
            &format!("/v1/threads/{b1}/messages"),
            Some(&b),
            Some(RawBody::Json(json!({"model": "echo", "content": "end my plan please"}))),
        )
        .await;
    assert_eq!(status, 200);
    wait_indexed(&t.db.url).await;
    let q = json!({"query": "stop my membership", "limit": 100});

    // Deleting a thread takes its hits with it, and nothing else.
    t.client(&a).delete_thread().thread_id(&a1).send().await.unwrap();
    assert_eq!(hits(&t, &a, q.clone()).await, a2_ids);

    // Purging a key: its threads, messages and vectors go; usage stays.
    // Searches are metered (as embeddings of their query): count the rest.
    const TURNS: &str = "SELECT COUNT(*) AS n FROM requests WHERE endpoint <> 'embeddings'";
    let usage_before = count(&t.db.url, TURNS).await;
    assert!(usage_before >= 1);
    let deleted =
        t.client(&t.master_key).delete_key_data().key_id(&b_id).send().await.unwrap().into_inner();
    assert_eq!((deleted.threads, deleted.messages), (1, 3), "{deleted:?}");
    assert!(hits(&t, &b, q.clone()).await.is_empty());
    let (status, _) =
        t.request(Method::GET, &format!("/v1/threads/{b1}"), Some(&t.master_key), None).await;
    assert_eq!(status, 404);
    assert_eq!(count(&t.db.url, TURNS).await, usage_before, "usage stays");
    // The key itself still works (revoking is separate).
    let (status, _) = t.request(Method::GET, "/v1/threads", Some(&b), None).await;
    assert_eq!(status, 200);

    // Revoking with purge does both.
    let (status, _) = t
        .request(Method::DELETE, &format!("/v1/keys/{c_id}?purge=true"), Some(&t.master_key), None)
        .await;
    assert_eq!(status, 204);
    let all = hits(&t, &t.master_key, q.clone()).await;
    assert_eq!(all, a2_ids, "only a's remaining thread is left");

    // Nothing of anyone else's went: a's thread, and the store's rows.
    let rows = count(&t.db.url, "SELECT COUNT(*) AS n FROM turn_vectors").await;
    assert_eq!(rows, 1);
    let msgs = count(&t.db.url, "SELECT COUNT(*) AS n FROM thread_messages").await;
    assert_eq!(msgs, 1);
    let _ = (a1_ids, b1_ids, c1_ids);
    // Another tenant's key is not this admin's to purge (the same 404 as
    // an unknown key), and a standard key purges nothing.
    let (_, other_admin) = t.create_tenant("other").await;
    for (path, key, want) in [
        (format!("/v1/keys/{a_id}/data"), &other_admin, 404),
        ("/v1/keys/key_nope/data".to_string(), &t.master_key, 404),
        (format!("/v1/keys/{a_id}/data"), &a, 403),
    ] {
        let (status, v) = t.request(Method::DELETE, &path, Some(key), None).await;
        assert_eq!(status, want, "{path}: {v}");
    }
    assert_eq!(hits(&t, &a, q.clone()).await, a2_ids, "a's data is untouched");
    t.stop().await;
}

async fn limit_holds_among_many_other_tenants_rows(backend: Backend) {
    let Some(t) = start(backend).await else { return };
    let (tenant_b, admin_b) = t.create_tenant("big tenant").await;
    let (b, _) = mint(&t, &admin_b, "b").await;
    let (a, _) = mint(&t, &t.master_key, "a").await;
    // The other tenant's turns are the closest to the query, and far more.
    let near: Vec<String> =
        (0..400).map(|i| format!("How can I get a refund for order number {i}?")).collect();
    let bt = thread(&t, &b).await;
    for chunk in near.chunks(100) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        turns(&t, &tenant_b, &bt, &refs).await;
    }
    let at = thread(&t, &a).await;
    let mine: Vec<String> =
        (0..12).map(|i| format!("{} ({i})", DECOYS[i % DECOYS.len()])).collect();
    let refs: Vec<&str> = mine.iter().map(String::as_str).collect();
    let my_ids = turns(&t, &t.tenant_id, &at, &refs).await;
    wait_indexed(&t.db.url).await;
    for limit in [1, 5, 10] {
        let got = hits(&t, &a, json!({"query": "refund for my order", "limit": limit})).await;
        assert_eq!(got.len(), limit, "limit {limit}: {got:?}");
        assert!(got.iter().all(|id| my_ids.contains(id)));
        let got =
            hits(&t, &t.master_key, json!({"query": "refund for my order", "limit": limit})).await;
        assert_eq!(got.len(), limit);
        assert!(got.iter().all(|id| my_ids.contains(id)));
    }
    t.stop().await;
}

async fn turns_stored_before_search_existed_are_embedded_once(backend: Backend) {
    let Some(t) = start(backend).await else { return };
    let (a, _) = mint(&t, &t.master_key, "a").await;
    let admin = t.master_key.clone();
    let thr = thread(&t, &a).await;
    let ids = turns(&t, &t.tenant_id, &thr, &DECOYS).await;
    wait_indexed(&t.db.url).await;
    let db = t.stop_keeping_store().await;
    // The store as a qlaud without search left it: no queue, no vectors,
    // the search migration not applied.
    let pool = store_pool(&db.url).await;
    for sql in [
        "DROP TABLE embed_queue",
        "DROP TABLE turn_vectors",
        "DELETE FROM _sqlx_migrations WHERE version = 16",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let t = TestServer::start_on(db, None, qlaud_tests::search_config).await.unwrap();
    wait_model(&t, &admin).await;
    wait_indexed(&t.db.url).await;
    let n = count(&t.db.url, "SELECT COUNT(*) AS n FROM turn_vectors").await;
    assert_eq!(n, ids.len() as i64);
    let got = hits(&t, &admin, json!({"query": "gardening in summer", "limit": 1})).await;
    assert_eq!(got, vec![ids[4].clone()]);
    // A further start backfills nothing again.
    let db = t.stop_keeping_store().await;
    let t = TestServer::start_on(db, None, qlaud_tests::search_config).await.unwrap();
    wait_model(&t, &admin).await;
    assert_eq!(count(&t.db.url, "SELECT COUNT(*) AS n FROM embed_queue").await, 0);
    assert_eq!(count(&t.db.url, "SELECT COUNT(*) AS n FROM turn_vectors").await, n);
    t.stop().await;
}

/// `qlaud serve` on `url` with the local model at $0.01 a token; its
/// master key if it bootstrapped the store.
async fn spawn(url: &str) -> (QlaudProcess, Option<String>) {
    let config = std::env::temp_dir().join(format!("qlaud-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(
        &config,
        "[models.\"all-minilm-l6-v2\"]\nprovider = \"local\"\nkind = \"embedding\"\n\
         prices = { input = \"10000\" }\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let p = QlaudProcess::spawn(&[
        "--database-url",
        url,
        "--instance-timeout-secs",
        "2",
        "--config",
        &config,
    ])
    .await;
    let key = p
        .stdout
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v["master_key"].as_str().map(str::to_string));
    (p, key)
}

async fn a_killed_process_loses_no_turn_and_indexes_none_twice(backend: Backend) {
    let Some(db) = qlaud_tests::TestDb::new_search(backend).await else { return };
    let (p, admin) = spawn(&db.url).await;
    let admin = admin.expect("a fresh store bootstraps");
    let http = reqwest::Client::new();
    let base = p.base_url();
    let post = |path: String, body: Value| {
        let req = http.post(format!("{base}{path}")).bearer_auth(&admin).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // The model first, so the kill lands while turns are being embedded.
    let deadline = Instant::now() + Duration::from_secs(900);
    while post("/v1/search".into(), json!({"query": "x"})).await.0 == 503 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, conv) = post("/v1/conversations".into(), json!({})).await;
    assert_eq!(status, 200, "{conv}");
    let conv = conv["id"].as_str().unwrap().to_string();
    let text = |batch: usize, i: usize| format!("Turn {batch}-{i}: {}", DECOYS[i % DECOYS.len()]);
    let all: Vec<String> = (0..10).flat_map(|b| (0..20).map(move |i| text(b, i))).collect();
    let (status, v) =
        post("/v1/embeddings".into(), json!({"model": "all-minilm-l6-v2", "input": all})).await;
    assert_eq!(status, 200, "{v}");
    let tokens = v["usage"]["prompt_tokens"].as_i64().unwrap();
    for batch in 0..10 {
        let items: Vec<Value> = (0..20)
            .map(|i| json!({"type": "message", "role": "user", "content": text(batch, i)}))
            .collect();
        let (status, v) =
            post(format!("/v1/conversations/{conv}/items"), json!({"items": items})).await;
        assert_eq!(status, 200, "{v}");
    }
    p.kill().await;
    let queued = count(&db.url, "SELECT COUNT(*) AS n FROM embed_queue").await;
    assert!(queued > 0, "every turn was embedded before the kill: the test proves nothing");
    let (p, _) = spawn(&db.url).await;
    wait_indexed(&db.url).await;
    assert_eq!(count(&db.url, "SELECT COUNT(*) AS n FROM thread_messages").await, 200);
    assert_eq!(count(&db.url, "SELECT COUNT(*) AS n FROM turn_vectors").await, 200);
    assert_eq!(
        count(&db.url, "SELECT COUNT(DISTINCT message_id) AS n FROM turn_vectors").await,
        200
    );
    // Billed once too: the killed process's open turn-embedding
    // reservations are given back (their turns were embedded again), not
    // settled on top.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&db.url, "SELECT COUNT(*) AS n FROM reservations").await > 0 {
        assert!(Instant::now() < deadline, "reservations left open");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let billed = "SELECT CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS n FROM requests \
                  WHERE endpoint = 'turn_embeddings'";
    assert_eq!(count(&db.url, billed).await, tokens);
    let cost = "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS n FROM requests \
                WHERE endpoint = 'turn_embeddings'";
    assert_eq!(count(&db.url, cost).await, tokens * 10_000);
    // (The killed process's budget lease on the admin key, taken by the
    // embeddings call above, is settled by crash recovery: not a turn's.)
    let recovered = "SELECT COUNT(*) AS n FROM requests WHERE recovered <> 0 \
                     AND endpoint = 'turn_embeddings'";
    assert_eq!(count(&db.url, recovered).await, 0);
    p.kill().await;
}

async fn bad_searches_are_refused(backend: Backend) {
    let Some(t) = start(backend).await else { return };
    let (a, _) = mint(&t, &t.master_key, "a").await;
    let (status, _) = t
        .request(Method::POST, "/v1/search", None, Some(RawBody::Json(json!({"query": "x"}))))
        .await;
    assert_eq!(status, 401);
    for body in [
        json!({"query": ""}),
        json!({"query": "   "}),
        json!({"query": "x", "limit": 0}),
        json!({"query": "x", "limit": 101}),
        json!({"query": "x", "limit": -1}),
        json!({"query": "x", "limt": 5}),
        json!({"query": "x", "role": "system"}),
        json!({"query": "x", "from": "yesterday"}),
        json!({"query": "x", "from": "2026-02-01", "to": "2026-01-01"}),
        json!({"query": "x".repeat(9000)}),
        json!({"query": "x", "thread_id": "thr\u{0}"}),
        json!({}),
        json!([]),
    ] {
        let (status, v) = search_raw(&t, &a, body.clone()).await;
        assert_eq!(status, 400, "{body} → {v}");
    }
    let (status, _) = t
        .request(Method::POST, "/v1/search", Some(&a), Some(RawBody::Text("{\"query\":".into())))
        .await;
    assert_eq!(status, 400);
    let (status, _) = search_raw(&t, &a, json!({"query": "x".repeat(20_000)})).await;
    assert_eq!(status, 413);
    let (status, _) = search_raw(&t, &a, json!({"query": "x", "thread_id": "thr_nope"})).await;
    assert_eq!(status, 404);
    let (status, _) =
        search_raw(&t, &t.master_key, json!({"query": "x", "key_id": "key_nope"})).await;
    assert_eq!(status, 404);
    t.stop().await;

    // A server without a model answers 503, in qlaud's error shape.
    let Some(t) = TestServer::start(backend).await else { return };
    let (status, v) = search_raw(&t, &t.master_key, json!({"query": "x"})).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error_code"], "ServiceUnavailable", "{v}");
    t.stop().await;
}

async fn the_local_model_serves_embeddings(backend: Backend) {
    let Some(t) = start(backend).await else { return };
    let (a, a_id) = mint(&t, &t.master_key, "a").await;
    let (status, v) = t
        .request(
            Method::POST,
            "/v1/embeddings",
            Some(&a),
            Some(RawBody::Json(json!({"model": "all-minilm-l6-v2",
                                      "input": ["a refund policy", "the weather today"]}))),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let first: Vec<f64> =
        data[0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(first.len(), 384);
    let norm: f64 = first.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "not unit length: {norm}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 4);
    assert_eq!(v["usage"]["cost_micros"], 0);
    assert_eq!(v["model"], "all-minilm-l6-v2");
    // Base64, as the openai clients ask by default: the same floats.
    let (status, b) = t
        .request(
            Method::POST,
            "/v1/embeddings",
            Some(&a),
            Some(RawBody::Json(json!({"model": "all-minilm-l6-v2", "input": "a refund policy",
                                      "encoding_format": "base64"}))),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f32> =
        bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(floats.len(), 384);
    assert!((f64::from(floats[0]) - first[0]).abs() < 1e-5);
    // Metered like any model: the requests show in the key's usage.
    let usage = t.settled(&a_id, 2).await;
    assert_eq!(usage, 0);
    for body in [
        json!({"model": "all-minilm-l6-v2", "input": [[1, 2, 3]]}),
        json!({"model": "all-minilm-l6-v2", "input": []}),
        json!({"model": "all-minilm-l6-v2", "input": "x", "dimensions": 100}),
        json!({"model": "all-minilm-l6-v2", "input": "x", "encoding_format": "hex"}),
    ] {
        let (status, v) = t
            .request(Method::POST, "/v1/embeddings", Some(&a), Some(RawBody::Json(body.clone())))
            .await;
        assert_eq!(status, 400, "{body} → {v}");
    }
    t.stop().await;
}

/// On a PostgreSQL without pgvector (the CI's plain one) qlaud starts,
/// search answers 503 saying why, and everything else works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_postgres_without_pgvector_answers_503() {
    let Some(db) = qlaud_tests::TestDb::new(Backend::Postgres).await else { return };
    let pool = store_pool(&db.url).await;
    let has_vector: bool = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') AS ok",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
    .try_get("ok")
    .unwrap();
    pool.close().await;
    if has_vector {
        eprintln!("NOTE: QLAUD_TEST_DATABASE_URL has pgvector: nothing to test here");
        return;
    }
    let t = TestServer::start_on(db, None, qlaud_tests::search_config).await.unwrap();
    let (status, v) = search_raw(&t, &t.master_key, json!({"query": "anything"})).await;
    assert_eq!(status, 503, "{v}");
    assert!(v["message"].as_str().unwrap().contains("pgvector"), "{v}");
    let thr = thread(&t, &t.master_key).await;
    let (status, v) = t
        .request(
            Method::POST,
            &format!("/v1/threads/{thr}/messages"),
            Some(&t.master_key),
            Some(RawBody::Json(json!({"model": "echo", "content": "hello"}))),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // Its turns wait in the queue for pgvector.
    assert_eq!(count(&t.db.url, "SELECT COUNT(*) AS n FROM embed_queue").await, 2);
    t.stop().await;
}

/// With the operator's price on the local model, each search costs its
/// query's tokens and the key's cap refuses the one that would overshoot.
async fn a_priced_search_is_metered_and_capped(backend: Backend) {
    let Some(db) = qlaud_tests::TestDb::new_search(backend).await else { return };
    // $0.10 a token.
    let toml = "[models.\"all-minilm-l6-v2\"]\nprovider = \"local\"\nkind = \"embedding\"\n\
                prices = { input = \"100000\" }\n";
    let t = TestServer::start_on(db, Some(toml), qlaud_tests::search_config).await.unwrap();
    wait_model(&t, &t.master_key).await;
    let key = t.mint(json!({"name": "capped", "max_spend_usd": 0.5})).await;
    let (secret, id) = (key["secret"].as_str().unwrap(), key["id"].as_str().unwrap());
    let settled_before = t.settled(id, 0).await;
    assert_eq!(settled_before, 0);
    // "[CLS] ref ##und [SEP]": four tokens, $0.40.
    let (status, v) = search_raw(&t, secret, json!({"query": "refund"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(t.settled(id, 1).await, 400_000);
    let (status, v) = search_raw(&t, secret, json!({"query": "refund"})).await;
    assert_eq!(status, 402, "the second would overshoot the cap: {v}");
    assert_eq!(t.settled(id, 1).await, 400_000);
    t.stop().await;
}

/// The local model at $0.01 a token, and turns a key cannot pay for tried
/// again after half a second.
async fn start_priced(backend: Backend) -> Option<TestServer> {
    let db = qlaud_tests::TestDb::new_search(backend).await?;
    let toml = "[models.\"all-minilm-l6-v2\"]\nprovider = \"local\"\nkind = \"embedding\"\n\
                prices = { input = \"10000\" }\n";
    let t = TestServer::start_on(db, Some(toml), |c| {
        qlaud_tests::search_config(c);
        c.embed_defer = Duration::from_millis(500);
    })
    .await
    .unwrap();
    wait_model(&t, &t.master_key).await;
    Some(t)
}

/// The tokens the local model reads of `text` (what embedding it bills),
/// asked of `POST /v1/embeddings` with the master key.
async fn tokens_of(t: &TestServer, text: &str) -> i64 {
    let (status, v) = t
        .request(
            Method::POST,
            "/v1/embeddings",
            Some(&t.master_key),
            Some(RawBody::Json(json!({"model": "all-minilm-l6-v2", "input": text}))),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["usage"]["prompt_tokens"].as_i64().unwrap()
}

/// The key's settled requests of the search index, from the request log:
/// (count, input tokens, cost).
async fn turn_embedding_requests(t: &TestServer, key_id: &str) -> (usize, i64, i64) {
    let (status, v) = t
        .request(
            Method::GET,
            &format!("/v1/requests?key_id={key_id}&limit=100"),
            Some(&t.master_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let rows: Vec<&Value> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["endpoint"] == "turn_embeddings")
        .collect();
    for r in &rows {
        assert_eq!(r["model"], "all-minilm-l6-v2", "{r}");
        assert_eq!(r["status"], 200, "{r}");
    }
    (
        rows.len(),
        rows.iter().map(|r| r["input_tokens"].as_i64().unwrap()).sum(),
        rows.iter().map(|r| r["cost_micros"].as_i64().unwrap()).sum(),
    )
}

/// Waits until every queued turn is either embedded or deferred (its key
/// cannot pay now); returns how many are deferred.
async fn wait_settled_queue(url: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let open = count(
            url,
            "SELECT COUNT(*) AS n FROM embed_queue q WHERE q.claimed_by IS NOT NULL OR NOT EXISTS \
             (SELECT 1 FROM embed_deferrals d WHERE d.message_id = q.message_id)",
        )
        .await;
        if open == 0 {
            return count(url, "SELECT COUNT(*) AS n FROM embed_queue").await;
        }
        assert!(Instant::now() < deadline, "{open} turns still waiting");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const TICKETS: [&str; 6] = [
    "My invoice shows a charge I do not recognise from last Tuesday.",
    "Can you explain why the annual plan costs more than twelve monthly payments?",
    "The mobile app logs me out every time I switch networks.",
    "I would like to export all of my conversation history as a spreadsheet.",
    "Is there a discount for non-profit organisations or schools?",
    "Two-factor authentication codes arrive several minutes late.",
];

/// With the operator's price on the local model, the turns written to a
/// thread are billed to the thread's owner key as `turn_embeddings`
/// requests, at their exact tokens; a key at its cap gets as many turns
/// indexed as its budget pays for and never more, the rest stay queued
/// (unindexed, unbilled) and are indexed once the cap is raised.
async fn turn_embeddings_are_billed_to_the_owner_and_capped(backend: Backend) {
    let Some(t) = start_priced(backend).await else { return };
    let mut tokens = Vec::new();
    for text in TICKETS {
        tokens.push(tokens_of(&t, text).await);
    }
    let all: i64 = tokens.iter().sum();

    // An uncapped key: every turn indexed, the exact tokens billed.
    let (free, free_id) = mint(&t, &t.master_key, "uncapped").await;
    let thr = thread(&t, &free).await;
    // Stored as any turn is (whoever posts it, the thread's owner pays).
    let _ = turns(&t, &t.tenant_id, &thr, &TICKETS).await;
    assert_eq!(wait_settled_queue(&t.db.url).await, 0);
    let (n, input, cost) = turn_embedding_requests(&t, &free_id).await;
    assert!(n >= 1, "no turn_embeddings request");
    assert_eq!(input, all);
    assert_eq!(cost, all * 10_000);
    // GET /v1/usage says the same (the key made no other call).
    assert_eq!(t.key_spend(&free_id).await, (all * 10_000, n as u64));
    let (_, usage) = t
        .request(Method::GET, &format!("/v1/usage?key_id={free_id}"), Some(&t.master_key), None)
        .await;
    assert_eq!(usage["totals"]["input_tokens"].as_i64(), Some(all), "{usage}");
    assert_eq!(hits(&t, &free, json!({"query": "billing", "limit": 100})).await.len(), 6);

    // A key whose cap pays for any two of the turns, never three.
    let mut sorted = tokens.clone();
    sorted.sort();
    assert!(sorted[4] + sorted[5] < sorted[0] + sorted[1] + sorted[2], "{tokens:?}");
    let budget = (sorted[4] + sorted[5]) * 10_000;
    let key = t.mint(json!({"name": "capped", "max_spend_usd": budget as f64 / 1e6})).await;
    let (capped, capped_id) =
        (key["secret"].as_str().unwrap().to_string(), key["id"].as_str().unwrap().to_string());
    let thr = thread(&t, &capped).await;
    let ids = turns(&t, &t.tenant_id, &thr, &TICKETS).await;
    assert_eq!(wait_settled_queue(&t.db.url).await, 4, "four turns wait for budget");
    // The deferral is not a one-off: passes go on refusing them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(wait_settled_queue(&t.db.url).await, 4);
    // Which turns got in depends on the queue's order (turns stored
    // together are claimed in id order): exactly those are billed and
    // searchable.
    let found =
        hits(&t, &t.master_key, json!({"query": "account", "key_id": capped_id, "limit": 100}))
            .await;
    assert_eq!(found.len(), 2, "{found:?}");
    let paid: i64 = found.iter().map(|id| tokens[ids.iter().position(|i| i == id).unwrap()]).sum();
    let (_, input, cost) = turn_embedding_requests(&t, &capped_id).await;
    assert_eq!((input, cost), (paid, paid * 10_000));
    let (spent, _) = t.key_spend(&capped_id).await;
    assert!(spent <= budget, "overshot: {spent} > {budget}");
    assert_eq!(spent, cost);

    // Raising the cap lets the rest through, billed once each.
    let (status, v) = t
        .request(
            Method::PATCH,
            &format!("/v1/keys/{capped_id}"),
            Some(&t.master_key),
            Some(RawBody::Json(json!({"max_spend_usd": 100}))),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    wait_indexed(&t.db.url).await;
    let (_, input, cost) = turn_embedding_requests(&t, &capped_id).await;
    assert_eq!((input, cost), (all, all * 10_000));
    assert_eq!(count(&t.db.url, "SELECT COUNT(*) AS n FROM embed_deferrals").await, 0);
    assert_eq!(count(&t.db.url, "SELECT COUNT(*) AS n FROM turn_vectors").await, 12);
    assert_eq!(count(&t.db.url, "SELECT COUNT(*) AS n FROM reservations").await, 0);
    t.stop().await;
}

/// A revoked key pays for nothing more: turns of its threads still queued
/// are dropped unindexed and unbilled; a disabled key's wait until it is
/// enabled again.
async fn a_revoked_keys_queued_turns_are_dropped_unbilled(backend: Backend) {
    let Some(t) = start_priced(backend).await else { return };
    let (gone, gone_id) = mint(&t, &t.master_key, "revoked").await;
    let gone_thread = thread(&t, &gone).await;
    let (status, _) =
        t.request(Method::DELETE, &format!("/v1/keys/{gone_id}"), Some(&t.master_key), None).await;
    assert_eq!(status, 204);
    let (off, off_id) = mint(&t, &t.master_key, "disabled").await;
    let off_thread = thread(&t, &off).await;
    let (status, v) = t
        .request(
            Method::PATCH,
            &format!("/v1/keys/{off_id}"),
            Some(&t.master_key),
            Some(RawBody::Json(json!({"disabled": true}))),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // Turns stored after the fact (as a conversation item import would).
    turns(&t, &t.tenant_id, &gone_thread, &TICKETS[..3]).await;
    turns(&t, &t.tenant_id, &off_thread, &TICKETS[3..]).await;
    assert_eq!(wait_settled_queue(&t.db.url).await, 3, "the disabled key's turns wait");
    assert_eq!(count(&t.db.url, "SELECT COUNT(*) AS n FROM turn_vectors").await, 0);
    assert_eq!(turn_embedding_requests(&t, &gone_id).await, (0, 0, 0));
    assert_eq!(turn_embedding_requests(&t, &off_id).await, (0, 0, 0));
    assert_eq!(
        count(&t.db.url, "SELECT COUNT(*) AS n FROM embed_deferrals WHERE reason = 'key_disabled'")
            .await,
        3
    );
    // Enabled again: indexed and billed.
    let (status, _) = t
        .request(
            Method::PATCH,
            &format!("/v1/keys/{off_id}"),
            Some(&t.master_key),
            Some(RawBody::Json(json!({"disabled": false}))),
        )
        .await;
    assert_eq!(status, 200);
    wait_indexed(&t.db.url).await;
    assert_eq!(count(&t.db.url, "SELECT COUNT(*) AS n FROM turn_vectors").await, 3);
    let (_, input, _) = turn_embedding_requests(&t, &off_id).await;
    assert!(input > 0);
    t.stop().await;
}

/// A small deterministic generator of unit vectors (no dependency).
struct Unit(u64);

impl Unit {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// `around` plus noise of size `noise`, at unit length (random
    /// without `around`).
    fn vector(&mut self, around: Option<&[f32]>, noise: f32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..qlaud_server::embed::DIMENSIONS)
            .map(|i| around.map_or(0.0, |a| a[i]) + noise * self.next())
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }
}

/// Stores turns with the given vectors straight into the store's tables
/// (bypassing the queue), as the indexer would have stored them.
async fn plant(
    url: &str,
    tenant: &str,
    key: &str,
    thread: &str,
    vectors: &[Vec<f32>],
) -> Vec<String> {
    let pool = store_pool(url).await;
    let mut ids = Vec::new();
    for (i, v) in vectors.iter().enumerate() {
        let id = qlaud_server::store::new_id("msg");
        let text: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        sqlx::query(
            "INSERT INTO thread_messages (id, thread_id, tenant_id, seq, role, content, metadata, \
             created_ms) VALUES ($1, $2, $3, $4, 'user', '[]', '{}', $5)",
        )
        .bind(&id)
        .bind(thread)
        .bind(tenant)
        .bind(i as i64 + 1)
        .bind(1_700_000_000_000i64 + i as i64)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO turn_vectors (message_id, tenant_id, key_id, thread_id, role, text, \
             created_ms, embedding_v) VALUES ($1, $2, $3, $4, 'user', 'planted', $5, \
             CAST($6 AS vector))",
        )
        .bind(&id)
        .bind(tenant)
        .bind(key)
        .bind(thread)
        .bind(1_700_000_000_000i64 + i as i64)
        .bind(format!("[{}]", text.join(",")))
        .execute(&pool)
        .await
        .unwrap();
        ids.push(id);
    }
    pool.close().await;
    ids
}

/// pgvector before 0.8 (the test server's is 0.6) has HNSW but no
/// iterative scans: the index path fills `limit` for a caller whose rows
/// are few among many others' (by falling back to the exact scan), stays
/// inside the caller's tenant and key, and finds what the exact scan finds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hnsw_path_honours_limit_and_agrees_with_exact_search() {
    use qlaud_server::store::{VectorIndex, VectorQuery};
    let Some(t) = TestServer::start_search(Backend::Postgres).await else { return };
    let store = t.server().store();
    let index = store.prepare_vector_index().await.unwrap().unwrap();
    assert_ne!(index, VectorIndex::Exact, "this pgvector has HNSW");
    let (tenant_b, admin_b) = t.create_tenant("b").await;
    let (b, b_id) = mint(&t, &admin_b, "b").await;
    let (a, a_id) = mint(&t, &t.master_key, "a").await;
    let (bt, at) = (thread(&t, &b).await, thread(&t, &a).await);
    let mut g = Unit(0x9e37_79b9_7f4a_7c15);
    let query = g.vector(None, 1.0);
    // The other tenant's 3000 turns are all close to the query; ours, 60,
    // are anywhere.
    let near: Vec<Vec<f32>> = (0..3000).map(|_| g.vector(Some(&query), 0.08)).collect();
    let mine: Vec<Vec<f32>> = (0..60).map(|_| g.vector(None, 1.0)).collect();
    let b_ids = plant(&t.db.url, &tenant_b, &b_id, &bt, &near).await;
    let a_ids = plant(&t.db.url, &t.tenant_id, &a_id, &at, &mine).await;
    let pool = store_pool(&t.db.url).await;
    sqlx::query("ANALYZE turn_vectors").execute(&pool).await.unwrap();
    let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "EXPLAIN SELECT message_id FROM turn_vectors WHERE tenant_id = '{tenant_b}' \
         ORDER BY embedding_v <=> '{}' LIMIT 10",
        format!("{:?}", query).replace(' ', "")
    )))
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.try_get::<String, _>(0).unwrap())
    .collect();
    pool.close().await;
    let short: Vec<&str> = plan.iter().map(|l| &l[..l.len().min(100)]).collect();
    eprintln!("plan of a tenant's nearest 10:\n{}", short.join("\n"));
    assert!(plan.iter().any(|l| l.contains("turn_vectors_hnsw")), "the index is not used");
    for (tenant, owner, ids) in
        [(&tenant_b, Some(b_id.as_str()), &b_ids), (&t.tenant_id, Some(a_id.as_str()), &a_ids)]
    {
        for limit in [1, 10, 50] {
            let q = VectorQuery {
                tenant_id: tenant,
                owner,
                key_id: None,
                thread_id: None,
                role: None,
                from_ms: i64::MIN,
                to_ms: i64::MAX,
                limit,
                vector: &query,
            };
            let got: Vec<String> = store
                .search_vectors(&q, index)
                .await
                .unwrap()
                .into_iter()
                .map(|h| h.message_id)
                .collect();
            let exact: Vec<String> = store
                .search_vectors(&q, VectorIndex::Exact)
                .await
                .unwrap()
                .into_iter()
                .map(|h| h.message_id)
                .collect();
            assert_eq!(got.len(), limit as usize, "limit {limit} not filled");
            assert_eq!(exact.len(), limit as usize);
            assert!(got.iter().all(|id| ids.contains(id)), "another caller's row");
            let found = got.iter().filter(|id| exact.contains(id)).count();
            assert!(
                found * 10 >= got.len() * 9,
                "recall {found}/{} against the exact scan at limit {limit}",
                got.len()
            );
        }
    }
    let _ = (a, b);
    t.stop().await;
}
