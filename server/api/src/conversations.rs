//! Wire types of the Conversations API: OpenAI's conversations as a second
//! view of qlaud's threads. A conversation is a thread (the same id, store
//! and owner key); its items are the thread's messages as Responses items.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::keys::SortDirection;

/// Parameters for creating a conversation.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct CreateConversationRequest {
    /// Items to start it with (at most 20): messages (`{role, content}` with
    /// `input_text` / `input_image` parts, or assistant `output_text`),
    /// `function_call` and `function_call_output` items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<Value>>,
    /// Free-form string pairs kept with it (at most 50 pairs; keys up to 40
    /// characters, values up to 500): the thread's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Changes to a conversation.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct UpdateConversationRequest {
    /// Replaces all metadata (same limits as at creation).
    pub metadata: BTreeMap<String, String>,
}

/// A conversation: a thread seen through OpenAI's Conversations API.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct Conversation {
    /// The conversation's id: its thread's id (`thr_…`).
    pub id: String,
    /// Always `conversation`.
    pub object: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The thread's metadata.
    pub metadata: BTreeMap<String, String>,
}

/// The answer of `delete_conversation`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ConversationDeleted {
    /// The deleted conversation's id.
    pub id: String,
    /// Always `conversation.deleted`.
    pub object: String,
    /// Always true.
    pub deleted: bool,
}

/// One item of a conversation, in the Responses item shape.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ConversationItem {
    /// The item's id: its message's id (`msg_…`), or `{message id}_{n}`
    /// for the further items of a thread message that holds several
    /// (text and a tool call, say).
    pub id: String,
    /// `message`, `function_call` or `function_call_output`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The item's other fields (`role` and `content` of a message;
    /// `call_id`, `name`, `arguments` of a call; `call_id`, `output` of a
    /// result; `status`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A page of conversation items, in OpenAI's list shape.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ConversationItemList {
    /// Always `list`.
    pub object: String,
    /// The items, in the order asked for.
    pub data: Vec<ConversationItem>,
    /// The first item's id, if any.
    pub first_id: Option<String>,
    /// The last item's id, if any: `after` for the next page.
    pub last_id: Option<String>,
    /// Whether more items follow.
    pub has_more: bool,
}

/// Items to add to a conversation.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct CreateConversationItemsRequest {
    /// The items (1 to 20), in the shapes `create_conversation` takes.
    pub items: Vec<Value>,
}

/// Paging of `list_conversation_items`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct ConversationItemsQuery {
    /// Messages per page, 1 to 100 (default 20). A thread message that
    /// holds several items shows them all on the same page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// `desc` (default: newest first) or `asc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<SortDirection>,
    /// Only items after this item in the chosen order (`last_id` of the
    /// previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// Path parameters naming one conversation.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ConversationPath {
    /// The conversation's id (a thread id, `thr_…`).
    pub conversation_id: String,
}

/// Path parameters naming one item of a conversation.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ConversationItemPath {
    /// The conversation's id (a thread id, `thr_…`).
    pub conversation_id: String,
    /// The item's id.
    pub item_id: String,
}
