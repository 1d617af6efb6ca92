//! A thread turn (`create_thread_message`): the user's new message, the
//! history qlaud holds, any model, registered tools run in a loop, and
//! every message of the turn stored in one write.
//!
//! Each model round is a [`Round`]: admitted against the cap of the key that
//! owns the thread, streamed from the provider, settled once. The turn is
//! stored only once it has run (a turn refused before its first round
//! stores nothing), in one transaction with its idempotency claim.

use std::collections::BTreeMap;
use std::sync::Arc;

use dropshot::Body;
use http::{HeaderMap, Response, StatusCode};
use qlaud_api::ModelBody;
use qlaud_api::{
    CreateThreadMessageRequest, KeyScope, MAX_TOOL_ROUNDS, MessageRole, MessagesUsage, Truncation,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::tools::{self, Offered, ToolRun};
use super::{access, message_to_wire};
use crate::auth::Caller;
use crate::config::{Model, ModelKind};
use crate::context::Context;
use crate::dialects::messages::{self as anthropic_dialect, Encoder};
use crate::gateway::error::GatewayError;
use crate::gateway::round::{Round, RoundEnd};
use crate::gateway::sse;
use crate::gateway::stream::{cut_error, send_cut_event};
use crate::providers::ir::{self, Block, Collector, Completion, Message, Part, Role, StopReason};
use crate::store::{MessageRow, NewMessage, ThreadRow, TurnClaim, new_id};
use crate::tokens::Tokenizer;

/// Tool rounds a turn runs when it names no limit.
const DEFAULT_TOOL_ROUNDS: u32 = 8;

/// Why a turn ended without the model's own final answer.
const CAP_REACHED: &str = "spend_cap_reached";
const ROUNDS_REACHED: &str = "max_tool_rounds";

/// A checked turn, ready to run.
struct Turn {
    thread: ThreadRow,
    /// The key that owns the thread: every round is billed to it.
    payer: Caller,
    model: Arc<Model>,
    /// The model that answered the last round: `model`, or a fallback of
    /// it when that failed before answering.
    answered_by: Arc<Model>,
    system: Vec<String>,
    /// The history and the new user message, in internal form.
    conversation: Vec<Message>,
    offered: Vec<Offered>,
    max_tokens: u64,
    max_rounds: u32,
    /// What is stored when the turn ends: the user's message first.
    stored: Vec<NewMessage>,
    /// The claimed `Idempotency-Key`, if any.
    idempotency_key: Option<String>,
    cost: i64,
}

/// `POST /v1/threads/{thread_id}/messages`.
pub async fn create(
    ctx: &Context,
    headers: &HeaderMap,
    thread_id: &str,
    body: ModelBody<CreateThreadMessageRequest>,
) -> Result<Response<Body>, GatewayError> {
    let caller = ctx.authenticate(headers).await?;
    let req = body.read().await?;
    create_as(ctx, caller, headers, thread_id, req).await
}

/// A turn for a caller already known (jobs).
pub async fn create_as(
    ctx: &Context,
    caller: Caller,
    headers: &HeaderMap,
    thread_id: &str,
    req: CreateThreadMessageRequest,
) -> Result<Response<Body>, GatewayError> {
    let thread = ctx.store.get_thread(access(&caller), thread_id).await?;
    let streamed = req.stream.unwrap_or(false);
    let idempotency_key = idempotency_key(headers)?;
    if let Some(key) = &idempotency_key {
        let fingerprint = fingerprint(&req);
        match ctx.store.claim_turn(&thread.tenant_id, &thread.id, key, &fingerprint).await? {
            TurnClaim::Claimed => {}
            TurnClaim::Done(message_id) => {
                let row = ctx.store.get_message(&thread.tenant_id, &thread.id, &message_id).await?;
                return replay(row, streamed);
            }
            TurnClaim::InProgress => {
                return Err(GatewayError::new(
                    409,
                    "a request with this Idempotency-Key is still running; retry once it has \
                     answered",
                )
                .with_code("idempotency_in_progress"));
            }
            TurnClaim::Mismatch => {
                return Err(GatewayError::bad_request(
                    "this Idempotency-Key was used for a different request; use a new key for \
                     a new turn",
                )
                .with_code("idempotency_mismatch"));
            }
        }
    }
    let release = |e: GatewayError| async {
        if let Some(key) = &idempotency_key {
            let _ = ctx.store.release_turn(&thread.id, key).await;
        }
        e
    };
    let turn = match prepare(ctx, &caller, thread.clone(), req, idempotency_key.clone()).await {
        Ok(turn) => turn,
        Err(e) => return Err(release(e).await),
    };
    // The first round starts before the answer does, so a refusal (the
    // cap, a provider error) is the request's error, and nothing is stored.
    let first = match turn.start_round(ctx, headers).await {
        Ok(round) => round,
        Err(e) => return Err(release(e).await),
    };
    if !streamed {
        let (row, cost) = turn.run(ctx, headers, first, None).await?;
        let body = serde_json::to_vec(&message_to_wire(row)?).expect("a message serializes");
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("qlaud-cost-micros", cost)
            .body(Body::with_content(body))
            .expect("a valid response"));
    }
    let (tx, body) = sse::channel();
    let (ctx, headers) = (ctx.clone(), headers.clone());
    ctx.drain.clone().spawn(async move {
        if let Err(e) = turn.run(&ctx, &headers, first, Some(&tx)).await {
            let err = serde_json::to_string(&e.into_anthropic()).unwrap_or_default();
            sse::send(&tx, sse::event(Some("error"), &err)).await;
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(body)
        .expect("a valid response"))
}

/// The `Idempotency-Key` header, if sent (1 to 255 visible characters).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, GatewayError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        _ => Err(GatewayError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// What identifies a turn's request for its idempotency key.
fn fingerprint(req: &CreateThreadMessageRequest) -> String {
    let body = serde_json::to_vec(req).expect("a request serializes");
    hex::encode(Sha256::digest(&body))
}

/// A stored answer, as the first request got it (a stream of it when the
/// retry streams).
fn replay(row: MessageRow, streamed: bool) -> Result<Response<Body>, GatewayError> {
    let message = message_to_wire(row)?;
    let cost = message.usage.as_ref().and_then(|u| u.cost_micros).unwrap_or(0);
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header("qlaud-idempotent-replayed", "true")
        .header("qlaud-cost-micros", cost);
    if !streamed {
        let body = serde_json::to_vec(&message).expect("a message serializes");
        return Ok(builder
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::with_content(body))
            .expect("a valid response"));
    }
    let value = serde_json::to_value(&message).expect("a message serializes");
    let mut out = Vec::new();
    let start = json!({"type": "message_start", "message": value});
    out.extend_from_slice(&sse::event(Some("message_start"), &start.to_string()));
    out.extend_from_slice(&sse::event(Some("message_stop"), r#"{"type":"message_stop"}"#));
    Ok(builder
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .body(Body::with_content(out))
        .expect("a valid response"))
}

/// Checks the request against the thread and loads what the turn needs.
async fn prepare(
    ctx: &Context,
    caller: &Caller,
    thread: ThreadRow,
    req: CreateThreadMessageRequest,
    idempotency_key: Option<String>,
) -> Result<Turn, GatewayError> {
    let blocks = user_blocks(req.content)?;
    let metadata = req.metadata.unwrap_or_default();
    crate::keys::validate_metadata(&metadata)?;
    let max_rounds = req.max_tool_rounds.unwrap_or(DEFAULT_TOOL_ROUNDS);
    if !(1..=MAX_TOOL_ROUNDS).contains(&max_rounds) {
        return Err(GatewayError::bad_request(format!(
            "max_tool_rounds must be from 1 to {MAX_TOOL_ROUNDS}"
        )));
    }
    let Some(name) = req.model.as_deref().or(thread.model.as_deref()) else {
        return Err(GatewayError::bad_request(
            "the turn names no model and the thread has no default: send `model`",
        ));
    };
    let model = ctx.gateway.model(name, ModelKind::Chat)?;
    let max_tokens =
        req.max_tokens.unwrap_or(model.max_output_tokens).min(model.max_output_tokens).max(1);
    let offered = tools::offered(ctx, &thread.tenant_id, req.tools.as_ref()).await?;
    let payer = payer(ctx, caller, &thread).await?;
    let user_message = anthropic_dialect::messages(&[json!({"role": "user", "content": blocks})])?;
    let mut conversation = history(ctx, &thread).await?;
    conversation.extend(user_message);
    let system: Vec<String> = thread.system_prompt.iter().cloned().collect();
    let truncation = match req.truncation {
        Some(t) => t,
        None => crate::store::parse_truncation(&thread.truncation).unwrap_or_default(),
    };
    fit(&model, &system, &offered, &mut conversation, max_tokens, truncation).await?;
    let user = NewMessage {
        id: new_id("msg"),
        role: MessageRole::User,
        content: blocks,
        model: None,
        stop_reason: None,
        usage: None,
        request_id: None,
        metadata,
        response_id: None,
    };
    Ok(Turn {
        thread,
        payer,
        answered_by: model.clone(),
        model,
        system,
        conversation,
        offered,
        max_tokens,
        max_rounds,
        stored: vec![user],
        idempotency_key,
        cost: 0,
    })
}

/// The new user message as Anthropic content blocks: a string is one text
/// block; blocks may be text, images and results of client-side tools.
fn user_blocks(content: Value) -> Result<Vec<Value>, GatewayError> {
    let blocks = match content {
        Value::String(s) if !s.is_empty() => vec![json!({"type": "text", "text": s})],
        Value::Array(blocks) if !blocks.is_empty() => blocks,
        Value::String(_) | Value::Array(_) => {
            return Err(GatewayError::bad_request("content is empty"));
        }
        _ => {
            return Err(GatewayError::bad_request(
                "content must be a string or an array of content blocks",
            ));
        }
    };
    for b in &blocks {
        let kind = b["type"].as_str().unwrap_or_default();
        if !matches!(kind, "text" | "image" | "tool_result") {
            return Err(GatewayError::bad_request(format!(
                "content block type {kind:?} cannot be sent in a user turn; send text, image \
                 or tool_result blocks"
            )));
        }
    }
    Ok(blocks)
}

/// The key that pays for the thread's turns: its owner, also when an admin
/// key posts on the owner's behalf.
async fn payer(ctx: &Context, caller: &Caller, thread: &ThreadRow) -> Result<Caller, GatewayError> {
    if thread.key_id == caller.key_id {
        return Ok(caller.clone());
    }
    let key = ctx.store.get_key(&thread.tenant_id, &thread.key_id).await?;
    if key.revoked_ms.is_some() || key.disabled != 0 {
        return Err(GatewayError::new(
            409,
            format!("the key that owns this thread ({}) is revoked or disabled", key.id),
        ));
    }
    Ok(Caller {
        tenant_id: key.tenant_id,
        key_id: key.id,
        scope: crate::store::parse_scope(&key.scope).unwrap_or(KeyScope::Standard),
        period: crate::store::parse_period(&key.period).unwrap_or_default(),
    })
}

/// The thread's stored messages as internal messages, oldest first, with
/// every tool call answered: a call whose result never came (the turn hit
/// its round limit, the caller did not answer a client-side tool) gets an
/// error result, as providers refuse a call without one.
async fn history(ctx: &Context, thread: &ThreadRow) -> Result<Vec<Message>, GatewayError> {
    let rows = ctx.store.thread_history(&thread.tenant_id, &thread.id).await?;
    let mut raw = Vec::with_capacity(rows.len());
    for row in rows {
        let content: Value = serde_json::from_str(&row.content).map_err(|e| {
            GatewayError::new(500, format!("stored message {} is unreadable: {e}", row.id))
        })?;
        raw.push(json!({"role": row.role, "content": content}));
    }
    let mut messages = anthropic_dialect::messages(&raw)?;
    answer_open_calls(&mut messages);
    Ok(messages)
}

/// Adds an error result for every tool call the next message does not
/// answer.
fn answer_open_calls(messages: &mut Vec<Message>) {
    let mut i = 0;
    while i < messages.len() {
        if messages[i].role == Role::Assistant {
            let calls: Vec<String> = messages[i]
                .content
                .iter()
                .filter_map(|p| match p {
                    Part::ToolUse { id, .. } => Some(id.clone()),
                    _ => None,
                })
                .collect();
            if !calls.is_empty() {
                if messages.get(i + 1).is_none_or(|m| m.role != Role::User) {
                    messages.insert(i + 1, Message { role: Role::User, content: Vec::new() });
                }
                let next = &mut messages[i + 1];
                for id in calls {
                    let answered = next
                        .content
                        .iter()
                        .any(|p| matches!(p, Part::ToolResult { id: r, .. } if *r == id));
                    if !answered {
                        next.content.insert(
                            0,
                            Part::ToolResult {
                                id,
                                content: "no result: this call was not run".into(),
                                is_error: true,
                            },
                        );
                    }
                }
            }
        }
        i += 1;
    }
}

/// Makes the conversation fit the model's context window with room for
/// `max_tokens` of answer: refused (`disabled`) or cut from the oldest turn
/// (`auto`), never cutting the system prompt, the new message, or a tool
/// call apart from its result. Counted with a local tokenizer (an estimate
/// for models of other families), and only when the conversation's bytes
/// could exceed the room at all.
async fn fit(
    model: &Model,
    system: &[String],
    offered: &[Offered],
    conversation: &mut Vec<Message>,
    max_tokens: u64,
    truncation: Truncation,
) -> Result<(), GatewayError> {
    let room = model.context_window.saturating_sub(max_tokens);
    let fixed_text: String = system
        .iter()
        .cloned()
        .chain(offered.iter().map(|t| t.definition().schema.to_string()))
        .collect::<Vec<_>>()
        .join("\n");
    let texts: Vec<String> = conversation.iter().map(message_text).collect();
    // No tokenizer makes more tokens than bytes.
    let bytes = fixed_text.len() as u64 + texts.iter().map(|t| t.len() as u64 + 4).sum::<u64>();
    if bytes <= room {
        return Ok(());
    }
    let tokenizer = Tokenizer::for_model(model);
    let (fixed, counts) = tokio::task::spawn_blocking(move || {
        let fixed = tokenizer.text(&fixed_text);
        let counts: Vec<u64> = texts.iter().map(|t| tokenizer.text(t) + 4).collect();
        (fixed, counts)
    })
    .await
    .map_err(|e| GatewayError::new(500, format!("counting tokens failed: {e}")))?;
    let total = fixed + counts.iter().sum::<u64>();
    if total <= room {
        return Ok(());
    }
    let too_long = |n: u64| {
        GatewayError::bad_request(format!(
            "the thread's history and the new message come to about {n} tokens, more than the \
             {room} that model {:?} has room for ({} in its context window, less {max_tokens} \
             for the answer); send `truncation: \"auto\"` to drop the oldest turns, or start a \
             new thread",
            model.name, model.context_window
        ))
        .with_code("context_length_exceeded")
    };
    if truncation == Truncation::Disabled {
        return Err(too_long(total));
    }
    match cut_point(conversation, &counts, total, room) {
        Some(cut) => {
            conversation.drain(..cut);
            Ok(())
        }
        None => Err(too_long(total)),
    }
}

/// How many of the oldest messages to drop so the rest fits `room`:
/// whole turns only (a turn starts at a user message that is not tool
/// results, so a call and its result go together), never the last message.
/// `None` when even the last turn alone does not fit.
fn cut_point(conversation: &[Message], counts: &[u64], total: u64, room: u64) -> Option<usize> {
    let last = conversation.len().checked_sub(1)?;
    let (mut cut, mut left) = (0, total);
    while left > room && cut < last {
        left -= counts[cut];
        cut += 1;
        while cut < last && !starts_turn(&conversation[cut]) {
            left -= counts[cut];
            cut += 1;
        }
    }
    (left <= room).then_some(cut)
}

/// Whether a message begins a turn: a user message that answers no call.
fn starts_turn(m: &Message) -> bool {
    m.role == Role::User && !m.content.iter().any(|p| matches!(p, Part::ToolResult { .. }))
}

/// What a message counts for: its text, tool inputs and results.
fn message_text(m: &Message) -> String {
    let mut s = String::new();
    for p in &m.content {
        match p {
            Part::Text(t) => s.push_str(t),
            Part::ToolUse { name, input, .. } => {
                s.push_str(name);
                s.push_str(&input.to_string());
            }
            Part::ToolResult { content, .. } => s.push_str(content),
            // Providers bill images by size; a generous flat count.
            Part::Image(_) => s.push_str(&"image ".repeat(1600)),
        }
    }
    s
}

/// An answer as Anthropic content blocks, as threads store them.
fn blocks_of(c: &Completion) -> Vec<Value> {
    c.blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) => json!({"type": "text", "text": t}),
            Block::ToolUse { id, name, input } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
        })
        .collect()
}

fn parts_of(c: &Completion) -> Vec<Part> {
    c.blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) => Part::Text(t.clone()),
            Block::ToolUse { id, name, input } => {
                Part::ToolUse { id: id.clone(), name: name.clone(), input: input.clone() }
            }
        })
        .collect()
}

impl Turn {
    fn request(&self) -> ir::Request {
        ir::Request {
            system: self.system.clone(),
            messages: self.conversation.clone(),
            tools: self.offered.iter().map(|t| t.definition().clone()).collect(),
            max_tokens: self.max_tokens,
            stream: true,
            ..ir::Request::default()
        }
    }

    async fn start_round(&self, ctx: &Context, headers: &HeaderMap) -> Result<Round, GatewayError> {
        Round::start(ctx, headers, &self.payer, self.model.clone(), self.request()).await
    }

    /// Runs the turn from its admitted first round: each round's answer is
    /// read (and streamed to `tx`), registered tools it calls are run and
    /// answered, until the model answers without them, a limit or the cap
    /// ends the turn, or the client leaves. Then the turn is stored; returns
    /// its answer and the whole turn's cost.
    async fn run(
        mut self,
        ctx: &Context,
        headers: &HeaderMap,
        first: Round,
        tx: Option<&sse::Sender>,
    ) -> Result<(MessageRow, i64), GatewayError> {
        let mut round = first;
        let mut rounds = 1;
        let mut client_gone = false;
        let answer_id = loop {
            let id = new_id("msg");
            let (completion, request_id, cost, cut) = self.read(round, &id, tx).await;
            client_gone |= cut;
            let parts = parts_of(&completion);
            let mut stored = self.assistant(&id, &completion, Some((request_id, cost)));
            let calls = tools::registered_calls(&self.offered, &completion);
            let wants_client = tools::calls_client_tools(&self.offered, &completion);
            let answered = completion.stop != Some(StopReason::ToolUse) || calls.is_empty();
            if client_gone || answered {
                self.push_assistant(stored, parts);
                break id;
            }
            if rounds >= self.max_rounds {
                stored.stop_reason = Some(ROUNDS_REACHED.into());
                self.push_assistant(stored, parts);
                break id;
            }
            self.push_assistant(stored, parts);
            let (tenant, thread) = (&self.thread.tenant_id, &self.thread.id);
            let results = tools::run_all(ctx, tenant, thread, calls, tx).await;
            self.push_results(results);
            if wants_client || crate::meter::call::job_cancelled() {
                // The caller answers its own tools in the next turn; a
                // cancelled job's turn sends no further round.
                break id;
            }
            rounds += 1;
            round = match self.start_round(ctx, headers).await {
                Ok(r) => r,
                Err(e) if e.status == 402 => {
                    // The cap ends the loop: the turn keeps what it did.
                    let id = new_id("msg");
                    let mut stop = self.assistant(&id, &Completion::default(), None);
                    stop.stop_reason = Some(CAP_REACHED.into());
                    if let Some(tx) = tx {
                        send_stop_message(tx, &id, &self.model.name, CAP_REACHED).await;
                    }
                    self.stored.push(stop);
                    break id;
                }
                Err(e) => {
                    // Stored as far as it ran, so what was billed is in the
                    // thread; the error goes to the caller.
                    self.store(ctx).await?;
                    return Err(e);
                }
            };
        };
        let cost = self.cost;
        let rows = self.store(ctx).await?;
        let row = rows
            .into_iter()
            .find(|r| r.id == answer_id)
            .ok_or_else(|| GatewayError::new(500, "the turn's answer was not stored"))?;
        Ok((row, cost))
    }

    /// Reads one round to its end, streaming it in Anthropic's event form
    /// when there is a client stream; settles it. Returns the answer, the
    /// ledger's request id, and whether the client left.
    async fn read(
        &mut self,
        mut round: Round,
        id: &str,
        tx: Option<&sse::Sender>,
    ) -> (Completion, String, i64, bool) {
        let mut collector = Collector::default();
        self.answered_by = round.model().clone();
        let answered_by = &self.answered_by;
        let mut encoder =
            tx.map(|_| Encoder::new(&answered_by.name, answered_by.prices.unwrap_or_default()));
        let mut gone = false;
        let end = loop {
            let events = match round.next().await {
                Ok(events) => events,
                Err(end) => break end,
            };
            for mut event in events {
                collector.push(&event);
                if let (Some(tx), Some(encoder)) = (tx, encoder.as_mut()) {
                    // The client sees the id the message is stored under.
                    if let ir::Event::Start { id: start } = &mut event {
                        *start = id.to_string();
                    }
                    for bytes in encoder.encode(event) {
                        if !sse::send(tx, bytes).await {
                            gone = true;
                        }
                    }
                }
            }
            if gone {
                break RoundEnd::Done;
            }
        };
        let status = match (&end, gone) {
            (_, true) | (RoundEnd::Cancelled, _) => 499,
            (RoundEnd::Done, false) => 200,
            (RoundEnd::Failed(_), false) => 502,
            (RoundEnd::Cut, false) => 503,
        };
        // A cancelled job's turn ends here and keeps what it did, like a
        // client that left.
        gone |= matches!(end, RoundEnd::Cancelled);
        if let (RoundEnd::Failed(why), Some(tx)) = (&end, tx) {
            let err = GatewayError::new(502, format!("provider stream failed: {why}"));
            let body = serde_json::to_string(&err.into_anthropic()).unwrap_or_default();
            sse::send(tx, sse::event(Some("error"), &body)).await;
        }
        if let RoundEnd::Cut = end {
            // The turn ends here and keeps what it did, like a client that left.
            gone = true;
            if let Some(tx) = tx {
                let err = serde_json::to_string(&cut_error().into_anthropic()).unwrap_or_default();
                send_cut_event(tx, sse::event(Some("error"), &err)).await;
            }
        }
        let request_id = round.request_id().to_string();
        let (usage, cost) = round.finish(status).await;
        self.cost += cost;
        let mut completion = collector.finish(usage);
        completion.id = id.to_string();
        (completion, request_id, cost, gone)
    }

    /// An answer as the assistant message stored for it; `billed`: its
    /// round's ledger request id and cost.
    fn assistant(&self, id: &str, c: &Completion, billed: Option<(String, i64)>) -> NewMessage {
        let u = &c.usage;
        let (request_id, cost) = billed.unzip();
        NewMessage {
            id: id.to_string(),
            role: MessageRole::Assistant,
            content: blocks_of(c),
            model: Some(self.answered_by.name.clone()),
            stop_reason: c.stop.as_ref().map(|r| anthropic_dialect::stop_str(r).to_string()),
            usage: Some(MessagesUsage {
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                cache_creation_input_tokens: Some(u.cache_write_tokens),
                cache_read_input_tokens: Some(u.cache_read_tokens),
                cost_micros: Some(cost.unwrap_or(0)),
                extra: Default::default(),
            }),
            request_id,
            metadata: BTreeMap::new(),
            response_id: None,
        }
    }

    fn push_assistant(&mut self, stored: NewMessage, parts: Vec<Part>) {
        self.stored.push(stored);
        Message::push(&mut self.conversation, Role::Assistant, parts);
    }

    /// The results of the round's tool calls: one user message, stored and
    /// sent with the next round.
    fn push_results(&mut self, results: Vec<ToolRun>) {
        let blocks = results
            .iter()
            .map(|r| {
                let mut b =
                    json!({"type": "tool_result", "tool_use_id": r.call_id, "content": r.content});
                if r.is_error {
                    b["is_error"] = true.into();
                }
                b
            })
            .collect();
        let parts = results
            .into_iter()
            .map(|r| Part::ToolResult { id: r.call_id, content: r.content, is_error: r.is_error })
            .collect();
        self.stored.push(NewMessage {
            id: new_id("msg"),
            role: MessageRole::User,
            content: blocks,
            model: None,
            stop_reason: None,
            usage: None,
            request_id: None,
            metadata: BTreeMap::new(),
            response_id: None,
        });
        Message::push(&mut self.conversation, Role::User, parts);
    }

    /// Stores every message of the turn in one write, completing its
    /// idempotency claim in the same transaction.
    async fn store(&mut self, ctx: &Context) -> Result<Vec<MessageRow>, GatewayError> {
        let messages = std::mem::take(&mut self.stored);
        let key = self.idempotency_key.as_deref();
        Ok(ctx
            .store
            .append_messages(&self.thread.tenant_id, &self.thread.id, &messages, key)
            .await?)
    }
}

/// A message with no content that only says why the turn ended, in
/// Anthropic's event form.
async fn send_stop_message(tx: &sse::Sender, id: &str, model: &str, stop_reason: &str) {
    let start = json!({"type": "message_start", "message": {"id": id, "type": "message",
        "role": "assistant", "content": [], "model": model, "stop_reason": null,
        "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}});
    let delta = json!({"type": "message_delta", "delta": {"stop_reason": stop_reason,
        "stop_sequence": null}, "usage": {"output_tokens": 0, "cost_micros": 0}});
    for event in [
        sse::event(Some("message_start"), &start.to_string()),
        sse::event(Some("message_delta"), &delta.to_string()),
        sse::event(Some("message_stop"), r#"{"type":"message_stop"}"#),
    ] {
        if !sse::send(tx, event).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(role: Role, t: &str) -> Message {
        Message { role, content: vec![Part::Text(t.into())] }
    }

    fn call(id: &str) -> Message {
        let input = json!({});
        Message {
            role: Role::Assistant,
            content: vec![Part::ToolUse { id: id.into(), name: "t".into(), input }],
        }
    }

    fn result(id: &str) -> Message {
        Message {
            role: Role::User,
            content: vec![Part::ToolResult { id: id.into(), content: "r".into(), is_error: false }],
        }
    }

    #[test]
    fn truncation_keeps_tool_calls_with_their_results() {
        // user, call, result, answer | user, answer | new user
        let convo = vec![
            text(Role::User, "a"),
            call("c1"),
            result("c1"),
            text(Role::Assistant, "b"),
            text(Role::User, "c"),
            text(Role::Assistant, "d"),
            text(Role::User, "e"),
        ];
        let counts = [10, 10, 10, 10, 10, 10, 10];
        // Dropping only "a" would orphan the call: the whole first turn goes.
        assert_eq!(cut_point(&convo, &counts, 70, 60), Some(4));
        assert_eq!(cut_point(&convo, &counts, 70, 30), Some(4));
        assert_eq!(cut_point(&convo, &counts, 70, 20), Some(6));
        assert_eq!(cut_point(&convo, &counts, 70, 5), None);
        assert_eq!(cut_point(&convo, &counts, 70, 70), Some(0));
    }

    #[test]
    fn calls_without_results_get_error_results() {
        let mut convo = vec![text(Role::User, "a"), call("c1"), text(Role::User, "next")];
        answer_open_calls(&mut convo);
        assert!(
            matches!(&convo[2].content[0], Part::ToolResult { id, is_error: true, .. } if id == "c1")
        );
        let mut ends_on_call = vec![text(Role::User, "a"), call("c2")];
        answer_open_calls(&mut ends_on_call);
        assert_eq!(ends_on_call.len(), 3);
        let mut answered = vec![call("c3"), result("c3")];
        answer_open_calls(&mut answered);
        assert_eq!(answered[1].content.len(), 1);
    }
}
