//! OpenAI Responses API: `POST /v1/responses`, JSON and SSE (the typed
//! events with `sequence_number`s), with the chat completions' reply rules,
//! faults and stats.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::greedy::{self, DEFAULT_OUTPUT_LIMIT, MAX_OUTPUT_LIMIT, MOCK_CONTEXT_WINDOW};
use super::openai::{auth_error, fault, invalid, stopping};
use super::{
    Api, CACHED_TOKENS, Faults, IMAGE_TOKENS, Intent, Plan, SLOW_STEP, Shared, SseEvent,
    TOOL_ARG_FRAGMENTS, TOOL_ARGS, TOOL_CALL_TOKENS, TOOL_DEF_TOKENS, cut_json_response,
    json_response, mentions_weather, sse_response, unix_now, word_count, words_of,
};

pub(super) async fn responses(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = (Api::OpenAi, "/v1/responses", "x-request-id");
    shared
        .serve(route, &headers, body, stopping, |n, body| answer(&shared, n, &headers, body))
        .await
}

/// Words of a content value: a string, or its text parts, "[image]" per
/// image.
fn echo_words(content: &Value) -> Vec<String> {
    match content {
        Value::String(s) => words_of(s),
        Value::Array(parts) => parts
            .iter()
            .flat_map(|p| match p.get("type").and_then(Value::as_str) {
                Some("input_text" | "output_text") => {
                    p.get("text").and_then(Value::as_str).map_or_else(Vec::new, words_of)
                }
                Some("input_image") => vec!["[image]".to_owned()],
                _ => Vec::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Input tokens of one input item.
fn item_tokens(item: &Value) -> u64 {
    match item.get("type").and_then(Value::as_str).unwrap_or("message") {
        "message" => match item.get("content") {
            Some(Value::String(s)) => word_count(s),
            Some(Value::Array(parts)) => parts
                .iter()
                .map(|p| match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text") => {
                        p.get("text").and_then(Value::as_str).map_or(0, word_count)
                    }
                    Some("input_image") => IMAGE_TOKENS,
                    _ => 0,
                })
                .sum(),
            _ => 0,
        },
        "function_call_output" => item.get("output").and_then(Value::as_str).map_or(0, word_count),
        _ => 0,
    }
}

fn intent(items: &[Value], tools: &[Value]) -> Intent {
    let kind = |m: &Value| m.get("type").and_then(Value::as_str).unwrap_or("message").to_owned();
    let role = |m: &Value| m.get("role").and_then(Value::as_str).map(str::to_owned);
    let content = |m: &Value| m.get("content").map_or_else(Vec::new, echo_words);
    let last = items.last().unwrap_or(&Value::Null);
    if kind(last) == "function_call_output" {
        let output = last.get("output").and_then(Value::as_str).unwrap_or_default();
        return Intent::ToolResult(words_of(output).join(" "));
    }
    if kind(last) == "message" && role(last).as_deref() == Some("user") {
        let words = content(last);
        let tool = tools.first().and_then(|t| t.get("name")).and_then(Value::as_str);
        return match tool.filter(|_| mentions_weather(&words)) {
            Some(name) => Intent::CallTool(name.to_owned()),
            None => Intent::Echo(words),
        };
    }
    Intent::Echo(
        items
            .iter()
            .rev()
            .find(|m| kind(m) == "message" && role(m).as_deref() == Some("user"))
            .map_or_else(Vec::new, content),
    )
}

/// A validated request, reduced to what the reply depends on.
struct Request {
    model: String,
    max_output_tokens: Option<u64>,
    stream: bool,
    input_tokens: u64,
    cached: u64,
    /// False for `nousage`.
    usage: bool,
    /// Built-in tools the provider runs itself (Perplexity's `web_search`,
    /// `fetch_url`), with the invocations each made: two per tool, or
    /// fewer when `max_steps` allows fewer.
    tool_calls: Vec<(String, u64)>,
}

type Invalid = (String, Option<&'static str>, Option<&'static str>);

fn parse(body: &Value) -> Result<(Request, Intent), Invalid> {
    let Some(obj) = body.as_object() else {
        return Err(("Invalid request body: expected an object.".into(), None, None));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) => m.clone(),
        _ => return Err(("Missing required parameter: 'model'.".into(), Some("model"), None)),
    };
    let items = match obj.get("input") {
        Some(Value::String(s)) => vec![json!({"role": "user", "content": s})],
        Some(Value::Array(items)) => items.clone(),
        _ => {
            return Err((
                "Missing required parameter: 'input'.".into(),
                Some("input"),
                Some("missing_required_parameter"),
            ));
        }
    };
    let max_output_tokens = match obj.get("max_output_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(m) => Some(m),
            None => {
                return Err((
                    "Invalid type for 'max_output_tokens': expected an integer.".into(),
                    Some("max_output_tokens"),
                    Some("invalid_type"),
                ));
            }
        },
    };
    let tools = obj.get("tools").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let instructions = obj.get("instructions").and_then(Value::as_str).map_or(0, word_count);
    let input_tokens = instructions
        + items.iter().map(item_tokens).sum::<u64>()
        + tools.len() as u64 * TOOL_DEF_TOKENS;
    let cached = if obj.get("user").and_then(Value::as_str) == Some("cached") {
        CACHED_TOKENS.min(input_tokens)
    } else {
        0
    };
    let steps = obj.get("max_steps").and_then(Value::as_u64).unwrap_or(1);
    let mut tool_calls: Vec<(String, u64)> = Vec::new();
    for t in tools {
        match t.get("type").and_then(Value::as_str) {
            None | Some("function") => {}
            Some(kind) if tool_calls.iter().any(|(k, _)| k == kind) => {}
            Some(kind) => tool_calls.push((kind.to_owned(), steps.min(2))),
        }
    }
    let req = Request {
        model,
        max_output_tokens,
        stream: obj.get("stream").and_then(Value::as_bool).unwrap_or(false),
        input_tokens,
        cached,
        usage: true,
        tool_calls,
    };
    Ok((req, intent(&items, tools)))
}

/// Makes the request greedy; returns its output limit.
fn make_greedy(req: &mut Request, body: &Value) -> Result<u64, Invalid> {
    let limit = req.max_output_tokens.unwrap_or(DEFAULT_OUTPUT_LIMIT);
    if limit > MAX_OUTPUT_LIMIT {
        return Err((
            format!("max_output_tokens is too large: {limit} > {MAX_OUTPUT_LIMIT}."),
            Some("max_output_tokens"),
            Some("invalid_value"),
        ));
    }
    req.input_tokens = greedy::input_tokens(Api::OpenAi, body);
    req.cached = 0;
    if req.input_tokens > MOCK_CONTEXT_WINDOW {
        return Err((
            format!(
                "Your input exceeds the context window of this model ({} > \
                 {MOCK_CONTEXT_WINDOW} tokens).",
                req.input_tokens
            ),
            Some("input"),
            Some("context_length_exceeded"),
        ));
    }
    Ok(limit)
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
        return invalid("We could not parse the JSON body of your request.", None, None);
    };
    let (mut req, intent) = match parse(&body) {
        Ok(parsed) => parsed,
        Err((message, param, code)) => return invalid(&message, param, code),
    };
    let faults = Faults::from_model(&req.model);
    if let Some(code) = shared.fault_for(&req.model, &faults) {
        return fault(code);
    }
    let plan = if faults.greedy {
        match make_greedy(&mut req, &body) {
            Ok(limit) => Plan::greedy(intent, limit, ""),
            Err((message, param, code)) => return invalid(&message, param, code),
        }
    } else {
        Plan::new(intent, req.max_output_tokens, "")
    };
    req.usage = !faults.nousage;
    if faults.hang {
        shared.sleep(Duration::from_secs(3600)).await;
        return stopping();
    }
    let ids = Ids {
        response: format!("resp_mock{n}"),
        message: format!("msg_mock{n}"),
        call: format!("fc_mock{n}"),
    };
    if req.stream {
        let events = stream_events(&req, &plan, &ids, unix_now());
        return sse_response(shared.clone(), events, &faults);
    }
    if faults.slow && !shared.sleep(SLOW_STEP).await {
        return stopping();
    }
    let body = response(&req, &plan, &ids, unix_now(), output_items(&req, &plan, &ids), true);
    if faults.cut {
        return cut_json_response(&body);
    }
    shared.count(req.input_tokens, plan.output_tokens(), req.cached);
    json_response(StatusCode::OK, &body)
}

struct Ids {
    response: String,
    message: String,
    call: String,
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

fn call_item(id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": "call_mock1", "name": name,
           "arguments": arguments, "status": status})
}

/// What one built-in tool's invocations left in the output, in
/// Perplexity's item shapes.
fn builtin_item(n: u64, kind: &str) -> Value {
    let result = json!({"id": n, "title": "Mock result", "url": "https://example.com/mock",
                        "snippet": "A page the mock found.", "source": "web"});
    match kind {
        "web_search" => json!({"type": "search_results", "queries": ["mock query"],
                               "results": [result]}),
        "fetch_url" => json!({"type": "fetch_url_results", "contents": [
            {"title": "Mock page", "url": "https://example.com/mock", "snippet": "Fetched."}]}),
        other => json!({"type": format!("{other}_results"), "id": format!("{other}_mock{n}")}),
    }
}

fn output_items(req: &Request, plan: &Plan, ids: &Ids) -> Vec<Value> {
    let mut out: Vec<Value> =
        req.tool_calls.iter().enumerate().map(|(n, (k, _))| builtin_item(n as u64, k)).collect();
    if !plan.words.is_empty() {
        out.push(message_item(&ids.message, &plan.text(), "completed"));
    }
    if let Some(name) = &plan.tool {
        out.push(call_item(&ids.call, name, TOOL_ARGS, "completed"));
    }
    out
}

/// What the mock charges per built-in tool invocation, in micro-dollars
/// (Perplexity's list prices).
fn tool_price_micros(kind: &str) -> u64 {
    match kind {
        "fetch_url" => 500,
        _ => 5_000,
    }
}

fn usage(req: &Request, plan: &Plan) -> Value {
    let output = plan.output_tokens();
    let mut u = json!({
        "input_tokens": req.input_tokens,
        "input_tokens_details": {"cached_tokens": req.cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": req.input_tokens + output,
    });
    if !req.tool_calls.is_empty() {
        // Perplexity's additions: invocations per tool, and its own cost.
        let details: serde_json::Map<String, Value> =
            req.tool_calls.iter().map(|(k, n)| (k.clone(), json!({"invocation": n}))).collect();
        let tools: u64 = req.tool_calls.iter().map(|(k, n)| n * tool_price_micros(k)).sum();
        let usd = |micros: u64| micros as f64 / 1e6;
        u["tool_calls_details"] = Value::Object(details);
        u["cost"] = json!({"currency": "USD", "input_cost": usd(req.input_tokens),
                           "output_cost": usd(output), "tool_calls_cost": usd(tools),
                           "total_cost": usd(req.input_tokens + output + tools)});
    }
    u
}

/// The response object; `done` false while it is being generated.
fn response(
    req: &Request,
    plan: &Plan,
    ids: &Ids,
    created: u64,
    output: Vec<Value>,
    done: bool,
) -> Value {
    let status = match (done, plan.truncated) {
        (false, _) => "in_progress",
        (true, true) => "incomplete",
        (true, false) => "completed",
    };
    let incomplete = (done && plan.truncated).then(|| json!({"reason": "max_output_tokens"}));
    let usage = if done && req.usage { usage(req, plan) } else { Value::Null };
    json!({
        "id": ids.response, "object": "response", "created_at": created, "status": status,
        "error": null, "incomplete_details": incomplete, "instructions": null,
        "max_output_tokens": req.max_output_tokens, "model": req.model, "output": output,
        "parallel_tool_calls": true, "previous_response_id": null, "store": false,
        "reasoning": {"effort": null, "summary": null}, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": null, "metadata": {},
    })
}

fn stream_events(req: &Request, plan: &Plan, ids: &Ids, created: u64) -> Vec<SseEvent> {
    let mut seq = 0u64;
    let mut event = |kind: &str, mut body: Value| {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(seq);
        seq += 1;
        SseEvent::new(format!("event: {kind}\ndata: {body}\n\n"))
    };
    let mut events = Vec::new();
    let start = response(req, plan, ids, created, Vec::new(), false);
    // The start of the response bills the input.
    events.push(
        event("response.created", json!({"response": start})).input(req.input_tokens, req.cached),
    );
    events.push(event("response.in_progress", json!({"response": start})));
    let mut index = 0;
    for (n, (kind, _)) in req.tool_calls.iter().enumerate() {
        let item = builtin_item(n as u64, kind);
        events.push(event(
            "response.output_item.added",
            json!({"output_index": index, "item": item.clone()}),
        ));
        events
            .push(event("response.output_item.done", json!({"output_index": index, "item": item})));
        index += 1;
    }
    if !plan.words.is_empty() {
        let id = &ids.message;
        let added = json!({"type": "message", "id": id, "status": "in_progress",
                           "role": "assistant", "content": []});
        events.push(event(
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        ));
        let at = json!({"item_id": id, "output_index": index, "content_index": 0});
        let mut part = at.clone();
        part["part"] = json!({"type": "output_text", "text": "", "annotations": []});
        events.push(event("response.content_part.added", part));
        for delta in plan.deltas() {
            let mut d = at.clone();
            d["delta"] = json!(delta);
            d["logprobs"] = json!([]);
            events.push(event("response.output_text.delta", d).output(1));
        }
        let mut done = at.clone();
        done["text"] = json!(plan.text());
        done["logprobs"] = json!([]);
        events.push(event("response.output_text.done", done));
        let mut part = at;
        part["part"] = json!({"type": "output_text", "text": plan.text(), "annotations": []});
        events.push(event("response.content_part.done", part));
        let item = message_item(id, &plan.text(), "completed");
        events
            .push(event("response.output_item.done", json!({"output_index": index, "item": item})));
        index += 1;
    }
    if let Some(name) = &plan.tool {
        let id = &ids.call;
        let added = call_item(id, name, "", "in_progress");
        events.push(event(
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        ));
        let per_fragment = TOOL_CALL_TOKENS / TOOL_ARG_FRAGMENTS.len() as u64;
        for part in TOOL_ARG_FRAGMENTS {
            let d = json!({"item_id": id, "output_index": index, "delta": part});
            events.push(event("response.function_call_arguments.delta", d).output(per_fragment));
        }
        let done = json!({"item_id": id, "output_index": index, "name": name,
                          "arguments": TOOL_ARGS});
        events.push(event("response.function_call_arguments.done", done));
        let item = call_item(id, name, TOOL_ARGS, "completed");
        events
            .push(event("response.output_item.done", json!({"output_index": index, "item": item})));
    }
    let end = response(req, plan, ids, created, output_items(req, plan, ids), true);
    let kind = if plan.truncated { "response.incomplete" } else { "response.completed" };
    events.push(event(kind, json!({"response": end})));
    events
}
