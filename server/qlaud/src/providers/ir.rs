//! The internal representation every cross-shape call goes through: each
//! provider module decodes its answers and stream events into these types
//! and encodes them back into its own shape, once. The offline `echo` model
//! produces them directly.

use serde_json::Value;

use crate::meter::Usage;

/// Why an answer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    Refusal,
    Other(String),
}

/// One piece of an answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    Text(String),
    ToolUse { id: String, name: String, input: Value },
}

/// A whole (non-streamed) answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub id: String,
    pub blocks: Vec<Block>,
    pub stop: Option<StopReason>,
    pub stop_sequence: Option<String>,
    pub usage: Usage,
}

/// One step of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The answer began.
    Start { id: String },
    /// More text.
    Text(String),
    /// A tool call began.
    ToolStart { id: String, name: String },
    /// More of the current tool call's JSON arguments.
    ToolArgs(String),
    /// The input counts, reported as the answer starts (output not yet).
    InputUsage(Usage),
    /// The provider's final counts (the latest replaces what came before).
    Usage(Usage),
    /// Output the provider bills that the client's shape has no place for
    /// (thinking, when translated): an upper bound of its tokens.
    Unseen(u64),
    /// Why the answer ended.
    Stop(StopReason),
    /// The stream ended normally.
    End,
}

impl Completion {
    /// The answer as the sequence of events a stream of it would carry.
    pub fn events(&self) -> Vec<Event> {
        let mut out = vec![Event::Start { id: self.id.clone() }];
        for block in &self.blocks {
            match block {
                Block::Text(t) => out.push(Event::Text(t.clone())),
                Block::ToolUse { id, name, input } => {
                    out.push(Event::ToolStart { id: id.clone(), name: name.clone() });
                    out.push(Event::ToolArgs(input.to_string()));
                }
            }
        }
        out.push(Event::Usage(self.usage));
        out.push(Event::Stop(self.stop.clone().unwrap_or(StopReason::EndTurn)));
        out.push(Event::End);
        out
    }
}
