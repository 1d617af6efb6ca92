//! Anthropic Messages API: `POST /v1/messages`, JSON and SSE.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::greedy::{self, MAX_OUTPUT_LIMIT, MOCK_CONTEXT_WINDOW};
use super::{
    ANTHROPIC_KEY, Api, CACHED_TOKENS, Faults, IMAGE_TOKENS, Intent, Plan, SLOW_STEP, Shared,
    SseEvent, TOOL_ARG_FRAGMENTS, TOOL_ARGS, TOOL_CALL_TOKENS, TOOL_DEF_TOKENS, cut_json_response,
    has_key, json_response, mentions_weather, sse_response, word_count, words_of,
};

pub(super) async fn messages(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = (Api::Anthropic, "/v1/messages", "request-id");
    shared
        .serve(route, &headers, body, stopping, |n, body| answer(&shared, n, &headers, body))
        .await
}

/// The 401 to answer, if the key is wrong.
pub(super) fn auth_error(headers: &HeaderMap) -> Option<Response> {
    match headers.get("x-api-key") {
        Some(k) if k == ANTHROPIC_KEY => None,
        _ => Some(error(StatusCode::UNAUTHORIZED, "authentication_error", "invalid x-api-key")),
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    json_response(status, &body)
}

fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

fn stopping() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "api_error", "mock: shutting down")
}

fn fault(code: u16) -> Response {
    match code {
        429 => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "mock: rate limited (error-429)",
            );
            resp.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            resp
        }
        400 => invalid("mock: bad request (error-400)"),
        529 => {
            let status = StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            error(status, "overloaded_error", "Overloaded")
        }
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "Internal server error"),
    }
}

/// A validated request, reduced to what the reply depends on.
struct Request {
    model: String,
    max_tokens: u64,
    stream: bool,
    input_tokens: u64,
    cached: u64,
    /// False for `nousage`: the answer reports no usage.
    usage: bool,
}

impl Request {
    fn parse(body: &Value) -> Result<(Request, Intent), String> {
        let Some(obj) = body.as_object() else {
            return Err("body: Input should be a valid dictionary".into());
        };
        let model = match obj.get("model") {
            None => return Err("model: Field required".into()),
            Some(Value::String(m)) => m.clone(),
            Some(_) => return Err("model: Input should be a valid string".into()),
        };
        let max_tokens = match obj.get("max_tokens") {
            None => return Err("max_tokens: Field required".into()),
            Some(v) => v.as_u64().ok_or("max_tokens: Input should be a valid integer")?,
        };
        if max_tokens == 0 {
            return Err("max_tokens: Input should be greater than or equal to 1".into());
        }
        let messages = match obj.get("messages") {
            None => return Err("messages: Field required".into()),
            Some(Value::Array(m)) => m,
            Some(_) => return Err("messages: Input should be a valid list".into()),
        };
        if messages.is_empty() {
            return Err("messages: at least one message is required".into());
        }
        for (i, m) in messages.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str);
            if !matches!(role, Some("user" | "assistant")) {
                return Err(format!("messages.{i}.role: Input should be 'user' or 'assistant'"));
            }
        }
        let tools = obj.get("tools").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        let input_tokens = input_tokens(body);
        let cached = if has_key(body, "cache_control") { CACHED_TOKENS } else { 0 };
        let req = Request {
            model,
            max_tokens,
            stream: obj.get("stream").and_then(Value::as_bool).unwrap_or(false),
            input_tokens,
            cached,
            usage: true,
        };
        Ok((req, intent(messages, tools)))
    }

    /// Makes the request greedy (see `greedy`).
    fn greedy(&mut self, body: &Value) -> Result<(), String> {
        if self.max_tokens > MAX_OUTPUT_LIMIT {
            return Err(format!(
                "max_tokens: {} > {MAX_OUTPUT_LIMIT}, which is the maximum allowed number of \
                 output tokens for {}",
                self.max_tokens, self.model
            ));
        }
        self.input_tokens = greedy::input_tokens(Api::Anthropic, body);
        self.cached = 0;
        if self.input_tokens > MOCK_CONTEXT_WINDOW {
            return Err(format!(
                "prompt is too long: {} tokens > {MOCK_CONTEXT_WINDOW} maximum",
                self.input_tokens
            ));
        }
        Ok(())
    }
}

/// Input tokens of a request by the mock's rule: the words of the system
/// prompt and of every message, images and tool definitions.
fn input_tokens(body: &Value) -> u64 {
    let messages = body.get("messages").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let tools = body.get("tools").and_then(Value::as_array).map_or(0, Vec::len);
    body.get("system").map_or(0, content_tokens)
        + messages.iter().map(|m| m.get("content").map_or(0, content_tokens)).sum::<u64>()
        + tools as u64 * TOOL_DEF_TOKENS
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}` by the same rule
/// as the messages, checked like them (auth, version, model, messages) but
/// without `max_tokens`. Free, so the stats count no tokens.
pub(super) async fn count_tokens(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = (Api::Anthropic, "/v1/messages/count_tokens", "request-id");
    let answer = |_, body| std::future::ready(count_answer(&headers, body));
    shared.serve(route, &headers, body, stopping, answer).await
}

fn count_answer(headers: &HeaderMap, body: Option<Value>) -> Response {
    if let Some(resp) = auth_error(headers) {
        return resp;
    }
    if !headers.contains_key("anthropic-version") {
        return invalid("anthropic-version: header is required");
    }
    let Some(body) = body else {
        return invalid("There was an error parsing the body of your request: invalid JSON");
    };
    // The same checks as a message, which also needs `max_tokens`.
    let mut as_message = body.clone();
    as_message["max_tokens"] = json!(1);
    if let Err(message) = Request::parse(&as_message) {
        return invalid(&message);
    }
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default();
    if let Some(code) = Faults::from_model(model).error {
        return fault(code);
    }
    json_response(StatusCode::OK, &json!({"input_tokens": input_tokens(&body)}))
}

/// Input tokens of a `system` or message `content`: a string or blocks.
fn content_tokens(content: &Value) -> u64 {
    match content {
        Value::String(s) => word_count(s),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => b.get("text").and_then(Value::as_str).map_or(0, word_count),
                Some("image") => IMAGE_TOKENS,
                Some("tool_result") => b.get("content").map_or(0, content_tokens),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// Words a user message's content says, with "[image]" for each image.
fn echo_words(content: &Value) -> Vec<String> {
    match content {
        Value::String(s) => words_of(s),
        Value::Array(blocks) => blocks
            .iter()
            .flat_map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => {
                    b.get("text").and_then(Value::as_str).map_or_else(Vec::new, words_of)
                }
                Some("image") => vec!["[image]".to_owned()],
                _ => Vec::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn intent(messages: &[Value], tools: &[Value]) -> Intent {
    let is_user = |m: &&Value| m.get("role").and_then(Value::as_str) == Some("user");
    let last = messages.last().filter(is_user);
    if let Some(last) = last {
        let content = last.get("content").unwrap_or(&Value::Null);
        let results: Vec<&Value> = content
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .collect();
        let tool_name = tools.first().and_then(|t| t.get("name")).and_then(Value::as_str);
        if !results.is_empty() {
            let words: Vec<String> = results
                .iter()
                .flat_map(|b| echo_words(b.get("content").unwrap_or(&Value::Null)))
                .collect();
            // A result that asks about the weather again calls again.
            if let Some(name) = tool_name.filter(|_| mentions_weather(&words)) {
                return Intent::CallTool(name.to_owned());
            }
            return Intent::ToolResult(words.join(" "));
        }
        let words = echo_words(content);
        if let Some(name) = tool_name.filter(|_| mentions_weather(&words)) {
            let everywhere = |w: &String| {
                w.trim_matches(|c: char| !c.is_alphanumeric()).eq_ignore_ascii_case("everywhere")
            };
            if words.iter().any(everywhere) {
                return Intent::CallToolTwice(name.to_owned());
            }
            return Intent::CallTool(name.to_owned());
        }
        return Intent::Echo(words);
    }
    // Ends with an assistant prefill: echo the last user message.
    let words = messages
        .iter()
        .rev()
        .find(is_user)
        .and_then(|m| m.get("content"))
        .map_or_else(Vec::new, echo_words);
    Intent::Echo(words)
}

async fn answer(
    shared: &Arc<Shared>,
    n: u64,
    headers: &HeaderMap,
    body: Option<Value>,
) -> Response {
    if let Some(resp) = auth_error(headers) {
        return resp;
    }
    if !headers.contains_key("anthropic-version") {
        return invalid("anthropic-version: header is required");
    }
    let Some(body) = body else {
        return invalid("There was an error parsing the body of your request: invalid JSON");
    };
    let (mut req, intent) = match Request::parse(&body) {
        Ok(parsed) => parsed,
        Err(message) => return invalid(&message),
    };
    let faults = Faults::from_model(&req.model);
    if let Some(code) = shared.fault_for(&req.model, &faults) {
        return fault(code);
    }
    if faults.flaky {
        let seen = body.get("messages").map(Value::to_string).unwrap_or_default();
        let first = shared.flaky.lock().unwrap_or_else(|e| e.into_inner()).insert(seen);
        if first {
            return fault(429);
        }
    }
    let lead = "Let me check.";
    let plan = if faults.greedy {
        if let Err(message) = req.greedy(&body) {
            return invalid(&message);
        }
        Plan::greedy(intent, req.max_tokens, lead)
    } else {
        Plan::new(intent, Some(req.max_tokens), lead)
    };
    req.usage = !faults.nousage;
    if faults.hang {
        shared.sleep(Duration::from_secs(3600)).await;
        return stopping();
    }
    let id = format!("msg_mock_{n}");
    if req.stream {
        return sse_response(shared.clone(), stream_events(&req, &plan, &id), &faults);
    }
    if faults.slow && !shared.sleep(SLOW_STEP).await {
        return stopping();
    }
    let mut content = vec![json!({"type": "text", "text": plan.text()})];
    if let Some(name) = &plan.tool {
        content.push(
            json!({"type": "tool_use", "id": "toolu_mock1", "name": name,
                            "input": serde_json::from_str::<Value>(TOOL_ARGS).unwrap_or_default()}),
        );
        if plan.calls == 2 {
            content.push(json!({"type": "tool_use", "id": "toolu_mock2", "name": name,
                                "input": {"city": "Rome"}}));
        }
    }
    let mut body = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": content,
        "stop_reason": stop_reason(&plan),
        "stop_sequence": null,
    });
    if req.usage {
        body["usage"] = usage(req.input_tokens, plan.output_tokens(), req.cached);
    }
    if faults.cut {
        return cut_json_response(&body);
    }
    shared.count(req.input_tokens, plan.output_tokens(), req.cached);
    json_response(StatusCode::OK, &body)
}

fn stop_reason(plan: &Plan) -> &'static str {
    if plan.truncated {
        "max_tokens"
    } else if plan.tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    }
}

fn usage(input: u64, output: u64, cached: u64) -> Value {
    json!({
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    })
}

fn event(name: &str, data: &Value) -> SseEvent {
    SseEvent::new(format!("event: {name}\ndata: {data}\n\n"))
}

fn stream_events(req: &Request, plan: &Plan, id: &str) -> Vec<SseEvent> {
    let mut message = json!({
        "id": id, "type": "message", "role": "assistant", "model": req.model,
        "content": [], "stop_reason": null, "stop_sequence": null,
    });
    if req.usage {
        // Like the real API: output_tokens starts at 1 and is final in message_delta.
        message["usage"] = usage(req.input_tokens, 1, req.cached);
    }
    let mut events = vec![
        event("message_start", &json!({"type": "message_start", "message": message}))
            .input(req.input_tokens, req.cached),
        event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", &json!({"type": "ping"})),
    ];
    for text in plan.deltas() {
        let delta = json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": text}});
        events.push(event("content_block_delta", &delta).output(1));
    }
    events.push(event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
    if let Some(name) = &plan.tool {
        let start = json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_mock1", "name": name, "input": {}}});
        events.push(event("content_block_start", &start));
        let per_fragment = TOOL_CALL_TOKENS / TOOL_ARG_FRAGMENTS.len() as u64;
        // The real API opens with an empty fragment.
        for (i, part) in std::iter::once("").chain(TOOL_ARG_FRAGMENTS).enumerate() {
            let delta = json!({"type": "content_block_delta", "index": 1,
                               "delta": {"type": "input_json_delta", "partial_json": part}});
            let tokens = if i == 0 { 0 } else { per_fragment };
            events.push(event("content_block_delta", &delta).output(tokens));
        }
        events
            .push(event("content_block_stop", &json!({"type": "content_block_stop", "index": 1})));
        if plan.calls == 2 {
            let start = json!({"type": "content_block_start", "index": 2,
                "content_block": {"type": "tool_use", "id": "toolu_mock2", "name": name, "input": {}}});
            events.push(event("content_block_start", &start));
            let delta = json!({"type": "content_block_delta", "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": r#"{"city":"Rome"}"#}});
            events.push(event("content_block_delta", &delta).output(TOOL_CALL_TOKENS));
            events.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": 2}),
            ));
        }
    }
    let mut delta = json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason(plan), "stop_sequence": null},
    });
    if req.usage {
        delta["usage"] = json!({"output_tokens": plan.output_tokens()});
    }
    events.push(event("message_delta", &delta));
    events.push(event("message_stop", &json!({"type": "message_stop"})));
    events
}
