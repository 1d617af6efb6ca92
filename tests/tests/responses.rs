//! `POST /v1/responses` end to end: GPT models passed through to the
//! provider's own Responses API, Claude and `echo` translated, the typed
//! stream events, errors in OpenAI's shape, the SDK's `create_response`,
//! and the hard cap against a hostile end user (huge `instructions` and
//! tool schemas, streams cut before their usage), on SQLite and PostgreSQL.

use futures::StreamExt;
use qlaud::{ResponseEvent, types};
use qlaud_tests::mock::{MockStats, MockUpstream};
use qlaud_tests::{Backend, TestServer, backend_tests, mock_toml, sse_events};
use serde_json::{Value, json};

backend_tests!(
    gpt_passes_through_with_store_off_and_the_reserved_limit,
    claude_and_echo_are_translated,
    streams_are_the_typed_events_with_cost,
    errors_are_openai_shaped,
    sdk_create_response_and_its_stream,
    huge_instructions_and_tool_schemas_are_refused_before_the_provider,
    cut_streams_and_missing_usage_bill_at_least_what_the_provider_billed,
);

/// Real-sized models in front of the mock's greedy and no-usage modes,
/// priced like `gpt-test` and `claude-test`.
fn hostile_toml(mock: &MockUpstream) -> String {
    let mut toml = mock_toml(mock);
    let gpt = r#"prices = { input = "1.25", output = "10", cache_read = "0.125" }"#;
    let claude =
        r#"prices = { input = "3", output = "15", cache_read = "0.3", cache_write = "3.75" }"#;
    for mode in ["greedy", "greedy-slow", "greedy-cut", "nousage"] {
        toml.push_str(&format!(
            "\n[models.\"gpt-big-{mode}\"]\nprovider = \"openai\"\nupstream = \"gpt-{mode}\"\n\
             max_output_tokens = 128000\ncontext_window = 1000000\n{gpt}\n\
             \n[models.\"claude-big-{mode}\"]\nprovider = \"anthropic\"\n\
             upstream = \"claude-{mode}\"\nmax_output_tokens = 64000\n\
             context_window = 1000000\n{claude}\n"
        ));
    }
    toml
}

const GPT: (i64, i64) = (1_250_000, 10_000_000);
const CLAUDE: (i64, i64) = (3_000_000, 15_000_000);

/// What the provider billed by the mock's counts, rounded down.
fn billed(stats: &MockStats, prices: (i64, i64)) -> i64 {
    let pico = stats.input_tokens as i128 * prices.0 as i128
        + stats.output_tokens as i128 * prices.1 as i128;
    (pico / 1_000_000) as i64
}

/// The cost of `(input, output)` tokens at `prices`, rounded up as qlaud
/// rounds each request.
fn cost(tokens: (u64, u64), prices: (i64, i64)) -> i64 {
    let pico = tokens.0 as i128 * prices.0 as i128 + tokens.1 as i128 * prices.1 as i128;
    ((pico + 999_999) / 1_000_000) as i64
}

async fn post(
    t: &TestServer,
    key: &str,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = t
        .http
        .post(format!("{}/v1/responses", t.base_url))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

async fn post_json(t: &TestServer, key: &str, body: &Value) -> (u16, Value) {
    let (status, _, text) = post(t, key, body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn user(t: &TestServer, cap_usd: f64) -> (String, String) {
    let key = t.mint(json!({"name": "responses", "max_spend_usd": cap_usd})).await;
    (key["id"].as_str().unwrap().to_string(), key["secret"].as_str().unwrap().to_string())
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

async fn gpt_passes_through_with_store_off_and_the_reserved_limit(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let (id, key) = user(&t, 5.0).await;
    let body = json!({"model": "gpt-test", "input": "hi there", "store": true,
                      "instructions": "be brief", "x_new_param": {"kept": true}});
    let (status, headers, text) = post(&t, &key, &body).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["model"], "gpt-test");
    assert_eq!(output_text(&v), "Hello from mock: hi there");
    // "be brief" + "hi there" in, five words out.
    assert_eq!(
        (v["usage"]["input_tokens"].as_u64(), v["usage"]["output_tokens"].as_u64()),
        (Some(4), Some(5))
    );
    let expected = cost((4, 5), GPT);
    assert_eq!(v["usage"]["cost_micros"], expected);
    assert_eq!(headers["qlaud-cost-micros"], expected.to_string().as_str());
    let stats = mock.stats();
    assert_eq!(stats.last_path.as_deref(), Some("/v1/responses"));
    let sent = stats.last_body.unwrap();
    assert_eq!(sent["model"], "gpt-upstream");
    assert_eq!(sent["store"], false, "the provider never keeps state");
    assert_eq!(sent["max_output_tokens"], 1000, "the model's limit, reserved");
    assert_eq!(sent["x_new_param"], json!({"kept": true}), "unknown fields pass through");
    assert_eq!(t.key_spend(&id).await, (expected, 1));

    // Cached tokens are billed at the cache-read price.
    let (_, v) = post_json(
        &t,
        &key,
        &json!({"model": "gpt-test", "input": "one two three four five six", "user": "cached"}),
    )
    .await;
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 5);
    let cached = (1.0 * 1.25 + 5.0 * 0.125 + 9.0 * 10.0) as i64;
    assert!((v["usage"]["cost_micros"].as_i64().unwrap() - cached).abs() <= 1, "{v}");

    // A small budget clamps the limit sent upstream, and says so.
    let (_, small) = user(&t, 0.001).await;
    let (status, headers, text) =
        post(&t, &small, &json!({"model": "gpt-test", "input": "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"})).await;
    assert_eq!(status, 200, "{text}");
    let clamped: u64 = headers["qlaud-max-tokens-clamped"].to_str().unwrap().parse().unwrap();
    assert!(clamped < 1000);
    assert_eq!(mock.stats().last_body.unwrap()["max_output_tokens"], clamped);
    t.stop().await;
}

async fn claude_and_echo_are_translated(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let (_, key) = user(&t, 5.0).await;
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let ask = json!({"role": "user", "content": [{"type": "input_text", "text": "what is the weather in Paris"}]});
    let (status, v) = post_json(
        &t,
        &key,
        &json!({"model": "claude-test", "input": [ask], "tools": tools,
                                                  "instructions": "be brief"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "response");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["status"], "completed");
    let sent = mock.stats().last_body.unwrap();
    assert_eq!(mock.stats().last_path.as_deref(), Some("/v1/messages"));
    assert_eq!(sent["system"], "be brief");
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    let call = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap()
        .clone();
    assert_eq!(call["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    // The round trip: the call and its output back as input items.
    let round = json!({"model": "claude-test", "tools": tools, "input": [ask, call,
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}]});
    let (status, v) = post_json(&t, &key, &round).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(output_text(&v), "The tool said: sunny");
    // The tool result went to the provider as a tool_result for that call.
    let sent = mock.stats().last_body.unwrap();
    let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["tool_use_id"], call["call_id"]);
    // Usage: Anthropic's counts, cost at Claude's prices.
    let u = &v["usage"];
    let (input, output) =
        (u["input_tokens"].as_u64().unwrap(), u["output_tokens"].as_u64().unwrap());
    assert_eq!(u["cost_micros"], cost((input, output), CLAUDE));
    assert_eq!(u["total_tokens"].as_u64().unwrap(), input + output);

    // A JSON schema reaches Claude as its output format.
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let body = json!({"model": "claude-test", "input": "hi", "text": {"format":
        {"type": "json_schema", "name": "thing", "schema": schema, "strict": true}}});
    assert_eq!(post_json(&t, &key, &body).await.0, 200);
    let sent = mock.stats().last_body.unwrap();
    assert_eq!(sent["output_config"]["format"]["schema"], schema);

    // A limit below the answer: incomplete, for the output limit.
    let (_, v) = post_json(
        &t,
        &key,
        &json!({"model": "claude-test", "input": "one two three four",
                                              "max_output_tokens": 2}),
    )
    .await;
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");

    // The offline model answers in the same shape.
    let (status, v) =
        post_json(&t, &key, &json!({"model": "echo", "input": "hello responses"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(output_text(&v), "echo: hello responses");
    assert!(v["usage"]["cost_micros"].as_i64().unwrap() > 0);
    t.stop().await;
}

/// The events of a streamed answer, checked for order and numbering.
fn typed_events(text: &str) -> Vec<Value> {
    let events: Vec<Value> = sse_events(text)
        .into_iter()
        .map(|(name, data)| {
            let v: Value = serde_json::from_str(&data).unwrap();
            assert_eq!(name.as_deref(), v["type"].as_str(), "event name and type agree");
            v
        })
        .collect();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64, "{e}");
    }
    events
}

async fn streams_are_the_typed_events_with_cost(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let (_, key) = user(&t, 5.0).await;
    for (model, prices) in [("gpt-test", GPT), ("claude-test", CLAUDE), ("echo", (0, 0))] {
        let body = json!({"model": model, "input": "hi there", "stream": true});
        let (status, headers, text) = post(&t, &key, &body).await;
        assert_eq!(status, 200, "{model}: {text}");
        assert_eq!(headers["content-type"], "text/event-stream");
        let events = typed_events(&text);
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds[..2], ["response.created", "response.in_progress"], "{model}");
        assert_eq!(*kinds.last().unwrap(), "response.completed", "{model}");
        let text: String = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        let done = &events.last().unwrap()["response"];
        assert_eq!(text, output_text(done), "{model}");
        assert!(text.ends_with("hi there"), "{model}: {text}");
        assert_eq!(done["model"], model);
        let u = &done["usage"];
        let tokens = (u["input_tokens"].as_u64().unwrap(), u["output_tokens"].as_u64().unwrap());
        if model != "echo" {
            assert_eq!(u["cost_micros"], cost(tokens, prices), "{model}");
        }
    }
    // A tool call streams as a function_call item with argument deltas.
    let body = json!({"model": "claude-test", "stream": true, "input": "weather please",
                      "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}]});
    let (_, _, text) = post(&t, &key, &body).await;
    let events = typed_events(&text);
    let args: String = events
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "Paris"}));
    assert!(events.iter().any(|e| e["type"] == "response.function_call_arguments.done"));
    // A provider that breaks off mid-stream: an `error` event ends it.
    for model in ["gpt-cut", "claude-cut"] {
        let (_, _, text) =
            post(&t, &key, &json!({"model": model, "input": "a b c d e f", "stream": true})).await;
        let events = typed_events(&text);
        assert_eq!(events.last().unwrap()["type"], "error", "{model}: {text}");
    }
    t.stop().await;
}

async fn errors_are_openai_shaped(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let (_, key) = user(&t, 5.0).await;
    let cases = [
        (json!({"model": "nope", "input": "hi"}), 404, "model_not_found"),
        (
            json!({"model": "gpt-test", "input": "hi", "previous_response_id": "resp_1"}),
            404,
            "previous_response_not_found",
        ),
        (
            json!({"model": "claude-test", "input": "hi", "conversation": {"id": "conv_1"}}),
            404,
            "conversation_not_found",
        ),
        (
            json!({"model": "gpt-test", "input": "hi", "previous_response_id": "resp_1",
                   "conversation": "conv_1"}),
            400,
            "mutually_exclusive_parameters",
        ),
        (json!({"model": "gpt-test", "input": "hi", "tools": [{"type": "web_search"}]}), 400, ""),
        (json!({"model": "gpt-test"}), 400, ""),
        (json!({"input": "hi"}), 400, ""),
    ];
    for (body, status, code) in cases {
        let (got, v) = post_json(&t, &key, &body).await;
        assert_eq!(got, status, "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        if !code.is_empty() {
            assert_eq!(v["error"]["code"], code);
        }
    }
    assert_eq!(mock.stats().requests, 0, "none of them reached a provider");
    // A provider's own error keeps its status.
    let (status, v) = post_json(&t, &key, &json!({"model": "gpt-error-429", "input": "hi"})).await;
    assert_eq!(status, 429, "{v}");
    // A spent cap: 402 in OpenAI's shape.
    let (_, broke) = user(&t, 0.000_001).await;
    for model in ["gpt-test", "claude-test"] {
        let (status, v) = post_json(&t, &broke, &json!({"model": model, "input": "hi"})).await;
        assert_eq!(status, 402, "{v}");
        assert_eq!(v["error"]["type"], "insufficient_quota");
        assert_eq!(v["error"]["code"], "spend_cap_reached");
    }
    t.stop().await;
}

async fn sdk_create_response_and_its_stream(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let (_, key) = user(&t, 5.0).await;
    let client = t.client(&key);
    for model in ["gpt-test", "claude-test", "echo"] {
        let r = client
            .create_response()
            .body(types::ResponsesRequest::builder().model(model).input(json!("hello sdk")))
            .send()
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.object, "response");
        assert_eq!(r.model, model);
        assert!(output_text(&json!({"output": r.output})).ends_with("hello sdk"), "{model}");
        assert!(r.usage.unwrap().cost_micros.unwrap() > 0);
        let mut events = client
            .create_response_stream(json!({"model": model, "input": "hello sdk", "stream": true}))
            .await
            .unwrap();
        let (mut text, mut completed) = (String::new(), None);
        while let Some(e) = events.next().await {
            match e.unwrap().response_event().unwrap() {
                ResponseEvent::OutputTextDelta { delta, .. } => text.push_str(&delta),
                ResponseEvent::Completed { response, .. } => completed = Some(response),
                _ => {}
            }
        }
        assert!(text.ends_with("hello sdk"), "{model}: {text}");
        assert!(completed.unwrap().usage.unwrap().cost_micros.unwrap() > 0);
    }
    let err = client
        .create_response()
        .body(types::ResponsesRequest::builder().model("nope").input(json!("hi")))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    t.stop().await;
}

/// A 400 KB `instructions` or tool schema on a $0.01 cap: refused before
/// the provider, on both paths; within budget, billed at least what the
/// provider billed.
async fn huge_instructions_and_tool_schemas_are_refused_before_the_provider(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&hostile_toml(&mock))).await else { return };
    let (id, key) = user(&t, 0.01).await;
    let big = "x".repeat(400_000);
    for model in ["gpt-big-greedy", "claude-big-greedy"] {
        let holes = [
            json!({"instructions": big}),
            json!({"tools": [{"type": "function", "name": "f", "description": big,
                              "parameters": {"type": "object"}}]}),
            json!({"text": {"format": {"type": "json_schema", "name": "s",
                                       "schema": {"type": "object", "description": big}}}}),
            json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": big}]}]}),
        ];
        for extra in holes {
            let mut body = json!({"model": model, "input": "hi", "max_output_tokens": 16});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let (status, v) = post_json(&t, &key, &body).await;
            assert_eq!(status, 402, "{model}: {v}");
            assert_eq!(v["error"]["code"], "spend_cap_reached");
        }
        // A file the request cannot size reserves the whole window.
        let file = json!({"model": model, "max_output_tokens": 16, "input": [{"role": "user",
            "content": [{"type": "input_file", "file_id": "file-abc"}, {"type": "input_text", "text": "sum"}]}]});
        assert_eq!(
            post_json(&t, &key, &file).await.0,
            if model.starts_with("gpt") { 402 } else { 400 }
        );
    }
    assert_eq!(mock.stats().requests, 0, "nothing reached the provider");
    assert_eq!(t.key_spend(&id).await, (0, 0));
    // Within budget: served, billed at least what the provider billed.
    for (model, prices) in [("gpt-big-greedy", GPT), ("claude-big-greedy", CLAUDE)] {
        mock.reset_stats();
        let (id, key) = user(&t, 0.5).await;
        let body = json!({"model": model, "input": "hi", "max_output_tokens": 32,
                          "instructions": "y".repeat(40_000)});
        let (status, v) = post_json(&t, &key, &body).await;
        assert_eq!(status, 200, "{model}: {v}");
        let stats = mock.stats();
        assert!(stats.input_tokens > 40_000, "{model}: {}", stats.input_tokens);
        let (cost, _) = t.key_spend(&id).await;
        assert!(cost >= billed(&stats, prices), "{model}: {cost} < {}", billed(&stats, prices));
    }
    t.stop().await;
}

/// Streams the client drops early, streams the provider cuts, and answers
/// without usage: each settled at no less than the provider billed, and a
/// key that keeps cutting streams reaches its cap.
async fn cut_streams_and_missing_usage_bill_at_least_what_the_provider_billed(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&hostile_toml(&mock))).await else { return };
    let big = "z".repeat(400_000);
    for (model, prices) in [("gpt-big-greedy-slow", GPT), ("claude-big-greedy-slow", CLAUDE)] {
        mock.reset_stats();
        // Each cut stream reserves and is billed its ~400,000-token prompt.
        let (id, key) = user(&t, 2.0).await;
        let body = json!({"model": model, "stream": true, "max_output_tokens": 200,
                          "input": "Say hello", "instructions": big});
        let mut admitted = 0;
        let mut refused = false;
        for _ in 0..12 {
            let resp = t
                .http
                .post(format!("{}/v1/responses", t.base_url))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .unwrap();
            match resp.status().as_u16() {
                200 => admitted += 1,
                402 => {
                    refused = true;
                    break;
                }
                other => panic!("{model}: status {other}"),
            }
            // Read five events, then hang up.
            let mut stream = resp.bytes_stream();
            let mut text = Vec::new();
            while text.windows(2).filter(|w| w == b"\n\n").count() < 5 {
                let Some(Ok(chunk)) = stream.next().await else { break };
                text.extend_from_slice(&chunk);
            }
            drop(stream);
            t.settled(&id, admitted).await;
        }
        assert!(refused, "{model}: {admitted} cut streams and the cap never bit");
        assert!(admitted >= 1, "{model}");
        let cost = t.settled(&id, admitted).await;
        let stats = mock.stats();
        assert!(stats.input_tokens > 400_000 * admitted, "{model}: {}", stats.input_tokens);
        assert!(cost >= billed(&stats, prices), "{model}: {cost} < {}", billed(&stats, prices));
        assert!(cost <= 2_000_000, "{model}: {cost} µ$ of a $2 cap");
    }
    for (model, stream, prices) in [
        ("gpt-big-greedy-cut", true, GPT),
        ("claude-big-greedy-cut", true, CLAUDE),
        ("gpt-big-nousage", true, GPT),
        ("gpt-big-nousage", false, GPT),
        ("claude-big-nousage", true, CLAUDE),
        ("claude-big-nousage", false, CLAUDE),
    ] {
        mock.reset_stats();
        let (id, key) = user(&t, 1.0).await;
        let body = json!({"model": model, "stream": stream, "max_output_tokens": 50,
                          "input": "tell me about the sea"});
        let (status, _, _) = post(&t, &key, &body).await;
        assert_eq!(status, 200, "{model}");
        let cost = t.settled(&id, 1).await;
        let stats = mock.stats();
        assert!(stats.output_tokens > 0, "{model}");
        assert!(
            cost >= billed(&stats, prices),
            "{model} {stream}: {cost} < {}",
            billed(&stats, prices)
        );
    }
    t.stop().await;
}
