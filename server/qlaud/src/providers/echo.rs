//! The built-in offline model: answers by echoing the last user message, in
//! either shape, JSON or streamed, with deterministic token counts
//! (a word is a token on the way out; input is counted at four characters a
//! token, plus three per message, like the usual estimates).

use serde_json::Value;

use crate::meter::Usage;
use crate::providers::ir::{Block, Completion, Event, StopReason};

/// The echo answer to a conversation, cut to `max_tokens` words.
pub struct Reply {
    pub words: Vec<String>,
    pub truncated: bool,
    pub usage: Usage,
}

/// Text of a `content` value: a string, or the text parts of an array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

/// Input tokens of a conversation (and system prompt) by the echo rule.
pub fn count_input(system: Option<&Value>, messages: &[Value]) -> u64 {
    let chars: usize = system.map(|s| text_of(s).len()).unwrap_or(0)
        + messages.iter().map(|m| text_of(&m["content"]).len()).sum::<usize>();
    (chars as u64).div_ceil(4) + 3 * messages.len() as u64
}

pub fn reply(system: Option<&Value>, messages: &[Value], max_tokens: u64) -> Reply {
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| text_of(&m["content"]))
        .unwrap_or_default();
    let mut words: Vec<String> = std::iter::once("echo:".to_string())
        .chain(last_user.split_whitespace().map(str::to_string))
        .collect();
    let truncated = words.len() as u64 > max_tokens;
    words.truncate(usize::try_from(max_tokens).unwrap_or(usize::MAX));
    let usage = Usage {
        input_tokens: count_input(system, messages),
        output_tokens: words.len() as u64,
        ..Default::default()
    };
    Reply { words, truncated, usage }
}

impl Reply {
    pub fn text(&self) -> String {
        self.words.join(" ")
    }

    fn stop(&self) -> StopReason {
        if self.truncated { StopReason::MaxTokens } else { StopReason::EndTurn }
    }

    /// The whole answer.
    pub fn completion(&self, id: String) -> Completion {
        Completion {
            id,
            blocks: vec![Block::Text(self.text())],
            stop: Some(self.stop()),
            stop_sequence: None,
            usage: self.usage,
        }
    }

    /// The answer as a stream: a text event per word (with the space before
    /// it), so a client that leaves early is billed a token per word it got.
    pub fn events(&self, id: String) -> Vec<Event> {
        let mut out =
            vec![Event::Start { id }, Event::InputUsage(Usage { output_tokens: 0, ..self.usage })];
        for (i, w) in self.words.iter().enumerate() {
            out.push(Event::Text(if i == 0 { w.clone() } else { format!(" {w}") }));
        }
        out.push(Event::Usage(self.usage));
        out.push(Event::Stop(self.stop()));
        out.push(Event::End);
        out
    }
}
