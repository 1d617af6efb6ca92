//! Response state, kept by qlaud for every model (the provider is always
//! told `store: false`): where a response's history comes from
//! (`previous_response_id` or `conversation`, both threads), and what is
//! kept once it completes — its input and output items as thread messages
//! tagged with its id, and (with `store`, the default) the response object
//! for `get_response` and for chaining.
//!
//! One thread holds one chain: a response chained from the newest response
//! of its thread joins that thread; one chained from an older response
//! (a fork) starts a new thread with a copy of the history up to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use qlaud_api::{MessageRole, MessagesUsage, ResponsesRequest};
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::context::Context;
use crate::dialects::messages as anthropic_dialect;
use crate::dialects::responses::items::{self, Stored};
use crate::error::Error;
use crate::gateway::error::GatewayError;
use crate::providers::ir::Message;
use crate::store::{MessageRow, NewMessage, NewResponse, NewThread, ThreadAccess, new_id};
use crate::threads::access;

/// The history a request continues, read before the model is called.
pub struct History {
    /// The thread and the seq the history ends at; `None` starts a chain.
    thread: Option<(String, i64)>,
    /// `conversation` named the thread.
    in_conversation: bool,
    rows: Vec<MessageRow>,
}

/// The conversation id of a request's `conversation`: a string or `{id}`.
fn conversation_id(req: &ResponsesRequest) -> Option<&str> {
    match req.conversation.as_ref()? {
        Value::String(s) => Some(s),
        v => v["id"].as_str(),
    }
}

impl History {
    /// The history named by `previous_response_id` or `conversation`
    /// (none when neither is sent). A response or conversation the caller
    /// does not reach is 404, the same as one that never existed.
    pub async fn load(
        ctx: &Context,
        caller: &Caller,
        req: &ResponsesRequest,
    ) -> Result<History, GatewayError> {
        if let Some(prev) = &req.previous_response_id {
            let row = match ctx.store.get_response(access(caller), prev).await {
                Ok(row) => row,
                Err(Error::NotFound { .. }) => {
                    return Err(GatewayError::new(
                        404,
                        format!("Previous response with id '{prev}' not found."),
                    )
                    .with_code("previous_response_not_found"));
                }
                Err(e) => return Err(e.into()),
            };
            let rows = ctx
                .store
                .thread_history_until(&row.tenant_id, &row.thread_id, row.last_seq)
                .await?;
            return Ok(History {
                thread: Some((row.thread_id, row.last_seq)),
                in_conversation: false,
                rows,
            });
        }
        if let Some(id) = conversation_id(req) {
            let thread = match ctx.store.get_thread(access(caller), id).await {
                Ok(t) => t,
                Err(Error::NotFound { .. }) => {
                    return Err(GatewayError::new(
                        404,
                        format!("Conversation with id '{id}' not found."),
                    )
                    .with_code("conversation_not_found"));
                }
                Err(e) => return Err(e.into()),
            };
            let rows = ctx.store.thread_history(&thread.tenant_id, &thread.id).await?;
            return Ok(History {
                thread: Some((thread.id, thread.last_seq)),
                in_conversation: true,
                rows,
            });
        }
        Ok(History { thread: None, in_conversation: false, rows: Vec::new() })
    }

    /// The history as Responses input items (for a GPT model's own
    /// Responses API).
    pub fn input_items(&self) -> Result<Vec<Value>, GatewayError> {
        let mut out = Vec::new();
        for (role, blocks) in self.stored()? {
            out.extend(items::to_items(role, &blocks, None));
        }
        Ok(out)
    }

    /// The history as internal messages (for a translated model).
    pub fn messages(&self) -> Result<Vec<Message>, GatewayError> {
        let raw: Vec<Value> = self
            .stored()?
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect();
        anthropic_dialect::messages(&raw)
    }

    fn stored(&self) -> Result<Vec<Stored>, GatewayError> {
        self.rows
            .iter()
            .map(|row| {
                let role = crate::store::parse_role(&row.role).ok_or_else(|| {
                    GatewayError::new(500, format!("stored message {} has no role", row.id))
                })?;
                let blocks = serde_json::from_str(&row.content).map_err(|e| {
                    GatewayError::new(500, format!("stored message {} is unreadable: {e}", row.id))
                })?;
                Ok((role, blocks))
            })
            .collect()
    }
}

/// What is kept of a response once it completes; carried by its metered
/// call, and used when the answer (JSON, or a stream's final event) is
/// whole.
#[derive(Clone)]
pub struct Keep {
    ctx: Context,
    caller: Caller,
    /// `store` as the client sent it (default true).
    store: bool,
    history: Arc<History>,
    /// The request's input, as stored messages.
    input: Arc<Vec<Stored>>,
    /// Fields the returned response object echoes from the request.
    echo: Map<String, Value>,
}

impl Keep {
    pub fn new(
        ctx: &Context,
        caller: &Caller,
        req: &ResponsesRequest,
        history: History,
    ) -> Result<Keep, GatewayError> {
        let (input, store) = match items::input_to_stored(req.input.as_ref()) {
            Ok(input) => (input, req.store.unwrap_or(true)),
            // A conversation must hold what was said in it.
            Err(e) if history.in_conversation => return Err(e.into()),
            // Input the neutral form cannot hold (files, audio) still goes to
            // a model that reads it, but the response is not kept, and says
            // so (`store: false`).
            Err(_) => (Vec::new(), false),
        };
        let mut echo = Map::new();
        echo.insert("store".into(), store.into());
        if let Some(prev) = &req.previous_response_id {
            echo.insert("previous_response_id".into(), prev.clone().into());
        }
        if let Some(id) = conversation_id(req) {
            echo.insert("conversation".into(), json!({"id": id}));
        }
        Ok(Keep {
            ctx: ctx.clone(),
            caller: caller.clone(),
            store,
            input: Arc::new(input),
            history: Arc::new(history),
            echo,
        })
    }

    /// The history the request continues.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Fields to set on every response object the client sees.
    pub fn echo(&self) -> &Map<String, Value> {
        &self.echo
    }

    pub fn annotate(&self, response: &mut Value) {
        if let Some(r) = response.as_object_mut() {
            for (k, v) in &self.echo {
                r.insert(k.clone(), v.clone());
            }
        }
    }

    /// Keeps the completed `response` (already annotated) whose metered
    /// request is `request_id`. A failure is logged, not answered: the
    /// answer was produced and billed, and the client has it.
    pub async fn save(self, response: &Value, request_id: &str) {
        if let Err(e) = self.try_save(response, request_id).await {
            tracing::error!(error = %e, "keeping a response failed");
        }
    }

    async fn try_save(self, response: &Value, request_id: &str) -> Result<(), Error> {
        // Without `store`, only a named conversation keeps the items.
        if !self.store && !self.history.in_conversation {
            return Ok(());
        }
        let Some(id) = response["id"].as_str() else {
            return Err(Error::Internal("a response without an id".into()));
        };
        let thread_id = self.thread().await?;
        let mut messages: Vec<NewMessage> =
            self.input.iter().map(|(role, blocks)| message(id, *role, blocks.clone())).collect();
        let output: Vec<Stored> = response["output"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| items::to_stored(item).ok().flatten())
            .collect();
        let last_output = messages.len() + output.len();
        for (role, blocks) in output {
            messages.push(message(id, role, blocks));
        }
        // The answer's model, stop reason, usage and request go on its last
        // output message, as on a thread turn's answer.
        if last_output > self.input.len()
            && let Some(answer) = messages.last_mut()
        {
            answer.model = response["model"].as_str().map(str::to_string);
            answer.stop_reason = Some(stop_reason(response).into());
            answer.usage = Some(usage(&response["usage"]));
            answer.request_id = Some(request_id.to_string());
        }
        let tenant = &self.caller.tenant_id;
        let stored = self.ctx.store.append_messages(tenant, &thread_id, &messages, None).await?;
        if !self.store {
            return Ok(());
        }
        let last_seq = match stored.last() {
            Some(row) => row.seq,
            None => self.ctx.store.get_thread(any_key(tenant), &thread_id).await?.last_seq,
        };
        self.ctx
            .store
            .insert_response(&NewResponse {
                id: id.to_string(),
                tenant_id: tenant.clone(),
                key_id: self.caller.key_id.clone(),
                thread_id,
                last_seq,
                in_conversation: self.history.in_conversation,
                body: response.to_string(),
            })
            .await?;
        Ok(())
    }

    /// The thread the response joins: its conversation, the thread of the
    /// response it chains from while that is the thread's newest, or a new
    /// one (with a copy of the history when it forks a chain).
    async fn thread(&self) -> Result<String, Error> {
        let store = &self.ctx.store;
        let tenant = &self.caller.tenant_id;
        if let Some((thread_id, until)) = &self.history.thread {
            let thread = store.get_thread(any_key(tenant), thread_id).await?;
            if self.history.in_conversation || thread.last_seq == *until {
                return Ok(thread.id);
            }
        }
        let thread = store
            .insert_thread(&NewThread {
                tenant_id: tenant.clone(),
                key_id: self.caller.key_id.clone(),
                metadata: BTreeMap::new(),
                system: None,
                model: None,
                truncation: Default::default(),
            })
            .await?;
        if !self.history.rows.is_empty() {
            let copies = self
                .history
                .rows
                .iter()
                .map(|row| {
                    let role = crate::store::parse_role(&row.role).unwrap_or(MessageRole::User);
                    let blocks = serde_json::from_str(&row.content).unwrap_or_default();
                    let mut m =
                        message(row.response_id.as_deref().unwrap_or_default(), role, blocks);
                    m.response_id.clone_from(&row.response_id);
                    m
                })
                .collect::<Vec<_>>();
            store.append_messages(tenant, &thread.id, &copies, None).await?;
        }
        Ok(thread.id)
    }
}

/// Every thread of the tenant (the caller's reach was checked on load).
fn any_key(tenant_id: &str) -> ThreadAccess<'_> {
    ThreadAccess { tenant_id, owner: None }
}

fn message(response_id: &str, role: MessageRole, content: Vec<Value>) -> NewMessage {
    NewMessage {
        id: new_id("msg"),
        role,
        content,
        model: None,
        stop_reason: None,
        usage: None,
        request_id: None,
        metadata: BTreeMap::new(),
        response_id: Some(response_id.to_string()),
    }
}

/// A response's end as a thread message's stop reason.
fn stop_reason(response: &Value) -> &'static str {
    let calls = response["output"]
        .as_array()
        .is_some_and(|o| o.iter().any(|i| i["type"] == "function_call"));
    match response["status"].as_str() {
        Some("incomplete") => "max_tokens",
        _ if calls => "tool_use",
        _ => "end_turn",
    }
}

/// A Responses usage object (input counts cached tokens too) as a thread
/// message's usage (input counts only uncached ones).
fn usage(u: &Value) -> MessagesUsage {
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    let cached = count(&u["input_tokens_details"]["cached_tokens"]);
    let written = count(&u["input_tokens_details"]["cache_write_tokens"]);
    MessagesUsage {
        input_tokens: count(&u["input_tokens"]).saturating_sub(cached + written),
        output_tokens: count(&u["output_tokens"]),
        cache_creation_input_tokens: Some(written),
        cache_read_input_tokens: Some(cached),
        cost_micros: u["cost_micros"].as_i64(),
        extra: Map::new(),
    }
}
