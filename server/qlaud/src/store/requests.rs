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

/// `INSERT … VALUES (…), (…)` for `n` rows. sqlx takes only static SQL, so
/// each size is built once and kept for the life of the process.
fn insert_sql(n: usize) -> &'static str {
    static SQL: OnceLock<Vec<&'static str>> = OnceLock::new();
    super::sized_sql(&SQL, MAX_BATCH, n, |rows| {
        let mut s = String::from(
            "INSERT INTO requests (id, tenant_id, key_id, model, provider, endpoint, \
                     streamed, status, input_tokens, output_tokens, cache_read_tokens, \
                     cache_write_tokens, cost_micros, latency_ms, created_ms, period_start_ms, \
                     recovered) VALUES ",
        );
        for r in 0..rows {
            s.push_str(if r == 0 { "(" } else { ", (" });
            let params: Vec<String> =
                (1..=COLUMNS).map(|c| format!("${}", r * COLUMNS + c)).collect();
            s.push_str(&params.join(", "));
            s.push(')');
        }
        s
    })
}

/// Inserts up to [`MAX_BATCH`] records in one statement.
pub(super) async fn insert_requests(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    records: &[&RequestRecord],
) -> StoreResult<()> {
    let mut q = sqlx::query(insert_sql(records.len()));
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
        let mut q = sqlx::query(insert_units_sql(chunk.len()));
        for (id, unit, n) in chunk {
            q = q.bind(*id).bind(*unit).bind(*n);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
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

fn insert_units_sql(n: usize) -> &'static str {
    static SQL: OnceLock<Vec<&'static str>> = OnceLock::new();
    super::sized_sql(&SQL, MAX_UNIT_ROWS, n, |rows| {
        let values: Vec<String> = (0..rows)
            .map(|r| format!("(${}, ${}, ${})", 3 * r + 1, 3 * r + 2, 3 * r + 3))
            .collect();
        format!(
            "INSERT INTO request_units (request_id, unit, quantity) VALUES {}",
            values.join(", ")
        )
    })
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
