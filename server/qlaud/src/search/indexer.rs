//! The background worker that embeds queued turns, in every qlaud process.
//!
//! Each pass claims a batch of the store's queue (exactly one process gets
//! each turn; a dead process's claims pass to the living once its heartbeat
//! is stale), admits each owner key's turns against its budget
//! ([`super::billing`]), embeds the admitted turns in one call to the model,
//! and in one transaction stores their vectors, settles their requests and
//! takes them off the queue. A turn is therefore indexed and billed once,
//! whatever crashes in between.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::billing::{self, Billed, Biller, Turn};
use crate::clock::Clock;
use crate::embed::Embedder;
use crate::meter::{Metered, RequestRecord};
use crate::store::{Deferral, IndexedGroup, NewVector, PendingTurn, Store};

/// Turns per pass.
const BATCH: u32 = 32;

pub struct Settings {
    pub instance_id: String,
    pub instance_timeout: Duration,
    /// How long an idle worker waits before looking at the queue again.
    pub poll: Duration,
}

/// Starts the worker; it runs for the life of the process.
pub fn spawn(
    store: Store,
    embedder: Arc<Embedder>,
    clock: Arc<Clock>,
    biller: Biller,
    settings: Settings,
) {
    tokio::spawn(async move {
        // Turns stay queued while the model loads (or if it never does).
        if !embedder.ready().await {
            return;
        }
        let timeout_ms = i64::try_from(settings.instance_timeout.as_millis()).unwrap_or(i64::MAX);
        loop {
            let now = clock.now_ms();
            // An idle store is checked with a read: the claim is a write,
            // and on SQLite every write queues for the one writer.
            if !store.has_queued_turns(now).await.unwrap_or(true) {
                tokio::time::sleep(settings.poll).await;
                continue;
            }
            let alive_since = now.saturating_sub(timeout_ms);
            let turns =
                match store.claim_turns(&settings.instance_id, alive_since, now, BATCH).await {
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
            if let Err(e) = pass(&store, &embedder, &biller, &settings.instance_id, &turns).await {
                tracing::warn!(error = %e, "search indexer: {e}");
                let _ = store.release_turns(&settings.instance_id).await;
                tokio::time::sleep(settings.poll * 4).await;
            }
        }
    });
}

/// One pass over claimed turns. On `Err` nothing is stored or billed (the
/// caller releases the claims) and every admission is given back.
async fn pass(
    store: &Store,
    embedder: &Embedder,
    biller: &Biller,
    instance: &str,
    turns: &[PendingTurn],
) -> anyhow::Result<()> {
    let texts: Vec<String> = turns.iter().map(|t| turn_text(&t.content)).collect();
    let wanted: Vec<String> = texts.iter().filter(|t| !t.is_empty()).cloned().collect();
    let mut counts = embedder
        .count_tokens(wanted)
        .await
        .map_err(|e| anyhow::anyhow!("counting tokens: {e}"))?
        .into_iter();
    // Turns without text are taken off the queue unbilled; the others are
    // grouped by owner key, in queue order.
    let mut textless: Vec<NewVector<'_>> = Vec::new();
    let mut by_key: Vec<((&str, &str), Vec<Turn<'_>>)> = Vec::new();
    for (turn, text) in turns.iter().zip(texts) {
        if text.is_empty() {
            textless.push(NewVector { turn, text, vector: None });
            continue;
        }
        let tokens = counts.next().unwrap_or(0) as u64;
        let owner = (turn.tenant_id.as_str(), turn.key_id.as_str());
        let t = Turn { turn, text, tokens };
        match by_key.iter_mut().find(|(k, _)| *k == owner) {
            Some((_, group)) => group.push(t),
            None => by_key.push((owner, vec![t])),
        }
    }
    let mut billed: Vec<Billed<'_>> = Vec::new();
    for ((tenant, key), group) in by_key {
        match biller.admit(tenant, key, group).await {
            Ok(b) => billed.extend(b),
            Err(e) => {
                give_back(biller, &mut billed).await;
                anyhow::bail!("admitting turn embeddings: {e}");
            }
        }
    }
    let to_embed: Vec<String> = billed
        .iter()
        .filter_map(|b| match b {
            Billed::Admitted(_, turns) => Some(turns.iter().map(|t| t.text.clone())),
            _ => None,
        })
        .flatten()
        .collect();
    let mut vectors = match embedder.embed(to_embed).await {
        Ok(v) => v.into_iter(),
        Err(e) => {
            give_back(biller, &mut billed).await;
            anyhow::bail!("embedding turns: {e}");
        }
    };
    let mut groups: Vec<IndexedGroup<'_>> = vec![IndexedGroup { turns: textless, record: None }];
    let mut deferred: Vec<Deferral<'_>> = Vec::new();
    let mut calls: Vec<&mut Metered> = Vec::new();
    for b in &mut billed {
        match b {
            Billed::Admitted(call, turns) => {
                let mut tokens = 0u64;
                let turns = turns
                    .iter()
                    .map(|t| {
                        let vector = vectors.next().map(|(v, n)| {
                            tokens += n as u64;
                            v
                        });
                        NewVector { turn: t.turn, text: t.text.clone(), vector }
                    })
                    .collect();
                groups.push(IndexedGroup { turns, record: Some(billing::record(call, tokens)) });
                calls.push(call);
            }
            Billed::Deferred { turns, until, reason } => {
                deferred.extend(turns.iter().map(|t| Deferral {
                    message_id: &t.turn.message_id,
                    not_before_ms: *until,
                    reason,
                }));
            }
            Billed::Dropped(turns) => groups.push(IndexedGroup {
                turns: turns
                    .iter()
                    .map(|t| NewVector { turn: t.turn, text: t.text.clone(), vector: None })
                    .collect(),
                record: None,
            }),
        }
    }
    match store.store_vectors(instance, &groups, &deferred).await {
        Ok(settled) => {
            report(biller, &settled);
            Ok(())
        }
        Err(e) => {
            billing::release(&biller.meter, calls.into_iter()).await;
            anyhow::bail!("storing vectors: {e}");
        }
    }
}

/// Gives back the admissions of a pass that stops before embedding.
async fn give_back(biller: &Biller, billed: &mut [Billed<'_>]) {
    let calls = billed.iter_mut().filter_map(|b| match b {
        Billed::Admitted(call, _) => Some(&mut **call),
        _ => None,
    });
    billing::release(&biller.meter, calls).await;
}

/// Tells the metrics and the spend alerts of settled requests, as the
/// recorder does for the others.
fn report(biller: &Biller, settled: &[RequestRecord]) {
    for r in settled {
        biller.meter.metrics.settled(r.endpoint.as_str(), r.status, r.cost_micros);
    }
    if !settled.is_empty() {
        biller.meter.hook.settled(settled);
    }
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
