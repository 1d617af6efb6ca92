//! Per-user keys: validation of what clients send, and the mapping between
//! stored rows and the wire shape.

pub mod list;
pub mod secret;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use qlaud_api::{Key, KeyScope, KeyStatus, KeyWithSecret, MintKeyRequest, UpdateKeyRequest, Usd};

use crate::error::{Error, Result};
use crate::store::{KeyActivity, KeyChanges, KeyRow, NewKey, parse_period, parse_scope};
use secret::Secret;

const MAX_NAME_CHARS: usize = 200;
const MAX_METADATA_PAIRS: usize = 50;
const MAX_METADATA_KEY_CHARS: usize = 40;
const MAX_METADATA_VALUE_CHARS: usize = 500;

fn validate_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if name.trim().is_empty() {
        return Err(Error::invalid("name must not be empty"));
    }
    if chars > MAX_NAME_CHARS {
        return Err(Error::invalid(format!(
            "name is {chars} characters long; the limit is {MAX_NAME_CHARS}"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid("name must not contain control characters"));
    }
    Ok(())
}

pub(crate) fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<()> {
    if metadata.len() > MAX_METADATA_PAIRS {
        return Err(Error::invalid(format!(
            "metadata has {} pairs; the limit is {MAX_METADATA_PAIRS}",
            metadata.len()
        )));
    }
    for (k, v) in metadata {
        if k.is_empty() || k.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(Error::invalid(format!(
                "metadata key {k:?} must be 1 to {MAX_METADATA_KEY_CHARS} characters"
            )));
        }
        if qlaud_api::text::has_control(k) || qlaud_api::text::has_control(v) {
            return Err(Error::invalid(format!(
                "metadata key {k:?} and its value must not contain control characters"
            )));
        }
        if v.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(Error::invalid(format!(
                "metadata value of {k:?} is longer than {MAX_METADATA_VALUE_CHARS} characters"
            )));
        }
    }
    Ok(())
}

/// A rate limit as stored: at least 1, and small enough for the store.
fn rate_limit(name: &str, v: Option<u64>) -> Result<Option<i64>> {
    match v {
        None => Ok(None),
        Some(n) if (1..=1_000_000_000_000).contains(&n) => Ok(Some(n as i64)),
        Some(n) => Err(Error::invalid(format!("{name} must be between 1 and 10^12, not {n}"))),
    }
}

/// Checks a mint request and turns it into a row to insert.
pub fn new_key(tenant_id: &str, req: MintKeyRequest) -> Result<NewKey> {
    validate_name(&req.name)?;
    let metadata = req.metadata.unwrap_or_default();
    validate_metadata(&metadata)?;
    Ok(NewKey {
        tenant_id: tenant_id.to_string(),
        name: req.name,
        scope: req.scope.unwrap_or(KeyScope::Standard),
        max_spend_micros: req.max_spend_usd.map(Usd::micros),
        period: req.period.unwrap_or_default(),
        metadata,
        max_requests_per_minute: rate_limit(
            "max_requests_per_minute",
            req.max_requests_per_minute,
        )?,
        max_tokens_per_minute: rate_limit("max_tokens_per_minute", req.max_tokens_per_minute)?,
    })
}

/// Checks an update request and turns it into column changes.
pub fn key_changes(req: UpdateKeyRequest) -> Result<KeyChanges> {
    if req.name.is_none()
        && req.max_spend_usd.is_none()
        && req.remove_max_spend.is_none()
        && req.period.is_none()
        && req.metadata.is_none()
        && req.disabled.is_none()
        && req.max_requests_per_minute.is_none()
        && req.max_tokens_per_minute.is_none()
        && req.remove_rate_limits.is_none()
    {
        return Err(Error::invalid(
            "the update names no field to change (name, max_spend_usd, remove_max_spend, \
             period, metadata, disabled, max_requests_per_minute, max_tokens_per_minute, \
             remove_rate_limits)",
        ));
    }
    let rpm = rate_limit("max_requests_per_minute", req.max_requests_per_minute)?;
    let tpm = rate_limit("max_tokens_per_minute", req.max_tokens_per_minute)?;
    let (max_requests_per_minute, max_tokens_per_minute) = match req.remove_rate_limits {
        Some(true) if rpm.is_some() || tpm.is_some() => {
            return Err(Error::invalid(
                "remove_rate_limits: true contradicts setting a rate limit",
            ));
        }
        Some(true) => (Some(None), Some(None)),
        _ => (rpm.map(Some), tpm.map(Some)),
    };
    if let Some(name) = &req.name {
        validate_name(name)?;
    }
    if let Some(metadata) = &req.metadata {
        validate_metadata(metadata)?;
    }
    let max_spend_micros = match (req.max_spend_usd, req.remove_max_spend) {
        (Some(_), Some(true)) => {
            return Err(Error::invalid(
                "max_spend_usd and remove_max_spend: true contradict each other",
            ));
        }
        (Some(cap), _) => Some(Some(cap.micros())),
        (None, Some(true)) => Some(None),
        (None, _) => None,
    };
    Ok(KeyChanges {
        name: req.name,
        max_spend_micros,
        period: req.period,
        metadata: req.metadata,
        disabled: req.disabled,
        max_requests_per_minute,
        max_tokens_per_minute,
    })
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The wire shape of a stored key.
/// The key as the API shows it, with its activity from the request log.
pub fn to_wire(row: KeyRow, activity: KeyActivity) -> Result<Key> {
    let scope = parse_scope(&row.scope)
        .ok_or_else(|| Error::Internal(format!("stored key scope {:?}", row.scope)))?;
    let period = parse_period(&row.period)
        .ok_or_else(|| Error::Internal(format!("stored key period {:?}", row.period)))?;
    let metadata = serde_json::from_str(&row.metadata)
        .map_err(|e| Error::Internal(format!("stored key metadata: {e}")))?;
    let status = if row.revoked_ms.is_some() {
        KeyStatus::Revoked
    } else if row.disabled != 0 {
        KeyStatus::Disabled
    } else if row.suspended_ms.is_some() {
        KeyStatus::Suspended
    } else {
        KeyStatus::Active
    };
    Ok(Key {
        id: row.id,
        name: row.name,
        scope,
        status,
        max_spend_usd: row.max_spend_micros.and_then(Usd::from_micros),
        max_spend_micros: row.max_spend_micros,
        period,
        max_requests_per_minute: row.max_requests_per_minute.map(|n| n as u64),
        max_tokens_per_minute: row.max_tokens_per_minute.map(|n| n as u64),
        metadata,
        disabled: row.disabled != 0,
        secret_hint: row.secret_hint,
        created_at: time(row.created_ms),
        updated_at: time(row.updated_ms),
        rotated_at: row.rotated_ms.map(time),
        revoked_at: row.revoked_ms.map(time),
        suspended_at: row.suspended_ms.map(time),
        last_used_at: activity.last_used_ms.map(time),
        spend_micros: activity.spend_micros,
    })
}

pub fn with_secret(row: KeyRow, activity: KeyActivity, secret: &Secret) -> Result<KeyWithSecret> {
    Ok(KeyWithSecret { secret: secret.expose().to_string(), key: to_wire(row, activity)? })
}
