//! Standard Webhooks signing (<https://www.standardwebhooks.com>): every
//! call qlaud makes to a tenant's URL carries `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64>`, the HMAC-SHA256
//! of `"{id}.{timestamp}.{body}"` keyed with the decoded bytes of the
//! tenant's `whsec_…` secret, so one verifier serves tools, jobs and alerts.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Every outgoing signing secret starts with this.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a secret qlaud makes.
const SECRET_BYTES: usize = 32;

/// A tenant's outgoing signing secret, decoded. `Debug` is redacted so it
/// cannot reach a log.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl WebhookSecret {
    /// A fresh secret in its shown form, `whsec_<base64 of 32 random bytes>`.
    pub fn generate() -> String {
        let mut key = [0u8; SECRET_BYTES];
        getrandom::fill(&mut key).expect("the OS random number generator works");
        format!("{SECRET_PREFIX}{}", BASE64.encode(key))
    }

    /// Reads a `whsec_…` secret (as stored or shown).
    pub fn parse(secret: &str) -> Result<WebhookSecret, &'static str> {
        let encoded =
            secret.strip_prefix(SECRET_PREFIX).ok_or("the secret must start with whsec_")?;
        let key = BASE64.decode(encoded).map_err(|_| "the secret is not base64 after whsec_")?;
        if key.is_empty() {
            return Err("the secret is empty");
        }
        Ok(WebhookSecret { key })
    }

    /// The `webhook-signature` value for one message: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// A fresh message id, `msg_…`. It stays the same across retries of one
/// message, so receivers can drop duplicates.
pub fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference
    /// libraries (secret, id, timestamp, payload and expected signature).
    #[test]
    fn signs_the_reference_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature =
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn generated_secrets_are_32_random_bytes_and_redacted() {
        let a = WebhookSecret::generate();
        let b = WebhookSecret::generate();
        assert_ne!(a, b);
        let parsed = WebhookSecret::parse(&a).unwrap();
        assert_eq!(parsed.key.len(), SECRET_BYTES);
        assert!(!format!("{parsed:?}").contains(&a[SECRET_PREFIX.len()..]));
        assert!(WebhookSecret::parse("qlaud_whsec_abc").is_err());
        assert!(WebhookSecret::parse("whsec_!!").is_err());
        assert!(message_id().starts_with("msg_"));
    }
}
