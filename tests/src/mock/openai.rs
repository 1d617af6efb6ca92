//! OpenAI Chat Completions API: `POST /v1/chat/completions`, JSON and SSE.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::greedy::{
    self, DEFAULT_OUTPUT_LIMIT, MAX_CHOICES, MAX_OUTPUT_LIMIT, MOCK_CONTEXT_WINDOW,
};
use super::{
    Api, CACHED_TOKENS, Faults, IMAGE_TOKENS, Intent, OPENAI_KEY, Plan, SLOW_STEP, Shared,
    SseEvent, TOOL_ARG_FRAGMENTS, TOOL_ARGS, TOOL_CALL_TOKENS, TOOL_DEF_TOKENS, cut_json_response,
    json_response, mentions_weather, sse_response, unix_now, word_count, words_of,
};

pub(super) async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = (Api::OpenAi, "/v1/chat/completions", "x-request-id");
    shared
        .serve(route, &headers, body, stopping, |n, body| answer(&shared, n, &headers, body))
        .await
}

/// The 401 to answer, if the key is wrong.
pub(super) fn auth_error(headers: &HeaderMap) -> Option<Response> {
    let expected = format!("Bearer {OPENAI_KEY}");
    match headers.get("authorization") {
        Some(v) if v.as_bytes() == expected.as_bytes() => None,
        _ => Some(error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided",
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        )),
    }
}

fn error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    json_response(status, &body)
}

pub(super) fn invalid(message: &str, param: Option<&str>, code: Option<&str>) -> Response {
    error(StatusCode::BAD_REQUEST, message, "invalid_request_error", param, code)
}

fn server_error(status: StatusCode, message: &str) -> Response {
    error(status, message, "server_error", None, None)
}

pub(super) fn stopping() -> Response {
    server_error(StatusCode::SERVICE_UNAVAILABLE, "mock: shutting down")
}

pub(super) fn fault(code: u16) -> Response {
    match code {
        429 => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached for requests (mock error-429)",
                "requests",
                None,
                Some("rate_limit_exceeded"),
            );
            resp.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            resp
        }
        400 => invalid("mock: bad request (error-400)", None, None),
        // OpenAI has no 529; its overload answer is a 503.
        529 => server_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The engine is currently overloaded, please try again later.",
        ),
        _ => server_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request. Sorry about that!",
        ),
    }
}

/// A validated request, reduced to what the reply depends on.
struct Request {
    model: String,
    /// The output limit: `max_completion_tokens` if given, else `max_tokens`.
    max_tokens: Option<u64>,
    /// The larger of the two, which a greedy provider honours.
    larger_max_tokens: Option<u64>,
    stream: bool,
    include_usage: bool,
    input_tokens: u64,
    cached: u64,
    /// Choices to answer, each billed in full (`n`, greedy only).
    choices: u64,
    /// Rejected prediction tokens billed per choice; Some (reported) in
    /// greedy mode only.
    rejected: Option<u64>,
    /// False for `nousage`: the answer reports no usage.
    usage: bool,
}

/// A 400 in OpenAI's shape: message, param, code.
type Invalid = (String, Option<&'static str>, Option<&'static str>);

impl Request {
    fn parse(body: &Value) -> Result<(Request, Intent), Invalid> {
        let Some(obj) = body.as_object() else {
            return Err(("Invalid request body: expected an object.".into(), None, None));
        };
        let model = match obj.get("model") {
            Some(Value::String(m)) => m.clone(),
            _ => return Err(("you must provide a model parameter".into(), None, None)),
        };
        let messages = match obj.get("messages") {
            None => {
                return Err((
                    "Missing required parameter: 'messages'.".into(),
                    Some("messages"),
                    Some("missing_required_parameter"),
                ));
            }
            Some(Value::Array(m)) if !m.is_empty() => m,
            Some(Value::Array(_)) => {
                return Err((
                    "Invalid 'messages': empty array. Expected an array with minimum length 1, \
                     but got an empty array instead."
                        .into(),
                    Some("messages"),
                    Some("empty_array"),
                ));
            }
            Some(_) => {
                return Err((
                    "Invalid type for 'messages': expected an array.".into(),
                    Some("messages"),
                    Some("invalid_type"),
                ));
            }
        };
        let mut max_tokens = None;
        let mut larger_max_tokens = None;
        for name in ["max_tokens", "max_completion_tokens"] {
            match obj.get(name) {
                None | Some(Value::Null) => {}
                Some(v) => match v.as_u64() {
                    // The newer name wins when both are given.
                    Some(m) => {
                        max_tokens = Some(m);
                        larger_max_tokens = larger_max_tokens.max(Some(m));
                    }
                    None => {
                        return Err((
                            format!("Invalid type for '{name}': expected an integer."),
                            Some(name),
                            Some("invalid_type"),
                        ));
                    }
                },
            }
        }
        let tools = obj.get("tools").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        let input_tokens =
            messages.iter().map(|m| m.get("content").map_or(0, content_tokens)).sum::<u64>()
                + tools.len() as u64 * TOOL_DEF_TOKENS;
        let cached = if obj.get("user").and_then(Value::as_str) == Some("cached") {
            CACHED_TOKENS.min(input_tokens)
        } else {
            0
        };
        let include_usage = obj
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let req = Request {
            model,
            max_tokens,
            larger_max_tokens,
            stream: obj.get("stream").and_then(Value::as_bool).unwrap_or(false),
            include_usage,
            input_tokens,
            cached,
            choices: 1,
            rejected: None,
            usage: true,
        };
        Ok((req, intent(messages, tools)))
    }

    /// Makes the request greedy (see `greedy`); returns the output limit
    /// per choice.
    fn greedy(&mut self, body: &Value) -> Result<u64, Invalid> {
        self.choices = choices(body)?;
        let limit = self.larger_max_tokens.unwrap_or(DEFAULT_OUTPUT_LIMIT);
        if limit > MAX_OUTPUT_LIMIT {
            return Err((
                format!(
                    "max_tokens is too large: {limit}. This model supports at most \
                     {MAX_OUTPUT_LIMIT} completion tokens, whereas you provided {limit}."
                ),
                Some("max_tokens"),
                Some("invalid_value"),
            ));
        }
        self.input_tokens = greedy::input_tokens(Api::OpenAi, body);
        self.cached = 0;
        if self.input_tokens > MOCK_CONTEXT_WINDOW {
            return Err((
                format!(
                    "This model's maximum context length is {MOCK_CONTEXT_WINDOW} tokens. \
                     However, your messages resulted in {} tokens. Please reduce the length \
                     of the messages.",
                    self.input_tokens
                ),
                Some("messages"),
                Some("context_length_exceeded"),
            ));
        }
        self.rejected = Some(greedy::prediction_tokens(body));
        Ok(limit)
    }

    /// Output tokens billed over all choices.
    fn output_tokens(&self, plan: &Plan) -> u64 {
        self.choices * (plan.output_tokens() + self.rejected.unwrap_or(0))
    }
}

/// `n`, validated like the real API: an integer from 1 to 128, default 1.
fn choices(body: &Value) -> Result<u64, Invalid> {
    let n = match body.get("n") {
        None | Some(Value::Null) => return Ok(1),
        Some(n) => n,
    };
    let (message, code) = match (n.as_u64(), n.as_i64()) {
        (Some(n), _) if (1..=MAX_CHOICES).contains(&n) => return Ok(n),
        (Some(n), _) if n > MAX_CHOICES => (
            format!(
                "Invalid 'n': integer above maximum value. Expected a value <= {MAX_CHOICES}, \
                 but got {n} instead."
            ),
            "integer_above_max_value",
        ),
        (_, Some(n)) => (
            format!(
                "Invalid 'n': integer below minimum value. Expected a value >= 1, but got {n} \
                 instead."
            ),
            "integer_below_min_value",
        ),
        _ => ("Invalid type for 'n': expected an integer.".to_owned(), "invalid_type"),
    };
    Err((message, Some("n"), Some(code)))
}

/// Input tokens of a message `content`: a string, parts or null.
fn content_tokens(content: &Value) -> u64 {
    match content {
        Value::String(s) => word_count(s),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => p.get("text").and_then(Value::as_str).map_or(0, word_count),
                Some("image_url") => IMAGE_TOKENS,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// Words a message's content says, with "[image]" for each image.
fn echo_words(content: &Value) -> Vec<String> {
    match content {
        Value::String(s) => words_of(s),
        Value::Array(parts) => parts
            .iter()
            .flat_map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => {
                    p.get("text").and_then(Value::as_str).map_or_else(Vec::new, words_of)
                }
                Some("image_url") => vec!["[image]".to_owned()],
                _ => Vec::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn intent(messages: &[Value], tools: &[Value]) -> Intent {
    let role = |m: &Value| m.get("role").and_then(Value::as_str).map(str::to_owned);
    let content = |m: &Value| m.get("content").map_or_else(Vec::new, echo_words);
    let last = messages.last().unwrap_or(&Value::Null);
    let tool_name = tools
        .first()
        .and_then(|t| t.get("function"))
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str);
    match role(last).as_deref() {
        // A result that asks about the weather again calls again.
        Some("tool") => match tool_name.filter(|_| mentions_weather(&content(last))) {
            Some(name) => Intent::CallTool(name.to_owned()),
            None => Intent::ToolResult(content(last).join(" ")),
        },
        Some("user") => {
            let words = content(last);
            match tool_name.filter(|_| mentions_weather(&words)) {
                Some(name) => Intent::CallTool(name.to_owned()),
                None => Intent::Echo(words),
            }
        }
        // Ends with an assistant or system message: echo the last user message.
        _ => Intent::Echo(
            messages
                .iter()
                .rev()
                .find(|m| role(m).as_deref() == Some("user"))
                .map_or_else(Vec::new, content),
        ),
    }
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
    let Some(body) = body else {
        return invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly.)",
            None,
            None,
        );
    };
    let (mut req, intent) = match Request::parse(&body) {
        Ok(parsed) => parsed,
        Err((message, param, code)) => return invalid(&message, param, code),
    };
    let faults = Faults::from_model(&req.model);
    if let Some(code) = shared.fault_for(&req.model, &faults) {
        return fault(code);
    }
    let plan = if faults.greedy {
        match req.greedy(&body) {
            Ok(limit) => Plan::greedy(intent, limit, ""),
            Err((message, param, code)) => return invalid(&message, param, code),
        }
    } else {
        Plan::new(intent, req.max_tokens, "")
    };
    req.usage = !faults.nousage;
    if faults.hang {
        shared.sleep(Duration::from_secs(3600)).await;
        return stopping();
    }
    let id = format!("chatcmpl-mock{n}");
    let created = unix_now();
    if req.stream {
        let events = stream_events(&req, &plan, &id, created);
        return sse_response(shared.clone(), events, &faults);
    }
    if faults.slow && !shared.sleep(SLOW_STEP).await {
        return stopping();
    }
    let message = match &plan.tool {
        // A greedy reply may say something before its call.
        Some(name) => {
            let content = if plan.words.is_empty() { Value::Null } else { json!(plan.text()) };
            json!({"role": "assistant", "content": content, "refusal": null,
                   "tool_calls": [tool_call(name, TOOL_ARGS)]})
        }
        None => json!({"role": "assistant", "content": plan.text(), "refusal": null}),
    };
    let choices: Vec<Value> = (0..req.choices)
        .map(|index| {
            json!({"index": index, "message": message, "logprobs": null,
                   "finish_reason": finish_reason(&plan)})
        })
        .collect();
    let mut body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": req.model,
        "choices": choices,
    });
    if req.usage {
        body["usage"] = usage(&req, &plan);
    }
    if faults.cut {
        return cut_json_response(&body);
    }
    shared.count(req.input_tokens, req.output_tokens(&plan), req.cached);
    json_response(StatusCode::OK, &body)
}

fn tool_call(name: &str, arguments: &str) -> Value {
    json!({"id": "call_mock1", "type": "function",
           "function": {"name": name, "arguments": arguments}})
}

fn finish_reason(plan: &Plan) -> &'static str {
    if plan.truncated {
        "length"
    } else if plan.tool.is_some() {
        "tool_calls"
    } else {
        "stop"
    }
}

fn usage(req: &Request, plan: &Plan) -> Value {
    let output = req.output_tokens(plan);
    let mut details = json!({"reasoning_tokens": 0});
    if let Some(rejected) = req.rejected {
        details["rejected_prediction_tokens"] = json!(rejected * req.choices);
    }
    json!({
        "prompt_tokens": req.input_tokens,
        "completion_tokens": output,
        "total_tokens": req.input_tokens + output,
        "prompt_tokens_details": {"cached_tokens": req.cached},
        "completion_tokens_details": details,
    })
}

fn stream_events(req: &Request, plan: &Plan, id: &str, created: u64) -> Vec<SseEvent> {
    let with_usage = req.include_usage && req.usage;
    let chunk = |choices: Value| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                           "model": req.model, "choices": choices});
        // With include_usage the real API puts `"usage": null` on every chunk.
        if with_usage {
            c["usage"] = Value::Null;
        }
        SseEvent::new(format!("data: {c}\n\n"))
    };
    let choice = |index: u64| {
        let delta = |delta: Value| {
            chunk(json!([{"index": index, "delta": delta, "logprobs": null,
                          "finish_reason": null}]))
        };
        let first_content = if plan.tool.is_some() { Value::Null } else { json!("") };
        let start = delta(json!({"role": "assistant", "content": first_content, "refusal": null}));
        // The first chunk of all starts the response, billing the input.
        let mut events =
            vec![if index == 0 { start.input(req.input_tokens, req.cached) } else { start }];
        for text in plan.deltas() {
            events.push(delta(json!({"content": text})).output(1));
        }
        if let Some(name) = &plan.tool {
            let mut call = tool_call(name, "");
            call["index"] = json!(0);
            events.push(delta(json!({"tool_calls": [call]})));
            let per_fragment = TOOL_CALL_TOKENS / TOOL_ARG_FRAGMENTS.len() as u64;
            for part in TOOL_ARG_FRAGMENTS {
                let call = json!({"index": 0, "function": {"arguments": part}});
                events.push(delta(json!({"tool_calls": [call]})).output(per_fragment));
            }
        }
        // The rejected prediction is billed once the choice is complete.
        let end = json!([{"index": index, "delta": {}, "logprobs": null,
                          "finish_reason": finish_reason(plan)}]);
        events.push(chunk(end).output(req.rejected.unwrap_or(0)));
        events
    };
    // Round-robin, as the real API interleaves choices; every choice has the
    // same plan, so the same number of events.
    let mut choices: Vec<_> = (0..req.choices).map(|i| choice(i).into_iter()).collect();
    let mut events = Vec::new();
    while let Some(first) = choices.first_mut().and_then(Iterator::next) {
        events.push(first);
        events.extend(choices[1..].iter_mut().filter_map(Iterator::next));
    }
    if with_usage {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                       "model": req.model, "choices": [], "usage": usage(req, plan)});
        events.push(SseEvent::new(format!("data: {c}\n\n")));
    }
    events.push(SseEvent::new("data: [DONE]\n\n".to_owned()));
    events
}
