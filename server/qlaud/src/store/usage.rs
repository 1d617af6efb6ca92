//! Spend reports: sums over the request log.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreResult};

/// Which requests a report covers.
pub struct UsageFilter<'a> {
    pub tenant_id: &'a str,
    /// Inclusive, Unix ms.
    pub from_ms: i64,
    /// Exclusive, Unix ms.
    pub to_ms: i64,
    /// Only this key's requests.
    pub key_id: Option<&'a str>,
}

/// Sums for one group (a key, a model, a day, or everything).
#[derive(Clone, Debug, Default)]
pub struct UsageRow {
    /// The key id, model name or day number (Unix days); empty for totals.
    pub group: String,
    /// The key's name, for groups by key.
    pub name: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_micros: i64,
    /// Quantity per priced unit.
    pub units: std::collections::BTreeMap<String, i64>,
}

/// How unit sums are grouped, like the report's rows.
#[derive(Clone, Copy)]
pub enum UnitGroup {
    Total,
    Key,
    Model,
    Day,
}

macro_rules! sums {
    () => {
        "COUNT(*) AS requests, \
         CAST(COALESCE(SUM(r.input_tokens), 0) AS BIGINT) AS input_tokens, \
         CAST(COALESCE(SUM(r.output_tokens), 0) AS BIGINT) AS output_tokens, \
         CAST(COALESCE(SUM(r.cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens, \
         CAST(COALESCE(SUM(r.cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens, \
         CAST(COALESCE(SUM(r.cost_micros), 0) AS BIGINT) AS cost_micros"
    };
}

macro_rules! filter {
    () => {
        "r.tenant_id = $1 AND r.created_ms >= $2 AND r.created_ms < $3 AND ($4 = '' OR r.key_id = $4)"
    };
}

fn row(r: &AnyRow, group: String, name: String) -> StoreResult<UsageRow> {
    Ok(UsageRow {
        group,
        name,
        requests: r.try_get("requests")?,
        input_tokens: r.try_get("input_tokens")?,
        output_tokens: r.try_get("output_tokens")?,
        cache_read_tokens: r.try_get("cache_read_tokens")?,
        cache_write_tokens: r.try_get("cache_write_tokens")?,
        cost_micros: r.try_get("cost_micros")?,
        units: Default::default(),
    })
}

/// The units a request row keeps in its columns: its tokens and itself.
pub(super) fn column_units(r: &UsageRow) -> std::collections::BTreeMap<String, i64> {
    [
        ("input_tokens", r.input_tokens),
        ("output_tokens", r.output_tokens),
        ("cache_read_tokens", r.cache_read_tokens),
        ("cache_write_tokens", r.cache_write_tokens),
        ("requests", r.requests),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(u, n)| (u.to_string(), n))
    .collect()
}

/// `SELECT <group> AS g, unit, SUM(quantity)` over the filtered requests'
/// other units.
macro_rules! unit_sums {
    ($group:literal) => {
        concat!(
            "SELECT ",
            $group,
            " AS g, u.unit, CAST(COALESCE(SUM(u.quantity), 0) AS BIGINT) AS q \
             FROM request_units u JOIN requests r ON r.id = u.request_id WHERE ",
            filter!(),
            " GROUP BY ",
            $group,
            ", u.unit"
        )
    };
}

impl Store {
    async fn usage_query(
        &self,
        sql: &'static str,
        f: &UsageFilter<'_>,
    ) -> StoreResult<Vec<AnyRow>> {
        Ok(sqlx::query(sql)
            .bind(f.tenant_id)
            .bind(f.from_ms)
            .bind(f.to_ms)
            .bind(f.key_id.unwrap_or(""))
            .fetch_all(self.pool())
            .await?)
    }

    /// Quantities per group and unit, set on `rows` (matched by group): the
    /// units kept in the rows' columns, and every other unit's rows.
    pub async fn add_unit_sums(
        &self,
        f: &UsageFilter<'_>,
        group: UnitGroup,
        rows: &mut [UsageRow],
    ) -> StoreResult<()> {
        let sql = match group {
            // One tenant per query: grouping by it is grouping by nothing.
            UnitGroup::Total => unit_sums!("r.tenant_id"),
            UnitGroup::Key => unit_sums!("r.key_id"),
            UnitGroup::Model => unit_sums!("r.model"),
            UnitGroup::Day => unit_sums!("CAST(r.created_ms / 86400000 AS BIGINT)"),
        };
        for row in rows.iter_mut() {
            row.units = column_units(row);
        }
        for r in self.usage_query(sql, f).await? {
            let g = match group {
                UnitGroup::Total => String::new(),
                UnitGroup::Day => r.try_get::<i64, _>("g")?.to_string(),
                _ => r.try_get::<String, _>("g")?,
            };
            let (unit, q): (String, i64) = (r.try_get("unit")?, r.try_get("q")?);
            if let Some(row) = rows.iter_mut().find(|row| row.group == g) {
                row.units.insert(unit, q);
            }
        }
        Ok(())
    }

    pub async fn usage_totals(&self, f: &UsageFilter<'_>) -> StoreResult<UsageRow> {
        const SQL: &str = concat!("SELECT ", sums!(), " FROM requests r WHERE ", filter!());
        let rows = self.usage_query(SQL, f).await?;
        rows.first().map_or(Ok(UsageRow::default()), |r| row(r, String::new(), String::new()))
    }

    pub async fn usage_by_key(&self, f: &UsageFilter<'_>) -> StoreResult<Vec<UsageRow>> {
        const SQL: &str = concat!(
            "SELECT r.key_id, k.name, ",
            sums!(),
            " FROM requests r JOIN api_keys k ON k.id = r.key_id WHERE ",
            filter!(),
            " GROUP BY r.key_id, k.name ORDER BY cost_micros DESC, r.key_id"
        );
        let rows = self.usage_query(SQL, f).await?;
        rows.iter().map(|r| row(r, r.try_get("key_id")?, r.try_get("name")?)).collect()
    }

    pub async fn usage_by_model(&self, f: &UsageFilter<'_>) -> StoreResult<Vec<UsageRow>> {
        const SQL: &str = concat!(
            "SELECT r.model, ",
            sums!(),
            " FROM requests r WHERE ",
            filter!(),
            " GROUP BY r.model ORDER BY cost_micros DESC, r.model"
        );
        let rows = self.usage_query(SQL, f).await?;
        rows.iter().map(|r| row(r, r.try_get("model")?, String::new())).collect()
    }

    pub async fn usage_by_day(&self, f: &UsageFilter<'_>) -> StoreResult<Vec<UsageRow>> {
        const SQL: &str = concat!(
            "SELECT CAST(r.created_ms / 86400000 AS BIGINT) AS day, ",
            sums!(),
            " FROM requests r WHERE ",
            filter!(),
            " GROUP BY CAST(r.created_ms / 86400000 AS BIGINT) ORDER BY day"
        );
        let rows = self.usage_query(SQL, f).await?;
        rows.iter()
            .map(|r| row(r, r.try_get::<i64, _>("day")?.to_string(), String::new()))
            .collect()
    }
}
