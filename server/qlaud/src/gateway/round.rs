//! One model round for qlaud's own features (thread turns and their tool
//! loops): an internal request billed to a payer's key, admitted against
//! its cap, sent to any provider and read back as internal events, settled
//! exactly once.
//!
//! Rounds always stream from the provider, whether or not the turn's client
//! streams: one path, and a round cut short (the client left, the provider
//! broke off) is billed from what came through, by the same rule as every
//! other stream.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use http::HeaderMap;

use super::error::GatewayError;
use super::stream::UsageTracker;
use super::{Call, Shape, error_chain, send, sse, to_vec, translation_estimate};
use crate::auth::Caller;
use crate::config::Model;
use crate::context::Context;
use crate::meter::Usage;
use crate::providers::ir::{self, Event};
use crate::providers::{self, StreamDecoder};
use crate::store::new_id;

/// A round in flight: read its events with [`Round::next`], then settle it
/// with [`Round::finish`] (dropping it unfinished settles it at its
/// reservation, as every metered call).
pub struct Round {
    call: Call,
    source: Source,
    tracker: UsageTracker,
}

enum Source {
    Upstream {
        body: BoxStream<'static, reqwest::Result<Bytes>>,
        framer: sse::Framer,
        decoder: StreamDecoder,
    },
    /// The offline model's answer, already whole.
    Local(std::vec::IntoIter<Event>),
    Done,
}

/// How a round's events ended.
#[derive(Debug)]
pub enum RoundEnd {
    /// The provider finished.
    Done,
    /// The provider's stream broke off.
    Failed(String),
    /// The shutdown's drain deadline passed.
    Cut,
    /// The job running the round was cancelled: the provider call was
    /// dropped, as when a client leaves.
    Cancelled,
}

impl Round {
    /// Admits `req` against `payer`'s cap and sends it to `model`'s
    /// provider, or (when it fails before answering) its retries and
    /// fallbacks, each admitted on its own. A refusal (cap reached, key
    /// suspended or revoked) or a provider error comes back as the error,
    /// with nothing billed.
    pub async fn start(
        ctx: &Context,
        headers: &HeaderMap,
        payer: &Caller,
        model: Arc<Model>,
        mut req: ir::Request,
    ) -> Result<Round, GatewayError> {
        req.stream = true;
        let started = Instant::now();
        let mut attempts = super::retry::Attempts::new(&ctx.gateway, model);
        loop {
            let model = attempts.model().clone();
            match Round::start_at(ctx, headers, payer, model, &req, started).await {
                Ok(round) => return Ok(round),
                Err(err) => attempts.next(err).await?,
            }
        }
    }

    /// One attempt of [`Round::start`], at `model`.
    async fn start_at(
        ctx: &Context,
        headers: &HeaderMap,
        payer: &Caller,
        model: Arc<Model>,
        req: &ir::Request,
        started: Instant,
    ) -> Result<Round, GatewayError> {
        let provider = providers::chat(model.provider.kind);
        // What is sent: the provider's own body, or (offline) the request.
        let mut body = match provider {
            Some(p) => p.body(req, &model),
            None => serde_json::to_value(req).map_err(|e| GatewayError::new(500, e.to_string()))?,
        };
        // A fallback may allow less output than the model the turn asked for.
        let max_tokens = req.max_tokens.min(model.max_output_tokens);
        let estimate = translation_estimate(&model, &body, max_tokens);
        let mut call = Call::admit(
            ctx,
            payer.clone(),
            model.clone(),
            Shape::Threads,
            true,
            started,
            &estimate,
        )
        .await?;
        let Some(provider) = provider else {
            let reply = providers::echo::reply(req, call.admission().max_output_tokens);
            if reply.usage.input_tokens > model.context_window {
                call.settle(400, Usage::default()).await;
                return Err(GatewayError::bad_request(format!(
                    "prompt is too long: {} tokens > {} maximum",
                    reply.usage.input_tokens, model.context_window
                )));
            }
            call.metered.sent();
            let tracker = UsageTracker::new(call.admission().unreported);
            let events = reply.events(new_id("msg"));
            return Ok(Round { call, source: Source::Local(events.into_iter()), tracker });
        };
        provider.set_max_tokens(&mut body, call.admission().max_output_tokens);
        let client = ctx.gateway.client(&model);
        let http = provider.post(client, &model, headers, to_vec(&body)?)?;
        let upstream = send(&mut call, http).await?;
        let tracker = UsageTracker::new(call.admission().unreported);
        let source = Source::Upstream {
            body: upstream.bytes_stream().boxed(),
            framer: sse::Framer::default(),
            decoder: provider.decoder(),
        };
        Ok(Round { call, source, tracker })
    }

    /// The next events of the answer; `Err` when it has ended (the events
    /// seen so far are all there is).
    pub async fn next(&mut self) -> Result<Vec<Event>, RoundEnd> {
        loop {
            let events = match &mut self.source {
                Source::Done => return Err(RoundEnd::Done),
                Source::Local(events) => match events.next() {
                    Some(e) => vec![e],
                    None => {
                        self.source = Source::Done;
                        return Err(RoundEnd::Done);
                    }
                },
                Source::Upstream { body, framer, decoder } => match tokio::select! {
                    biased;
                    () = self.call.drain.cut_off() => {
                        self.call.drain.stream_cut();
                        self.source = Source::Done;
                        return Err(RoundEnd::Cut);
                    }
                    () = self.call.metered.cancel().cancelled() => {
                        self.source = Source::Done;
                        return Err(RoundEnd::Cancelled);
                    }
                    chunk = body.next() => chunk,
                } {
                    Some(Ok(chunk)) => {
                        framer.push(&chunk).iter().flat_map(|e| decoder(e)).collect()
                    }
                    Some(Err(e)) => {
                        self.source = Source::Done;
                        return Err(RoundEnd::Failed(error_chain(&e)));
                    }
                    None => {
                        let cut = framer.rest().is_some();
                        self.source = Source::Done;
                        return Err(if cut {
                            RoundEnd::Failed("the stream ended mid-event".into())
                        } else {
                            RoundEnd::Done
                        });
                    }
                },
            };
            for e in &events {
                self.tracker.observe(e);
            }
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }

    /// The model that answers.
    pub fn model(&self) -> &Arc<Model> {
        self.call.model()
    }

    /// The output limit the round was sent with (lower than asked when the
    /// cap clamped it).
    pub fn max_tokens(&self) -> u64 {
        self.call.admission().max_output_tokens
    }

    /// The ledger's id of the round's request.
    pub fn request_id(&self) -> &str {
        &self.call.admission().reservation_id
    }

    /// Settles the round at what it used; returns that usage and its cost.
    pub async fn finish(mut self, status: u16) -> (Usage, i64) {
        self.source = Source::Done;
        let usage = self.tracker.usage();
        let cost = self.call.settle(status, usage).await;
        (usage, cost)
    }
}
