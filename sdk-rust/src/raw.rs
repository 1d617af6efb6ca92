//! The calls the generated code cannot express. Progenitor types only JSON
//! answers, and its request types keep only the fields qlaud's spec names;
//! the model endpoints take any provider parameter. These methods take the
//! request as JSON (so tools, temperature, thinking … pass through) and
//! return the answer as JSON, or its server-sent events as they arrive.

use std::pin::Pin;

use futures::{Stream, StreamExt};

use progenitor_client::ClientInfo as _;

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

/// Why a JSON call or a stream failed, or a stream broke off.
#[derive(Debug)]
pub enum RawError {
    /// The request failed to send or the connection broke.
    Http(reqwest::Error),
    /// qlaud answered with an error (its body in the endpoint's shape).
    Status { status: u16, body: serde_json::Value },
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawError::Http(e) => write!(f, "{e}"),
            RawError::Status { status, body } => write!(f, "qlaud answered {status}: {body}"),
        }
    }
}

impl std::error::Error for RawError {}

/// A stream of events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<SseEvent, RawError>> + Send>>;

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
    ) -> Result<EventStream, RawError> {
        self.stream("/v1/messages", body).await
    }

    /// `POST /v1/chat/completions` with `"stream": true`: OpenAI's chunks,
    /// then `[DONE]`. Add `"stream_options": {"include_usage": true}` for a
    /// final usage chunk with `cost_micros`.
    pub async fn create_chat_completion_stream(
        &self,
        body: serde_json::Value,
    ) -> Result<EventStream, RawError> {
        self.stream("/v1/chat/completions", body).await
    }

    /// `POST /v1/responses` with `"stream": true`: the Responses API's typed
    /// events (`response.created`, `response.output_text.delta`, …), the
    /// last one `response.completed` (or `response.incomplete`) whose
    /// `response.usage` carries `cost_micros`. Read them with
    /// [`SseEvent::response_event`](crate::SseEvent::response_event).
    pub async fn create_response_stream(
        &self,
        body: serde_json::Value,
    ) -> Result<EventStream, RawError> {
        self.stream("/v1/responses", body).await
    }

    /// `POST /v1/responses` without streaming, every field of `body` passed
    /// through: the answer in the Responses shape.
    pub async fn create_response_json(
        &self,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, RawError> {
        self.json("/v1/responses", body).await
    }

    /// `POST /v1/threads/{thread_id}/messages` with `"stream": true`: each
    /// model round of the turn as Anthropic's events (`message_start` …
    /// `message_stop`, the `id` of `message_start` being the stored
    /// message's), with `tool_execution.started` and
    /// `tool_execution.completed` events between rounds.
    pub async fn create_thread_message_stream(
        &self,
        thread_id: &str,
        body: serde_json::Value,
    ) -> Result<EventStream, RawError> {
        let path = format!("/v1/threads/{}/messages", progenitor_client::encode_path(thread_id));
        self.stream(&path, body).await
    }

    /// `POST /v1/threads/{thread_id}/messages` without streaming: the
    /// turn's final assistant message.
    pub async fn create_thread_message_json(
        &self,
        thread_id: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, RawError> {
        let path = format!("/v1/threads/{}/messages", progenitor_client::encode_path(thread_id));
        self.json(&path, body).await
    }

    /// `POST /v1/messages` without streaming, every field of `body` passed
    /// through: the answer in Anthropic's shape.
    pub async fn create_message_json(
        &self,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, RawError> {
        self.json("/v1/messages", body).await
    }

    /// `POST /v1/chat/completions` without streaming, every field of `body`
    /// passed through: the answer in OpenAI's shape.
    pub async fn create_chat_completion_json(
        &self,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, RawError> {
        self.json("/v1/chat/completions", body).await
    }

    /// Delivers a Stripe webhook as Stripe would: the raw `payload` bytes
    /// with their `Stripe-Signature` header. For forwarding webhooks that
    /// reach your own endpoint first, and for testing.
    pub async fn stripe_webhook_signed(
        &self,
        tenant_id: &str,
        payload: Vec<u8>,
        signature: &str,
    ) -> Result<serde_json::Value, RawError> {
        let request = self
            .inner
            .client()
            .post(format!(
                "{}/v1/billing/stripe/webhook/{}",
                self.base_url(),
                progenitor_client::encode_path(tenant_id)
            ))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("stripe-signature", signature)
            .body(payload);
        read_json(self.send(request).await?).await
    }

    /// Any operation as JSON: `path` (with ids already encoded by
    /// [`encode_path`](crate::encode_path)), query pairs and an optional
    /// body; the answer exactly as qlaud sent it (`null` for 204). The typed
    /// methods are usually nicer; this keeps every field of the answer,
    /// `null`s included, and is what the Python SDK calls.
    ///
    /// ```no_run
    /// # async fn demo(client: qlaud::Client) -> Result<(), qlaud::RawError> {
    /// let path = format!("/v1/keys/{}", qlaud::encode_path("key_0123"));
    /// let key = client.request_json(qlaud::Method::GET, &path, &[], None).await?;
    /// if key["max_spend_micros"].is_null() {
    ///     println!("{} has no cap", key["name"]);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn request_json(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, RawError> {
        let mut request = self.inner.client().request(method, format!("{}{path}", self.base_url()));
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let resp = self.send(request).await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(serde_json::Value::Null);
        }
        read_json(resp).await
    }

    async fn json(
        &self,
        path: &str,
        mut body: serde_json::Value,
    ) -> Result<serde_json::Value, RawError> {
        if let Some(map) = body.as_object_mut() {
            map.remove("stream");
        }
        let request = self.inner.client().post(format!("{}{path}", self.base_url())).json(&body);
        read_json(self.send(request).await?).await
    }

    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RawError> {
        let request = request.build().map_err(RawError::Http)?;
        self.retry_policy().execute(self.inner.client(), request).await.map_err(RawError::Http)
    }

    async fn stream(
        &self,
        path: &str,
        mut body: serde_json::Value,
    ) -> Result<EventStream, RawError> {
        body["stream"] = serde_json::Value::Bool(true);
        let request = self
            .inner
            .client()
            .post(format!("{}{path}", self.base_url()))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body);
        let resp = self.send(request).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(error_status(resp).await);
        }
        let mut buf = Vec::new();
        let events = resp.bytes_stream().flat_map(move |chunk| {
            let out: Vec<Result<SseEvent, RawError>> = match chunk {
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
                Err(e) => vec![Err(RawError::Http(e))],
            };
            futures::stream::iter(out)
        });
        Ok(Box::pin(events))
    }
}

/// The JSON body of a success, or the error in the endpoint's shape.
pub(crate) async fn read_json(resp: reqwest::Response) -> Result<serde_json::Value, RawError> {
    if !resp.status().is_success() {
        return Err(error_status(resp).await);
    }
    resp.json().await.map_err(RawError::Http)
}

pub(crate) async fn error_status(resp: reqwest::Response) -> RawError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    // A proxy's HTML error page is kept as a string rather than lost.
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    RawError::Status { status, body }
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
