//! Registered tools: validation of what a tenant registers, the mapping
//! between stored rows and the wire shape, and the listing. Thread turns
//! look tools up with `Store::tools_by_name` / `Store::all_tools` and read
//! rows through [`to_wire`].

use chrono::{DateTime, TimeZone, Utc};
use dropshot::{HttpError, PaginationParams, ResultsPage, WhichPage};
use qlaud_api::{
    CreateToolRequest, DEFAULT_TOOL_TIMEOUT_SECS, MAX_TOOL_DESCRIPTION_BYTES, MAX_TOOL_NAME_CHARS,
    MAX_TOOL_SCHEMA_BYTES, MAX_TOOL_TIMEOUT_SECS, SortDirection, Tool, ToolCursor, ToolListFilter,
    ToolPageSelector,
};
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::store::{NewTool, ToolQuery, ToolRow};
use crate::threads::list::page_of;

/// Checks a registration and turns it into a row to insert.
pub fn new_tool(ctx: &Context, tenant_id: &str, req: CreateToolRequest) -> Result<NewTool> {
    validate_name(&req.name)?;
    validate_description(&req.description)?;
    let input_schema = validate_input_schema(req.input_schema)?;
    // The outbound-call policy, checked again at every call.
    ctx.outbound.validate("webhook_url", &req.webhook_url)?;
    let timeout_secs = req.timeout_secs.unwrap_or(DEFAULT_TOOL_TIMEOUT_SECS);
    if !(1..=MAX_TOOL_TIMEOUT_SECS).contains(&timeout_secs) {
        return Err(Error::invalid(format!(
            "timeout_secs is {timeout_secs}; it must be between 1 and {MAX_TOOL_TIMEOUT_SECS}"
        )));
    }
    Ok(NewTool {
        tenant_id: tenant_id.to_string(),
        name: req.name,
        description: req.description,
        input_schema,
        webhook_url: req.webhook_url,
        timeout_secs: i64::from(timeout_secs),
    })
}

/// `^[a-zA-Z0-9_-]{1,64}$`: what both Anthropic and OpenAI accept as a tool
/// name, so a registered tool works with any model.
fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOOL_NAME_CHARS
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(Error::invalid(format!(
            "name {name:?} must be 1 to {MAX_TOOL_NAME_CHARS} ASCII letters, digits, '_' or '-'"
        )));
    }
    Ok(())
}

fn validate_description(description: &str) -> Result<()> {
    if description.trim().is_empty() {
        return Err(Error::invalid(
            "description must not be empty: the model reads it to decide when to call the tool",
        ));
    }
    if description.len() > MAX_TOOL_DESCRIPTION_BYTES {
        return Err(Error::invalid(format!(
            "description is {} bytes long; the limit is {MAX_TOOL_DESCRIPTION_BYTES}",
            description.len()
        )));
    }
    Ok(())
}

/// Refuses every external `$ref`: qlaud never fetches a URL a tenant put
/// in a schema (that would be a request to anywhere, made by the server).
struct NoFetch;

impl jsonschema::Retrieve for NoFetch {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> std::result::Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("qlaud does not fetch schemas ({uri}); $ref must point inside input_schema")
            .into())
    }
}

/// Checks the input schema and returns it as compact JSON text: at most
/// [`MAX_TOOL_SCHEMA_BYTES`], top-level `type` `"object"` (the providers
/// require it), valid against its draft's meta-schema and compilable
/// (patterns are regexes, local `$ref`s resolve), by the `jsonschema` crate.
fn validate_input_schema(schema: Map<String, Value>) -> Result<String> {
    let schema = Value::Object(schema);
    let text = serde_json::to_string(&schema).expect("JSON values serialize");
    if text.len() > MAX_TOOL_SCHEMA_BYTES {
        return Err(Error::invalid(format!(
            "input_schema is {} bytes as compact JSON; the limit is {MAX_TOOL_SCHEMA_BYTES}",
            text.len()
        )));
    }
    if schema.get("type") != Some(&Value::from("object")) {
        return Err(Error::invalid(
            "input_schema must have \"type\": \"object\" at the top (a tool's input is an object)",
        ));
    }
    // Validates against the meta-schema before compiling.
    jsonschema::options().with_retriever(NoFetch).build(&schema).map_err(|e| {
        let at = e.instance_path().to_string();
        let at = if at.is_empty() { String::new() } else { format!(" at {at}") };
        Error::invalid(format!("input_schema is not a valid JSON Schema{at}: {e}"))
    })?;
    Ok(text)
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The wire shape of a stored tool.
pub fn to_wire(row: ToolRow) -> Result<Tool> {
    let input_schema = serde_json::from_str(&row.input_schema)
        .map_err(|e| Error::Internal(format!("stored input_schema of {}: {e}", row.id)))?;
    let timeout_secs = u32::try_from(row.timeout_secs)
        .map_err(|_| Error::Internal(format!("stored timeout_secs {}", row.timeout_secs)))?;
    Ok(Tool {
        id: row.id,
        object: "tool".into(),
        name: row.name,
        description: row.description,
        input_schema,
        webhook_url: row.webhook_url,
        timeout_secs,
        created_at: time(row.created_ms),
        updated_at: time(row.updated_ms),
    })
}

fn cursor(row: &ToolRow) -> ToolCursor {
    ToolCursor { created_ms: row.created_ms, id: row.id.clone() }
}

/// A page of the caller's tenant's tools. `after` and `before` are
/// chronological bounds whatever the order; the page token carries them
/// narrowed by the page just read.
pub async fn list(
    ctx: &Context,
    caller: &Caller,
    params: &PaginationParams<ToolListFilter, ToolPageSelector>,
    limit: u32,
) -> Result<ResultsPage<Tool>, HttpError> {
    let tenant_id = caller.tenant_id.as_str();
    let sel = match &params.page {
        WhichPage::Next(sel) => sel.clone(),
        WhichPage::First(filter) => {
            let bound = async |name: &str, id: &Option<String>| -> Result<Option<ToolCursor>> {
                let Some(id) = id else { return Ok(None) };
                match ctx.store.get_tool(tenant_id, id).await {
                    Ok(row) => Ok(Some(cursor(&row))),
                    Err(Error::NotFound { .. }) => {
                        Err(Error::invalid(format!("{name}: no tool {id:?}")))
                    }
                    Err(e) => Err(e),
                }
            };
            ToolPageSelector {
                order: filter.order.unwrap_or(SortDirection::Desc),
                after: bound("after", &filter.after).await?,
                before: bound("before", &filter.before).await?,
            }
        }
    };
    let rows = ctx
        .store
        .list_tools(&ToolQuery {
            tenant_id,
            order: sel.order,
            after: sel.after.as_ref().map(|c| (c.created_ms, c.id.as_str())),
            before: sel.before.as_ref().map(|c| (c.created_ms, c.id.as_str())),
            limit: limit + 1,
        })
        .await?;
    page_of(rows, limit, cursor, to_wire, |last| {
        let mut next = sel.clone();
        match sel.order {
            SortDirection::Asc => next.after = Some(last.clone()),
            SortDirection::Desc => next.before = Some(last.clone()),
        }
        next
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema(v: Value) -> Result<String> {
        match v {
            Value::Object(map) => validate_input_schema(map),
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn valid_schemas_pass() {
        for ok in [
            json!({"type": "object"}),
            json!({"type": "object", "properties": {"order_id": {"type": "string",
                "pattern": "^[0-9]+$"}}, "required": ["order_id"],
                "additionalProperties": false}),
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                "definitions": {"id": {"type": "integer"}},
                "properties": {"id": {"$ref": "#/definitions/id"}}}),
            json!({"type": "object", "$defs": {"id": {"type": "integer"}},
                "properties": {"id": {"$ref": "#/$defs/id"}}}),
        ] {
            schema(ok.clone()).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn invalid_schemas_fail_with_a_reason() {
        for (bad, expect) in [
            (json!({}), "\"type\": \"object\""),
            (json!({"type": "array"}), "\"type\": \"object\""),
            (json!({"type": ["object"]}), "\"type\": \"object\""),
            (json!({"type": "object", "properties": {"a": {"type": "strnig"}}}), "not a valid"),
            (json!({"type": "object", "required": "a"}), "not a valid"),
            (json!({"type": "object", "properties": 5}), "not a valid"),
            (json!({"type": "object", "properties": {"a": {"pattern": "(["}}}), "not a valid"),
            (json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}}), "nope"),
            (
                json!({"type": "object", "properties": {"a": {"$ref": "https://example.com/s"}}}),
                "does not fetch",
            ),
            (json!({"$schema": "https://example.com/meta", "type": "object"}), "meta-schema"),
        ] {
            let err = schema(bad.clone()).expect_err(&bad.to_string()).to_string();
            assert!(err.contains(expect), "{bad}: {err:?} lacks {expect:?}");
        }
    }

    #[test]
    fn names_follow_the_providers_rule() {
        for ok in ["a", "lookup_order", "get-weather", "X9", &"n".repeat(64)] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "has space", "dot.name", "é", "semi;colon", &"n".repeat(65)] {
            validate_name(bad).unwrap_err();
        }
    }
}
