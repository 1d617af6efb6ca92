//! The background worker that embeds queued turns, in every qlaud process.
//!
//! Each pass claims a batch of the store's queue (exactly one process gets
//! each turn; a dead process's claims pass to the living once its heartbeat
//! is stale), embeds the batch in one call to the model, and stores the
//! vectors and takes the turns off the queue in one transaction. A turn is
//! therefore indexed once, whatever crashes in between.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::clock::Clock;
use crate::embed::Embedder;
use crate::store::{NewVector, Store};

/// Turns per pass.
const BATCH: u32 = 32;

pub struct Settings {
    pub instance_id: String,
    pub instance_timeout: Duration,
    /// How long an idle worker waits before looking at the queue again.
    pub poll: Duration,
}

/// Starts the worker; it runs for the life of the process.
pub fn spawn(store: Store, embedder: Arc<Embedder>, clock: Arc<Clock>, settings: Settings) {
    tokio::spawn(async move {
        // Turns stay queued while the model loads (or if it never does).
        if !embedder.ready().await {
            return;
        }
        let timeout_ms = i64::try_from(settings.instance_timeout.as_millis()).unwrap_or(i64::MAX);
        loop {
            // An idle store is checked with a read: the claim is a write,
            // and on SQLite every write queues for the one writer.
            if !store.has_queued_turns().await.unwrap_or(true) {
                tokio::time::sleep(settings.poll).await;
                continue;
            }
            let alive_since = clock.now_ms().saturating_sub(timeout_ms);
            let turns = match store.claim_turns(&settings.instance_id, alive_since, BATCH).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "search indexer: claiming turns");
                    tokio::time::sleep(settings.poll * 4).await;
                    continue;
                }
            };
            if turns.is_empty() {
                // Everything queued is held by other live processes.
                tokio::time::sleep(settings.poll).await;
                continue;
            }
            let texts: Vec<String> = turns.iter().map(|t| turn_text(&t.content)).collect();
            let wanted: Vec<String> = texts.iter().filter(|t| !t.is_empty()).cloned().collect();
            let mut vectors = match embedder.embed(wanted).await {
                Ok(v) => v.into_iter(),
                Err(e) => {
                    tracing::warn!(error = %e, "search indexer: embedding turns");
                    let _ = store.release_turns(&settings.instance_id).await;
                    tokio::time::sleep(settings.poll * 4).await;
                    continue;
                }
            };
            let rows: Vec<NewVector<'_>> = turns
                .iter()
                .zip(texts)
                .map(|(turn, text)| {
                    let vector =
                        if text.is_empty() { None } else { vectors.next().map(|(v, _)| v) };
                    NewVector { turn, text, vector }
                })
                .collect();
            if let Err(e) = store.store_vectors(&settings.instance_id, &rows).await {
                tracing::warn!(error = %e, "search indexer: storing vectors");
                let _ = store.release_turns(&settings.instance_id).await;
                tokio::time::sleep(settings.poll * 4).await;
            }
        }
    });
}

/// What of a message is indexed: its text blocks (and the text of tool
/// results), joined by blank lines. Tool calls and images are not.
pub fn turn_text(content: &str) -> String {
    let Ok(Value::Array(blocks)) = serde_json::from_str::<Value>(content) else {
        return String::new();
    };
    let mut parts: Vec<&str> = Vec::new();
    for b in &blocks {
        match b["type"].as_str() {
            Some("text") => parts.extend(b["text"].as_str()),
            Some("tool_result") => match &b["content"] {
                Value::String(s) => parts.push(s),
                Value::Array(inner) => parts.extend(
                    inner.iter().filter(|i| i["type"] == "text").filter_map(|i| i["text"].as_str()),
                ),
                _ => {}
            },
            _ => {}
        }
    }
    parts.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect::<Vec<_>>().join("\n\n")
}
