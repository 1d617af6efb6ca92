//! The request log: one row per settled request, written in batches inside
//! the settlement transaction.

use std::sync::OnceLock;

use super::StoreResult;
use crate::meter::RequestRecord;
use crate::units::Unit;

/// The most rows one statement carries (17 parameters a row stays far below
/// both backends' parameter limits).
pub const MAX_BATCH: usize = 64;

const COLUMNS: usize = 17;

/// Batch statements' texts, per backend (SQLite's with anonymous
/// parameters: see [`batch_sql`]).
type BatchCache = [OnceLock<Vec<&'static str>>; 2];

/// A multi-row statement for `n` rows, built once per size and backend.
/// On SQLite its parameters are anonymous (`?`, bound in order, as the
/// `$n` of these statements are): for each numbered parameter sqlx asks
/// SQLite its name, which SQLite finds by walking a list, so binding a
/// batch of a thousand numbered parameters took a million steps (8 % of
/// the CPU at saturation, in the profile).
fn batch_sql(
    cache: &'static BatchCache,
    sqlite: bool,
    max: usize,
    n: usize,
    build: impl Fn(usize) -> String,
) -> &'static str {
    super::sized_sql(&cache[usize::from(sqlite)], max, n, |rows| {
        let text = build(rows);
        if !sqlite {
            return text;
        }
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' {
                out.push('?');
                while chars.next_if(char::is_ascii_digit).is_some() {}
            } else {
                out.push(c);
            }
        }
        out
    })
}

fn is_sqlite(tx: &sqlx::Transaction<'_, sqlx::Any>) -> bool {
    tx.backend_name() == "SQLite"
}

/// `INSERT … VALUES (…), (…)` for `n` rows. sqlx takes only static SQL, so
/// each size is built once and kept for the life of the process.
fn insert_sql(sqlite: bool, n: usize) -> &'static str {
    static SQL: BatchCache = [OnceLock::new(), OnceLock::new()];
    batch_sql(&SQL, sqlite, MAX_BATCH, n, |rows| {
        format!(
            "INSERT INTO requests (id, tenant_id, key_id, model, provider, endpoint, \
                     streamed, status, input_tokens, output_tokens, cache_read_tokens, \
                     cache_write_tokens, cost_micros, latency_ms, created_ms, period_start_ms, \
                     recovered) VALUES {}",
            values(rows, COLUMNS)
        )
    })
}

/// Inserts up to [`MAX_BATCH`] records in one statement.
pub(super) async fn insert_requests(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    records: &[&RequestRecord],
) -> StoreResult<()> {
    let sqlite = is_sqlite(tx);
    let mut q = sqlx::query(insert_sql(sqlite, records.len()));
    for r in records {
        q = q
            .bind(r.reservation_id.as_str())
            .bind(r.tenant_id.as_str())
            .bind(r.key_id.as_str())
            .bind(r.model.as_str())
            .bind(r.provider.as_str())
            .bind(r.endpoint.as_str())
            .bind(i64::from(r.streamed))
            .bind(i64::from(r.status))
            .bind(clamp(r.usage.input_tokens))
            .bind(clamp(r.usage.output_tokens))
            .bind(clamp(r.usage.cache_read_tokens))
            .bind(clamp(r.usage.cache_write_tokens))
            .bind(r.cost_micros)
            .bind(r.latency_ms)
            .bind(r.created_ms)
            .bind(r.period_start_ms)
            .bind(i64::from(r.recovered));
    }
    q.execute(&mut **tx).await?;
    let units: Vec<(&str, &str, i64)> = records
        .iter()
        .flat_map(|r| {
            r.quantities
                .iter()
                .filter(|(unit, _)| !has_column(*unit))
                .map(|(unit, n)| (r.reservation_id.as_str(), unit.as_str(), clamp(n)))
        })
        .collect();
    for chunk in units.chunks(MAX_UNIT_ROWS) {
        let mut q = sqlx::query(insert_units_sql(sqlite, chunk.len()));
        for (id, unit, n) in chunk {
            q = q.bind(*id).bind(*unit).bind(*n);
        }
        q.execute(&mut **tx).await?;
    }
    add_to_rollup(tx, records).await
}

const HOUR_MS: i64 = 3_600_000;

/// A rollup row's key: tenant, hour, key, model (the table's primary key
/// order, so every transaction locks rows in one order).
type Cell<'a> = (&'a str, i64, &'a str, &'a str);

/// Adds the records to `usage_hourly` and `usage_hourly_units`, summed per
/// row first: one upsert carries each row once, as PostgreSQL requires.
async fn add_to_rollup(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    records: &[&RequestRecord],
) -> StoreResult<()> {
    let sqlite = is_sqlite(tx);
    let mut cells: std::collections::BTreeMap<Cell, [i64; 6]> = Default::default();
    let mut units: std::collections::BTreeMap<(Cell, &str), i64> = Default::default();
    for r in records {
        let cell = (
            r.tenant_id.as_str(),
            r.created_ms - r.created_ms.rem_euclid(HOUR_MS),
            r.key_id.as_str(),
            r.model.as_str(),
        );
        let sums = cells.entry(cell).or_default();
        let add = [
            1,
            clamp(r.usage.input_tokens),
            clamp(r.usage.output_tokens),
            clamp(r.usage.cache_read_tokens),
            clamp(r.usage.cache_write_tokens),
            r.cost_micros,
        ];
        for (sum, n) in sums.iter_mut().zip(add) {
            *sum = sum.saturating_add(n);
        }
        for (unit, n) in r.quantities.iter().filter(|(unit, _)| !has_column(*unit)) {
            let q = units.entry((cell, unit.as_str())).or_default();
            *q = q.saturating_add(clamp(n));
        }
    }
    let cells: Vec<_> = cells.into_iter().collect();
    for chunk in cells.chunks(MAX_BATCH) {
        let mut q = sqlx::query(rollup_sql(sqlite, chunk.len()));
        for ((tenant, hour, key, model), sums) in chunk {
            q = q.bind(*tenant).bind(*hour).bind(*key).bind(*model);
            for n in sums {
                q = q.bind(*n);
            }
        }
        q.execute(&mut **tx).await?;
    }
    let units: Vec<_> = units.into_iter().collect();
    for chunk in units.chunks(MAX_BATCH) {
        let mut q = sqlx::query(rollup_units_sql(sqlite, chunk.len()));
        for (((tenant, hour, key, model), unit), n) in chunk {
            q = q.bind(*tenant).bind(*hour).bind(*key).bind(*model).bind(*unit).bind(*n);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// `($1, $2, …), (…)` for `rows` rows of `columns` parameters.
fn values(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let params: Vec<String> =
                (1..=columns).map(|c| format!("${}", r * columns + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn rollup_sql(sqlite: bool, n: usize) -> &'static str {
    static SQL: BatchCache = [OnceLock::new(), OnceLock::new()];
    batch_sql(&SQL, sqlite, MAX_BATCH, n, |rows| {
        format!(
            "INSERT INTO usage_hourly (tenant_id, hour_ms, key_id, model, requests, \
               input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_micros) \
             VALUES {} ON CONFLICT (tenant_id, hour_ms, key_id, model) DO UPDATE SET \
               requests = usage_hourly.requests + excluded.requests, \
               input_tokens = usage_hourly.input_tokens + excluded.input_tokens, \
               output_tokens = usage_hourly.output_tokens + excluded.output_tokens, \
               cache_read_tokens = usage_hourly.cache_read_tokens + excluded.cache_read_tokens, \
               cache_write_tokens = usage_hourly.cache_write_tokens + excluded.cache_write_tokens, \
               cost_micros = usage_hourly.cost_micros + excluded.cost_micros",
            values(rows, 10)
        )
    })
}

fn rollup_units_sql(sqlite: bool, n: usize) -> &'static str {
    static SQL: BatchCache = [OnceLock::new(), OnceLock::new()];
    batch_sql(&SQL, sqlite, MAX_BATCH, n, |rows| {
        format!(
            "INSERT INTO usage_hourly_units (tenant_id, hour_ms, key_id, model, unit, quantity) \
             VALUES {} ON CONFLICT (tenant_id, hour_ms, key_id, model, unit) DO UPDATE SET \
               quantity = usage_hourly_units.quantity + excluded.quantity",
            values(rows, 6)
        )
    })
}

/// Units every model call measures, kept in the request's own columns (the
/// tokens) or its row (one request): only other units take rows of their
/// own, so a chat call writes nothing more than before units existed.
fn has_column(unit: Unit) -> bool {
    [
        Unit::INPUT_TOKENS,
        Unit::OUTPUT_TOKENS,
        Unit::CACHE_READ_TOKENS,
        Unit::CACHE_WRITE_TOKENS,
        Unit::REQUESTS,
    ]
    .contains(&unit)
}

/// Unit rows one statement carries at most (3 parameters each).
const MAX_UNIT_ROWS: usize = 128;

fn insert_units_sql(sqlite: bool, n: usize) -> &'static str {
    static SQL: BatchCache = [OnceLock::new(), OnceLock::new()];
    batch_sql(&SQL, sqlite, MAX_UNIT_ROWS, n, |rows| {
        format!("INSERT INTO request_units (request_id, unit, quantity) VALUES {}", values(rows, 3))
    })
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_batches_bind_anonymous_parameters_in_order() {
        let numbered = insert_sql(false, 3);
        let anonymous = insert_sql(true, 3);
        assert_eq!(numbered.matches('$').count(), 3 * COLUMNS);
        assert!(!anonymous.contains('$'));
        assert_eq!(anonymous.matches('?').count(), 3 * COLUMNS);
        // The same statement otherwise: `$1, $2, …` in order become `?`.
        let mut n = 0;
        let renumbered: String = anonymous
            .split('?')
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part.to_string()
                } else {
                    n += 1;
                    format!("${n}{part}")
                }
            })
            .collect();
        assert_eq!(renumbered, numbered);
    }
}
