//! `Stripe-Signature` verification: `t=<unix>,v1=<hex>[,v1=<hex>…]`, where
//! each `v1` is HMAC-SHA256 of `"{t}.{raw body}"` keyed with the endpoint's
//! `whsec_…` secret (the whole string, as Stripe's libraries use it).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How old a signature may be.
pub const TOLERANCE_SECS: i64 = 300;

pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks `header` for `body` at `now` (Unix seconds); says what is wrong.
pub fn verify(header: Option<&str>, body: &[u8], secret: &str, now: i64) -> Result<(), String> {
    let header = header.ok_or("missing Stripe-Signature header")?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = v.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("Stripe-Signature has no valid timestamp")?;
    if signatures.is_empty() {
        return Err("Stripe-Signature has no v1 signature".into());
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(format!(
            "Stripe-Signature timestamp is outside the {TOLERANCE_SECS} s tolerance"
        ));
    }
    let expected = sign(secret, timestamp, body);
    // Stripe may send several v1 values (while a secret is being rolled).
    let ok = signatures.iter().any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())));
    if ok { Ok(()) } else { Err("no Stripe-Signature v1 matches the payload".into()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_and_rejects_tampered_stale_and_unsigned() {
        let (secret, body, t) = ("whsec_test", br#"{"id":"evt_1"}"#, 1_700_000_000);
        let good = format!("t={t},v1={}", sign(secret, t, body));
        assert!(verify(Some(&good), body, secret, t + 10).is_ok());
        let rolled = format!("t={t},v1=deadbeef,v1={},v0=old", sign(secret, t, body));
        assert!(verify(Some(&rolled), body, secret, t).is_ok());
        assert!(verify(Some(&good), br#"{"id":"evt_2"}"#, secret, t).is_err());
        assert!(verify(Some(&good), body, secret, t + 301).is_err());
        assert!(verify(Some(&good), body, "whsec_other", t).is_err());
        assert!(verify(None, body, secret, t).is_err());
        assert!(verify(Some("t=abc"), body, secret, t).is_err());
    }
}
