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
    })
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
