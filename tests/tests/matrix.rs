//! Every client dialect against every kind of provider, from one table:
//! Anthropic Messages, OpenAI Chat Completions and OpenAI Responses × a
//! Claude model, a GPT model and the offline echo model; text and tool
//! calls, JSON and streamed. In each cell the answer is right, the cost it
//! reports is what the ledger settled, and for the mock providers it is the
//! provider's own token counts × the model's prices. On SQLite and
//! PostgreSQL.

use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, TestServer, backend_tests, mock_toml, sse_events};
use serde_json::{Value, json};

backend_tests!(every_dialect_with_every_provider);

#[derive(Clone, Copy, Debug)]
enum Dialect {
    Messages,
    Chat,
    Responses,
}

/// The request for `text` in `dialect`, with a weather tool when `tool`.
fn request(
    dialect: Dialect,
    model: &str,
    text: &str,
    tool: bool,
    stream: bool,
) -> (&'static str, Value) {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    match dialect {
        Dialect::Messages => {
            let mut b = json!({"model": model, "max_tokens": 200, "stream": stream,
                               "messages": [{"role": "user", "content": text}]});
            if tool {
                b["tools"] = json!([{"name": "get_weather", "description": "Weather",
                                     "input_schema": schema}]);
            }
            ("/v1/messages", b)
        }
        Dialect::Chat => {
            let mut b = json!({"model": model, "max_tokens": 200, "stream": stream,
                               "messages": [{"role": "user", "content": text}]});
            if stream {
                b["stream_options"] = json!({"include_usage": true});
            }
            if tool {
                b["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
                                     "description": "Weather", "parameters": schema}}]);
            }
            ("/v1/chat/completions", b)
        }
        Dialect::Responses => {
            let mut b = json!({"model": model, "max_output_tokens": 200, "stream": stream,
                               "input": text});
            if tool {
                b["tools"] = json!([{"type": "function", "name": "get_weather",
                                     "description": "Weather", "parameters": schema}]);
            }
            ("/v1/responses", b)
        }
    }
}

/// What an answer says: its text, the tool it calls, and its cost.
#[derive(Debug, Default)]
struct Said {
    text: String,
    tool: Option<String>,
    cost: Option<i64>,
}

fn read_json(dialect: Dialect, v: &Value) -> Said {
    let mut s = Said::default();
    match dialect {
        Dialect::Messages => {
            for b in v["content"].as_array().into_iter().flatten() {
                match b["type"].as_str() {
                    Some("text") => s.text.push_str(b["text"].as_str().unwrap_or_default()),
                    Some("tool_use") => s.tool = b["name"].as_str().map(str::to_string),
                    _ => {}
                }
            }
        }
        Dialect::Chat => {
            let m = &v["choices"][0]["message"];
            s.text = m["content"].as_str().unwrap_or_default().to_string();
            s.tool = m["tool_calls"][0]["function"]["name"].as_str().map(str::to_string);
        }
        Dialect::Responses => {
            for item in v["output"].as_array().into_iter().flatten() {
                match item["type"].as_str() {
                    Some("message") => {
                        for c in item["content"].as_array().into_iter().flatten() {
                            s.text.push_str(c["text"].as_str().unwrap_or_default());
                        }
                    }
                    Some("function_call") => s.tool = item["name"].as_str().map(str::to_string),
                    _ => {}
                }
            }
        }
    }
    s.cost = v["usage"]["cost_micros"].as_i64();
    s
}

fn read_stream(dialect: Dialect, body: &str) -> Said {
    let mut s = Said::default();
    for (name, data) in sse_events(body) {
        let Ok(v) = serde_json::from_str::<Value>(&data) else { continue };
        match dialect {
            Dialect::Messages => match name.as_deref() {
                Some("content_block_delta") => {
                    s.text.push_str(v["delta"]["text"].as_str().unwrap_or_default())
                }
                Some("content_block_start") if v["content_block"]["type"] == "tool_use" => {
                    s.tool = v["content_block"]["name"].as_str().map(str::to_string)
                }
                Some("message_delta") => s.cost = v["usage"]["cost_micros"].as_i64(),
                _ => {}
            },
            Dialect::Chat => {
                let d = &v["choices"][0]["delta"];
                s.text.push_str(d["content"].as_str().unwrap_or_default());
                if let Some(name) = d["tool_calls"][0]["function"]["name"].as_str() {
                    s.tool = Some(name.to_string());
                }
                if let Some(c) = v["usage"]["cost_micros"].as_i64() {
                    s.cost = Some(c);
                }
            }
            Dialect::Responses => match v["type"].as_str() {
                Some("response.output_text.delta") => {
                    s.text.push_str(v["delta"].as_str().unwrap_or_default())
                }
                Some("response.output_item.added") if v["item"]["type"] == "function_call" => {
                    s.tool = v["item"]["name"].as_str().map(str::to_string)
                }
                Some("response.completed") => {
                    s.cost = v["response"]["usage"]["cost_micros"].as_i64()
                }
                _ => {}
            },
        }
    }
    s
}

async fn spent(t: &TestServer, key_id: &str) -> (i64, i64) {
    let path = format!("/v1/usage?key_id={key_id}");
    let (status, v) = t.request(reqwest::Method::GET, &path, Some(&t.master_key), None).await;
    assert_eq!(status, 200);
    (v["totals"]["cost_micros"].as_i64().unwrap(), v["totals"]["requests"].as_i64().unwrap())
}

async fn every_dialect_with_every_provider(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = t.mint(json!({"name": "matrix", "max_spend_usd": 10})).await;
    let (id, secret) = (key["id"].as_str().unwrap(), key["secret"].as_str().unwrap());
    // (model, input and output prices in pico-dollars per token, whether
    // the mock answers it)
    let providers: [(&str, (i128, i128), bool); 3] = [
        ("claude-test", (3_000_000, 15_000_000), true),
        ("gpt-test", (1_250_000, 10_000_000), true),
        ("echo", (3_000_000, 15_000_000), false),
    ];
    let (mut total, mut requests) = (0i64, 0i64);
    for dialect in [Dialect::Messages, Dialect::Chat, Dialect::Responses] {
        for (model, (p_in, p_out), mocked) in providers {
            for stream in [false, true] {
                for tool in [false, true] {
                    if tool && !mocked {
                        continue; // the echo model never calls tools
                    }
                    let case = format!("{dialect:?} × {model} stream={stream} tool={tool}");
                    let text = if tool { "what is the weather in Paris" } else { "one two three" };
                    let (path, body) = request(dialect, model, text, tool, stream);
                    mock.reset_stats();
                    let resp = t
                        .http
                        .post(format!("{}{path}", t.base_url))
                        .bearer_auth(secret)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200, "{case}");
                    let raw = resp.text().await.unwrap();
                    let said = if stream {
                        read_stream(dialect, &raw)
                    } else {
                        read_json(dialect, &serde_json::from_str(&raw).unwrap())
                    };
                    if tool {
                        assert_eq!(said.tool.as_deref(), Some("get_weather"), "{case}: {raw}");
                    } else if mocked {
                        assert_eq!(said.text, "Hello from mock: one two three", "{case}");
                    } else {
                        assert_eq!(said.text, "echo: one two three", "{case}");
                    }
                    requests += 1;
                    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
                    let cost = loop {
                        let (c, n) = spent(&t, id).await;
                        if n == requests {
                            break c - total;
                        }
                        assert!(tokio::time::Instant::now() < deadline, "{case}: not settled");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    };
                    total += cost;
                    assert_eq!(said.cost, Some(cost), "{case}: reported cost = settled cost");
                    if mocked {
                        let s = mock.stats();
                        assert_eq!(s.requests, 1, "{case}");
                        let pico = s.input_tokens as i128 * p_in + s.output_tokens as i128 * p_out;
                        let expected = ((pico + 999_999) / 1_000_000) as i64;
                        assert_eq!(cost, expected, "{case}: the provider's counts × prices");
                    } else {
                        assert!(cost > 0, "{case}");
                    }
                }
            }
        }
    }
    assert_eq!(spent(&t, id).await, (total, requests));
    t.stop().await;
}
