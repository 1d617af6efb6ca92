//! Registered tools, as stored. Every query names the tenant, so another
//! tenant's tool reads as missing.

use std::collections::HashSet;
use std::sync::OnceLock;

use qlaud_api::SortDirection;

use super::{Store, StoreResult, new_id, now_ms};
use crate::error::Error;

macro_rules! tool_columns {
    () => {
        "id, tenant_id, name, description, input_schema, webhook_url, timeout_secs, created_ms, \
         updated_ms"
    };
}

/// The most names one `tools_by_name` statement looks up; longer lists
/// take several statements.
const NAMES_PER_QUERY: usize = 64;

/// A tool to insert, already validated.
#[derive(Clone, Debug)]
pub struct NewTool {
    pub tenant_id: String,
    pub name: String,
    pub description: String,
    /// A JSON Schema object, as compact JSON text.
    pub input_schema: String,
    pub webhook_url: String,
    /// 1 to 300.
    pub timeout_secs: i64,
}

/// A tool as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ToolRow {
    /// `tool_…`.
    pub id: String,
    pub tenant_id: String,
    /// Unique within the tenant; what the model calls the tool by.
    pub name: String,
    pub description: String,
    /// The input's JSON Schema (a JSON object) as text.
    pub input_schema: String,
    pub webhook_url: String,
    /// How long to wait for the webhook's answer, 1 to 300 seconds.
    pub timeout_secs: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// Which tools to list: newest or oldest first, between two exclusive
/// bounds `(created_ms, id)`.
#[derive(Clone, Debug)]
pub struct ToolQuery<'a> {
    pub tenant_id: &'a str,
    pub order: SortDirection,
    pub after: Option<(i64, &'a str)>,
    pub before: Option<(i64, &'a str)>,
    pub limit: u32,
}

fn by_name_sql(n: usize) -> &'static str {
    static SQL: OnceLock<Vec<&'static str>> = OnceLock::new();
    super::sized_sql(&SQL, NAMES_PER_QUERY, n, |n| {
        let params: Vec<String> = (2..n + 2).map(|i| format!("${i}")).collect();
        format!(
            concat!(
                "SELECT ",
                tool_columns!(),
                " FROM tools WHERE tenant_id = $1 AND name IN ({})"
            ),
            params.join(", ")
        )
    })
}

impl Store {
    /// Registers a tool. A name the tenant already uses is `Conflict`: the
    /// unique index decides, so of two concurrent inserts of one name
    /// exactly one succeeds.
    pub async fn insert_tool(&self, new: &NewTool) -> StoreResult<ToolRow> {
        const SQL: &str = concat!(
            "INSERT INTO tools (",
            tool_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (tenant_id, name) DO NOTHING RETURNING ",
            tool_columns!(),
            ""
        );
        sqlx::query_as::<_, ToolRow>(SQL)
            .bind(new_id("tool"))
            .bind(&new.tenant_id)
            .bind(&new.name)
            .bind(&new.description)
            .bind(&new.input_schema)
            .bind(&new.webhook_url)
            .bind(new.timeout_secs)
            .bind(now_ms())
            .fetch_optional(self.writer())
            .await?
            .ok_or_else(|| Error::Conflict(format!("a tool named {:?} already exists", new.name)))
    }

    /// The tenant's tool, or `NotFound` (the same for another tenant's).
    pub async fn get_tool(&self, tenant_id: &str, tool_id: &str) -> StoreResult<ToolRow> {
        const SQL: &str =
            concat!("SELECT ", tool_columns!(), " FROM tools WHERE tenant_id = $1 AND id = $2");
        sqlx::query_as::<_, ToolRow>(SQL)
            .bind(tenant_id)
            .bind(tool_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::not_found("tool", tool_id))
    }

    /// The tenant's tools of these names, in the order first named, each
    /// once. Names the tenant has no tool of are left out, so the caller
    /// compares to tell which are unknown.
    pub async fn tools_by_name(
        &self,
        tenant_id: &str,
        names: &[&str],
    ) -> StoreResult<Vec<ToolRow>> {
        let mut seen = HashSet::new();
        let wanted: Vec<&str> = names.iter().copied().filter(|n| seen.insert(*n)).collect();
        let mut found = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(NAMES_PER_QUERY) {
            let mut query = sqlx::query_as::<_, ToolRow>(by_name_sql(chunk.len())).bind(tenant_id);
            for name in chunk {
                query = query.bind(*name);
            }
            found.extend(query.fetch_all(self.pool()).await?);
        }
        found.sort_by_key(|row| wanted.iter().position(|n| *n == row.name));
        Ok(found)
    }

    /// Every tool of the tenant, by name (for a turn with `"tools": "all"`).
    pub async fn all_tools(&self, tenant_id: &str) -> StoreResult<Vec<ToolRow>> {
        const SQL: &str =
            concat!("SELECT ", tool_columns!(), " FROM tools WHERE tenant_id = $1 ORDER BY name");
        Ok(sqlx::query_as::<_, ToolRow>(SQL).bind(tenant_id).fetch_all(self.pool()).await?)
    }

    pub async fn list_tools(&self, q: &ToolQuery<'_>) -> StoreResult<Vec<ToolRow>> {
        // sqlx takes static SQL only: one text per direction.
        macro_rules! list_sql {
            ($dir:literal) => {
                concat!(
                    "SELECT ",
                    tool_columns!(),
                    " FROM tools WHERE tenant_id = $1 \
                       AND ($3 = '' OR created_ms > $2 OR (created_ms = $2 AND id > $3)) \
                       AND ($5 = '' OR created_ms < $4 OR (created_ms = $4 AND id < $5)) \
                     ORDER BY created_ms ",
                    $dir,
                    ", id ",
                    $dir,
                    " LIMIT $6"
                )
            };
        }
        let sql = match q.order {
            SortDirection::Asc => list_sql!("ASC"),
            SortDirection::Desc => list_sql!("DESC"),
        };
        let (after_ms, after_id) = q.after.unwrap_or((0, ""));
        let (before_ms, before_id) = q.before.unwrap_or((0, ""));
        Ok(sqlx::query_as::<_, ToolRow>(sql)
            .bind(q.tenant_id)
            .bind(after_ms)
            .bind(after_id)
            .bind(before_ms)
            .bind(before_id)
            .bind(i64::from(q.limit))
            .fetch_all(self.pool())
            .await?)
    }

    /// Deletes the tenant's tool, or answers `NotFound`.
    pub async fn delete_tool(&self, tenant_id: &str, tool_id: &str) -> StoreResult<()> {
        let deleted = sqlx::query("DELETE FROM tools WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(tool_id)
            .execute(self.writer())
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(Error::not_found("tool", tool_id));
        }
        Ok(())
    }
}
