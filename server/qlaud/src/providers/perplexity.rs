//! Perplexity's Agent API: OpenAI's Responses shape at `/v1/responses`
//! (its Sonar chat completions were retired on 2026-09-27), reached with
//! `Authorization: Bearer $PERPLEXITY_API_KEY`, with built-in tools
//! (`web_search`, `fetch_url`, …) the provider runs itself and bills per
//! invocation.
//!
//! A Responses client's body passes through (`gateway::responses`); every
//! other client's request is rendered in the Responses shape and its
//! answer decoded (`openai::responses`).
//!
//! Billing. Tokens as reported in `usage`, plus one unit per built-in tool,
//! `<tool>_calls`, counted from `usage.tool_calls_details.<tool>.invocation`
//! and priced per model like any unit. A tool runs in the provider's own
//! loop of up to `max_steps` steps, and every step reads the whole context
//! again (search results included), so a request with built-in tools is
//! reserved at, per step, the context window as input, the output limit,
//! and [`CALLS_PER_STEP`] invocations of each tool; qlaud forwards
//! `max_steps` itself (at most [`MAX_STEPS`]) so that bound holds. Tools
//! qlaud has no price for, and fields that would let the provider choose
//! another model (`models`, `preset`) or run unseen (`background`), are
//! refused before anything is reserved.

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::config::Model;
use crate::gateway::error::GatewayError;
use crate::providers::ir::{self, Completion};
use crate::providers::openai::{self, responses};
use crate::providers::{ChatProvider, StreamDecoder};
use crate::units::{Quantities, Unit};

/// The most steps of the provider's own research loop qlaud lets one
/// request take (Perplexity allows up to 100; its presets use a few).
pub const MAX_STEPS: u64 = 10;
/// The steps a request with built-in tools runs when it names none.
pub const DEFAULT_STEPS: u64 = 5;
/// Invocations of one built-in tool counted per step in the worst case
/// (a step may run several searches at once).
pub const CALLS_PER_STEP: u64 = 3;

/// Perplexity for translated calls.
pub struct Perplexity;

impl ChatProvider for Perplexity {
    fn body(&self, req: &ir::Request, model: &Model) -> Value {
        responses::body(req, &model.upstream)
    }

    fn set_max_tokens(&self, body: &mut Value, max_tokens: u64) {
        responses::set_max_tokens(body, max_tokens);
    }

    fn post(
        &self,
        http: &reqwest::Client,
        model: &Model,
        _client_headers: &HeaderMap,
        body: Vec<u8>,
    ) -> Result<reqwest::RequestBuilder, GatewayError> {
        request(http, model, body)
    }

    fn completion(&self, answer: &Value) -> Completion {
        responses::completion(answer)
    }

    fn decoder(&self) -> StreamDecoder {
        let mut decoder = responses::Decoder::default();
        Box::new(move |raw| decoder.decode(raw))
    }
}

/// The upstream request for `body` (in the Responses shape).
pub fn request(
    http: &reqwest::Client,
    model: &Model,
    body: Vec<u8>,
) -> Result<reqwest::RequestBuilder, GatewayError> {
    openai::post(http, model, "v1/responses", body)
}

/// The unit a built-in tool's invocations are billed in.
pub fn tool_unit(tool: &str) -> Unit {
    Unit::named(&format!("{tool}_calls"))
}

/// What a Responses body asks of the provider's own loop, once checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Steps {
    /// The steps forwarded (`max_steps`); 1 without built-in tools.
    pub steps: u64,
    /// The worst case of the built-in tools' invocations, per unit.
    pub calls: Quantities,
}

/// Checks the fields of a pass-through body that decide what the provider
/// may bill beyond tokens, sets `max_steps` to the bound reserved, and
/// returns that bound.
pub fn steps(
    model: &Model,
    tools: &[Value],
    extra: &mut Map<String, Value>,
) -> Result<Steps, GatewayError> {
    for field in ["models", "preset"] {
        if extra.get(field).is_some_and(|v| !v.is_null()) {
            return Err(GatewayError::bad_request(format!(
                "`{field}` is not supported through qlaud: name one model in `model`, which \
                 is the one metered and billed"
            )));
        }
    }
    if extra.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(GatewayError::bad_request(
            "`background: true` is not supported: use POST /v1/jobs for asynchronous work",
        ));
    }
    if extra.get("skills").and_then(Value::as_array).is_some_and(|s| !s.is_empty()) {
        return Err(GatewayError::bad_request("`skills` are not supported through qlaud"));
    }
    let prices = model.prices.unwrap_or_default();
    let mut builtin = Vec::new();
    for tool in tools {
        let kind = tool["type"].as_str().unwrap_or_default();
        if kind == "function" {
            continue;
        }
        let unit = tool_unit(kind);
        if prices.get(unit).is_none() {
            return Err(GatewayError::bad_request(format!(
                "tool type {kind:?} has no price for model {:?} (price `{}` to allow it)",
                model.name,
                unit.as_str()
            )));
        }
        if !builtin.contains(&unit) {
            builtin.push(unit);
        }
    }
    if builtin.is_empty() {
        return Ok(Steps { steps: 1, calls: Quantities::default() });
    }
    let asked = match extra.get("max_steps") {
        None | Some(Value::Null) => DEFAULT_STEPS,
        Some(v) => v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            GatewayError::bad_request("max_steps must be an integer of at least 1")
        })?,
    };
    let steps = asked.min(MAX_STEPS);
    extra.insert("max_steps".into(), steps.into());
    let mut calls = Quantities::default();
    for unit in builtin {
        // Priced units are few (the model's table bounds them).
        let _ = calls.set(unit, steps * CALLS_PER_STEP);
    }
    Ok(Steps { steps, calls })
}

/// The built-in tools' invocations a response's `usage` reports.
pub fn tool_calls(usage: &Value) -> Quantities {
    let mut q = Quantities::default();
    for (tool, detail) in usage["tool_calls_details"].as_object().into_iter().flatten() {
        if let Some(n) = detail["invocation"].as_u64().filter(|n| *n > 0) {
            let _ = q.set(tool_unit(tool), n);
        }
    }
    q
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::config::{ModelKind, Prices, Provider, ProviderKind};

    fn model() -> Model {
        let mut prices = Prices::tokens(1_000_000, 1_000_000, 0, 0);
        prices.set(tool_unit("web_search"), 2_500_000_000).unwrap();
        Model {
            name: "sonar".into(),
            display_name: "Sonar".into(),
            upstream: "perplexity/sonar".into(),
            kind: ModelKind::Chat,
            provider: Arc::new(Provider {
                name: "perplexity".into(),
                kind: ProviderKind::Perplexity,
                base_url: "http://127.0.0.1:9".into(),
                api_key: None,
                timeout: Duration::from_secs(1),
            }),
            max_output_tokens: 100,
            context_window: 1000,
            prices: Some(prices),
            credits_per_character_millionths: 1_000_000,
            fallbacks: Vec::new(),
            retries: 0,
        }
    }

    /// `steps` of a body: its tools, and the rest as it goes on.
    fn check(body: Value) -> (Result<Steps, GatewayError>, Map<String, Value>) {
        let mut extra = body.as_object().unwrap().clone();
        let tools = match extra.remove("tools") {
            Some(Value::Array(t)) => t,
            _ => Vec::new(),
        };
        (steps(&model(), &tools, &mut extra), extra)
    }

    #[test]
    fn built_in_tools_set_and_bound_the_steps() {
        let (s, e) = check(json!({"tools": [{"type": "web_search"}, {"type": "function"}]}));
        let s = s.unwrap();
        assert_eq!(s.steps, DEFAULT_STEPS);
        assert_eq!(e["max_steps"], DEFAULT_STEPS);
        assert_eq!(s.calls.get(tool_unit("web_search")), Some(DEFAULT_STEPS * CALLS_PER_STEP));
        let (s, e) = check(json!({"tools": [{"type": "web_search"}], "max_steps": 100}));
        assert_eq!(s.unwrap().steps, MAX_STEPS);
        assert_eq!(e["max_steps"], MAX_STEPS);
        // Function tools alone: one step, nothing but tokens.
        let (s, _) = check(json!({"tools": [{"type": "function"}]}));
        assert_eq!(s.unwrap(), Steps { steps: 1, ..Steps::default() });
    }

    #[test]
    fn refuses_what_it_cannot_bound() {
        for bad in [
            json!({"tools": [{"type": "sandbox"}]}),
            json!({"models": ["openai/gpt-5.2"]}),
            json!({"preset": "pro-search"}),
            json!({"background": true}),
            json!({"tools": [{"type": "web_search"}], "max_steps": 0}),
        ] {
            let err = check(bad.clone()).0.unwrap_err();
            assert_eq!(err.status, 400, "{bad}");
        }
    }

    #[test]
    fn reads_invocations_from_usage() {
        let u = json!({"input_tokens": 1, "tool_calls_details": {
            "web_search": {"invocation": 2}, "fetch_url": {"invocation": 0}}});
        let q = tool_calls(&u);
        assert_eq!(q.get(tool_unit("web_search")), Some(2));
        assert_eq!(q.get(tool_unit("fetch_url")), None);
    }
}
