//! An upper bound on a prompt's input tokens, for reserving its worst-case
//! cost before the provider has counted it.
//!
//! Every token a tokenizer emits covers at least one byte of text, so the
//! bytes of the text are a bound; images are counted at a fixed bound above
//! what either provider charges for one image (Anthropic ≈ 1,600 tokens for
//! the largest it accepts, OpenAI ≤ 1,536), since their base64 size says
//! nothing about their token count.

use serde_json::Value;

/// Tokens reserved per image.
pub const IMAGE_TOKENS: u64 = 5_000;
/// Role markers and formatting per message.
const PER_MESSAGE: u64 = 8;
const BASE: u64 = 64;

fn walk(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        Value::Array(items) => items.iter().map(walk).sum(),
        Value::Object(map) => {
            let kind = map.get("type").and_then(Value::as_str);
            if matches!(kind, Some("image" | "image_url" | "input_image")) {
                return IMAGE_TOKENS;
            }
            map.iter().map(|(k, v)| k.len() as u64 + walk(v)).sum()
        }
        Value::Number(_) | Value::Bool(_) => 4,
        Value::Null => 0,
    }
}

/// The bound for a conversation plus whatever else goes into the prompt
/// (system prompt, tool definitions).
pub fn prompt_bound(messages: &[Value], extra: &[Option<&Value>]) -> u64 {
    BASE + messages.iter().map(|m| PER_MESSAGE + walk(m)).sum::<u64>()
        + extra.iter().flatten().map(|v| walk(v)).sum::<u64>()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn images_count_a_fixed_bound_not_their_bytes() {
        let big = "A".repeat(1_000_000);
        let m = vec![json!({"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": big}},
        ]})];
        let bound = super::prompt_bound(&m, &[]);
        assert!(bound > super::IMAGE_TOKENS && bound < super::IMAGE_TOKENS + 200, "{bound}");
        let text = vec![json!({"role": "user", "content": "hello world"})];
        assert!(super::prompt_bound(&text, &[Some(&json!("be brief"))]) >= 11 + 8);
    }
}
