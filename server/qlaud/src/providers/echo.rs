//! The built-in offline model: answers an internal request by echoing its
//! last user message (the gateway renders it in any dialect, JSON or
//! streamed), with deterministic token counts
//! (a word is a token on the way out; input is counted at four characters a
//! token, plus three per message, like the usual estimates).

use crate::meter::Usage;
use crate::providers::ir::{Block, Completion, Event, Part, Request, Role, StopReason};

/// The echo answer to a conversation, cut to `max_tokens` words.
pub struct Reply {
    pub words: Vec<String>,
    pub truncated: bool,
    pub usage: Usage,
}

/// The characters a part counts for.
fn chars(p: &Part) -> usize {
    match p {
        Part::Text(t) => t.len(),
        Part::ToolResult { content, .. } => content.len(),
        Part::ToolUse { name, input, .. } => name.len() + input.to_string().len(),
        Part::Image(_) => 0,
    }
}

/// Input tokens of a request by the echo rule.
pub fn count_input(req: &Request) -> u64 {
    let chars: usize = req.system.iter().map(String::len).sum::<usize>()
        + req.messages.iter().flat_map(|m| &m.content).map(chars).sum::<usize>();
    (chars as u64).div_ceil(4) + 3 * req.messages.len() as u64
}

/// The answer to `req`: its last user turn's text, echoed.
pub fn reply(req: &Request, max_tokens: u64) -> Reply {
    let last_user = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.text())
        .unwrap_or_default();
    let mut words: Vec<String> = std::iter::once("echo:".to_string())
        .chain(last_user.split_whitespace().map(str::to_string))
        .collect();
    let truncated = words.len() as u64 > max_tokens;
    words.truncate(usize::try_from(max_tokens).unwrap_or(usize::MAX));
    let usage = Usage {
        input_tokens: count_input(req),
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
