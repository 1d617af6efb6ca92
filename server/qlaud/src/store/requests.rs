//! The request log: one row per model request, written in batches.

use std::sync::OnceLock;

use super::{Store, StoreResult, new_id, now_ms};
use crate::meter::RequestRecord;

/// The most rows one INSERT carries (15 parameters a row stays far below
/// both backends' parameter limits).
pub const MAX_BATCH: usize = 64;

const COLUMNS: usize = 15;

/// `INSERT … VALUES (…), (…)` for `n` rows. sqlx takes only static SQL, so
/// each size is built once and kept for the life of the process (64 strings).
fn insert_sql(n: usize) -> &'static str {
    static SQL: OnceLock<Vec<&'static str>> = OnceLock::new();
    SQL.get_or_init(|| {
        (1..=MAX_BATCH)
            .map(|rows| {
                let mut s = String::from(
                    "INSERT INTO requests (id, tenant_id, key_id, model, provider, endpoint, \
                     streamed, status, input_tokens, output_tokens, cache_read_tokens, \
                     cache_write_tokens, cost_micros, latency_ms, created_ms) VALUES ",
                );
                for r in 0..rows {
                    s.push_str(if r == 0 { "(" } else { ", (" });
                    for c in 0..COLUMNS {
                        if c > 0 {
                            s.push_str(", ");
                        }
                        s.push_str(&format!("${}", r * COLUMNS + c + 1));
                    }
                    s.push(')');
                }
                &*Box::leak(s.into_boxed_str())
            })
            .collect()
    })[n - 1]
}

impl Store {
    /// Writes up to [`MAX_BATCH`] records in one statement.
    pub async fn insert_requests(&self, records: &[RequestRecord]) -> StoreResult<()> {
        for chunk in records.chunks(MAX_BATCH) {
            let now = now_ms();
            let mut q = sqlx::query(insert_sql(chunk.len()));
            for r in chunk {
                q = q
                    .bind(new_id("req"))
                    .bind(r.tenant_id.clone())
                    .bind(r.key_id.clone())
                    .bind(r.model.clone())
                    .bind(r.provider.clone())
                    .bind(r.endpoint)
                    .bind(i64::from(r.streamed))
                    .bind(i64::from(r.status))
                    .bind(clamp(r.usage.input_tokens))
                    .bind(clamp(r.usage.output_tokens))
                    .bind(clamp(r.usage.cache_read_tokens))
                    .bind(clamp(r.usage.cache_write_tokens))
                    .bind(r.cost_micros)
                    .bind(r.latency_ms)
                    .bind(now);
            }
            q.execute(self.writer()).await?;
        }
        Ok(())
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
