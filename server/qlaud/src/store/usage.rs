//! Spend reports: sums over the request log.
//!
//! A report reads the log's hourly rollup (`usage_hourly`, kept in the
//! transaction that writes the log) for the whole hours of its window, and
//! the log itself only for the part of an hour at either end: the cost of a
//! report grows with the keys, models and hours it covers, not with the
//! requests.

use std::collections::{BTreeMap, HashMap};

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
    pub units: BTreeMap<String, i64>,
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
pub(super) fn column_units(r: &UsageRow) -> BTreeMap<String, i64> {
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

/// The sums of one key and model on one UTC day, the finest grouping a
/// report shows; `row.units` holds every unit, tokens and requests too.
#[derive(Clone, Debug, Default)]
pub struct UsageCell {
    pub key_id: String,
    pub key_name: String,
    pub model: String,
    /// Unix days.
    pub day: i64,
    pub row: UsageRow,
}

impl UsageRow {
    /// Adds `other`'s sums (units too) to this row's.
    pub fn add(&mut self, other: &UsageRow) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cost_micros += other.cost_micros;
        for (unit, n) in &other.units {
            *self.units.entry(unit.clone()).or_default() += n;
        }
    }
}

const HOUR_MS: i64 = 3_600_000;

/// `$1` tenant, `$2`/`$3` the window, `$4` a key id or ''. Macros so every
/// statement stays `&'static str`.
macro_rules! cells {
    ($table:literal, $time:literal, $count:literal) => {
        concat!(
            "SELECT t.key_id, k.name, t.model, CAST(t.",
            $time,
            " / 86400000 AS BIGINT) AS day, ",
            $count,
            " AS requests, \
             CAST(COALESCE(SUM(t.input_tokens), 0) AS BIGINT) AS input_tokens, \
             CAST(COALESCE(SUM(t.output_tokens), 0) AS BIGINT) AS output_tokens, \
             CAST(COALESCE(SUM(t.cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens, \
             CAST(COALESCE(SUM(t.cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens, \
             CAST(COALESCE(SUM(t.cost_micros), 0) AS BIGINT) AS cost_micros \
             FROM ",
            $table,
            " t JOIN api_keys k ON k.id = t.key_id \
             WHERE t.tenant_id = $1 AND t.",
            $time,
            " >= $2 AND t.",
            $time,
            " < $3 AND ($4 = '' OR t.key_id = $4) \
             GROUP BY t.key_id, k.name, t.model, CAST(t.",
            $time,
            " / 86400000 AS BIGINT)"
        )
    };
}

const LOG_CELLS: &str = cells!("requests", "created_ms", "COUNT(*)");
const ROLLUP_CELLS: &str =
    cells!("usage_hourly", "hour_ms", "CAST(COALESCE(SUM(t.requests), 0) AS BIGINT)");

const LOG_UNITS: &str = "SELECT t.key_id, t.model, CAST(t.created_ms / 86400000 AS BIGINT) AS day, \
       u.unit, CAST(COALESCE(SUM(u.quantity), 0) AS BIGINT) AS q \
     FROM request_units u JOIN requests t ON t.id = u.request_id \
     WHERE t.tenant_id = $1 AND t.created_ms >= $2 AND t.created_ms < $3 \
       AND ($4 = '' OR t.key_id = $4) \
     GROUP BY t.key_id, t.model, CAST(t.created_ms / 86400000 AS BIGINT), u.unit";
const ROLLUP_UNITS: &str = "SELECT t.key_id, t.model, CAST(t.hour_ms / 86400000 AS BIGINT) AS day, \
       t.unit, CAST(COALESCE(SUM(t.quantity), 0) AS BIGINT) AS q \
     FROM usage_hourly_units t \
     WHERE t.tenant_id = $1 AND t.hour_ms >= $2 AND t.hour_ms < $3 \
       AND ($4 = '' OR t.key_id = $4) \
     GROUP BY t.key_id, t.model, CAST(t.hour_ms / 86400000 AS BIGINT), t.unit";

impl Store {
    /// Every (key, model, day) cell of the report `f`, from the rollup for
    /// its whole hours and from the log for the rest.
    pub async fn usage_cells(&self, f: &UsageFilter<'_>) -> StoreResult<Vec<UsageCell>> {
        let first_hour = f.from_ms + (HOUR_MS - f.from_ms.rem_euclid(HOUR_MS)) % HOUR_MS;
        let last_hour = f.to_ms - f.to_ms.rem_euclid(HOUR_MS);
        let mut parts = Vec::with_capacity(3);
        if first_hour < last_hour {
            parts.push((ROLLUP_CELLS, ROLLUP_UNITS, first_hour, last_hour));
            for (from, to) in [(f.from_ms, first_hour), (last_hour, f.to_ms)] {
                if from < to {
                    parts.push((LOG_CELLS, LOG_UNITS, from, to));
                }
            }
        } else {
            parts.push((LOG_CELLS, LOG_UNITS, f.from_ms, f.to_ms));
        }
        let mut cells: HashMap<(String, String, i64), UsageCell> = HashMap::new();
        for (sums, units, from, to) in parts {
            let window = UsageFilter { from_ms: from, to_ms: to, ..*f };
            for r in self.usage_query(sums, &window).await? {
                let (key_id, model, day): (String, String, i64) =
                    (r.try_get("key_id")?, r.try_get("model")?, r.try_get("day")?);
                let mut row = row(&r, String::new(), String::new())?;
                row.units = column_units(&row);
                let cell = cells.entry((key_id.clone(), model.clone(), day)).or_insert_with(|| {
                    UsageCell {
                        key_id,
                        key_name: r.try_get("name").unwrap_or_default(),
                        model,
                        day,
                        row: UsageRow::default(),
                    }
                });
                cell.row.add(&row);
            }
            for r in self.usage_query(units, &window).await? {
                let cell_key = (r.try_get("key_id")?, r.try_get("model")?, r.try_get("day")?);
                let (unit, q): (String, i64) = (r.try_get("unit")?, r.try_get("q")?);
                // A unit row always has its request's row, so its cell.
                if let Some(cell) = cells.get_mut(&cell_key) {
                    *cell.row.units.entry(unit).or_default() += q;
                }
            }
        }
        Ok(cells.into_values().collect())
    }

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
}
