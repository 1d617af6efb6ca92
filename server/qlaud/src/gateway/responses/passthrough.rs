//! A GPT model's own Responses stream, forwarded event by event: qlaud
//! reads the deltas (what a cut stream is billed for), the final usage
//! (`response.completed`, `.incomplete` or `.failed`), renames the model
//! to its public name in the events that carry the response object (and
//! sets the fields qlaud's state answers for, such as `store`), and keeps
//! the final response object for qlaud's store.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::config::{Model, Prices};
use crate::dialects::Shape;
use crate::dialects::responses::render as encode;
use crate::gateway::error::GatewayError;
use crate::gateway::sse;
use crate::gateway::stream::StreamMeter;
use crate::meter::{Unreported, Usage, quantities};
use crate::providers::{openai, perplexity};
use crate::units::{self, Quantities};

/// The two fields read from every event, without parsing the rest.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(default)]
    sequence_number: Option<u64>,
    #[serde(borrow, default)]
    delta: Option<Cow<'a, str>>,
}

pub struct Tap {
    usage: Option<Usage>,
    /// Output the deltas can stand for (their bytes), for a stream that
    /// ends before its usage.
    seen_output: u64,
    unreported: Unreported,
    /// The sequence number an event qlaud adds would have.
    next_seq: u64,
    public_model: String,
    prices: Prices,
    /// Fields set on every response object (see `state::Keep::echo`).
    echo: Map<String, Value>,
    /// The response of `response.completed` or `.incomplete`.
    done: Option<Value>,
    /// The provider's built-in tool calls, as its final usage reports them.
    units: Quantities,
}

impl Tap {
    pub fn new(model: &Model, unreported: Unreported, echo: Map<String, Value>) -> Tap {
        Tap {
            usage: None,
            seen_output: 0,
            unreported,
            next_seq: 0,
            public_model: model.name.clone(),
            prices: model.prices.unwrap_or_default(),
            echo,
            done: None,
            units: Quantities::default(),
        }
    }
}

impl StreamMeter for Tap {
    fn tap(&mut self, raw: Bytes) -> Option<Bytes> {
        let (name, data) = sse::parse(&raw);
        let Ok(peek) = serde_json::from_str::<Peek<'_>>(&data) else {
            // Not JSON: a keep-alive or something new; it carries no usage.
            return Some(raw);
        };
        if let Some(n) = peek.sequence_number {
            self.next_seq = self.next_seq.max(n + 1);
        }
        // Every `*.delta` event is output coming through: text, refusal,
        // function arguments, reasoning summaries.
        if let Some(d) = &peek.delta {
            self.seen_output += (d.len() as u64).max(1);
            return Some(raw);
        }
        if !data.contains("\"response\"") {
            return Some(raw);
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
            return Some(raw);
        };
        let Some(response) = v.get_mut("response").filter(|r| r.is_object()) else {
            return Some(raw);
        };
        if response.get("model").is_some() {
            response["model"] = Value::String(self.public_model.clone());
        }
        if response["usage"].is_object() {
            let u = openai::responses_usage(&response["usage"]);
            self.usage = Some(u);
            self.units = perplexity::tool_calls(&response["usage"]);
            let mut q = quantities(&u);
            for (unit, n) in self.units.iter() {
                let _ = q.set(unit, n);
            }
            response["usage"]["cost_micros"] = units::cost_micros(&self.prices, &q).into();
        }
        for (k, value) in &self.echo {
            response[k.as_str()] = value.clone();
        }
        if matches!(v["type"].as_str(), Some("response.completed" | "response.incomplete")) {
            self.done = Some(v["response"].clone());
        }
        Some(sse::event(name, &v.to_string()))
    }

    fn usage(&self) -> Usage {
        self.usage.unwrap_or_else(|| self.unreported.usage(None, self.seen_output))
    }

    fn units(&self) -> Quantities {
        self.units
    }

    fn error_event(&mut self, _: Shape, err: GatewayError) -> Bytes {
        encode::error_event(err, self.next_seq)
    }

    fn final_response(&mut self) -> Option<Value> {
        self.done.take()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::{Provider, ProviderKind};

    fn model() -> Model {
        let provider = Provider {
            name: "openai".into(),
            kind: ProviderKind::Openai,
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key: None,
            timeout: Duration::from_secs(1),
        };
        Model {
            name: "gpt-public".into(),
            display_name: "GPT".into(),
            upstream: "gpt-upstream".into(),
            kind: crate::config::ModelKind::Chat,
            provider: Arc::new(provider),
            max_output_tokens: 100,
            context_window: 1000,
            prices: Some(Prices::tokens(1_000_000, 10_000_000, 100_000, 0)),
            credits_per_character_millionths: 1_000_000,
            fallbacks: Vec::new(),
            retries: 0,
        }
    }

    fn ev(kind: &str, body: &str) -> Bytes {
        Bytes::from(format!("event: {kind}\ndata: {body}\n\n"))
    }

    #[test]
    fn reads_usage_renames_the_model_and_adds_the_cost() {
        let unreported =
            Unreported { prompt_tokens: 500, hidden_output_tokens: 0, max_output_tokens: 100 };
        let echo = Map::from_iter([("store".to_string(), Value::Bool(true))]);
        let mut tap = Tap::new(&model(), unreported, echo);
        let delta = ev(
            "response.output_text.delta",
            r#"{"type":"response.output_text.delta","sequence_number":3,"delta":"hello"}"#,
        );
        // Deltas pass byte for byte.
        assert_eq!(tap.tap(delta.clone()), Some(delta));
        // Cut here, the stream bills the prompt bound and the delta's bytes.
        assert_eq!(tap.usage(), Usage { input_tokens: 500, output_tokens: 5, ..Usage::default() });
        let done = ev(
            "response.completed",
            r#"{"type":"response.completed","sequence_number":4,"response":{"model":"gpt-upstream","usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":4},"output_tokens":7}}}"#,
        );
        let out = tap.tap(done).unwrap();
        let (name, data) = sse::parse(&out);
        assert_eq!(name, Some("response.completed"));
        let v: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["response"]["model"], "gpt-public");
        assert_eq!(v["response"]["store"], true);
        assert_eq!(tap.final_response().unwrap()["usage"]["cost_micros"], 77);
        // 6 input at $1, 4 cached at $0.10, 7 output at $10 per million.
        assert_eq!(v["response"]["usage"]["cost_micros"], 77);
        assert_eq!(
            tap.usage(),
            Usage { input_tokens: 6, cache_read_tokens: 4, output_tokens: 7, ..Usage::default() }
        );
        // An error qlaud adds goes on from the provider's numbering.
        let err = tap.error_event(Shape::Responses, GatewayError::new(502, "cut"));
        let (_, data) = sse::parse(&err);
        assert_eq!(serde_json::from_str::<Value>(&data).unwrap()["sequence_number"], 5);
    }
}
