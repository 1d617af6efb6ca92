//! The tools a thread turn offers the model, and running the registered
//! ones: each call is a signed POST to the tool's webhook, the calls of one
//! round at once, each ending in a result the model reads (an error result
//! when the webhook fails, times out or answers garbage; never a failed
//! turn). Tool calls are never retried: a tool may have side effects.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};

use crate::context::Context;
use crate::gateway::error::GatewayError;
use crate::gateway::sse;
use crate::outbound::{Limits, WebhookSecret};
use crate::providers::ir::{self, Block, Completion};

/// A tool the tenant registered: qlaud runs it.
#[derive(Clone, Debug)]
pub struct RegisteredTool {
    pub definition: ir::Tool,
    pub webhook_url: String,
    pub timeout: Duration,
}

/// A tool offered to the model in a turn.
#[derive(Clone, Debug)]
pub enum Offered {
    Registered(RegisteredTool),
    /// Defined by the caller, who answers its calls in the next turn.
    Client(ir::Tool),
}

impl Offered {
    pub fn definition(&self) -> &ir::Tool {
        match self {
            Offered::Registered(t) => &t.definition,
            Offered::Client(t) => t,
        }
    }
}

/// One tool call's outcome, as the model will read it.
#[derive(Clone, Debug)]
pub struct ToolRun {
    pub call_id: String,
    pub content: String,
    pub is_error: bool,
}

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(message)
}

/// The tools of a turn's `tools` field: registered tools by name (or
/// `"all"`), and client-side definitions in Anthropic's or OpenAI's shape.
pub async fn offered(
    ctx: &Context,
    tenant_id: &str,
    tools: Option<&Value>,
) -> Result<Vec<Offered>, GatewayError> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    match tools {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::String(s)) if s == "all" => {
            out.extend(
                registered(ctx, tenant_id, None).await?.into_iter().map(Offered::Registered),
            );
            return Ok(out);
        }
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(name) => names.push(name.clone()),
                    Value::Object(_) => out.push(Offered::Client(client_tool(item)?)),
                    _ => return Err(bad("tools entries are tool names or tool definitions")),
                }
            }
        }
        Some(_) => {
            return Err(bad(
                "tools must be \"all\" or an array of registered tool names and tool definitions",
            ));
        }
    }
    if !names.is_empty() {
        let found = registered(ctx, tenant_id, Some(&names)).await?;
        out.extend(found.into_iter().map(Offered::Registered));
    }
    let mut seen = std::collections::HashSet::new();
    for t in &out {
        if !seen.insert(t.definition().name.clone()) {
            return Err(bad(format!("tool {:?} is offered twice", t.definition().name)));
        }
    }
    Ok(out)
}

/// A client-side tool definition: Anthropic's `{name, description,
/// input_schema}` or OpenAI's `{type: "function", function: {name,
/// description, parameters}}`.
fn client_tool(v: &Value) -> Result<ir::Tool, GatewayError> {
    let (name, description, schema) = if v["type"] == "function" {
        let f = &v["function"];
        (&f["name"], &f["description"], &f["parameters"])
    } else {
        (&v["name"], &v["description"], &v["input_schema"])
    };
    let Some(name) = name.as_str().filter(|n| valid_name(n)) else {
        return Err(bad(
            "a tool definition needs a name of 1 to 64 letters, digits, underscores or hyphens",
        ));
    };
    Ok(ir::Tool {
        name: name.to_string(),
        description: description.as_str().map(str::to_string),
        schema: if schema.is_object() { schema.clone() } else { json!({"type": "object"}) },
        strict: None,
    })
}

/// The tool-name rule both Anthropic and OpenAI enforce.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The tenant's registered tools: those named (each must exist), or all.
async fn registered(
    ctx: &Context,
    tenant_id: &str,
    names: Option<&[String]>,
) -> Result<Vec<RegisteredTool>, GatewayError> {
    let rows = match names {
        None => ctx.store.all_tools(tenant_id).await?,
        Some(names) => {
            let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
            let rows = ctx.store.tools_by_name(tenant_id, &wanted).await?;
            // Another tenant's tool is as unknown as one never registered.
            if let Some(missing) = wanted.iter().find(|n| !rows.iter().any(|r| r.name == **n)) {
                return Err(bad(format!(
                    "no registered tool is named {missing:?}: GET /v1/tools lists them"
                )));
            }
            rows
        }
    };
    rows.into_iter()
        .map(|row| {
            let schema = serde_json::from_str(&row.input_schema).map_err(|e| {
                GatewayError::new(500, format!("stored tool {} is unreadable: {e}", row.id))
            })?;
            Ok(RegisteredTool {
                definition: ir::Tool {
                    name: row.name,
                    description: Some(row.description),
                    schema,
                    strict: None,
                },
                webhook_url: row.webhook_url,
                timeout: Duration::from_secs(u64::try_from(row.timeout_secs).unwrap_or(30)),
            })
        })
        .collect()
}

/// The calls of an answer that qlaud runs: those of registered tools.
pub fn registered_calls(
    offered: &[Offered],
    c: &Completion,
) -> Vec<(String, RegisteredTool, Value)> {
    c.blocks
        .iter()
        .filter_map(|b| match b {
            Block::ToolUse { id, name, input } => offered.iter().find_map(|t| match t {
                Offered::Registered(r) if r.definition.name == *name => {
                    Some((id.clone(), r.clone(), input.clone()))
                }
                _ => None,
            }),
            Block::Text(_) => None,
        })
        .collect()
}

/// Whether an answer calls a tool qlaud does not run (the caller's own, or
/// one not offered at all): the turn then returns to the caller.
pub fn calls_client_tools(offered: &[Offered], c: &Completion) -> bool {
    c.blocks.iter().any(|b| match b {
        Block::ToolUse { name, .. } => !offered
            .iter()
            .any(|t| matches!(t, Offered::Registered(r) if r.definition.name == *name)),
        Block::Text(_) => false,
    })
}

/// Runs a round's registered calls at once; each ends in a result. With a
/// client stream, `tool_execution.started` / `.completed` events frame
/// each call.
pub async fn run_all(
    ctx: &Context,
    tenant_id: &str,
    thread_id: &str,
    calls: Vec<(String, RegisteredTool, Value)>,
    tx: Option<&sse::Sender>,
) -> Vec<ToolRun> {
    let runs = calls.into_iter().map(|(call_id, tool, input)| async move {
        if let Some(tx) = tx {
            let v = json!({"type": "tool_execution.started", "tool_use_id": call_id,
                           "name": tool.definition.name});
            sse::send(tx, sse::event(Some("tool_execution.started"), &v.to_string())).await;
        }
        let started = Instant::now();
        let origin = Call { id: &call_id, tenant_id, thread_id };
        let run = call(ctx, &origin, &tool, &input).await;
        if let Some(tx) = tx {
            let mut v = json!({"type": "tool_execution.completed", "tool_use_id": call_id,
                               "name": tool.definition.name,
                               "duration_ms": started.elapsed().as_millis() as u64,
                               "is_error": run.is_error});
            if run.is_error {
                v["error"] = run.content.clone().into();
            }
            sse::send(tx, sse::event(Some("tool_execution.completed"), &v.to_string())).await;
        }
        run
    });
    join_all(runs).await
}

/// The most answer bytes a tool's webhook may send back.
const MAX_TOOL_ANSWER_BYTES: usize = 1024 * 1024;

/// One call of a registered tool: a signed POST of
/// `{type: "tool.call", id, tool, input, thread_id}` to its webhook, whose
/// JSON answer becomes the result: `{"content": …, "is_error"?: bool}`, or
/// any other JSON value as its JSON text. Anything else is an error result
/// the model reads, never a failed turn; nothing is retried.
async fn call(ctx: &Context, call: &Call<'_>, tool: &RegisteredTool, input: &Value) -> ToolRun {
    let error = |message: String| ToolRun {
        call_id: call.id.to_string(),
        content: format!("the tool {} failed: {message}", tool.definition.name),
        is_error: true,
    };
    let secret = match ctx.store.webhook_secret(call.tenant_id).await {
        Ok(row) => match WebhookSecret::parse(&row.secret) {
            Ok(secret) => secret,
            Err(e) => return error(format!("the tenant's signing secret is unusable: {e}")),
        },
        Err(e) => {
            tracing::error!(error = %e, "reading the webhook secret failed");
            return error("qlaud could not sign the call".into());
        }
    };
    let body = json!({"type": "tool.call", "id": call.id, "tool": tool.definition.name,
                      "input": input, "thread_id": call.thread_id});
    let limits = Limits { timeout: tool.timeout, max_response_bytes: MAX_TOOL_ANSWER_BYTES };
    let delivered = match ctx
        .outbound
        .post_signed(&secret, &tool.webhook_url, body.to_string(), limits)
        .await
    {
        Ok(d) => d,
        Err(e) => return error(e.to_string()),
    };
    let Ok(answer) = serde_json::from_slice::<Value>(&delivered.body) else {
        return error("its webhook answered something that is not JSON".into());
    };
    let (content, is_error) = match &answer {
        Value::Object(o) if o.contains_key("content") => {
            let content = match &o["content"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (content, o.get("is_error").and_then(Value::as_bool).unwrap_or(false))
        }
        other => (other.to_string(), false),
    };
    ToolRun { call_id: call.id.to_string(), content, is_error }
}

/// Where a call comes from, for the webhook's payload.
pub struct Call<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub thread_id: &'a str,
}
