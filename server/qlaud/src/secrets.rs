//! Secrets at rest: the tenants' Stripe keys and signing secrets are stored
//! sealed with ChaCha20-Poly1305 under a key the operator provides
//! (`QLAUD_SECRET_KEY` or `--secret-key-file`; on SQLite generated into the
//! data directory on first start).
//!
//! A rolling rotation gives every process the new key as the current one
//! and the old as the previous (`QLAUD_SECRET_KEY_PREVIOUS` or
//! `--previous-secret-key-file`): values are always sealed with the current
//! key and opened with whichever of the two sealed them, so processes on
//! either side of the rotation keep working while `qlaud admin
//! rotate-secret-key` re-seals what the previous key sealed.
//!
//! A sealed value is `qlaud-sealed:v1:<key id>:<base64(nonce ‖ ciphertext)>`:
//! the version leaves room for another cipher, the key id (the first bytes
//! of the key's SHA-256) says which key sealed it, so a wrong key is named
//! as such instead of failing as corrupt data. The associated data binds a
//! value to its table, column and tenant, so a sealed secret copied into
//! another tenant's row does not open.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use sha2::{Digest, Sha256};

const PREFIX: &str = "qlaud-sealed:v1:";
const NONCE_BYTES: usize = 12;
/// The key file qlaud makes in the data directory on SQLite.
pub const KEY_FILE: &str = "secret.key";

/// A 32-byte key; its bytes are never printed.
#[derive(Clone)]
pub struct SecretKey {
    key: [u8; 32],
    id: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SecretKey {
    fn from_bytes(key: [u8; 32]) -> SecretKey {
        let id = hex::encode(&Sha256::digest(key)[..6]);
        SecretKey { key, id }
    }

    /// A fresh random key.
    pub fn generate() -> SecretKey {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random number generator works");
        SecretKey::from_bytes(key)
    }

    /// Reads a key written as base64 (what qlaud writes) or 64 hex digits.
    pub fn parse(text: &str) -> anyhow::Result<SecretKey> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            BASE64.decode(text).ok()
        };
        let key: [u8; 32] = bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
            anyhow::anyhow!(
                "a secret key is 32 random bytes written as base64 or 64 hex digits \
                 (`openssl rand -base64 32` makes one)"
            )
        })?;
        Ok(SecretKey::from_bytes(key))
    }

    /// The key as qlaud writes it to a file.
    pub fn encode(&self) -> String {
        BASE64.encode(self.key)
    }

    /// Which key this is, as sealed values name it (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&self.key.into())
    }

    /// Seals `plain`, bound to `context` (its table, column and owner).
    pub fn seal(&self, plain: &str, context: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the OS random number generator works");
        let payload = Payload { msg: plain.as_bytes(), aad: context.as_bytes() };
        let sealed = self
            .cipher()
            .encrypt(&Nonce::from(nonce), payload)
            .expect("sealing a short value cannot fail");
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.id, BASE64.encode(out))
    }

    /// Opens a value [`SecretKey::seal`] made with this key for `context`.
    pub fn open(&self, stored: &str, context: &str) -> Result<String, OpenError> {
        let (id, body) = parse_sealed(stored).ok_or(OpenError::Malformed)?;
        if id != self.id {
            return Err(OpenError::OtherKey(id.to_string()));
        }
        let bytes = BASE64.decode(body).map_err(|_| OpenError::Malformed)?;
        if bytes.len() < NONCE_BYTES {
            return Err(OpenError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| OpenError::Malformed)?;
        let payload = Payload { msg: sealed, aad: context.as_bytes() };
        let plain =
            self.cipher().decrypt(&Nonce::from(nonce), payload).map_err(|_| OpenError::Corrupt)?;
        String::from_utf8(plain).map_err(|_| OpenError::Corrupt)
    }
}

/// The key that seals, and during a rolling rotation the one before it,
/// which still opens what it sealed.
#[derive(Clone, Debug)]
pub struct Keyring {
    pub current: SecretKey,
    pub previous: Option<SecretKey>,
}

impl Keyring {
    /// Seals with the current key.
    pub fn seal(&self, plain: &str, context: &str) -> String {
        self.current.seal(plain, context)
    }

    /// Opens a value sealed with either key.
    pub fn open(&self, stored: &str, context: &str) -> Result<String, OpenError> {
        match &self.previous {
            Some(previous) if sealed_key_id(stored) == Some(previous.id()) => {
                previous.open(stored, context)
            }
            _ => self.current.open(stored, context),
        }
    }
}

/// Why a stored secret does not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("it was sealed with another secret key (id {0})")]
    OtherKey(String),
    #[error("it is not a sealed value this version of qlaud reads")]
    Malformed,
    #[error("it does not open with this key (altered, or moved from another row)")]
    Corrupt,
}

/// Whether a stored value is sealed (else it is plain text from before
/// secrets were sealed).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with("qlaud-sealed:")
}

/// The key id of a sealed value, if it is one this version reads.
pub fn sealed_key_id(stored: &str) -> Option<&str> {
    parse_sealed(stored).map(|(id, _)| id)
}

fn parse_sealed(stored: &str) -> Option<(&str, &str)> {
    stored.strip_prefix(PREFIX)?.split_once(':')
}

/// Where the key comes from: `QLAUD_SECRET_KEY`, else `--secret-key-file`,
/// else (SQLite only) the data directory's key file, made when absent; and
/// the previous key of a rolling rotation, if one is under way
/// (`QLAUD_SECRET_KEY_PREVIOUS`, else `--previous-secret-key-file`).
#[derive(Clone, Debug, Default)]
pub struct KeySource {
    pub value: Option<String>,
    pub file: Option<PathBuf>,
    pub previous_value: Option<String>,
    pub previous_file: Option<PathBuf>,
    /// SQLite's data directory: where a key is generated when none is given.
    pub data_dir: Option<PathBuf>,
}

impl KeySource {
    /// This source for the store at `url`: on SQLite, unless a data
    /// directory is given, the database file's directory is the one.
    pub fn for_url(&self, url: &str) -> KeySource {
        let mut source = self.clone();
        if source.data_dir.is_none() && url.starts_with("sqlite:") {
            source.data_dir = url
                .strip_prefix("sqlite://")
                .map(|rest| rest.split('?').next().unwrap_or(rest))
                .filter(|file| !file.is_empty() && !file.starts_with(':'))
                .and_then(|file| Path::new(file).parent().map(Path::to_path_buf));
        }
        source
    }

    /// The data directory's key file, when that is where the key comes
    /// from (neither a key nor a key file given).
    pub fn generated_file(&self) -> Option<PathBuf> {
        if self.value.is_some() || self.file.is_some() {
            return None;
        }
        self.data_dir.as_ref().map(|d| d.join(KEY_FILE))
    }

    /// The previous key, when one is given.
    pub fn load_previous(&self) -> anyhow::Result<Option<SecretKey>> {
        if let Some(value) = &self.previous_value {
            return SecretKey::parse(value)
                .map(Some)
                .map_err(|e| e.context("QLAUD_SECRET_KEY_PREVIOUS"));
        }
        self.previous_file.as_deref().map(read_key_file).transpose()
    }

    /// The key to use, or `None` when none is configured (PostgreSQL
    /// without one).
    pub fn load(&self) -> anyhow::Result<Option<SecretKey>> {
        if let Some(value) = &self.value {
            return SecretKey::parse(value).map(Some).map_err(|e| e.context("QLAUD_SECRET_KEY"));
        }
        if let Some(file) = &self.file {
            return read_key_file(file).map(Some);
        }
        let Some(dir) = &self.data_dir else { return Ok(None) };
        let file = dir.join(KEY_FILE);
        if file.exists() {
            return read_key_file(&file).map(Some);
        }
        let key = SecretKey::generate();
        if !create_key_file(&file, &key)? {
            // Another process starting on this data directory was first.
            return read_key_file(&file).map(Some);
        }
        tracing::info!(
            file = %file.display(),
            key_id = key.id(),
            "generated the key that seals stored secrets; back it up with the database"
        );
        Ok(Some(key))
    }
}

fn read_key_file(path: &Path) -> anyhow::Result<SecretKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading the secret key file {}: {e}", path.display()))?;
    SecretKey::parse(&text).map_err(|e| e.context(format!("secret key file {}", path.display())))
}

/// Writes `key` to `path`, readable by the owner only, replacing any file
/// there atomically (a rename), so a crash never leaves half a key.
pub fn write_key_file(path: &Path, key: &SecretKey) -> anyhow::Result<()> {
    rename_into(&write_temporary(path, key)?, path)
}

/// Writes `key` to `path` unless a file is there: false when another
/// process starting on the same data directory wrote its key first (a hard
/// link does not replace, so both end up with the one key).
fn create_key_file(path: &Path, key: &SecretKey) -> anyhow::Result<bool> {
    let tmp = write_temporary(path, key)?;
    let created = match std::fs::hard_link(&tmp, path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        // A file system without hard links: a rename, as before.
        Err(_) => return rename_into(&tmp, path).map(|()| true),
    };
    let _ = std::fs::remove_file(&tmp);
    Ok(created)
}

fn rename_into(tmp: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        anyhow::anyhow!("writing the secret key file {}: {e}", path.display())
    })
}

/// `key` in a new file of its own beside `path`, synced to disk.
fn write_temporary(path: &Path, key: &SecretKey) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension(format!("key.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("writing the secret key file {}: {e}", tmp.display()))?;
    let written = f.write_all(format!("{}\n", key.encode()).as_bytes()).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!("writing the secret key file {}: {e}", tmp.display());
    }
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = SecretKey::generate();
        let sealed = key.seal("sk_test_123", "billing_settings.stripe_secret_key:t1");
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("sk_test_123"));
        assert_eq!(sealed_key_id(&sealed), Some(key.id()));
        assert_eq!(
            key.open(&sealed, "billing_settings.stripe_secret_key:t1").unwrap(),
            "sk_test_123"
        );
        // Another tenant's row, another column: refused.
        assert!(matches!(
            key.open(&sealed, "billing_settings.stripe_secret_key:t2"),
            Err(OpenError::Corrupt)
        ));
        // Another key: named as such.
        let other = SecretKey::generate();
        assert!(matches!(
            other.open(&sealed, "billing_settings.stripe_secret_key:t1"),
            Err(OpenError::OtherKey(_))
        ));
        // Two seals of one value differ (fresh nonces).
        assert_ne!(sealed, key.seal("sk_test_123", "billing_settings.stripe_secret_key:t1"));
        // Tampering is caught.
        let mut bad = sealed.clone();
        bad.pop();
        bad.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(key.open(&bad, "billing_settings.stripe_secret_key:t1").is_err());
    }

    #[test]
    fn a_keyring_seals_with_the_current_key_and_opens_with_both() {
        let (old, new) = (SecretKey::generate(), SecretKey::generate());
        let by_old = old.seal("sk_test_1", "c");
        let ring = Keyring { current: new.clone(), previous: Some(old.clone()) };
        assert_eq!(ring.open(&by_old, "c").unwrap(), "sk_test_1");
        let by_ring = ring.seal("sk_test_2", "c");
        assert_eq!(sealed_key_id(&by_ring), Some(new.id()));
        assert_eq!(ring.open(&by_ring, "c").unwrap(), "sk_test_2");
        // The old key alone does not open what the ring sealed.
        let alone = Keyring { current: old, previous: None };
        assert!(matches!(alone.open(&by_ring, "c"), Err(OpenError::OtherKey(_))));
        assert!(ring.open(&by_old, "other").is_err());
    }

    #[test]
    fn keys_parse_from_base64_and_hex_only_at_32_bytes() {
        let key = SecretKey::generate();
        assert_eq!(SecretKey::parse(&key.encode()).unwrap().id(), key.id());
        assert_eq!(
            SecretKey::parse(&format!(" {}\n", hex::encode(key.key))).unwrap().id(),
            key.id()
        );
        assert!(SecretKey::parse("c2hvcnQ=").is_err());
        assert!(SecretKey::parse("").is_err());
        assert!(!format!("{key:?}").contains(&key.encode()));
    }

    #[test]
    fn processes_starting_together_share_one_generated_key() {
        let dir = std::env::temp_dir().join(format!("qlaud-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = KeySource { data_dir: Some(dir.clone()), ..KeySource::default() };
        let start = std::sync::Barrier::new(8);
        let ids: Vec<String> = std::thread::scope(|s| {
            let loads: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        source.load().unwrap().unwrap().id().to_string()
                    })
                })
                .collect();
            loads.into_iter().map(|l| l.join().unwrap()).collect()
        });
        let on_disk = read_key_file(&dir.join(KEY_FILE)).unwrap();
        assert!(ids.iter().all(|id| id == on_disk.id()), "{ids:?}");
        let left: Vec<_> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
