//! A GPT model's own Responses stream, forwarded event by event: qlaud
//! reads the deltas (what a cut stream is billed for), the final usage
//! (`response.completed`, `.incomplete` or `.failed`), and renames the
//! model to its public name in the events that carry the response object.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::Value;

use super::encode;
use crate::config::{Model, Prices};
use crate::gateway::error::GatewayError;
use crate::gateway::shape::Shape;
use crate::gateway::sse;
use crate::gateway::stream::StreamMeter;
use crate::meter::{Unreported, Usage, cost_micros};
use crate::providers::openai;

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
}

impl Tap {
    pub fn new(model: &Model, unreported: Unreported) -> Tap {
        Tap {
            usage: None,
            seen_output: 0,
            unreported,
            next_seq: 0,
            public_model: model.name.clone(),
            prices: model.prices.unwrap_or_default(),
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
            response["usage"]["cost_micros"] = cost_micros(&self.prices, &u).into();
        }
        Some(sse::event(name, &v.to_string()))
    }

    fn usage(&self) -> Usage {
        self.usage.unwrap_or_else(|| self.unreported.usage(None, self.seen_output))
    }

    fn error_event(&mut self, _: Shape, err: GatewayError) -> Bytes {
        encode::error_event(err, self.next_seq)
    }
}
