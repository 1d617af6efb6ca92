//! Cross-shape calls: Claude through `/v1/chat/completions` and GPT through
//! `/v1/messages`, JSON and streamed, with system prompts, multi-turn, images
//! and tool round trips, against the mock upstream.

use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, TestServer, backend_tests, mock_toml, sse_events};
use serde_json::{Value, json};

backend_tests!(
    claude_through_chat_completions,
    claude_stream_through_chat_completions,
    claude_tool_round_trip_in_openai_shape,
    gpt_through_messages,
    gpt_stream_and_tools_through_messages,
);

async fn start(backend: Backend) -> Option<(TestServer, MockUpstream)> {
    let mock = MockUpstream::start().await;
    Some((TestServer::start_with(backend, Some(&mock_toml(&mock))).await?, mock))
}

async fn post(t: &TestServer, path: &str, body: Value) -> Value {
    let resp = t
        .http
        .post(format!("{}{path}", t.base_url))
        .bearer_auth(&t.master_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    v
}

async fn events(t: &TestServer, path: &str, body: Value) -> Vec<(Option<String>, Value)> {
    let resp = t
        .http
        .post(format!("{}{path}", t.base_url))
        .bearer_auth(&t.master_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    sse_events(&resp.text().await.unwrap())
        .into_iter()
        .map(|(name, data)| (name, serde_json::from_str(&data).unwrap_or(Value::String(data))))
        .collect()
}

const TOOLS_OPENAI: &str = r#"[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]"#;
const TOOLS_ANTHROPIC: &str = r#"[{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}]"#;

async fn claude_through_chat_completions(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let png = "iVBORw0KGgo=";
    let v = post(
        &t,
        "/v1/chat/completions",
        json!({
            "model": "claude-test",
            "max_completion_tokens": 50,
            "temperature": 1.5,
            "stop": "END",
            "user": "end-user-7",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}},
                ]},
            ],
        }),
    )
    .await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "claude-test");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock: what is this [image]");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Input: 2 system + 2 + 2 + 3 words + 100 for the image.
    assert_eq!(v["usage"]["prompt_tokens"], 109);
    assert_eq!(v["usage"]["completion_tokens"], 7);
    assert_eq!(v["usage"]["total_tokens"], 116);
    assert_eq!(v["usage"]["cost_micros"], 109 * 3 + 7 * 15);
    let sent = mock.stats().last_body.unwrap();
    assert_eq!(mock.stats().last_path.as_deref(), Some("/v1/messages"));
    assert_eq!(sent["model"], "claude-upstream");
    assert_eq!(sent["system"], "be brief");
    assert_eq!(sent["max_tokens"], 50);
    assert_eq!(sent["temperature"], 1.0, "clamped to Anthropic's range");
    assert_eq!(sent["stop_sequences"], json!(["END"]));
    assert_eq!(sent["metadata"]["user_id"], "end-user-7");
    assert_eq!(sent["messages"].as_array().unwrap().len(), 3);
    let image = &sent["messages"][2]["content"][1];
    assert_eq!(image["source"], json!({"type": "base64", "media_type": "image/png", "data": png}));
    // Output capped by the client's limit: finish_reason length.
    let v = post(
        &t,
        "/v1/chat/completions",
        json!({"model": "claude-test", "max_tokens": 2, "messages": [{"role": "user", "content": "a b c d"}]}),
    )
    .await;
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    t.stop().await;
}

async fn claude_stream_through_chat_completions(backend: Backend) {
    let Some((t, _mock)) = start(backend).await else {
        return;
    };
    let evs = events(
        &t,
        "/v1/chat/completions",
        json!({"model": "claude-test", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "one two"}]}),
    )
    .await;
    assert_eq!(evs.last().unwrap().1, "[DONE]");
    let chunks: Vec<&Value> = evs[..evs.len() - 1].iter().map(|(_, v)| v).collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "claude-test")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello from mock: one two");
    let finish = chunks.iter().find(|c| !c["choices"][0]["finish_reason"].is_null()).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 2);
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert_eq!(usage["usage"]["cost_micros"], 2 * 3 + 5 * 15);
    t.stop().await;
}

async fn claude_tool_round_trip_in_openai_shape(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let tools: Value = serde_json::from_str(TOOLS_OPENAI).unwrap();
    let ask = json!({"role": "user", "content": "what is the weather in Paris"});
    let v = post(
        &t,
        "/v1/chat/completions",
        json!({"model": "claude-test", "messages": [ask], "tools": tools, "tool_choice": "auto"}),
    )
    .await;
    let sent = mock.stats().last_body.unwrap();
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert_eq!(sent["tools"][0]["input_schema"]["type"], "object");
    assert_eq!(sent["tool_choice"], json!({"type": "auto"}));
    let msg = &v["choices"][0]["message"];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &msg["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    // The client echoes the assistant turn back (content null, refusal
    // null, annotations []) with the tool's result.
    let mut assistant = msg.clone();
    assistant["annotations"] = json!([]);
    let v = post(
        &t,
        "/v1/chat/completions",
        json!({"model": "claude-test", "tools": tools, "messages": [
            ask, assistant,
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny and 21C"},
        ]}),
    )
    .await;
    assert_eq!(v["choices"][0]["message"]["content"], "The tool said: sunny and 21C");
    let sent = mock.stats().last_body.unwrap();
    assert_eq!(sent["messages"][1]["content"][1]["type"], "tool_use");
    assert_eq!(sent["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(sent["messages"][2]["content"][0]["tool_use_id"], call["id"]);
    // Streamed tool calls arrive as OpenAI tool_call deltas.
    let evs = events(
        &t,
        "/v1/chat/completions",
        json!({"model": "claude-test", "stream": true, "tools": tools,
               "messages": [{"role": "user", "content": "weather please"}]}),
    )
    .await;
    let calls: Vec<&Value> =
        evs.iter().filter_map(|(_, c)| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: String = calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "Paris"}));
    t.stop().await;
}

async fn gpt_through_messages(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let v = post(
        &t,
        "/v1/messages",
        json!({
            "model": "gpt-test", "max_tokens": 40,
            "system": [{"type": "text", "text": "be brief"}],
            "stop_sequences": ["END"],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
                ]},
            ],
        }),
    )
    .await;
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "gpt-test");
    assert_eq!(v["content"][0], json!({"type": "text", "text": "Hello from mock: look [image]"}));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 2 + 1 + 1 + 1 + 100);
    assert_eq!(v["usage"]["output_tokens"], 5);
    let sent = mock.stats().last_body.unwrap();
    assert_eq!(mock.stats().last_path.as_deref(), Some("/v1/chat/completions"));
    assert_eq!(sent["messages"][0], json!({"role": "system", "content": "be brief"}));
    assert_eq!(sent["max_completion_tokens"], 40);
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(
        sent["messages"][3]["content"][1]["image_url"]["url"],
        "data:image/jpeg;base64,AAAA"
    );
    t.stop().await;
}

async fn gpt_stream_and_tools_through_messages(backend: Backend) {
    let Some((t, mock)) = start(backend).await else {
        return;
    };
    let evs = events(
        &t,
        "/v1/messages",
        json!({"model": "gpt-test", "max_tokens": 40, "stream": true,
               "messages": [{"role": "user", "content": "one two three"}]}),
    )
    .await;
    let names: Vec<&str> = evs.iter().filter_map(|(n, _)| n.as_deref()).collect();
    assert_eq!(names[0], "message_start");
    assert_eq!(names[1], "content_block_start");
    assert_eq!(*names.last().unwrap(), "message_stop");
    assert_eq!(mock.stats().last_body.unwrap()["stream_options"]["include_usage"], true);
    let text: String = evs
        .iter()
        .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
        .map(|(_, v)| v["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "Hello from mock: one two three");
    let delta = &evs.iter().find(|(n, _)| n.as_deref() == Some("message_delta")).unwrap().1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 6);
    // 3 × $1.25 + 6 × $10 per million tokens = 63.75 → 64 µ$.
    assert_eq!(delta["usage"]["cost_micros"], 64);
    // A tool round trip in Anthropic's shape against an OpenAI model.
    let tools: Value = serde_json::from_str(TOOLS_ANTHROPIC).unwrap();
    let ask = json!({"role": "user", "content": "weather in Paris?"});
    let v = post(
        &t,
        "/v1/messages",
        json!({"model": "gpt-test", "max_tokens": 40, "tools": tools,
               "tool_choice": {"type": "any"}, "messages": [ask]}),
    )
    .await;
    let sent = mock.stats().last_body.unwrap();
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(sent["tool_choice"], "required");
    assert_eq!(v["stop_reason"], "tool_use");
    let tool_use =
        v["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap().clone();
    assert_eq!(tool_use["input"], json!({"city": "Paris"}));
    let v = post(
        &t,
        "/v1/messages",
        json!({"model": "gpt-test", "max_tokens": 40, "tools": tools, "messages": [
            ask,
            {"role": "assistant", "content": v["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"], "content": "rainy"}]},
        ]}),
    )
    .await;
    assert_eq!(v["content"][0]["text"], "The tool said: rainy");
    let sent = mock.stats().last_body.unwrap();
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], tool_use["id"]);
    assert_eq!(sent["messages"][2]["role"], "tool");
    // Streamed tool call: a tool_use block with input_json_delta pieces.
    let evs = events(
        &t,
        "/v1/messages",
        json!({"model": "gpt-test", "max_tokens": 40, "stream": true, "tools": tools,
               "messages": [{"role": "user", "content": "weather now"}]}),
    )
    .await;
    let start = evs
        .iter()
        .find(|(n, v)| {
            n.as_deref() == Some("content_block_start") && v["content_block"]["type"] == "tool_use"
        })
        .unwrap();
    assert_eq!(start.1["content_block"]["name"], "get_weather");
    let args: String = evs
        .iter()
        .filter(|(_, v)| v["delta"]["type"] == "input_json_delta")
        .map(|(_, v)| v["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "Paris"}));
    let delta = &evs.iter().find(|(n, _)| n.as_deref() == Some("message_delta")).unwrap().1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    t.stop().await;
}
