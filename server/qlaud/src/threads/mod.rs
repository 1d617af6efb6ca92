//! Threads: who reaches which thread, validation of what clients send, and
//! the mapping between stored rows and the wire shapes. The model turn
//! (`create_thread_message`) builds on the store functions behind these.

pub mod conversations;
pub mod list;
pub mod tools;
pub mod turn;

use chrono::{DateTime, TimeZone, Utc};
use qlaud_api::{
    CreateThreadRequest, KeyScope, MAX_SYSTEM_PROMPT_BYTES, Thread, ThreadMessage,
    UpdateThreadRequest,
};

use crate::auth::Caller;
use crate::config::ModelKind;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::keys::validate_metadata;
use crate::store::{
    MessageRow, NewThread, ThreadAccess, ThreadChanges, ThreadRow, parse_role, parse_truncation,
};

/// The threads a caller reaches: an admin key its tenant's, a standard key
/// only its own.
pub fn access(caller: &Caller) -> ThreadAccess<'_> {
    ThreadAccess {
        tenant_id: &caller.tenant_id,
        owner: match caller.scope {
            KeyScope::Admin => None,
            KeyScope::Standard => Some(&caller.key_id),
        },
    }
}

fn validate_system(system: &str) -> Result<()> {
    if system.len() > MAX_SYSTEM_PROMPT_BYTES {
        return Err(Error::invalid(format!(
            "system is {} bytes long; the limit is {MAX_SYSTEM_PROMPT_BYTES}",
            system.len()
        )));
    }
    Ok(())
}

/// A default model must be a chat model of the catalog.
fn validate_model(ctx: &Context, model: &str) -> Result<()> {
    match ctx.gateway.catalog.model(model) {
        None => Err(Error::invalid(format!(
            "unknown model {model:?}: GET /v1/models lists the models qlaud serves"
        ))),
        Some(m) if m.kind != ModelKind::Chat => Err(Error::invalid(format!(
            "model {model:?} is not a chat model, so it cannot answer a thread"
        ))),
        Some(_) => Ok(()),
    }
}

/// Checks a create request and names the owner key.
pub async fn new_thread(
    ctx: &Context,
    caller: &Caller,
    req: CreateThreadRequest,
) -> Result<NewThread> {
    let metadata = req.metadata.unwrap_or_default();
    validate_metadata(&metadata)?;
    if let Some(system) = &req.system {
        validate_system(system)?;
    }
    if let Some(model) = &req.model {
        validate_model(ctx, model)?;
    }
    let key_id = match (caller.scope, req.key_id) {
        (_, None) => caller.key_id.clone(),
        (_, Some(k)) if k == caller.key_id => k,
        (KeyScope::Standard, Some(_)) => {
            return Err(Error::Forbidden(
                "a standard key owns the threads it creates; leave key_id out".to_string(),
            ));
        }
        (KeyScope::Admin, Some(k)) => {
            // 404 for ids of other tenants, as everywhere.
            let key = ctx.store.get_key(&caller.tenant_id, &k).await?;
            if key.revoked_ms.is_some() {
                return Err(Error::Conflict(format!("key {k} is revoked")));
            }
            k
        }
    };
    Ok(NewThread {
        tenant_id: caller.tenant_id.clone(),
        key_id,
        metadata,
        system: req.system.filter(|s| !s.is_empty()),
        model: req.model,
        truncation: req.truncation.unwrap_or_default(),
    })
}

/// Checks an update request and turns it into column changes.
pub fn thread_changes(ctx: &Context, req: UpdateThreadRequest) -> Result<ThreadChanges> {
    if req.metadata.is_none()
        && req.system.is_none()
        && req.model.is_none()
        && req.truncation.is_none()
    {
        return Err(Error::invalid(
            "the update names no field to change (metadata, system, model, truncation)",
        ));
    }
    if let Some(metadata) = &req.metadata {
        validate_metadata(metadata)?;
    }
    if let Some(system) = &req.system {
        validate_system(system)?;
    }
    if let Some(model) = req.model.as_deref().filter(|m| !m.is_empty()) {
        validate_model(ctx, model)?;
    }
    // An empty string clears: the SDKs cannot send an explicit null.
    let clearable = |v: Option<String>| v.map(|s| Some(s).filter(|s| !s.is_empty()));
    Ok(ThreadChanges {
        metadata: req.metadata,
        system: clearable(req.system),
        model: clearable(req.model),
        truncation: req.truncation,
    })
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The wire shape of a stored thread.
pub fn to_wire(row: ThreadRow) -> Result<Thread> {
    let truncation = parse_truncation(&row.truncation)
        .ok_or_else(|| Error::Internal(format!("stored truncation {:?}", row.truncation)))?;
    let metadata = serde_json::from_str(&row.metadata)
        .map_err(|e| Error::Internal(format!("stored thread metadata: {e}")))?;
    Ok(Thread {
        id: row.id,
        object: "thread".into(),
        key_id: row.key_id,
        metadata,
        system: row.system_prompt,
        model: row.model,
        truncation,
        created_at: time(row.created_ms),
        updated_at: time(row.updated_ms),
    })
}

/// The wire shape of a stored message.
pub fn message_to_wire(row: MessageRow) -> Result<ThreadMessage> {
    let stored = |what: &str, e: serde_json::Error| {
        Error::Internal(format!("stored message {what} of {}: {e}", row.id))
    };
    let role = parse_role(&row.role)
        .ok_or_else(|| Error::Internal(format!("stored message role {:?}", row.role)))?;
    let content = serde_json::from_str(&row.content).map_err(|e| stored("content", e))?;
    let usage = row
        .usage
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| stored("usage", e))?;
    let metadata = serde_json::from_str(&row.metadata).map_err(|e| stored("metadata", e))?;
    Ok(ThreadMessage {
        id: row.id,
        object: "thread.message".into(),
        thread_id: row.thread_id,
        role,
        content,
        model: row.model,
        stop_reason: row.stop_reason,
        usage,
        metadata,
        created_at: time(row.created_ms),
    })
}

/// The thread's whole history, oldest first, in wire form (for a turn).
pub async fn history(ctx: &Context, thread: &ThreadRow) -> Result<Vec<ThreadMessage>> {
    let rows = ctx.store.thread_history(&thread.tenant_id, &thread.id).await?;
    rows.into_iter().map(message_to_wire).collect()
}
