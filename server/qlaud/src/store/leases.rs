//! Budget leases in the store: taking a slice of a key's budget with one
//! conditional statement, topping it up, giving back what it no longer
//! needs, checking it is still good, and settling a stopped process's
//! leases. See `meter::lease` for how requests are admitted against them.

use sqlx::Row;

use super::ledger::{NO_CAP, NewReservation};
use super::{Store, StoreResult};

/// The key conditions a lease is taken, topped up and used under: the key
/// is live, unsuspended, on the period the caller assumed, has no rate
/// limits of its own (those are counted per request), and after the lease
/// at least as much again is left under the cap, so one process's lease
/// never takes the last of a key's budget: near the cap requests are
/// reserved one by one. `$1` key, `$3` micros, `$4` period, `$5` no-cap.
macro_rules! lease_key_ok {
    ($committed:expr) => {
        concat!(
            "EXISTS (SELECT 1 FROM api_keys k WHERE k.id = $1 AND k.period = $4 \
             AND k.revoked_ms IS NULL AND k.disabled = 0 AND k.suspended_ms IS NULL \
             AND k.max_requests_per_minute IS NULL AND k.max_tokens_per_minute IS NULL \
             AND ",
            $committed,
            " + $3 + $3 <= COALESCE(k.max_spend_micros, $5))"
        )
    };
}

impl Store {
    /// Takes a lease of `l.micros` on the key's budget if the key allows
    /// it (see `lease_key_ok`): false when it does not. `l` reads as a
    /// reservation's, with the lease's id (its rate count is not used:
    /// keys with rate limits take no leases).
    pub async fn take_lease(&self, l: &NewReservation<'_>) -> StoreResult<bool> {
        let mut tx = self.writer().begin().await?;
        let taken = sqlx::query(concat!(
            "INSERT INTO key_spend (key_id, period_start_ms, settled_micros, reserved_micros, \
             leased_micros) SELECT $1, $2, 0, 0, $3 WHERE ",
            lease_key_ok!("0"),
            " ON CONFLICT (key_id, period_start_ms) DO UPDATE \
             SET leased_micros = key_spend.leased_micros + excluded.leased_micros WHERE ",
            lease_key_ok!(
                "key_spend.settled_micros + key_spend.reserved_micros + key_spend.leased_micros"
            )
        ))
        .bind(l.key_id)
        .bind(l.period_start_ms)
        .bind(l.micros)
        .bind(l.period)
        .bind(NO_CAP)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !taken {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO leases (id, tenant_id, key_id, period_start_ms, model, provider, \
             endpoint, amount_micros, instance_id, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(l.id)
        .bind(l.tenant_id)
        .bind(l.key_id)
        .bind(l.period_start_ms)
        .bind(l.model)
        .bind(l.provider)
        .bind(l.endpoint)
        .bind(l.micros)
        .bind(l.instance_id)
        .bind(l.now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Adds `micros` to a lease under the same conditions as taking one;
    /// false when the key does not allow it or the lease is gone.
    pub async fn top_up_lease(
        &self,
        id: &str,
        key_id: &str,
        period: &str,
        period_start_ms: i64,
        micros: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.writer().begin().await?;
        // The lease row first, as settling does: one lock order.
        let lease = sqlx::query(
            "UPDATE leases SET amount_micros = amount_micros + $2 WHERE id = $1 AND key_id = $3",
        )
        .bind(id)
        .bind(micros)
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
        if lease.rows_affected() != 1 {
            return Ok(false);
        }
        let spend = sqlx::query(concat!(
            "UPDATE key_spend SET leased_micros = leased_micros + $3 \
             WHERE key_id = $1 AND period_start_ms = $2 AND ",
            lease_key_ok!(
                "key_spend.settled_micros + key_spend.reserved_micros + key_spend.leased_micros"
            )
        ))
        .bind(key_id)
        .bind(period_start_ms)
        .bind(micros)
        .bind(period)
        .bind(NO_CAP)
        .execute(&mut *tx)
        .await?;
        if spend.rows_affected() != 1 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Whether requests may still be admitted against the lease: it is
    /// still held (crash recovery has not settled it), its key is live,
    /// unsuspended, on `period` and without rate limits of its own, and
    /// the key's cap was not lowered below what is settled and held. A
    /// read: every change to a key commits before it answers, so the next
    /// request in any process sees it.
    pub async fn lease_usable(&self, id: &str, period: &str) -> StoreResult<bool> {
        Ok(sqlx::query(
            "SELECT l.id FROM leases l JOIN api_keys k ON k.id = l.key_id \
             JOIN key_spend s ON s.key_id = l.key_id AND s.period_start_ms = l.period_start_ms \
             WHERE l.id = $1 AND k.period = $2 AND k.revoked_ms IS NULL AND k.disabled = 0 \
             AND k.suspended_ms IS NULL AND k.max_requests_per_minute IS NULL \
             AND k.max_tokens_per_minute IS NULL \
             AND s.settled_micros + s.reserved_micros + s.leased_micros \
                 <= COALESCE(k.max_spend_micros, $3)",
        )
        .bind(id)
        .bind(period)
        .bind(NO_CAP)
        .fetch_optional(self.pool())
        .await?
        .is_some())
    }

    /// Gives `micros` of a lease back to its key. False when the lease is
    /// gone (settled by crash recovery after this process was taken for
    /// stopped).
    pub async fn give_back_lease(&self, id: &str, micros: i64) -> StoreResult<bool> {
        let mut tx = self.writer().begin().await?;
        let row = sqlx::query(
            "UPDATE leases SET amount_micros = amount_micros - $2 \
             WHERE id = $1 AND amount_micros >= $2 RETURNING key_id, period_start_ms",
        )
        .bind(id)
        .bind(micros)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(false) };
        sqlx::query(
            "UPDATE key_spend SET leased_micros = leased_micros - $3 \
             WHERE key_id = $1 AND period_start_ms = $2",
        )
        .bind(row.try_get::<String, _>("key_id")?)
        .bind(row.try_get::<i64, _>("period_start_ms")?)
        .bind(micros)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ends a lease that holds nothing any more. `None`: it is gone
    /// already; `Some(false)`: it still holds something (a settlement not
    /// written yet).
    pub async fn end_lease(&self, id: &str) -> StoreResult<Option<bool>> {
        let deleted = sqlx::query("DELETE FROM leases WHERE id = $1 AND amount_micros = 0")
            .bind(id)
            .execute(self.writer())
            .await?
            .rows_affected();
        if deleted == 1 {
            return Ok(Some(true));
        }
        let held = sqlx::query("SELECT id FROM leases WHERE id = $1")
            .bind(id)
            .fetch_optional(self.writer())
            .await?;
        Ok(held.map(|_| false))
    }

    /// Leases held by all processes, and what they hold (for /metrics).
    pub async fn open_leases(&self) -> StoreResult<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) AS micros \
             FROM leases",
        )
        .fetch_one(self.pool())
        .await?;
        Ok((row.try_get("n")?, row.try_get("micros")?))
    }

    /// Settles the leases of processes silent since before `cutoff_ms` at
    /// what each still holds: what that process's requests in flight under
    /// it may have cost is unknown, and the lease bounds it. Each is
    /// settled once (settling deletes it). Returns how many were settled
    /// and at how much.
    pub async fn recover_orphaned_leases(&self, cutoff_ms: i64) -> StoreResult<(u64, i64)> {
        let ids: Vec<String> = sqlx::query(
            "SELECT l.id FROM leases l WHERE NOT EXISTS (SELECT 1 FROM instances i \
             WHERE i.id = l.instance_id AND i.heartbeat_ms >= $1) ORDER BY l.created_ms LIMIT 1000",
        )
        .bind(cutoff_ms)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
        let (mut n, mut micros) = (0, 0);
        for id in ids {
            let mut tx = self.writer().begin().await?;
            let row = sqlx::query(
                "DELETE FROM leases WHERE id = $1 RETURNING tenant_id, key_id, period_start_ms, \
                 model, provider, endpoint, amount_micros, created_ms",
            )
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { continue };
            let amount: i64 = row.try_get("amount_micros")?;
            if amount > 0 {
                let record = super::ledger::recovered_record(&row, id.clone(), Some(id), amount)?;
                super::ledger::apply_in(&mut tx, &[&record]).await?;
                n += 1;
                micros += amount;
            }
            tx.commit().await?;
        }
        Ok((n, micros))
    }
}
