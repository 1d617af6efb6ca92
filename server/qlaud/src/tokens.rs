//! Local token counts of Anthropic-shaped requests, for models whose
//! provider has no count_tokens endpoint of its own (GPT and other
//! OpenAI-side models) and for the input counts Anthropic's clients expect in
//! `message_start` before an OpenAI-side provider reports any.
//!
//! These are estimates, never billing figures: the ledger settles from the
//! provider's reported usage. They count what the model reads with its
//! family's tokenizer, plus the framing OpenAI's cookbook documents for chat
//! models (3 tokens per message, 3 to prime the reply), 1 token per tool
//! call, and a fixed figure per image, since an image's real count depends
//! on its pixel size, which qlaud does not decode.

use serde_json::Value;
use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer as Family, get_tokenizer};

use crate::config::Model;

/// Framing tokens of one message (`<|start|>{role}<|message|>…<|end|>`).
pub const PER_MESSAGE: u64 = 3;
/// Tokens that prime the reply (`<|start|>assistant<|message|>`), once.
pub const REPLY_PRIMING: u64 = 3;
/// Framing tokens of one tool call on top of its name and arguments.
pub const PER_TOOL_CALL: u64 = 1;
/// Tokens of one image, whatever its size: what GPT-4o-class models bill
/// for a 1024×1024 image at high detail (85 + 4 tiles × 170).
pub const IMAGE_TOKENS: u64 = 765;

/// A model family's tokenizer.
#[derive(Clone, Copy)]
pub struct Tokenizer(&'static CoreBPE);

impl Tokenizer {
    /// The tokenizer of the model's family, known by its provider id or its
    /// public name; o200k_base (GPT-5.x, GPT-4o, the o-series) for any other.
    pub fn for_model(model: &Model) -> Tokenizer {
        let family = get_tokenizer(&model.upstream)
            .or_else(|| get_tokenizer(&model.name))
            .unwrap_or(Family::O200kBase);
        Tokenizer(
            tiktoken_rs::bpe_for_tokenizer(family)
                .unwrap_or_else(|_| tiktoken_rs::o200k_base_singleton()),
        )
    }

    /// Tokens of plain text. Special-token spellings in it are text, as the
    /// providers treat them.
    pub fn text(self, text: &str) -> u64 {
        self.0.count_ordinary(text) as u64
    }

    /// Tokens of a value written as compact JSON (tool inputs, schemas).
    fn json(self, v: &Value) -> u64 {
        self.text(&v.to_string())
    }

    /// Estimated input tokens of an Anthropic Messages request: its system
    /// prompt, messages and tool definitions.
    pub fn messages_request(
        self,
        system: Option<&Value>,
        messages: &[Value],
        tools: Option<&[Value]>,
    ) -> u64 {
        let mut n = REPLY_PRIMING;
        if let Some(system) = system {
            n += PER_MESSAGE + self.text("system") + self.content(system);
        }
        for m in messages {
            n += PER_MESSAGE;
            n += m["role"].as_str().map_or(0, |r| self.text(r));
            n += self.content(&m["content"]);
        }
        n + tools.unwrap_or_default().iter().map(|t| self.json(t)).sum::<u64>()
    }

    /// Tokens of a `system` or message `content`: a string or blocks.
    fn content(self, content: &Value) -> u64 {
        match content {
            Value::String(s) => self.text(s),
            Value::Array(blocks) => blocks.iter().map(|b| self.block(b)).sum(),
            _ => 0,
        }
    }

    fn block(self, b: &Value) -> u64 {
        let text = |field: &str| b[field].as_str().map_or(0, |s| self.text(s));
        match b["type"].as_str() {
            Some("text") => text("text"),
            Some("image") => IMAGE_TOKENS,
            Some("tool_use" | "server_tool_use") => {
                PER_TOOL_CALL + text("name") + self.json(&b["input"])
            }
            Some("tool_result") => self.content(&b["content"]),
            Some("thinking") => text("thinking"),
            Some("document") => {
                let source = &b["source"];
                match source["type"].as_str() {
                    Some("text") => source["data"].as_str().map_or(0, |s| self.text(s)),
                    Some("content") => self.content(&source["content"]),
                    // A PDF or file by reference: its text is not in the
                    // request, and the translation to OpenAI's shape drops
                    // it, so the model reads none of it.
                    _ => 0,
                }
            }
            // Redacted thinking and blocks qlaud does not know: opaque to
            // an OpenAI-side model, which never sees them.
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn o200k() -> Tokenizer {
        Tokenizer(tiktoken_rs::o200k_base_singleton())
    }

    #[test]
    fn counts_text_framing_tools_and_images() {
        let t = o200k();
        assert_eq!(t.text("hello world"), 2);
        let one = [json!({"role": "user", "content": "hello world"})];
        // 3 priming + 3 framing + "user" + 2.
        assert_eq!(t.messages_request(None, &one, None), 3 + 3 + 1 + 2);
        let blocks = [json!({"role": "user", "content": [
            {"type": "text", "text": "hello world"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        ]})];
        assert_eq!(t.messages_request(None, &blocks, None), 3 + 3 + 1 + 2 + IMAGE_TOKENS);
        let system =
            json!([{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]);
        let with_system = t.messages_request(Some(&system), &one, None);
        assert_eq!(with_system, 9 + 3 + t.text("system") + t.text("be brief"));
        let tool = json!({"name": "get_weather", "input_schema": {"type": "object"}});
        let with_tool = t.messages_request(None, &one, Some(std::slice::from_ref(&tool)));
        assert_eq!(with_tool, 9 + t.text(&tool.to_string()));
    }

    #[test]
    fn tool_calls_and_results_count_their_content() {
        let t = o200k();
        let turn = [
            json!({"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]}),
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "sunny and warm"}]}),
        ];
        let expected = 3
            + 2 * 3
            + t.text("assistant")
            + t.text("user")
            + 1
            + t.text("get_weather")
            + t.text(r#"{"city":"Paris"}"#)
            + t.text("sunny and warm");
        assert_eq!(t.messages_request(None, &turn, None), expected);
    }

    #[test]
    fn longer_text_counts_more() {
        let t = o200k();
        let short = [json!({"role": "user", "content": "one two"})];
        let long = [json!({"role": "user", "content": "one two three four five six"})];
        assert!(t.messages_request(None, &long, None) > t.messages_request(None, &short, None));
    }
}
