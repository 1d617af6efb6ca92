//! Key secrets: generated from the OS CSPRNG, stored only as a SHA-256 hash.
//!
//! A secret carries 238 bits of entropy, so a plain SHA-256 is enough: there
//! is nothing to brute-force, and a fast hash keeps authentication cheap.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every qlaud secret starts with this.
pub const PREFIX: &str = "qlk_live_";
/// Random base62 characters after the prefix.
const RANDOM_CHARS: usize = 40;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A secret in the clear. Its `Debug` output is redacted, so it cannot leak
/// into logs by accident.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn generate() -> Secret {
        let mut out = String::with_capacity(PREFIX.len() + RANDOM_CHARS);
        out.push_str(PREFIX);
        let mut buf = [0u8; 64];
        while out.len() < PREFIX.len() + RANDOM_CHARS {
            getrandom::fill(&mut buf).expect("the OS random number generator works");
            // Rejection sampling: 248 = 4 * 62, so `b % 62` is unbiased below it.
            for b in buf.iter().copied().filter(|b| *b < 248) {
                if out.len() == PREFIX.len() + RANDOM_CHARS {
                    break;
                }
                out.push(BASE62[usize::from(b % 62)] as char);
            }
        }
        Secret(out)
    }

    /// The secret itself, to hand to the client once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash_hex(&self) -> String {
        hash_hex(&self.0)
    }

    /// Enough of the secret to tell keys apart: `qlk_live_AbCd…wXyZ`.
    pub fn hint(&self) -> String {
        let random = &self.0[PREFIX.len()..];
        format!("{PREFIX}{}…{}", &random[..4], &random[random.len() - 4..])
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The stored form of a presented secret.
pub fn hash_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two stored hashes in constant time.
pub fn hashes_match(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Whether a presented string could be a qlaud secret at all; anything else
/// is refused before touching the store.
pub fn looks_like_secret(s: &str) -> bool {
    s.len() == PREFIX.len() + RANDOM_CHARS
        && s.starts_with(PREFIX)
        && s[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_well_formed_and_distinct() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert!(looks_like_secret(a.expose()));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.hash_hex().len(), 64);
        assert!(hashes_match(&a.hash_hex(), &hash_hex(a.expose())));
        assert!(!hashes_match(&a.hash_hex(), &b.hash_hex()));
        assert!(!format!("{a:?}").contains(PREFIX));
        assert!(a.hint().starts_with(PREFIX) && a.hint().contains('…'));
    }
}
