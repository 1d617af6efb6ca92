//! OpenAI's Conversations API as a second view of threads: a conversation
//! is a thread (same id, store and owner key), its items are the thread's
//! messages as Responses items. Items added here are stored one message
//! each, so an item id is its message's id; a message written by a thread
//! turn may hold several items, whose further ids are `{message id}_{n}`.

use std::collections::BTreeMap;

use qlaud_api::{
    Conversation, ConversationItem, ConversationItemList, ConversationItemsQuery,
    CreateConversationRequest, SortDirection, Truncation,
};
use serde_json::Value;

use super::access;
use crate::auth::Caller;
use crate::context::Context;
use crate::dialects::responses::items;
use crate::error::{Error, Result};
use crate::keys::validate_metadata;
use crate::store::{
    MessageQuery, MessageRow, NewMessage, NewThread, ThreadRow, new_id, parse_role,
};

/// The most items one request may add, as OpenAI allows.
const MAX_ITEMS: usize = 20;

fn not_found(id: &str) -> Error {
    Error::not_found("conversation", id)
}

/// The conversation view of a thread.
pub fn to_wire(row: &ThreadRow) -> Result<Conversation> {
    let metadata = serde_json::from_str(&row.metadata)
        .map_err(|e| Error::Internal(format!("stored thread metadata: {e}")))?;
    Ok(Conversation {
        id: row.id.clone(),
        object: "conversation".into(),
        created_at: row.created_ms.div_euclid(1000),
        metadata,
    })
}

/// The thread behind a conversation id, if the caller reaches it.
pub async fn thread(ctx: &Context, caller: &Caller, id: &str) -> Result<ThreadRow> {
    ctx.store.get_thread(access(caller), id).await.map_err(|e| match e {
        Error::NotFound { .. } => not_found(id),
        e => e,
    })
}

/// Items as messages to append: each kept item one message.
fn messages(raw: &[Value]) -> Result<Vec<NewMessage>> {
    if raw.len() > MAX_ITEMS {
        return Err(Error::invalid(format!("at most {MAX_ITEMS} items may be added at once")));
    }
    raw.iter()
        .map(|item| {
            let (role, content) = items::to_stored(item)?.ok_or_else(|| {
                Error::invalid(
                    "system and developer messages and reasoning items are not kept in a \
                     conversation; send them as instructions with each response",
                )
            })?;
            Ok(NewMessage {
                id: new_id("msg"),
                role,
                content,
                model: None,
                stop_reason: None,
                usage: None,
                request_id: None,
                metadata: BTreeMap::new(),
                response_id: None,
            })
        })
        .collect()
}

/// `create_conversation`: a new thread of the caller's with its items.
pub async fn create(
    ctx: &Context,
    caller: &Caller,
    req: CreateConversationRequest,
) -> Result<Conversation> {
    let metadata = req.metadata.unwrap_or_default();
    validate_metadata(&metadata)?;
    let messages = messages(req.items.as_deref().unwrap_or_default())?;
    let thread = ctx
        .store
        .insert_thread(&NewThread {
            tenant_id: caller.tenant_id.clone(),
            key_id: caller.key_id.clone(),
            metadata,
            system: None,
            model: None,
            truncation: Truncation::default(),
        })
        .await?;
    ctx.store.append_messages(&thread.tenant_id, &thread.id, &messages, None).await?;
    to_wire(&thread)
}

/// A stored message as conversation items.
fn items_of(row: &MessageRow) -> Result<Vec<ConversationItem>> {
    let role = parse_role(&row.role)
        .ok_or_else(|| Error::Internal(format!("stored message role {:?}", row.role)))?;
    let blocks: Vec<Value> = serde_json::from_str(&row.content)
        .map_err(|e| Error::Internal(format!("stored message content of {}: {e}", row.id)))?;
    items::to_items(role, &blocks, Some(&row.id))
        .into_iter()
        .map(|item| {
            serde_json::from_value(item)
                .map_err(|e| Error::Internal(format!("an item of message {}: {e}", row.id)))
        })
        .collect()
}

fn list(items: Vec<ConversationItem>, has_more: bool) -> ConversationItemList {
    ConversationItemList {
        object: "list".into(),
        first_id: items.first().map(|i| i.id.clone()),
        last_id: items.last().map(|i| i.id.clone()),
        has_more,
        data: items,
    }
}

/// `create_conversation_items`: the items appended, in OpenAI's list shape.
pub async fn add_items(
    ctx: &Context,
    thread: &ThreadRow,
    raw: &[Value],
) -> Result<ConversationItemList> {
    if raw.is_empty() {
        return Err(Error::invalid("items is empty"));
    }
    let messages = messages(raw)?;
    let rows = ctx.store.append_messages(&thread.tenant_id, &thread.id, &messages, None).await?;
    let mut out = Vec::new();
    for row in &rows {
        out.extend(items_of(row)?);
    }
    Ok(list(out, false))
}

/// The message an item id names: the message's own id, or `{id}_{n}`.
async fn message_of(ctx: &Context, thread: &ThreadRow, item_id: &str) -> Result<MessageRow> {
    let store = &ctx.store;
    match store.get_message(&thread.tenant_id, &thread.id, item_id).await {
        Err(Error::NotFound { .. }) => {
            let base = item_id.rsplit_once('_').map_or(item_id, |(base, _)| base);
            store
                .get_message(&thread.tenant_id, &thread.id, base)
                .await
                .map_err(|_| Error::not_found("item", item_id))
        }
        other => other,
    }
}

/// `list_conversation_items`.
pub async fn list_items(
    ctx: &Context,
    thread: &ThreadRow,
    q: ConversationItemsQuery,
) -> Result<ConversationItemList> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(Error::invalid("limit must be from 1 to 100"));
    }
    let order = q.order.unwrap_or(SortDirection::Desc);
    let after = match &q.after {
        Some(id) => Some(message_of(ctx, thread, id).await?.seq),
        None => None,
    };
    let (after_seq, before_seq) = match order {
        SortDirection::Asc => (after, None),
        SortDirection::Desc => (None, after),
    };
    let mut rows = ctx
        .store
        .list_messages(&MessageQuery {
            tenant_id: &thread.tenant_id,
            thread_id: &thread.id,
            order,
            after_seq,
            before_seq,
            limit: limit + 1,
        })
        .await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let mut out = Vec::new();
    for row in &rows {
        let mut items = items_of(row)?;
        // Newest first reverses the items of a message too.
        if order == SortDirection::Desc {
            items.reverse();
        }
        out.extend(items);
    }
    Ok(list(out, has_more))
}

/// `get_conversation_item`.
pub async fn get_item(
    ctx: &Context,
    thread: &ThreadRow,
    item_id: &str,
) -> Result<ConversationItem> {
    let row = message_of(ctx, thread, item_id).await?;
    items_of(&row)?
        .into_iter()
        .find(|i| i.id == item_id)
        .ok_or_else(|| Error::not_found("item", item_id))
}

/// `delete_conversation_item`: deletes the item's whole message.
pub async fn delete_item(ctx: &Context, thread: &ThreadRow, item_id: &str) -> Result<()> {
    let row = message_of(ctx, thread, item_id).await?;
    if !items_of(&row)?.iter().any(|i| i.id == item_id) {
        return Err(Error::not_found("item", item_id));
    }
    ctx.store.delete_message(&thread.tenant_id, &thread.id, &row.id).await
}
