//! Threads end to end through the Rust SDK: create, read, change and delete,
//! pages in both directions, isolation between keys and tenants, bad input;
//! and at the store, message order and turn idempotency under concurrency.
//! On SQLite and PostgreSQL.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use futures::TryStreamExt;
use qlaud::types;
use qlaud_api::{MessageRole, MessagesUsage};
use qlaud_server::store::{NewMessage, ThreadAccess, TurnClaim};
use qlaud_tests::{Backend, RawBody, TestServer, backend_tests};
use reqwest::Method;
use serde_json::json;

backend_tests!(
    thread_lifecycle_through_the_sdk,
    threads_page_in_both_directions,
    messages_page_in_both_directions_and_go_with_the_thread,
    keys_and_tenants_see_only_their_threads,
    admin_keys_own_threads_for_their_users,
    bad_input_is_refused_and_changes_nothing,
    appends_take_consecutive_seqs_under_concurrency,
    turn_claims_are_exclusive,
);

fn status<E>(err: &qlaud::Error<E>) -> Option<u16> {
    err.status().map(|s| s.as_u16())
}

fn limit(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// A standard key's secret and id.
async fn user(t: &TestServer, name: &str) -> (String, String) {
    let key = t.mint(json!({"name": name})).await;
    (key["secret"].as_str().unwrap().to_string(), key["id"].as_str().unwrap().to_string())
}

async fn new_thread(client: &qlaud::Client) -> types::Thread {
    client
        .create_thread()
        .body(types::CreateThreadRequest::builder())
        .send()
        .await
        .unwrap()
        .into_inner()
}

fn text(role: MessageRole, text: &str) -> NewMessage {
    NewMessage {
        id: qlaud_server::store::new_id("msg"),
        role,
        content: vec![json!({"type": "text", "text": text})],
        model: None,
        stop_reason: None,
        usage: None,
        request_id: None,
        metadata: BTreeMap::new(),
        response_id: None,
    }
}

async fn thread_lifecycle_through_the_sdk(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let (secret, key_id) = user(&t, "user_42").await;
    let client = t.client(&secret);
    let created = client
        .create_thread()
        .body(
            types::CreateThreadRequest::builder()
                .metadata(Some([("topic".to_string(), "refunds".to_string())].into()))
                .system(Some("You are terse.".to_string()))
                .model(Some("echo".to_string()))
                .truncation(Some(types::Truncation::Auto)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let created = created.into_inner();
    assert!(created.id.starts_with("thr_"), "{}", created.id);
    assert_eq!(created.object, "thread");
    assert_eq!(created.key_id, key_id);
    assert_eq!(created.metadata["topic"], "refunds");
    assert_eq!(created.system.as_deref(), Some("You are terse."));
    assert_eq!(created.model.as_deref(), Some("echo"));
    assert_eq!(created.truncation, types::Truncation::Auto);

    // Defaults: no system prompt, no model, truncation disabled.
    let plain = new_thread(&client).await;
    assert_eq!(plain.system, None);
    assert_eq!(plain.model, None);
    assert_eq!(plain.truncation, types::Truncation::Disabled);
    assert!(plain.metadata.is_empty());

    let got = client.get_thread().thread_id(&created.id).send().await.unwrap().into_inner();
    assert_eq!(got.id, created.id);
    assert_eq!(got.system, created.system);

    // An update changes only what it names; an empty string clears.
    let updated = client
        .update_thread()
        .thread_id(&created.id)
        .body(
            types::UpdateThreadRequest::builder()
                .metadata(Some([("topic".to_string(), "billing".to_string())].into())),
        )
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.metadata["topic"], "billing");
    assert_eq!(updated.system.as_deref(), Some("You are terse."));
    assert_eq!(updated.truncation, types::Truncation::Auto);
    assert!(updated.updated_at >= created.updated_at);
    let cleared = client
        .update_thread()
        .thread_id(&created.id)
        .body(
            types::UpdateThreadRequest::builder()
                .system(Some(String::new()))
                .model(Some(String::new()))
                .truncation(Some(types::Truncation::Disabled)),
        )
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cleared.system, None);
    assert_eq!(cleared.model, None);
    assert_eq!(cleared.truncation, types::Truncation::Disabled);
    assert_eq!(cleared.metadata["topic"], "billing");

    let deleted = client.delete_thread().thread_id(&created.id).send().await.unwrap().into_inner();
    assert_eq!(deleted.id, created.id);
    assert_eq!(deleted.object, "thread.deleted");
    assert!(deleted.deleted);
    let err = client.get_thread().thread_id(&created.id).send().await.unwrap_err();
    assert_eq!(status(&err), Some(404));
    let err = client.delete_thread().thread_id(&created.id).send().await.unwrap_err();
    assert_eq!(status(&err), Some(404));
    let left: Vec<types::Thread> = client.list_threads().stream().try_collect().await.unwrap();
    assert_eq!(left.iter().map(|t| &t.id).collect::<Vec<_>>(), [&plain.id]);
    t.stop().await;
}

async fn threads_page_in_both_directions(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let (secret, _) = user(&t, "pager").await;
    let client = t.client(&secret);
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(new_thread(&client).await.id);
    }
    let all: Vec<types::Thread> = client.list_threads().stream().try_collect().await.unwrap();
    // Newest first: (created_at, id) descending.
    let keys: Vec<_> = all.iter().map(|t| (t.created_at, t.id.clone())).collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(keys, sorted);
    let mut ids: Vec<_> = all.iter().map(|t| t.id.clone()).collect();
    let mut expected = created.clone();
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected);
    let newest_first: Vec<_> = all.iter().map(|t| t.id.clone()).collect();

    // Pages of 3 by hand (the limit goes with every page, as dropshot
    // clients send it): 3 + 3 + 1, and the last page says it is the last.
    let mut seen = Vec::new();
    let mut page = client.list_threads().limit(limit(3)).send().await.unwrap().into_inner();
    let mut pages = 1;
    loop {
        seen.extend(page.items.iter().map(|t| t.id.clone()));
        let Some(token) = page.next_page.clone() else {
            break;
        };
        page = client
            .list_threads()
            .limit(limit(3))
            .page_token(token)
            .send()
            .await
            .unwrap()
            .into_inner();
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, newest_first);

    // Oldest first, in pages of 2.
    let mut oldest_first: Vec<String> = Vec::new();
    let mut token = None;
    loop {
        let mut req = client.list_threads().order(types::SortDirection::Asc).limit(limit(2));
        if let Some(t) = token.take() {
            req = req.page_token(t);
        }
        let page = req.send().await.unwrap().into_inner();
        oldest_first.extend(page.items.iter().map(|t| t.id.clone()));
        match page.next_page {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let mut reversed = newest_first.clone();
    reversed.reverse();
    assert_eq!(oldest_first, reversed);

    // `after` and `before` bound by creation, whatever the order.
    let pivot = &newest_first[3];
    let older: Vec<types::Thread> =
        client.list_threads().before(pivot.as_str()).stream().try_collect().await.unwrap();
    assert_eq!(older.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), newest_first[4..]);
    let newer: Vec<types::Thread> = client
        .list_threads()
        .after(pivot.as_str())
        .order(types::SortDirection::Asc)
        .limit(limit(1))
        .stream()
        .try_collect()
        .await
        .unwrap();
    let mut expect_newer = newest_first[..3].to_vec();
    expect_newer.reverse();
    assert_eq!(newer.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), expect_newer);
    let between: Vec<types::Thread> = client
        .list_threads()
        .after(newest_first[5].as_str())
        .before(newest_first[1].as_str())
        .stream()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(between.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), newest_first[2..5]);

    // Limits: 1 to 100.
    let at_max = client.list_threads().limit(limit(100)).send().await.unwrap().into_inner();
    assert_eq!(at_max.items.len(), 7);
    assert!(at_max.next_page.is_none());
    for bad in ["limit=101", "limit=0", "limit=-1", "limit=x", "order=sideways"] {
        let (code, body) =
            t.request(Method::GET, &format!("/v1/threads?{bad}"), Some(&secret), None).await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
    t.stop().await;
}

async fn messages_page_in_both_directions_and_go_with_the_thread(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let (secret, _) = user(&t, "talker").await;
    let client = t.client(&secret);
    let thread = new_thread(&client).await;
    let store = t.server().store();
    // Two turns' worth, as the turn endpoint will store them: the user's
    // message, a tool call and its result, the final answer.
    let mut answer = text(MessageRole::Assistant, "a2");
    answer.model = Some("echo".into());
    answer.stop_reason = Some("end_turn".into());
    answer.usage = Some(MessagesUsage {
        input_tokens: 3,
        output_tokens: 2,
        cost_micros: Some(17),
        ..Default::default()
    });
    answer.request_id = Some("req_1".into());
    answer.metadata = [("source".to_string(), "test".to_string())].into();
    let mut tool_use = text(MessageRole::Assistant, "");
    tool_use.content =
        vec![json!({"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": 1}})];
    let mut tool_result = text(MessageRole::User, "");
    tool_result.content =
        vec![json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"})];
    store
        .append_messages(&t.tenant_id, &thread.id, &[text(MessageRole::User, "u1")], None)
        .await
        .unwrap();
    let batch = [text(MessageRole::User, "u2"), tool_use, tool_result, answer];
    let stored = store.append_messages(&t.tenant_id, &thread.id, &batch, None).await.unwrap();
    assert_eq!(stored.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3, 4, 5]);
    store
        .append_messages(
            &t.tenant_id,
            &thread.id,
            &[text(MessageRole::User, "u3"), text(MessageRole::Assistant, "a3")],
            None,
        )
        .await
        .unwrap();

    let texts = |ms: &[types::ThreadMessage]| -> Vec<String> {
        ms.iter()
            .map(|m| {
                m.content[0]
                    .get("text")
                    .or(m.content[0].get("name"))
                    .or(m.content[0].get("content"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    let chronological = ["u1", "u2", "lookup", "42", "a2", "u3", "a3"];
    let newest: Vec<types::ThreadMessage> = client
        .list_thread_messages()
        .thread_id(&thread.id)
        .limit(limit(3))
        .stream()
        .try_collect()
        .await
        .unwrap();
    let mut rev = chronological.to_vec();
    rev.reverse();
    assert_eq!(texts(&newest), rev);
    let first = client
        .list_thread_messages()
        .thread_id(&thread.id)
        .order(types::SortDirection::Asc)
        .limit(limit(3))
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(texts(&first.items), chronological[..3]);
    let second = client
        .list_thread_messages()
        .thread_id(&thread.id)
        .limit(limit(3))
        .page_token(first.next_page.unwrap())
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(texts(&second.items), chronological[3..6]);

    // The stored form comes back whole.
    let a2 = &newest[2];
    assert_eq!(a2.object, "thread.message");
    assert_eq!(a2.thread_id, thread.id);
    assert_eq!(a2.role, types::MessageRole::Assistant);
    assert_eq!(a2.model.as_deref(), Some("echo"));
    assert_eq!(a2.stop_reason.as_deref(), Some("end_turn"));
    let usage = a2.usage.as_ref().unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens, usage.cost_micros), (3, 2, Some(17)));
    assert_eq!(a2.metadata["source"], "test");
    assert!(a2.id.starts_with("msg_"));
    let u1 = &newest[6];
    assert_eq!(u1.role, types::MessageRole::User);
    assert!(u1.usage.is_none() && u1.model.is_none());
    assert_eq!(u1.content, [json!({"type": "text", "text": "u1"})]);

    // What was added since a message, and what came before one.
    let since: Vec<types::ThreadMessage> = client
        .list_thread_messages()
        .thread_id(&thread.id)
        .after(a2.id.as_str())
        .order(types::SortDirection::Asc)
        .stream()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(texts(&since), ["u3", "a3"]);
    let before: Vec<types::ThreadMessage> = client
        .list_thread_messages()
        .thread_id(&thread.id)
        .before(newest[4].id.as_str())
        .stream()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(texts(&before), ["u2", "u1"]);
    let err = client
        .list_thread_messages()
        .thread_id(&thread.id)
        .after("msg_0000")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(400));
    let err = client.list_thread_messages().thread_id(&thread.id).limit(limit(101)).send().await;
    assert_eq!(status(&err.unwrap_err()), Some(400));

    // The whole history for a turn, oldest first.
    let history = store.thread_history(&t.tenant_id, &thread.id).await.unwrap();
    assert_eq!(history.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>());

    // Deleting the thread takes its messages and turn records along.
    store.claim_turn(&t.tenant_id, &thread.id, "idem-1", "f").await.unwrap();
    client.delete_thread().thread_id(&thread.id).send().await.unwrap();
    assert!(store.thread_history(&t.tenant_id, &thread.id).await.unwrap().is_empty());
    let pool = qlaud_tests::store_pool(&t.db.url).await;
    for table in ["thread_messages", "thread_turns"] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE thread_id = $1"
        )))
        .bind(&thread.id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(n, 0, "{table} keeps rows of a deleted thread");
    }
    let err = client.list_thread_messages().thread_id(&thread.id).send().await.unwrap_err();
    assert_eq!(status(&err), Some(404));
    // Appending to a deleted thread is refused, not stored.
    let err = store
        .append_messages(&t.tenant_id, &thread.id, &[text(MessageRole::User, "late")], None)
        .await
        .unwrap_err();
    assert!(matches!(err, qlaud_server::error::Error::NotFound { .. }), "{err}");
    t.stop().await;
}

async fn keys_and_tenants_see_only_their_threads(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let (a_secret, a_id) = user(&t, "alice").await;
    let (b_secret, _) = user(&t, "bob").await;
    let (_, other_master) = t.create_tenant("other").await;
    let alice = t.client(&a_secret);
    let bob = t.client(&b_secret);
    let thread = new_thread(&alice).await;
    new_thread(&bob).await;
    alice
        .update_thread()
        .thread_id(&thread.id)
        .body(types::UpdateThreadRequest::builder().system(Some("keep me".into())))
        .send()
        .await
        .unwrap();
    let id = thread.id.as_str();
    let missing = "thr_00000000000000000000000000000000";

    for intruder in [&b_secret, &other_master] {
        let attempts = [
            (Method::GET, format!("/v1/threads/{id}"), None),
            (Method::PATCH, format!("/v1/threads/{id}"), Some(json!({"system": "pwned"}))),
            (Method::DELETE, format!("/v1/threads/{id}"), None),
            (Method::GET, format!("/v1/threads/{id}/messages"), None),
        ];
        for (method, path, body) in attempts {
            let (code, got) = t
                .request(method.clone(), &path, Some(intruder), body.clone().map(RawBody::Json))
                .await;
            assert_eq!(code, 404, "{method} {path}: {got}");
            // The same answer as for an id that never existed, but for the
            // id it names and its own request id.
            let (code_missing, got_missing) = t
                .request(
                    method.clone(),
                    &path.replace(id, missing),
                    Some(intruder),
                    body.map(RawBody::Json),
                )
                .await;
            assert_eq!(code_missing, 404, "{got_missing}");
            let normalise = |mut v: serde_json::Value, thread_id: &str| {
                v["request_id"] = json!("…");
                v["message"] = json!(v["message"].as_str().unwrap().replace(thread_id, "{id}"));
                v
            };
            assert_eq!(normalise(got, id), normalise(got_missing, missing), "{method} {path}");
        }
    }
    // Bob's and the other tenant's listings never show Alice's thread, and
    // a standard key cannot ask for another key's.
    let bobs: Vec<types::Thread> = bob.list_threads().stream().try_collect().await.unwrap();
    assert_eq!(bobs.len(), 1);
    assert!(bobs.iter().all(|t| t.id != thread.id));
    let others: Vec<types::Thread> =
        t.client(&other_master).list_threads().stream().try_collect().await.unwrap();
    assert!(others.is_empty());
    let err = bob.list_threads().key_id(&a_id).send().await.unwrap_err();
    assert_eq!(status(&err), Some(403));
    let err = t.client(&other_master).list_threads().key_id(&a_id).send().await.unwrap_err();
    assert_eq!(status(&err), Some(404));
    // Alice's own key may name itself; her thread is untouched.
    let own: Vec<types::Thread> =
        alice.list_threads().key_id(&a_id).stream().try_collect().await.unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].system.as_deref(), Some("keep me"));

    // The tenant's admin key sees and manages every thread of the tenant.
    let admin = t.client(&t.master_key);
    let all: Vec<types::Thread> = admin.list_threads().stream().try_collect().await.unwrap();
    assert_eq!(all.len(), 2);
    let alices: Vec<types::Thread> =
        admin.list_threads().key_id(&a_id).stream().try_collect().await.unwrap();
    assert_eq!(alices.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [id]);
    let got = admin.get_thread().thread_id(id).send().await.unwrap().into_inner();
    assert_eq!(got.key_id, a_id);
    admin
        .update_thread()
        .thread_id(id)
        .body(types::UpdateThreadRequest::builder().model(Some("echo".into())))
        .send()
        .await
        .unwrap();
    admin.list_thread_messages().thread_id(id).send().await.unwrap();
    admin.delete_thread().thread_id(id).send().await.unwrap();
    let err = alice.get_thread().thread_id(id).send().await.unwrap_err();
    assert_eq!(status(&err), Some(404));
    t.stop().await;
}

async fn admin_keys_own_threads_for_their_users(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let (u_secret, u_id) = user(&t, "carol").await;
    let (_, other_master) = t.create_tenant("other").await;
    let admin = t.client(&t.master_key);
    // An admin opens a thread for a user: the user owns it (and will pay).
    let made = admin
        .create_thread()
        .body(types::CreateThreadRequest::builder().key_id(Some(u_id.clone())))
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.key_id, u_id);
    let seen = t.client(&u_secret).get_thread().thread_id(&made.id).send().await.unwrap();
    assert_eq!(seen.into_inner().id, made.id);
    // Without key_id the admin key owns it, and the user does not see it.
    let own = new_thread(&admin).await;
    assert_ne!(own.key_id, u_id);
    let err = t.client(&u_secret).get_thread().thread_id(&own.id).send().await.unwrap_err();
    assert_eq!(status(&err), Some(404));
    // Another tenant's key is unknown here; a standard key cannot give its
    // threads away; a revoked key cannot own new threads.
    let err = t
        .client(&other_master)
        .create_thread()
        .body(types::CreateThreadRequest::builder().key_id(Some(u_id.clone())))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(404));
    let (_, v_id) = user(&t, "dave").await;
    let err = t
        .client(&u_secret)
        .create_thread()
        .body(types::CreateThreadRequest::builder().key_id(Some(v_id.clone())))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(403));
    admin.revoke_key().key_id(&v_id).send().await.unwrap();
    let err = admin
        .create_thread()
        .body(types::CreateThreadRequest::builder().key_id(Some(v_id)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(409));
    t.stop().await;
}

async fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let (secret, _) = user(&t, "typo").await;
    let thread = new_thread(&t.client(&secret)).await;
    let path = format!("/v1/threads/{}", thread.id);
    let big_system = "x".repeat(256 * 1024 + 1);
    let many_pairs: serde_json::Map<_, _> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases: Vec<(Method, &str, RawBody, &str)> = vec![
        (Method::POST, "/v1/threads", RawBody::Text("{\"metadata\":".into()), ""),
        (Method::POST, "/v1/threads", RawBody::Json(json!({"modle": "echo"})), "unknown field"),
        (Method::POST, "/v1/threads", RawBody::Json(json!({"model": "gpt-9"})), "unknown model"),
        (
            Method::POST,
            "/v1/threads",
            RawBody::Json(json!({"model": "text-embedding-3-small"})),
            "not a chat model",
        ),
        (Method::POST, "/v1/threads", RawBody::Json(json!({"model": 5})), ""),
        (Method::POST, "/v1/threads", RawBody::Json(json!({"truncation": "sometimes"})), ""),
        (Method::POST, "/v1/threads", RawBody::Json(json!({"metadata": "x"})), ""),
        (Method::POST, "/v1/threads", RawBody::Json(json!({"metadata": {"k": 1}})), ""),
        (Method::POST, "/v1/threads", RawBody::Json(json!({"metadata": many_pairs})), "pairs"),
        (
            Method::POST,
            "/v1/threads",
            RawBody::Json(json!({"metadata": {"k".repeat(41): "v"}})),
            "metadata key",
        ),
        (Method::POST, "/v1/threads", RawBody::Json(json!({"system": big_system})), "limit"),
        (Method::PATCH, &path, RawBody::Json(json!({})), "names no field"),
        (Method::PATCH, &path, RawBody::Json(json!({"model": "gpt-9"})), "unknown model"),
        (Method::PATCH, &path, RawBody::Json(json!({"system": big_system})), "limit"),
        (Method::PATCH, &path, RawBody::Json(json!({"key_id": "key_x"})), "unknown field"),
        (Method::PATCH, &path, RawBody::Json(json!({"truncation": null, "x": 1})), ""),
    ];
    for (method, path, body, expect) in cases {
        let (code, got) = t.request(method.clone(), path, Some(&secret), Some(body)).await;
        assert_eq!(code, 400, "{method} {path}: {got}");
        let message = got["message"].as_str().unwrap_or_default().to_lowercase();
        assert!(message.contains(expect), "{method} {path}: {message:?} lacks {expect:?}");
    }
    // A system prompt of exactly the limit is kept.
    let (code, got) = t
        .request(
            Method::PATCH,
            &path,
            Some(&secret),
            Some(RawBody::Json(json!({"system": "y".repeat(256 * 1024)}))),
        )
        .await;
    assert_eq!(code, 200, "{got}");
    // Nothing above changed the thread but that, and no thread was added.
    let (_, list) = t.request(Method::GET, "/v1/threads", Some(&secret), None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["model"], serde_json::Value::Null);
    assert_eq!(list["items"][0]["truncation"], "disabled");
    assert_eq!(list["items"][0]["metadata"], json!({}));
    // Unknown threads are 404; bad cursors are 400; no key is 401.
    let (code, _) = t.request(Method::GET, "/v1/threads/thr_nope", Some(&secret), None).await;
    assert_eq!(code, 404);
    let (code, got) =
        t.request(Method::GET, "/v1/threads?after=thr_nope", Some(&secret), None).await;
    assert_eq!(code, 400, "{got}");
    let (code, _) = t.request(Method::GET, "/v1/threads", None, None).await;
    assert_eq!(code, 401);
    t.stop().await;
}

async fn appends_take_consecutive_seqs_under_concurrency(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let thread = new_thread(&t.client(&t.master_key)).await;
    let store = t.server().store().clone();
    // Eight writers append three messages each at once: every batch gets
    // three consecutive seqs, and together they fill 1..=24 exactly.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (store, tenant, id) = (store.clone(), t.tenant_id.clone(), thread.id.clone());
        tasks.push(tokio::spawn(async move {
            let batch: Vec<_> =
                (0..3).map(|i| text(MessageRole::User, &format!("w{w}-{i}"))).collect();
            store.append_messages(&tenant, &id, &batch, None).await.unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        let rows = task.await.unwrap();
        let s: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(s, [s[0], s[0] + 1, s[0] + 2], "a batch is contiguous");
        let texts: Vec<_> = rows.iter().map(|r| r.content.clone()).collect();
        assert!(texts[0].contains("-0") && texts[2].contains("-2"), "in the order given");
        seqs.extend(s);
    }
    seqs.sort();
    assert_eq!(seqs, (1..=24).collect::<Vec<_>>());
    let history = store.thread_history(&t.tenant_id, &thread.id).await.unwrap();
    assert_eq!(history.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=24).collect::<Vec<_>>());
    // The thread says what changed it last; its access checks hold at the
    // store too.
    let access = ThreadAccess { tenant_id: &t.tenant_id, owner: Some("key_other") };
    assert!(store.get_thread(access, &thread.id).await.is_err());
    let access = ThreadAccess { tenant_id: &t.tenant_id, owner: None };
    let row = store.get_thread(access, &thread.id).await.unwrap();
    assert_eq!(row.last_seq, 24);
    assert!(row.updated_ms >= row.created_ms);
    // Appending nothing stores nothing; another tenant's id is not found.
    assert!(store.append_messages(&t.tenant_id, &thread.id, &[], None).await.unwrap().is_empty());
    let err =
        store.append_messages("ten_other", &thread.id, &[text(MessageRole::User, "x")], None).await;
    assert!(err.is_err());
    t.stop().await;
}

async fn turn_claims_are_exclusive(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let thread = new_thread(&t.client(&t.master_key)).await;
    let store = t.server().store().clone();
    // Twelve requests with one idempotency key race: exactly one runs.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (store, tenant, id) = (store.clone(), t.tenant_id.clone(), thread.id.clone());
        tasks.push(tokio::spawn(async move {
            store.claim_turn(&tenant, &id, "idem-1", "body-hash").await.unwrap()
        }));
    }
    let mut claims = Vec::new();
    for task in tasks {
        claims.push(task.await.unwrap());
    }
    assert_eq!(claims.iter().filter(|c| **c == TurnClaim::Claimed).count(), 1, "{claims:?}");
    assert!(claims.iter().all(|c| matches!(c, TurnClaim::Claimed | TurnClaim::InProgress)));
    // The same key for another request is refused, running or done.
    let other = store.claim_turn(&t.tenant_id, &thread.id, "idem-1", "other").await.unwrap();
    assert_eq!(other, TurnClaim::Mismatch);
    // The answer stored with the turn completes it in the same commit; a
    // retry then gets that answer.
    let stored = store
        .append_messages(
            &t.tenant_id,
            &thread.id,
            &[text(MessageRole::User, "q"), text(MessageRole::Assistant, "a")],
            Some("idem-1"),
        )
        .await
        .unwrap();
    let again = store.claim_turn(&t.tenant_id, &thread.id, "idem-1", "body-hash").await.unwrap();
    assert_eq!(again, TurnClaim::Done(stored[1].id.clone()));
    // A completed turn is neither completed again nor released.
    let err = store.complete_turn(&thread.id, "idem-1", "msg_x").await.unwrap_err();
    assert!(matches!(err, qlaud_server::error::Error::Conflict(_)), "{err}");
    store.release_turn(&thread.id, "idem-1").await.unwrap();
    let still = store.claim_turn(&t.tenant_id, &thread.id, "idem-1", "body-hash").await.unwrap();
    assert_eq!(still, TurnClaim::Done(stored[1].id.clone()));
    // A failed turn is released, and the retry runs it.
    let key2 = "idem-2";
    assert_eq!(
        store.claim_turn(&t.tenant_id, &thread.id, key2, "h").await.unwrap(),
        TurnClaim::Claimed
    );
    store.release_turn(&thread.id, key2).await.unwrap();
    assert_eq!(
        store.claim_turn(&t.tenant_id, &thread.id, key2, "h").await.unwrap(),
        TurnClaim::Claimed
    );
    store.complete_turn(&thread.id, key2, &stored[1].id).await.unwrap();
    assert_eq!(
        store.claim_turn(&t.tenant_id, &thread.id, key2, "h").await.unwrap(),
        TurnClaim::Done(stored[1].id.clone())
    );
    // Keys are per thread; a missing (or another tenant's) thread is 404.
    let other_thread = new_thread(&t.client(&t.master_key)).await;
    assert_eq!(
        store.claim_turn(&t.tenant_id, &other_thread.id, "idem-1", "x").await.unwrap(),
        TurnClaim::Claimed
    );
    let err = store.claim_turn("ten_other", &thread.id, "idem-9", "x").await.unwrap_err();
    assert!(matches!(err, qlaud_server::error::Error::NotFound { .. }), "{err}");
    t.stop().await;
}
