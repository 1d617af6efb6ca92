//! Streaming for the two model endpoints, which the generated code cannot
//! express: progenitor types only JSON answers, and its request types keep
//! only the fields qlaud's spec names. These methods take the request as
//! JSON (so tools, temperature and any provider parameter pass through) and
//! yield server-sent events as they arrive.

use std::pin::Pin;

use futures::{Stream, StreamExt};

use crate::Client;

/// One server-sent event: Anthropic's carry a name (`message_start`,
/// `content_block_delta`, …); OpenAI's are unnamed chunks ending with
/// `[DONE]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` field (JSON, or `[DONE]`).
    pub data: String,
}

impl SseEvent {
    /// The data parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.data)
    }

    /// Whether this is OpenAI's end-of-stream marker.
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }
}

/// Why a stream could not start or broke off.
#[derive(Debug)]
pub enum StreamError {
    /// The request failed to send or the connection broke.
    Http(reqwest::Error),
    /// qlaud answered with an error (its body in the endpoint's shape).
    Status { status: u16, body: serde_json::Value },
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Http(e) => write!(f, "{e}"),
            StreamError::Status { status, body } => write!(f, "qlaud answered {status}: {body}"),
        }
    }
}

impl std::error::Error for StreamError {}

/// A stream of events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<SseEvent, StreamError>> + Send>>;

impl Client {
    /// `POST /v1/messages` with `"stream": true`: Anthropic's events.
    ///
    /// ```no_run
    /// # async fn demo(client: qlaud::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use futures::StreamExt;
    /// let mut events = client
    ///     .create_message_stream(serde_json::json!({
    ///         "model": "echo", "max_tokens": 64,
    ///         "messages": [{"role": "user", "content": "hello"}],
    ///     }))
    ///     .await?;
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     if event.event.as_deref() == Some("content_block_delta") {
    ///         print!("{}", event.json()?["delta"]["text"].as_str().unwrap_or_default());
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn create_message_stream(
        &self,
        body: serde_json::Value,
    ) -> Result<EventStream, StreamError> {
        self.stream("/v1/messages", body).await
    }

    /// `POST /v1/chat/completions` with `"stream": true`: OpenAI's chunks,
    /// then `[DONE]`. Add `"stream_options": {"include_usage": true}` for a
    /// final usage chunk with `cost_micros`.
    pub async fn create_chat_completion_stream(
        &self,
        body: serde_json::Value,
    ) -> Result<EventStream, StreamError> {
        self.stream("/v1/chat/completions", body).await
    }

    async fn stream(
        &self,
        path: &str,
        mut body: serde_json::Value,
    ) -> Result<EventStream, StreamError> {
        body["stream"] = serde_json::Value::Bool(true);
        let resp = self
            .inner
            .client
            .post(format!("{}{path}", self.base_url()))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body)
            .send()
            .await
            .map_err(StreamError::Http)?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.json().await.unwrap_or(serde_json::Value::Null);
            return Err(StreamError::Status { status: status.as_u16(), body });
        }
        let mut buf = Vec::new();
        let events = resp.bytes_stream().flat_map(move |chunk| {
            let out: Vec<Result<SseEvent, StreamError>> = match chunk {
                Ok(bytes) => {
                    buf.extend_from_slice(&bytes);
                    let mut out = Vec::new();
                    while let Some(end) = find_event_end(&buf) {
                        let raw: Vec<u8> = buf.drain(..end).collect();
                        if let Some(e) = parse(&raw) {
                            out.push(Ok(e));
                        }
                    }
                    out
                }
                Err(e) => vec![Err(StreamError::Http(e))],
            };
            futures::stream::iter(out)
        });
        Ok(Box::pin(events))
    }
}

/// Just past the first blank line (`\n\n` or `\r\n\r\n`).
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse(raw: &[u8]) -> Option<SseEvent> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut event = None;
    let mut data = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    (!data.is_empty()).then(|| SseEvent { event, data: data.join("\n") })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_named_and_unnamed_events() {
        let e = super::parse(b"event: ping\ndata: {\"type\":\"ping\"}\n\n").unwrap();
        assert_eq!(e.event.as_deref(), Some("ping"));
        assert_eq!(e.json().unwrap()["type"], "ping");
        let done = super::parse(b"data: [DONE]\n\n").unwrap();
        assert!(done.is_done() && done.event.is_none());
        assert_eq!(super::find_event_end(b"data: x\n\ndata: y"), Some(9));
    }
}
