//! Server-sent events: framing an upstream byte stream into whole events,
//! and the channel that carries events to the client's response body.

use std::convert::Infallible;

use bytes::{Buf, Bytes, BytesMut};
use dropshot::Body;
use http_body::Frame;
use tokio::sync::mpsc;

/// Splits a byte stream into complete events (each ending in a blank line).
/// Only an incomplete event is held back: every complete one is handed on
/// as soon as its last byte arrives.
#[derive(Default)]
pub struct Framer {
    buf: BytesMut,
}

impl Framer {
    /// Adds bytes and returns the events they completed, each with its
    /// terminating blank line.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = event_end(&self.buf) {
            out.push(self.buf.split_to(end).freeze());
        }
        out
    }

    /// Whatever is left when the stream ends (an event cut off mid-way).
    pub fn rest(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| {
            let rest = self.buf.clone().freeze();
            self.buf.advance(self.buf.len());
            rest
        })
    }
}

/// The index just past the first blank line (`\n\n` or `\r\n\r\n`).
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// The `event:` name and the joined `data:` of one event.
pub fn parse(event: &[u8]) -> (Option<&str>, String) {
    let text = std::str::from_utf8(event).unwrap_or_default();
    let mut name = None;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    (name, data)
}

/// One `event: name` + `data: json` event.
pub fn event(name: Option<&str>, data: &str) -> Bytes {
    let mut s = String::with_capacity(data.len() + 32);
    if let Some(name) = name {
        s.push_str("event: ");
        s.push_str(name);
        s.push('\n');
    }
    s.push_str("data: ");
    s.push_str(data);
    s.push_str("\n\n");
    Bytes::from(s)
}

/// The sending half of a streamed response body. A failed send means the
/// client went away.
pub type Sender = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

/// A response body fed from a channel, and its sender.
pub fn channel() -> (Sender, Body) {
    // A small buffer: the producer waits for a slow client instead of
    // piling up events in memory.
    let (tx, rx) = mpsc::channel(16);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    (tx, Body::wrap(http_body_util::StreamBody::new(stream)))
}

/// Sends one chunk; `false` when the client is gone.
pub async fn send(tx: &Sender, bytes: Bytes) -> bool {
    tx.send(Ok(Frame::data(bytes))).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_events_across_chunk_boundaries() {
        let mut f = Framer::default();
        assert!(f.push(b"event: a\ndata: {\"x\"").is_empty());
        let got = f.push(b":1}\n\nevent: b\r\ndata: 2\r\n\r\ndata: [DO");
        assert_eq!(got.len(), 2);
        assert_eq!(parse(&got[0]), (Some("a"), "{\"x\":1}".to_string()));
        assert_eq!(parse(&got[1]), (Some("b"), "2".to_string()));
        assert_eq!(f.push(b"NE]\n\n").len(), 1);
        assert!(f.rest().is_none());
        f.push(b"data: cut");
        assert_eq!(f.rest().as_deref(), Some(&b"data: cut"[..]));
    }
}
