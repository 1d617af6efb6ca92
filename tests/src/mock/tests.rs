use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::{ANTHROPIC_KEY, MockUpstream, OPENAI_KEY, TOOL_ARGS};

mod billing;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn anthropic(mock: &MockUpstream, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/messages", mock.anthropic_base_url()))
        .header("x-api-key", ANTHROPIC_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn openai(mock: &MockUpstream, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", mock.openai_base_url()))
        .bearer_auth(OPENAI_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Reads a body until its end or a transport error; true if it ended cleanly.
async fn read_all(resp: reqwest::Response) -> (String, bool) {
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => text.push_str(std::str::from_utf8(&b).unwrap()),
            Err(_) => return (text, false),
        }
    }
    (text, true)
}

/// Anthropic SSE as (event name, data).
fn anthropic_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap().to_owned();
            let data = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            (name, data)
        })
        .collect()
}

/// OpenAI SSE data payloads, `[DONE]` as a string.
fn openai_chunks(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").unwrap();
            serde_json::from_str(data).unwrap_or_else(|_| json!(data))
        })
        .collect()
}

fn anthropic_text(events: &[(String, Value)]) -> String {
    events.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect()
}

#[tokio::test]
async fn anthropic_json_reply_and_usage() {
    let mock = MockUpstream::start().await;
    let body = json!({"model": "claude-x", "max_tokens": 100, "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi  there"}]}]});
    let resp = anthropic(&mock, body.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["request-id"], "req_mock_1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], "msg_mock_1");
    assert_eq!(v["model"], "claude-x");
    assert_eq!(v["content"][0]["text"], "Hello from mock: hi there");
    assert_eq!(v["stop_reason"], "end_turn");
    let usage = json!({"input_tokens": 4, "output_tokens": 5,
                       "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    assert_eq!(v["usage"], usage);
    let s = mock.stats();
    assert_eq!((s.requests, s.anthropic_requests, s.openai_requests), (1, 1, 0));
    assert_eq!((s.input_tokens, s.output_tokens), (4, 5));
    assert_eq!(s.last_body, Some(body));
    assert_eq!(s.header("x-api-key"), Some(ANTHROPIC_KEY));
    mock.stop().await;
}

#[tokio::test]
async fn anthropic_truncation_cache_and_image() {
    let mock = MockUpstream::start().await;
    let body = json!({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}},
        {"type": "text", "text": "what is this", "cache_control": {"type": "ephemeral"}}]}]});
    let v: Value = anthropic(&mock, body).await.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "Hello from mock: [image]");
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["input_tokens"], 103);
    assert_eq!(v["usage"]["output_tokens"], 4);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 5);
    assert_eq!(mock.stats().cached_tokens, 5);
}

#[tokio::test]
async fn anthropic_auth_and_validation_errors() {
    let mock = MockUpstream::start().await;
    let url = format!("{}/v1/messages", mock.anthropic_base_url());
    let ok = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let resp = client()
        .post(&url)
        .header("x-api-key", "wrong")
        .header("anthropic-version", "2023-06-01")
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    let expected = json!({"type": "error", "error": {"type": "authentication_error",
                                                     "message": "invalid x-api-key"}});
    assert_eq!(v, expected);
    let resp =
        client().post(&url).header("x-api-key", ANTHROPIC_KEY).json(&ok).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let no_max = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let resp = anthropic(&mock, no_max).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "max_tokens: Field required");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let s = mock.stats();
    assert_eq!((s.requests, s.errors, s.input_tokens), (3, 3, 0));
}

#[tokio::test]
async fn anthropic_stream() {
    let mock = MockUpstream::start().await;
    let body = json!({"model": "m", "max_tokens": 100, "stream": true,
                      "messages": [{"role": "user", "content": "one two"}]});
    let resp = anthropic(&mock, body).await;
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let (text, clean) = read_all(resp).await;
    assert!(clean);
    let events = anthropic_events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
    assert_eq!(names[names.len() - 3..], ["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names.len(), 3 + 5 + 3);
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 2);
    assert_eq!(anthropic_text(&events), "Hello from mock: one two");
    let delta = &events[names.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 5);
    let s = mock.stats();
    assert_eq!((s.input_tokens, s.output_tokens), (2, 5));
}

#[tokio::test]
async fn anthropic_tool_call_and_result() {
    let mock = MockUpstream::start().await;
    let tools = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
    let ask = json!({"role": "user", "content": "What's the weather?"});
    let body = json!({"model": "m", "max_tokens": 100, "tools": tools, "messages": [ask]});
    let v: Value = anthropic(&mock, body).await.json().await.unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["text"], "Let me check.");
    assert_eq!(v["content"][1]["name"], "get_weather");
    assert_eq!(v["content"][1]["input"], json!({"city": "Paris"}));
    assert_eq!(v["usage"]["input_tokens"], 13);
    assert_eq!(v["usage"]["output_tokens"], 13);

    let body = json!({"model": "m", "max_tokens": 100, "tools": tools, "stream": true,
                      "messages": [ask]});
    let (text, _) = read_all(anthropic(&mock, body).await).await;
    let events = anthropic_events(&text);
    let json_parts: String =
        events.iter().filter_map(|(_, d)| d["delta"]["partial_json"].as_str()).collect();
    assert_eq!(json_parts, TOOL_ARGS);
    assert!(events.iter().any(|(_, d)| d["content_block"]["type"] == "tool_use"));

    let result = json!({"role": "user", "content": [{"type": "tool_result",
        "tool_use_id": "toolu_mock1", "content": "sunny, 20 C"}]});
    let body = json!({"model": "m", "max_tokens": 100, "tools": tools,
                      "messages": [ask, v, result]});
    let v: Value = anthropic(&mock, body).await.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "The tool said: sunny, 20 C");
}

#[tokio::test]
async fn openai_json_reply_truncation_and_cache() {
    let mock = MockUpstream::start().await;
    let body = json!({"model": "gpt-x", "user": "cached", "max_completion_tokens": 4,
        "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "hi there"},
                                                  {"type": "image_url", "image_url": {"url": "x"}}]}]});
    let resp = openai(&mock, body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req_mock_1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], "chatcmpl-mock1");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock: hi");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let usage = json!({"prompt_tokens": 104, "completion_tokens": 4, "total_tokens": 108,
                       "prompt_tokens_details": {"cached_tokens": 5},
                       "completion_tokens_details": {"reasoning_tokens": 0}});
    assert_eq!(v["usage"], usage);
    let s = mock.stats();
    assert_eq!(
        (s.openai_requests, s.input_tokens, s.output_tokens, s.cached_tokens),
        (1, 104, 4, 5)
    );

    let resp = client()
        .post(format!("{}/chat/completions", mock.openai_base_url()))
        .bearer_auth("nope")
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn openai_stream_usage_only_when_asked() {
    let mock = MockUpstream::start().await;
    let msgs = json!([{"role": "user", "content": "a b"}]);
    let body = json!({"model": "m", "stream": true, "messages": msgs});
    let (text, clean) = read_all(openai(&mock, body).await).await;
    assert!(clean);
    let chunks = openai_chunks(&text);
    assert_eq!(chunks.last().unwrap(), "[DONE]");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    let content: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "Hello from mock: a b");
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "stop");

    let body = json!({"model": "m", "stream": true, "messages": msgs,
                      "stream_options": {"include_usage": true}});
    let (text, _) = read_all(openai(&mock, body).await).await;
    let chunks = openai_chunks(&text);
    let usage_chunk = &chunks[chunks.len() - 2];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 2);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);
    assert!(chunks[0]["usage"].is_null());
    let s = mock.stats();
    assert_eq!((s.input_tokens, s.output_tokens), (4, 10));
}

#[tokio::test]
async fn openai_tool_call_and_result() {
    let mock = MockUpstream::start().await;
    let tools =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
    let ask = json!({"role": "user", "content": "weather in Paris"});
    let body = json!({"model": "m", "tools": tools, "messages": [ask]});
    let v: Value = openai(&mock, body).await.json().await.unwrap();
    let message = &v["choices"][0]["message"];
    assert!(message["content"].is_null());
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(message["tool_calls"][0]["function"]["arguments"], TOOL_ARGS);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["usage"]["completion_tokens"], 10);

    let body = json!({"model": "m", "tools": tools, "stream": true, "messages": [ask]});
    let (text, _) = read_all(openai(&mock, body).await).await;
    let chunks = openai_chunks(&text);
    let calls: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    assert_eq!(calls[0]["id"], "call_mock1");
    let args: String = calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
    assert_eq!(args, TOOL_ARGS);

    let result = json!({"role": "tool", "tool_call_id": "call_mock1", "content": "sunny"});
    let body = json!({"model": "m", "tools": tools, "messages": [ask, message, result]});
    let v: Value = openai(&mock, body).await.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "The tool said: sunny");
}

#[tokio::test]
async fn injected_errors() {
    let mock = MockUpstream::start().await;
    let msgs = json!([{"role": "user", "content": "x"}]);
    let resp =
        anthropic(&mock, json!({"model": "m-error-429", "max_tokens": 9, "messages": msgs})).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    let resp =
        anthropic(&mock, json!({"model": "error-529", "max_tokens": 9, "messages": msgs})).await;
    assert_eq!(resp.status(), 529);
    let resp = openai(&mock, json!({"model": "error-500", "messages": msgs})).await;
    assert_eq!(resp.status(), 500);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error");
    let resp = openai(&mock, json!({"model": "error-429", "messages": msgs})).await;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let s = mock.stats();
    assert_eq!((s.requests, s.errors, s.input_tokens), (4, 4, 0));
}

#[tokio::test]
async fn cut_streams_drop_after_three_tokens() {
    let mock = MockUpstream::start().await;
    let msgs = json!([{"role": "user", "content": "a b c d e"}]);
    let body = json!({"model": "cut", "max_tokens": 100, "stream": true, "messages": msgs});
    let (text, clean) = read_all(anthropic(&mock, body).await).await;
    assert!(!clean);
    let events = anthropic_events(&text);
    assert_eq!(anthropic_text(&events), "Hello from mock: ");
    assert!(events.iter().all(|(n, _)| n != "message_stop"));
    assert_eq!(mock.stats().output_tokens, 3);
    assert_eq!(mock.stats().input_tokens, 5);

    let body = json!({"model": "cut", "stream": true, "messages": msgs,
                      "stream_options": {"include_usage": true}});
    let (text, clean) = read_all(openai(&mock, body).await).await;
    assert!(!clean);
    assert_eq!(openai_chunks(&text).len(), 4);
    assert_eq!(mock.stats().output_tokens, 6);

    // Without streaming: half a JSON body, then the connection drops.
    let (text, clean) =
        read_all(openai(&mock, json!({"model": "cut", "messages": msgs})).await).await;
    assert!(!clean);
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert!(text.starts_with('{'), "{text}");
    assert_eq!(mock.stats().output_tokens, 6);
}

#[tokio::test]
async fn abandoned_stream_counts_what_was_sent() {
    let mock = MockUpstream::start().await;
    let body = json!({"model": "slow", "max_tokens": 100, "stream": true,
                      "messages": [{"role": "user", "content": "a b c d e f g h"}]});
    let resp = anthropic(&mock, body).await;
    let mut stream = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("text_delta") {
        seen.push_str(std::str::from_utf8(&stream.next().await.unwrap().unwrap()).unwrap());
    }
    drop(stream);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let out = mock.stats().output_tokens;
    assert!((1..=3).contains(&out), "output tokens {out}");
}

#[tokio::test]
async fn delay_header_hang_and_stop() {
    let mock = MockUpstream::start().await;
    let msgs = json!([{"role": "user", "content": "x"}]);
    let start = Instant::now();
    let resp = client()
        .post(format!("{}/chat/completions", mock.openai_base_url()))
        .bearer_auth(OPENAI_KEY)
        .header("x-mock-delay-ms", "150")
        .json(&json!({"model": "m", "messages": msgs}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(150));

    let url = format!("{}/chat/completions", mock.openai_base_url());
    let hanging = tokio::spawn(
        client()
            .post(url)
            .bearer_auth(OPENAI_KEY)
            .json(&json!({"model": "hang", "messages": msgs}))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!hanging.is_finished());
    assert_eq!(mock.stats().requests, 2);
    let start = Instant::now();
    mock.stop().await;
    assert!(start.elapsed() < Duration::from_secs(2));
    let resp = hanging.await.unwrap();
    assert!(resp.is_err() || resp.unwrap().status() == 503);
}

#[tokio::test]
async fn models_lists() {
    let mock = MockUpstream::start().await;
    let v: Value = client()
        .get(format!("{}/models", mock.openai_base_url()))
        .bearer_auth(OPENAI_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["object"], "model");
    let v: Value = client()
        .get(format!("{}/v1/models", mock.anthropic_base_url()))
        .header("x-api-key", ANTHROPIC_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(mock.stats().requests, 0);
}

#[tokio::test]
async fn max_in_flight_counts_overlapping_requests() {
    let mock = MockUpstream::start().await;
    let msgs = json!([{"role": "user", "content": "x"}]);
    let send = |delay: &'static str| {
        client()
            .post(format!("{}/chat/completions", mock.openai_base_url()))
            .bearer_auth(OPENAI_KEY)
            .header("x-mock-delay-ms", delay)
            .json(&json!({"model": "m", "messages": msgs}))
            .send()
    };
    // One after another: never more than one at a time.
    for _ in 0..3 {
        assert_eq!(send("0").await.unwrap().status(), 200);
    }
    assert_eq!(mock.stats().max_in_flight, 1);
    // Five at once, each held 300 ms: all five overlap.
    let answers = futures::future::join_all((0..5).map(|_| send("300"))).await;
    assert!(answers.iter().all(|r| r.as_ref().unwrap().status() == 200));
    assert_eq!(mock.stats().max_in_flight, 5);
    // Finished requests leave the count: one more alone does not raise it.
    assert_eq!(send("0").await.unwrap().status(), 200);
    mock.reset_stats();
    assert_eq!(send("0").await.unwrap().status(), 200);
    assert_eq!(mock.stats().max_in_flight, 1);
    let v: Value = client()
        .get(format!("http://{}/_mock/stats", mock.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["max_in_flight"], 1);
}

#[tokio::test]
async fn anthropic_count_tokens_uses_the_input_rule() {
    let mock = MockUpstream::start().await;
    let count = |body: Value, version: bool| {
        let mut req = client()
            .post(format!("{}/v1/messages/count_tokens", mock.anthropic_base_url()))
            .header("x-api-key", ANTHROPIC_KEY)
            .json(&body);
        if version {
            req = req.header("anthropic-version", "2023-06-01");
        }
        req.send()
    };
    let body = json!({"model": "m", "system": [{"type": "text", "text": "be brief"}],
                      "tools": [{"name": "t", "input_schema": {"type": "object"}}],
                      "messages": [{"role": "user", "content": "one two three"}]});
    let resp = count(body.clone(), true).await.unwrap();
    assert_eq!(resp.status(), 200);
    // 2 system words + 3 message words + 10 for the tool.
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"input_tokens": 15}));
    let stats = mock.stats();
    assert_eq!(stats.last_path.as_deref(), Some("/v1/messages/count_tokens"));
    assert_eq!((stats.requests, stats.input_tokens), (1, 0));
    assert_eq!(count(body, false).await.unwrap().status(), 400);
    let no_messages = json!({"model": "m", "messages": []});
    assert_eq!(count(no_messages, true).await.unwrap().status(), 400);
    let failing = json!({"model": "m-error-529", "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(count(failing, true).await.unwrap().status().as_u16(), 529);
}

#[tokio::test]
async fn videos_are_created_polled_to_completion_and_downloaded() {
    let mock = MockUpstream::start().await;
    let base = mock.openai_base_url();
    let form = reqwest::multipart::Form::new()
        .text("model", "sora-2")
        .text("prompt", "a cat")
        .text("seconds", "8")
        .text("size", "1280x720");
    let v: Value = client()
        .post(format!("{base}/videos"))
        .bearer_auth(OPENAI_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((v["object"].as_str(), v["status"].as_str()), (Some("video"), Some("queued")));
    assert_eq!((v["seconds"].as_str(), v["size"].as_str()), (Some("8"), Some("1280x720")));
    let id = v["id"].as_str().unwrap();
    let content = format!("{base}/videos/{id}/content");
    let early = client().get(&content).bearer_auth(OPENAI_KEY).send().await.unwrap();
    assert_eq!(early.status(), 404);
    let poll = || async {
        let r = client().get(format!("{base}/videos/{id}")).bearer_auth(OPENAI_KEY).send();
        r.await.unwrap().json::<Value>().await.unwrap()
    };
    assert_eq!(poll().await["status"], "in_progress");
    assert_eq!(poll().await["status"], "completed");
    let mp4 = client().get(&content).bearer_auth(OPENAI_KEY).send().await.unwrap();
    assert_eq!(mp4.headers()["content-type"], "video/mp4");
    assert_eq!(mp4.bytes().await.unwrap().len(), 8000);
    // A failing model ends in `failed` with an error.
    let form = reqwest::multipart::Form::new().text("model", "sora-fail").text("prompt", "x");
    let v: Value = client()
        .post(format!("{base}/videos"))
        .bearer_auth(OPENAI_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("{base}/videos/{}", v["id"].as_str().unwrap());
    for _ in 0..2 {
        client().get(&url).bearer_auth(OPENAI_KEY).send().await.unwrap();
    }
    let v: Value =
        client().get(&url).bearer_auth(OPENAI_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"]["code"], "video_generation_failed");
    assert_eq!(mock.stats().media_requests, 9);
}
