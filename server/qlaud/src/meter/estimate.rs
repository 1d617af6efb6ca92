//! The worst case of a model request, from the request as it is forwarded:
//! an upper bound on the input the provider can bill, and on the output it
//! can generate (the output limit times the number of choices).
//!
//! Input. Every token a tokenizer emits covers at least one byte of text, so
//! the length of the forwarded body, written as compact JSON, bounds the
//! tokens of everything in it — messages, system prompt, tool schemas,
//! `response_format`, fields qlaud has never heard of — and a provider's own
//! framing (role markers, the tool-use preamble) is covered by fixed
//! allowances. Binary payloads are the exception: their size says nothing
//! about their tokens. An image is counted at a fixed bound above what any
//! provider bills for one. An attachment whose tokens the request cannot
//! show (a PDF, audio, a file id, anything fetched by URL) is counted as the
//! whole context window, and no request is counted above the window: no
//! provider bills more input than its model can read.
//!
//! Output. The largest output limit the request carries, capped at the
//! model's, times the choices it asks for (`n`, `best_of`), plus what a
//! provider bills beyond the limit (rejected predicted-output tokens).

use serde_json::{Map, Value};

use crate::units::Quantities;

/// Tokens counted per image, whatever its size: above what Anthropic
/// (about 1,600 for the largest it accepts) or OpenAI (at most 1,536
/// patches, about 1,800 with high-detail tiles) bills for one image.
pub const IMAGE_TOKENS: u64 = 5_000;
/// The request's own framing: model, limits, stream flags, and the fields
/// qlaud adds itself (`stream_options`, an output limit).
const BASE: u64 = 128;
/// Role markers and separators a provider adds per message.
const PER_MESSAGE: u64 = 8;
/// The preamble a provider adds when a request has tools (Anthropic
/// documents 346 tokens for its tool-use system prompt).
const TOOL_PREAMBLE: u64 = 1_000;
/// A tool defined by type rather than by schema (Anthropic's `bash`,
/// `text_editor`, `computer`, …) expands upstream into a schema the request
/// does not show; Anthropic documents up to 735 tokens for one.
const TYPED_TOOL: u64 = 2_000;
/// The most choices one request may ask for (OpenAI's limit for `n`).
pub const MAX_CHOICES: u64 = 128;
/// Fields that multiply the output: each asks the provider for that many
/// completions. A provider that adds another must be added here; until
/// then the field passes through, and its cost beyond one choice is not
/// reserved (which the settlement clamp still keeps within the cap).
const CHOICE_FIELDS: [&str; 2] = ["n", "best_of"];
/// Block types whose strings are prompt text, never a reference to fetch.
const TEXT_TYPES: [&str; 11] = [
    "text",
    "input_text",
    "output_text",
    "tool_use",
    "tool_result",
    "function",
    "custom",
    "thinking",
    "redacted_thinking",
    "json_schema",
    "refusal",
];

/// A request's worst case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// At most this many input tokens.
    pub prompt_tokens: u64,
    /// The output limit per choice (the model's limit when the request set
    /// none).
    pub max_output: u64,
    /// Completions the provider generates.
    pub choices: u64,
    /// Output tokens per choice billed beyond `max_output`.
    pub extra_output: u64,
    /// The worst case in every other unit the call can be billed in (audio
    /// seconds, characters, …), reserved as it is: these are never clamped.
    pub units: Quantities,
}

impl Estimate {
    /// The most output tokens the request can be billed for with a limit of
    /// `per_choice`.
    pub fn output_tokens(&self, per_choice: u64) -> u64 {
        per_choice.saturating_add(self.extra_output).saturating_mul(self.choices)
    }
}

/// A prompt bound under construction: add the forwarded body's fields.
#[derive(Clone, Copy, Debug)]
pub struct PromptBound {
    tokens: u64,
    /// An attachment of unknown size: the bound is the context window.
    unmeasured: bool,
}

impl Default for PromptBound {
    fn default() -> PromptBound {
        PromptBound { tokens: BASE, unmeasured: false }
    }
}

impl PromptBound {
    /// Every field of a JSON body.
    pub fn body(body: &Value) -> PromptBound {
        let mut b = PromptBound::default();
        match body.as_object() {
            Some(fields) => b.fields(fields),
            None => b.value(body, false),
        }
        b
    }

    /// One top-level field.
    pub fn field(&mut self, key: &str, value: &Value) {
        // `"key":` and a comma.
        self.tokens += json_str_len(key) + 2;
        match key {
            "messages" | "input" if value.is_array() => {
                let n = value.as_array().map_or(0, Vec::len) as u64;
                self.tokens += PER_MESSAGE * n;
            }
            "tools" => self.tools(value),
            // Tool definitions an MCP server hands the provider.
            "mcp_servers" if value.as_array().is_some_and(|s| !s.is_empty()) => {
                self.unmeasured = true;
            }
            _ => {}
        }
        self.value(value, false);
    }

    /// A top-level string field (the model's name), without building a
    /// JSON value for it.
    pub fn text_field(&mut self, key: &str, value: &str) {
        self.tokens += json_str_len(key) + 2 + json_str_len(value);
    }

    /// A conversation held as a list rather than a JSON array.
    pub fn messages(&mut self, key: &str, messages: &[Value]) {
        // `"key":[`, `]` and a comma.
        self.tokens += json_str_len(key) + 4 + PER_MESSAGE * messages.len() as u64;
        for m in messages {
            self.value(m, false);
            self.tokens += 1;
        }
    }

    pub fn fields(&mut self, fields: &Map<String, Value>) {
        for (k, v) in fields {
            self.field(k, v);
        }
    }

    /// The bound, never above `context_window`.
    pub fn finish(self, context_window: u64) -> u64 {
        if self.unmeasured { context_window } else { self.tokens.min(context_window) }
    }

    fn tools(&mut self, tools: &Value) {
        let Some(tools) = tools.as_array().filter(|t| !t.is_empty()) else { return };
        self.tokens += TOOL_PREAMBLE;
        for t in tools {
            let typed = t.get("type").and_then(Value::as_str).is_some_and(|ty| {
                !matches!(ty, "function" | "custom") && t.get("input_schema").is_none()
            });
            if typed {
                self.tokens += TYPED_TOOL;
            }
        }
    }

    /// Adds `v` as it is written in compact JSON, binary payloads replaced
    /// by their bounds. `in_image`: inside an image block, whose payload
    /// (`data`, `url`) is counted by `IMAGE_TOKENS` instead of its bytes.
    fn value(&mut self, v: &Value, in_image: bool) {
        match v {
            Value::Null => self.tokens += 4,
            Value::Bool(b) => self.tokens += if *b { 4 } else { 5 },
            Value::Number(n) => self.tokens += number_len(n),
            Value::String(s) => self.tokens += json_str_len(s),
            Value::Array(items) => {
                self.tokens += 2 + items.len() as u64;
                for item in items {
                    self.value(item, in_image);
                }
            }
            Value::Object(map) => self.object(map, in_image),
        }
    }

    fn object(&mut self, map: &Map<String, Value>, in_image: bool) {
        self.tokens += 2 + map.len() as u64;
        let kind = map.get("type").and_then(Value::as_str);
        let image = in_image || matches!(kind, Some("image" | "image_url" | "input_image"));
        if image && !in_image {
            self.tokens += IMAGE_TOKENS;
        }
        if !image && unmeasured(map, kind) {
            self.unmeasured = true;
        }
        for (k, v) in map {
            self.tokens += json_str_len(k) + 1;
            let payload = matches!(k.as_str(), "data" | "url" | "image_url" | "file_id");
            if image && payload && v.is_string() {
                self.tokens += 2;
            } else {
                self.value(v, image);
            }
        }
    }
}

/// Whether a (non-image) object is an attachment the request cannot size:
/// a file reference, a binary payload of a kind other than an image, or a
/// typed block pointing at something the provider fetches.
fn unmeasured(map: &Map<String, Value>, kind: Option<&str>) -> bool {
    if ["file_id", "file_data", "file_url"].iter().any(|k| map.contains_key(*k)) {
        return true;
    }
    match kind {
        Some("document" | "file" | "input_file" | "input_audio" | "audio" | "video") => {
            // Anthropic's plain-text documents are text like any other.
            !matches!(
                map.get("source").and_then(|s| s.get("type")).and_then(Value::as_str),
                Some("text" | "content")
            )
        }
        Some(k) if TEXT_TYPES.contains(&k) => false,
        // Any other typed block that carries a URL or a data URL, directly
        // or one object down (`source`, `video_url`, …).
        Some(_) => map.values().any(|v| match v {
            Value::String(s) => fetched(s),
            Value::Object(inner) => inner.values().any(|v| v.as_str().is_some_and(fetched)),
            _ => false,
        }),
        None => false,
    }
}

fn fetched(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://") || s.starts_with("data:")
}

/// The number of choices a forwarded body asks for: the largest of its
/// multiplying fields. `Err` names a field that is not a whole number from
/// 1 to `MAX_CHOICES`.
pub fn choices(fields: &Map<String, Value>) -> Result<u64, &'static str> {
    let mut choices = 1;
    for name in CHOICE_FIELDS {
        match fields.get(name) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64().or_else(|| whole(v)) {
                Some(n) if (1..=MAX_CHOICES).contains(&n) => choices = choices.max(n),
                _ => return Err(name),
            },
        }
    }
    Ok(choices)
}

/// `2.0` as 2, as lenient JSON readers take it.
fn whole(v: &Value) -> Option<u64> {
    let f = v.as_f64()?;
    (f.fract() == 0.0 && f >= 0.0 && f <= MAX_CHOICES as f64).then_some(f as u64)
}

/// Output tokens billed beyond the limit: OpenAI bills the rejected tokens
/// of a predicted output as output, on top of what the answer says.
pub fn extra_output(fields: &Map<String, Value>) -> u64 {
    fields.get("prediction").map_or(0, |p| {
        let mut b = PromptBound { tokens: 0, unmeasured: false };
        b.value(p, false);
        b.tokens
    })
}

/// An upper bound on the tokens of output that came through: the bytes of
/// its text (no tokenizer emits more tokens than bytes).
pub fn text_tokens(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        Value::Array(items) => items.iter().map(text_tokens).sum(),
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "type" | "index" | "id" | "role"))
            .map(|(_, v)| text_tokens(v))
            .sum(),
        _ => 0,
    }
}

/// Length of `s` as a JSON string, quotes and escapes included.
fn json_str_len(s: &str) -> u64 {
    let escapes: u64 = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    2 + s.len() as u64 + escapes
}

fn number_len(n: &serde_json::Number) -> u64 {
    struct Count(u64);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len() as u64;
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = std::fmt::write(&mut c, format_args!("{n}"));
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WINDOW: u64 = 1_000_000;

    fn bound(body: Value) -> u64 {
        PromptBound::body(&body).finish(WINDOW)
    }

    #[test]
    fn the_bound_covers_every_byte_of_the_body() {
        let bodies = [
            json!({"model": "m", "messages": [{"role": "user", "content": "hi \"there\"\n\u{1}"}]}),
            json!({"model": "m", "messages": [], "functions": [{"name": "f",
                   "description": "x".repeat(4000)}], "response_format": {"type": "json_schema",
                   "json_schema": {"schema": {"description": "é".repeat(300)}}}, "seed": 12345678901u64,
                   "temperature": 0.123456789, "logit_bias": {"50256": -100}}),
        ];
        for body in bodies {
            let len = serde_json::to_string(&body).unwrap().len() as u64;
            assert!(bound(body.clone()) >= len, "{} < {len}", bound(body));
        }
    }

    #[test]
    fn images_count_a_fixed_bound_not_their_bytes() {
        let big = "A".repeat(1_000_000);
        let body = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": big}},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{big}")}},
        ]}]});
        let b = bound(body);
        assert!(b > 2 * IMAGE_TOKENS && b < 2 * IMAGE_TOKENS + 600, "{b}");
    }

    #[test]
    fn attachments_of_unknown_size_take_the_window() {
        let window = |content: Value| {
            bound(json!({"messages": [{"role": "user", "content": [content]}]})) == WINDOW
        };
        assert!(window(json!({"type": "document", "source": {"type": "url",
                                "url": "https://example.com/a.pdf"}})));
        assert!(window(json!({"type": "document", "source": {"type": "base64",
                                "media_type": "application/pdf", "data": "JVBERi0="}})));
        assert!(window(json!({"type": "file", "file": {"file_id": "file-abc"}})));
        assert!(window(json!({"type": "input_audio", "input_audio": {"data": "UklGRg==",
                                "format": "wav"}})));
        assert!(window(json!({"type": "video_url", "video_url": {"url": "https://v.example/x"}})));
        // Text documents and text that merely mentions a URL are text.
        assert!(!window(json!({"type": "document", "source": {"type": "text",
                                 "media_type": "text/plain", "data": "plain words"}})));
        assert!(!window(json!({"type": "text", "text": "https://example.com"})));
        assert_eq!(
            bound(json!({"mcp_servers": [{"type": "url", "url": "https://m.example"}]})),
            WINDOW
        );
        // Never above the window, however big the text.
        assert_eq!(
            bound(json!({"messages": [{"role": "user", "content": "x".repeat(2_000_000)}]})),
            WINDOW
        );
    }

    #[test]
    fn tools_add_their_preamble_and_typed_tools_their_schema() {
        let plain = bound(json!({"tools": [{"name": "f", "input_schema": {"type": "object"}}]}));
        let typed = bound(json!({"tools": [{"type": "bash_20250124", "name": "bash"}]}));
        assert!((TOOL_PREAMBLE..TOOL_PREAMBLE + TYPED_TOOL).contains(&plain));
        assert!(typed >= TOOL_PREAMBLE + TYPED_TOOL);
    }

    #[test]
    fn choices_take_the_largest_multiplier_and_refuse_nonsense() {
        let fields = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(choices(&fields(json!({}))), Ok(1));
        assert_eq!(choices(&fields(json!({"n": 8}))), Ok(8));
        assert_eq!(choices(&fields(json!({"n": 2, "best_of": 5}))), Ok(5));
        assert_eq!(choices(&fields(json!({"n": 3.0}))), Ok(3));
        for bad in [json!(0), json!(129), json!(-1), json!(1.5), json!("2"), json!(true)] {
            assert_eq!(choices(&fields(json!({"n": bad}))), Err("n"));
        }
    }

    #[test]
    fn predictions_are_billed_beyond_the_limit() {
        let f = json!({"prediction": {"type": "content", "content": "x".repeat(500)}});
        let extra = extra_output(f.as_object().unwrap());
        assert!(extra >= 500, "{extra}");
        let e = Estimate {
            prompt_tokens: 0,
            max_output: 100,
            choices: 3,
            extra_output: extra,
            units: Quantities::default(),
        };
        assert_eq!(e.output_tokens(100), 3 * (100 + extra));
    }
}
