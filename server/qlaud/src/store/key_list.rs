//! Keys with what they did: last use and spend in the current cap window,
//! read from the request log, and the key listing that searches and sorts
//! by them.

use qlaud_api::{KeySort, SortDirection};
use sqlx::FromRow;

use super::{KeyRow, Store, StoreResult};

/// The start (Unix ms) of the current window of each cap period, so a query
/// can sum each key's spend over its own window.
#[derive(Clone, Copy, Debug)]
pub struct WindowStarts {
    pub monthly: i64,
    pub weekly: i64,
    pub daily: i64,
}

/// A key's activity, from the request log.
#[derive(Clone, Copy, Debug, Default, FromRow)]
pub struct KeyActivity {
    pub last_used_ms: Option<i64>,
    pub spend_micros: i64,
}

/// A key as listed: the row and its activity.
#[derive(Clone, Debug, FromRow)]
pub struct ListedKey {
    #[sqlx(flatten)]
    pub key: KeyRow,
    #[sqlx(flatten)]
    pub activity: KeyActivity,
}

/// What to list.
pub struct KeyQuery<'a> {
    pub tenant_id: &'a str,
    pub include_revoked: bool,
    /// Empty for every key.
    pub search: &'a str,
    pub sort: KeySort,
    pub direction: SortDirection,
    /// The cursor: the last key's sort value (numeric orders) and id.
    pub after: Option<(i64, &'a str)>,
    pub limit: u32,
    pub windows: WindowStarts,
}

// The tenant's keys (filtered) with their activity. Parameters: $1 tenant,
// $2 include revoked (0/1), $3 search text, $4 its LIKE pattern, $5–$7 the
// monthly, weekly and daily window starts (UTC midnights, so whole hours of
// the hourly rollup). A macro so every query stays
// `&'static str`.
macro_rules! keys_with_activity {
    () => {
        "SELECT k.id, k.tenant_id, k.name, k.scope, k.secret_hint, k.max_spend_micros, \
           k.period, k.metadata, k.disabled, k.created_ms, k.updated_ms, k.rotated_ms, \
           k.revoked_ms, k.suspended_ms, k.max_requests_per_minute, k.max_tokens_per_minute, \
           (SELECT MAX(r.created_ms) FROM requests r WHERE r.key_id = k.id) AS last_used_ms, \
           (SELECT CAST(COALESCE(SUM(h.cost_micros), 0) AS BIGINT) FROM usage_hourly h \
             WHERE h.key_id = k.id AND h.hour_ms >= CASE k.period \
               WHEN 'monthly' THEN $5 WHEN 'weekly' THEN $6 WHEN 'daily' THEN $7 \
               ELSE $8 END) AS spend_micros \
         FROM api_keys k WHERE k.tenant_id = $1 AND ($2 = 1 OR k.revoked_ms IS NULL) \
           AND ($3 = '' OR LOWER(k.name) LIKE $4 ESCAPE '\\' OR k.id = $3)"
    };
}

// Numeric orders: the sort value is the column times $9 (1 or -1), so one
// statement serves both directions; the cursor is ($10 value, $11 id).
const BY_NUMBER: &str = concat!(
    "SELECT * FROM (SELECT x.*, CASE $12 WHEN 'created_at' THEN x.created_ms \
       WHEN 'last_used_at' THEN COALESCE(x.last_used_ms, -1) ELSE x.spend_micros END * $9 \
       AS sort_value FROM (",
    keys_with_activity!(),
    ") x) y WHERE (y.sort_value > $10 OR (y.sort_value = $10 AND y.id > $11)) \
     ORDER BY y.sort_value, y.id LIMIT $13"
);

// Name orders compare with the last key's current name, found by its id
// ($11, empty on the first page). Every statement here takes the same
// parameters, and PostgreSQL refuses a bind with more parameters than the
// statement names, so the ones unused ($9, $10, $12) appear in no-op
// comparisons.
const BY_NAME_ASC: &str = concat!(
    "SELECT * FROM (",
    keys_with_activity!(),
    ") y WHERE ($9 = $9 AND $10 = $10 AND $12 = $12) AND ($11 = '' \
       OR LOWER(y.name) > (SELECT LOWER(name) FROM api_keys WHERE id = $11) \
       OR (LOWER(y.name) = (SELECT LOWER(name) FROM api_keys WHERE id = $11) AND y.id > $11)) \
     ORDER BY LOWER(y.name), y.id LIMIT $13"
);
const BY_NAME_DESC: &str = concat!(
    "SELECT * FROM (",
    keys_with_activity!(),
    ") y WHERE ($9 = $9 AND $10 = $10 AND $12 = $12) AND ($11 = '' \
       OR LOWER(y.name) < (SELECT LOWER(name) FROM api_keys WHERE id = $11) \
       OR (LOWER(y.name) = (SELECT LOWER(name) FROM api_keys WHERE id = $11) AND y.id < $11)) \
     ORDER BY LOWER(y.name) DESC, y.id DESC LIMIT $13"
);

const ONE: &str = concat!(keys_with_activity!(), " AND ($9 = $9) AND k.id = $10");

/// `%text%` for LIKE, with LIKE's own characters escaped.
fn like_pattern(search: &str) -> String {
    let mut p = String::from("%");
    for c in search.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

fn sort_name(sort: KeySort) -> &'static str {
    match sort {
        KeySort::CreatedAt => "created_at",
        KeySort::Name => "name",
        KeySort::LastUsedAt => "last_used_at",
        KeySort::Spend => "spend",
    }
}

impl ListedKey {
    /// The key's value in a numeric order (what the cursor carries).
    pub fn sort_value(&self, sort: KeySort, direction: SortDirection) -> i64 {
        let v = match sort {
            KeySort::CreatedAt => self.key.created_ms,
            KeySort::LastUsedAt => self.activity.last_used_ms.unwrap_or(-1),
            KeySort::Spend => self.activity.spend_micros,
            KeySort::Name => 0,
        };
        if direction == SortDirection::Desc { -v } else { v }
    }
}

impl Store {
    /// Up to `limit` keys after the cursor, in the order asked for.
    pub async fn list_keys(&self, q: &KeyQuery<'_>) -> StoreResult<Vec<ListedKey>> {
        let sql = match (q.sort, q.direction) {
            (KeySort::Name, SortDirection::Asc) => BY_NAME_ASC,
            (KeySort::Name, SortDirection::Desc) => BY_NAME_DESC,
            _ => BY_NUMBER,
        };
        let sign: i64 = if q.direction == SortDirection::Desc { -1 } else { 1 };
        let (after_value, after_id) = q.after.unwrap_or((i64::MIN, ""));
        Ok(sqlx::query_as::<_, ListedKey>(sql)
            .bind(q.tenant_id)
            .bind(i64::from(q.include_revoked))
            .bind(q.search)
            .bind(like_pattern(q.search))
            .bind(q.windows.monthly)
            .bind(q.windows.weekly)
            .bind(q.windows.daily)
            .bind(0_i64)
            .bind(sign)
            .bind(after_value)
            .bind(after_id)
            .bind(sort_name(q.sort))
            .bind(i64::from(q.limit))
            .fetch_all(self.pool())
            .await?)
    }

    /// One key's activity (zero and never for an unknown id).
    pub async fn key_activity(
        &self,
        tenant_id: &str,
        key_id: &str,
        windows: WindowStarts,
    ) -> StoreResult<KeyActivity> {
        let row = sqlx::query_as::<_, ListedKey>(ONE)
            .bind(tenant_id)
            .bind(1_i64)
            .bind("")
            .bind("%")
            .bind(windows.monthly)
            .bind(windows.weekly)
            .bind(windows.daily)
            .bind(0_i64)
            .bind(0_i64)
            .bind(key_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.activity).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(super::like_pattern("Ab_1%"), "%ab\\_1\\%%");
        assert_eq!(super::like_pattern(""), "%%");
    }
}
