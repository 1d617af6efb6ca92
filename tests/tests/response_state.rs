//! Responses API state kept by qlaud, on SQLite and PostgreSQL:
//! `previous_response_id` chains (the provider receives the whole
//! history, for Claude and GPT, JSON and streamed), forks of a chain,
//! `store: false`, `get_response` / `delete_response`, isolation between
//! keys, and the Conversations API as a view of threads.

use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, RawBody, TestServer, backend_tests, mock_toml, sse_events};
use reqwest::Method;
use serde_json::{Value, json};

backend_tests!(
    previous_response_id_chains_three_turns,
    a_chain_forks_into_a_thread_of_its_own,
    store_false_keeps_nothing,
    other_keys_responses_are_404,
    conversations_are_threads,
);

async fn user(t: &TestServer, name: &str) -> String {
    let key = t.mint(json!({"name": name, "max_spend_usd": 5.0})).await;
    key["secret"].as_str().unwrap().to_string()
}

async fn call(
    t: &TestServer,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    t.request(method, path, Some(key), body.map(RawBody::Json)).await
}

async fn respond(t: &TestServer, key: &str, body: Value) -> Value {
    let (status, v) = call(t, key, Method::POST, "/v1/responses", Some(body)).await;
    assert_eq!(status, 200, "{v}");
    v
}

fn output_text(v: &Value) -> String {
    v["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["text"].as_str().map(str::to_string))
        .collect()
}

/// The conversation the provider received, as `(role, text)` per turn.
fn sent_history(mock: &MockUpstream, model: &str) -> Vec<(String, String)> {
    let body = mock.stats().last_body.unwrap();
    let turns = if model.starts_with("gpt") { &body["input"] } else { &body["messages"] };
    turns
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let text = match &m["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => {
                    parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("")
                }
                _ => String::new(),
            };
            (m["role"].as_str().unwrap_or_default().to_string(), text)
        })
        .collect()
}

fn turns(words: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        out.push(("user".to_string(), w.to_string()));
        if i + 1 < words.len() {
            out.push(("assistant".to_string(), format!("Hello from mock: {w}")));
        }
    }
    out
}

async fn previous_response_id_chains_three_turns(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = user(&t, "chains").await;
    for model in ["claude-test", "gpt-test"] {
        let r1 = respond(&t, &key, json!({"model": model, "input": "one"})).await;
        assert_eq!(r1["store"], true);
        let r2 = respond(
            &t,
            &key,
            json!({"model": model, "input": "two", "previous_response_id": r1["id"]}),
        )
        .await;
        assert_eq!(sent_history(&mock, model), turns(&["one", "two"]), "{model}");
        let r3 = respond(
            &t,
            &key,
            json!({"model": model, "input": [{"role": "user", "content": "three"}],
                   "previous_response_id": r2["id"]}),
        )
        .await;
        assert_eq!(sent_history(&mock, model), turns(&["one", "two", "three"]), "{model}");
        assert_eq!(output_text(&r3), "Hello from mock: three");
        assert_eq!(r3["previous_response_id"], r2["id"]);
        // The provider is never asked to keep or chain anything.
        let sent = mock.stats().last_body.unwrap();
        assert!(sent.get("previous_response_id").is_none_or(Value::is_null), "{sent}");

        // Retrieved exactly as returned, cost included.
        let path = format!("/v1/responses/{}", r3["id"].as_str().unwrap());
        let (status, got) = call(&t, &key, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got, r3);
        assert!(got["usage"]["cost_micros"].as_i64().unwrap() > 0);

        // A streamed turn is kept too, once its stream has been read.
        let resp = t
            .http
            .post(format!("{}/v1/responses", t.base_url))
            .bearer_auth(&key)
            .json(&json!({"model": model, "input": "four", "stream": true,
                          "previous_response_id": r3["id"]}))
            .send()
            .await
            .unwrap();
        let events: Vec<Value> = sse_events(&resp.text().await.unwrap())
            .into_iter()
            .filter_map(|(_, data)| serde_json::from_str(&data).ok())
            .collect();
        let done = events.iter().find(|e| e["type"] == "response.completed").unwrap();
        assert_eq!(done["response"]["previous_response_id"], r3["id"]);
        assert_eq!(sent_history(&mock, model), turns(&["one", "two", "three", "four"]));
        let r5 = respond(
            &t,
            &key,
            json!({"model": model, "input": "five",
                   "previous_response_id": done["response"]["id"]}),
        )
        .await;
        assert_eq!(output_text(&r5), "Hello from mock: five");
        assert_eq!(sent_history(&mock, model), turns(&["one", "two", "three", "four", "five"]));

        // The chain is one thread, its messages tagged with the responses.
        let (_, threads) = call(&t, &key, Method::GET, "/v1/threads?limit=1", None).await;
        let thread = threads["items"][0]["id"].as_str().unwrap().to_string();
        let (_, msgs) = call(
            &t,
            &key,
            Method::GET,
            &format!("/v1/threads/{thread}/messages?order=asc&limit=100"),
            None,
        )
        .await;
        assert_eq!(msgs["items"].as_array().unwrap().len(), 10, "{msgs}");
        assert_eq!(msgs["items"][9]["usage"]["cost_micros"], r5["usage"]["cost_micros"]);

        // Deleted: gone, and no longer a place to chain from.
        let (status, v) = call(&t, &key, Method::DELETE, &path, None).await;
        assert_eq!(
            (status, &v["object"], &v["deleted"]),
            (200, &json!("response.deleted"), &json!(true))
        );
        assert_eq!(call(&t, &key, Method::GET, &path, None).await.0, 404);
        let (status, v) = call(
            &t,
            &key,
            Method::POST,
            "/v1/responses",
            Some(json!({"model": model, "input": "x", "previous_response_id": r3["id"]})),
        )
        .await;
        assert_eq!(status, 404);
        assert_eq!(v["error"]["code"], "previous_response_not_found");
    }
    t.stop().await;
}

async fn a_chain_forks_into_a_thread_of_its_own(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = user(&t, "forks").await;
    let model = "claude-test";
    let r1 = respond(&t, &key, json!({"model": model, "input": "one"})).await;
    let r2 = respond(
        &t,
        &key,
        json!({"model": model, "input": "two", "previous_response_id": r1["id"]}),
    )
    .await;
    // A second answer to r1: its history is r1 alone, not r2.
    let r3 = respond(
        &t,
        &key,
        json!({"model": model, "input": "three", "previous_response_id": r1["id"]}),
    )
    .await;
    assert_eq!(sent_history(&mock, model), turns(&["one", "three"]));
    // Both branches go on without the other.
    respond(&t, &key, json!({"model": model, "input": "four", "previous_response_id": r2["id"]}))
        .await;
    assert_eq!(sent_history(&mock, model), turns(&["one", "two", "four"]));
    respond(&t, &key, json!({"model": model, "input": "five", "previous_response_id": r3["id"]}))
        .await;
    assert_eq!(sent_history(&mock, model), turns(&["one", "three", "five"]));
    t.stop().await;
}

async fn store_false_keeps_nothing(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = user(&t, "nostore").await;
    for model in ["claude-test", "gpt-test"] {
        let r = respond(&t, &key, json!({"model": model, "input": "hi", "store": false})).await;
        assert_eq!(r["store"], false);
        let path = format!("/v1/responses/{}", r["id"].as_str().unwrap());
        assert_eq!(call(&t, &key, Method::GET, &path, None).await.0, 404);
        let (status, v) = call(
            &t,
            &key,
            Method::POST,
            "/v1/responses",
            Some(json!({"model": model, "input": "x", "previous_response_id": r["id"]})),
        )
        .await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (404, Some("previous_response_not_found"))
        );
    }
    let (_, threads) = call(&t, &key, Method::GET, "/v1/threads", None).await;
    assert_eq!(threads["items"], json!([]), "no thread was made");
    t.stop().await;
}

async fn other_keys_responses_are_404(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let alice = user(&t, "alice").await;
    let bob = user(&t, "bob").await;
    let r = respond(&t, &alice, json!({"model": "gpt-test", "input": "secret"})).await;
    let path = format!("/v1/responses/{}", r["id"].as_str().unwrap());
    let requests = mock.stats().requests;
    let (status, v) = call(&t, &bob, Method::GET, &path, None).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(call(&t, &bob, Method::DELETE, &path, None).await.0, 404);
    let (status, v) = call(
        &t,
        &bob,
        Method::POST,
        "/v1/responses",
        Some(json!({"model": "claude-test", "input": "x", "previous_response_id": r["id"]})),
    )
    .await;
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("previous_response_not_found")));
    assert_eq!(mock.stats().requests, requests, "refused before the provider");
    // The tenant's admin key reaches it; the owner still has it.
    assert_eq!(call(&t, &t.master_key.clone(), Method::GET, &path, None).await.0, 200);
    assert_eq!(call(&t, &alice, Method::GET, &path, None).await.0, 200);
    t.stop().await;
}

async fn conversations_are_threads(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = user(&t, "conversations").await;
    let (status, conv) = call(
        &t,
        &key,
        Method::POST,
        "/v1/conversations",
        Some(json!({"metadata": {"topic": "demo"},
                    "items": [{"type": "message", "role": "user", "content": "one"},
                              {"role": "assistant", "content": "Hello from mock: one"}]})),
    )
    .await;
    assert_eq!(status, 200, "{conv}");
    assert_eq!(conv["object"], "conversation");
    let id = conv["id"].as_str().unwrap().to_string();
    // The same thread under /v1/threads.
    let (status, thread) = call(&t, &key, Method::GET, &format!("/v1/threads/{id}"), None).await;
    assert_eq!((status, &thread["metadata"]["topic"]), (200, &json!("demo")));

    let r1 = respond(&t, &key, json!({"model": "claude-test", "input": "two", "conversation": id}))
        .await;
    assert_eq!(r1["conversation"]["id"], id);
    assert_eq!(sent_history(&mock, "claude-test"), turns(&["one", "two"]));
    respond(&t, &key, json!({"model": "gpt-test", "input": "three", "conversation": {"id": id}}))
        .await;
    assert_eq!(sent_history(&mock, "gpt-test"), turns(&["one", "two", "three"]));

    let items_path = format!("/v1/conversations/{id}/items");
    let (status, list) =
        call(&t, &key, Method::GET, &format!("{items_path}?order=asc"), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 6);
    assert_eq!(data[5]["content"][0]["text"], "Hello from mock: three");
    assert_eq!(list["first_id"], data[0]["id"]);
    // Pages: newest first, two at a time.
    let (_, page) = call(&t, &key, Method::GET, &format!("{items_path}?limit=2"), None).await;
    assert_eq!((page["data"].as_array().unwrap().len(), &page["has_more"]), (2, &json!(true)));
    let after = page["last_id"].as_str().unwrap();
    let (_, next) =
        call(&t, &key, Method::GET, &format!("{items_path}?limit=2&after={after}"), None).await;
    assert_eq!(next["data"][0]["id"], data[3]["id"]);

    // Items added without a model call, fetched and deleted one by one.
    let (status, added) = call(
        &t,
        &key,
        Method::POST,
        &items_path,
        Some(json!({"items": [{"role": "user", "content": "four"}]})),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    let item = added["data"][0]["id"].as_str().unwrap().to_string();
    let (status, got) = call(&t, &key, Method::GET, &format!("{items_path}/{item}"), None).await;
    assert_eq!((status, &got["content"][0]["text"]), (200, &json!("four")));
    let (status, _) = call(&t, &key, Method::DELETE, &format!("{items_path}/{item}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(call(&t, &key, Method::GET, &format!("{items_path}/{item}"), None).await.0, 404);

    let (status, updated) = call(
        &t,
        &key,
        Method::POST,
        &format!("/v1/conversations/{id}"),
        Some(json!({"metadata": {"topic": "changed"}})),
    )
    .await;
    assert_eq!((status, &updated["metadata"]["topic"]), (200, &json!("changed")));

    // OpenAI's rule: one or the other.
    let (status, v) = call(
        &t,
        &key,
        Method::POST,
        "/v1/responses",
        Some(json!({"model": "gpt-test", "input": "x", "conversation": id,
                    "previous_response_id": r1["id"]})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    // Another key sees nothing of it.
    let other = user(&t, "other").await;
    assert_eq!(
        call(&t, &other, Method::GET, &format!("/v1/conversations/{id}"), None).await.0,
        404
    );
    assert_eq!(call(&t, &other, Method::GET, &items_path, None).await.0, 404);

    let (status, v) =
        call(&t, &key, Method::DELETE, &format!("/v1/conversations/{id}"), None).await;
    assert_eq!((status, &v["object"]), (200, &json!("conversation.deleted")));
    assert_eq!(call(&t, &key, Method::GET, &format!("/v1/threads/{id}"), None).await.0, 404);
    let r1_path = format!("/v1/responses/{}", r1["id"].as_str().unwrap());
    assert_eq!(call(&t, &key, Method::GET, &r1_path, None).await.0, 404);
    t.stop().await;
}
