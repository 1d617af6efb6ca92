//! The `greedy` mode, shared by both APIs: a provider that bills the most the
//! real API could bill for a request, so the gateway's spend cap is tested
//! against its worst case rather than the mock's friendly word counts.

use serde_json::{Map, Value};

use super::{Api, IMAGE_TOKENS, Intent, Plan, TOOL_CALL_TOKENS};

/// Input tokens per attachment whose size the request does not show (a
/// document, a file, audio): the gateway cannot bound those from the body.
pub(super) const DOCUMENT_TOKENS: u64 = 100_000;
/// Inputs above this many tokens are refused, billing nothing.
pub(super) const MOCK_CONTEXT_WINDOW: u64 = 1_000_000;
/// Output limit of an OpenAI request that sets neither `max_tokens` nor
/// `max_completion_tokens`.
pub(super) const DEFAULT_OUTPUT_LIMIT: u64 = 4096;
/// Larger output limits are refused: padding a reply to an absurd limit would
/// exhaust the mock's memory before it proved anything.
pub(super) const MAX_OUTPUT_LIMIT: u64 = 128_000;
/// OpenAI's bounds for `n`.
pub(super) const MAX_CHOICES: u64 = 128;
/// The word a reply is padded with up to its limit.
const FILLER: &str = "more";

/// Input tokens: the compact JSON body's bytes, payload strings (base64
/// data, URLs, file ids) replaced by a fixed allowance per attachment, since
/// their bytes say nothing of what the provider bills for them.
pub(super) fn input_tokens(api: Api, body: &Value) -> u64 {
    let bytes = serde_json::to_string(body).map_or(0, |s| s.len() as u64);
    let mut tally = Tally::default();
    tally.walk(api, body);
    bytes.saturating_sub(tally.payload_bytes) + tally.allowance
}

#[derive(Default)]
struct Tally {
    payload_bytes: u64,
    allowance: u64,
}

impl Tally {
    fn walk(&mut self, api: Api, v: &Value) {
        match v {
            Value::Object(m) => match attachment(api, m) {
                Some((tokens, payloads)) => {
                    self.allowance += tokens;
                    self.payload_bytes += payloads.iter().map(|s| s.len() as u64).sum::<u64>();
                }
                None => m.values().for_each(|v| self.walk(api, v)),
            },
            Value::Array(a) => a.iter().for_each(|v| self.walk(api, v)),
            _ => {}
        }
    }
}

/// The allowance and payload strings of `m` if it is an image or a
/// size-hidden attachment of `api`. Malformed ones are left as plain JSON:
/// their bytes still count.
fn attachment(api: Api, m: &Map<String, Value>) -> Option<(u64, Vec<&str>)> {
    fn field<'a>(v: Option<&'a Value>, key: &str) -> Option<&'a str> {
        v?.get(key)?.as_str()
    }
    let kind = m.get("type")?.as_str()?;
    match api {
        Api::Anthropic => {
            let tokens = match kind {
                "image" => IMAGE_TOKENS,
                "document" => DOCUMENT_TOKENS,
                _ => return None,
            };
            let source = m.get("source");
            // Other document sources (`text`, `content`) show their size: they
            // are ordinary JSON, and images inside them are found by the walk.
            let key = match field(source, "type")? {
                "base64" => "data",
                "url" => "url",
                "file" => "file_id",
                _ => return None,
            };
            Some((tokens, vec![field(source, key)?]))
        }
        Api::OpenAi => match kind {
            "image_url" => {
                let url = match m.get("image_url")? {
                    Value::String(url) => url.as_str(),
                    v => v.get("url")?.as_str()?,
                };
                Some((IMAGE_TOKENS, vec![url]))
            }
            "file" => {
                let file = m.get("file");
                let payloads: Vec<&str> =
                    ["file_data", "file_id"].iter().filter_map(|k| field(file, k)).collect();
                (!payloads.is_empty()).then_some((DOCUMENT_TOKENS, payloads))
            }
            "input_audio" => Some((DOCUMENT_TOKENS, vec![field(m.get("input_audio"), "data")?])),
            // The Responses API's parts carry their payload directly.
            "input_image" => {
                let payloads: Vec<&str> = ["image_url", "file_id"]
                    .iter()
                    .filter_map(|k| m.get(*k).and_then(Value::as_str))
                    .collect();
                (!payloads.is_empty()).then_some((IMAGE_TOKENS, payloads))
            }
            "input_file" => {
                let payloads: Vec<&str> = ["file_data", "file_id", "file_url"]
                    .iter()
                    .filter_map(|k| m.get(*k).and_then(Value::as_str))
                    .collect();
                (!payloads.is_empty()).then_some((DOCUMENT_TOKENS, payloads))
            }
            _ => None,
        },
    }
}

/// Bytes of the text of an OpenAI `prediction` (`{"type": "content",
/// "content": string | text parts}`): billed as rejected prediction tokens,
/// the most a prediction can cost.
pub(super) fn prediction_tokens(body: &Value) -> u64 {
    let Some(prediction) = body.get("prediction") else { return 0 };
    if prediction.get("type").and_then(Value::as_str) != Some("content") {
        return 0;
    }
    match prediction.get("content") {
        Some(Value::String(s)) => s.len() as u64,
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|s| s.len() as u64)
            .sum(),
        _ => 0,
    }
}

impl Plan {
    /// A reply of exactly `limit` output tokens: the ordinary reply, cut or
    /// padded with filler words. A tool call is kept if it fits after its
    /// lead text, the filler going before it. Always stops on the limit.
    pub(super) fn greedy(intent: Intent, limit: u64, lead: &str) -> Plan {
        let mut plan = Plan::new(intent, None, lead);
        if plan.tool.is_some() && plan.words.len() as u64 + TOOL_CALL_TOKENS > limit {
            plan.tool = None;
        }
        let tool = if plan.tool.is_some() { TOOL_CALL_TOKENS } else { 0 };
        // The caller bounds `limit` by MAX_OUTPUT_LIMIT, so this fits.
        let words = usize::try_from(limit - tool).unwrap_or(usize::MAX);
        plan.words.resize(words, FILLER.to_owned());
        plan.truncated = true;
        plan
    }
}
