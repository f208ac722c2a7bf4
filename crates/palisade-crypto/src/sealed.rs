//! Authenticated encryption of secrets stored in the database (STOR-3): AES-256-GCM
//! (ring) under a key ring kept outside the database, a fresh random 96-bit nonce per
//! value, and the key id written in clear in each sealed value so a rotation can
//! re-encrypt values that still name an older key. The caller's context (table,
//! column, row id) is bound as associated data, so a sealed value copied into another
//! row or column fails to open.
//!
//! Sealed value: `enc1:<key id, 8 hex>:<base64url(nonce ‖ ciphertext ‖ tag)>`.
//! Key file: one key per line, `palisade-secrets-key-v1 <key id> <base64 of 32 bytes>`;
//! the first line is the current key (used to seal), the others only open.

use data_encoding::{BASE64, BASE64URL_NOPAD, HEXLOWER};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroize;

/// The prefix of every sealed value; anything else in a sealed column is plaintext
/// from before encryption (upgraded at start).
pub const PREFIX: &str = "enc1:";
const LINE_TAG: &str = "palisade-secrets-key-v1";
const KEY_LEN: usize = 32;

/// Why a sealed value or key file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the value is not a sealed secret")]
    Malformed,
    #[error("the value was sealed with key {0}, which is not in the secrets key file")]
    UnknownKey(String),
    #[error("the value failed authentication (wrong key, or the database was altered)")]
    Authentication,
    #[error("the secrets key file is invalid: {0}")]
    KeyFile(String),
}

struct Key {
    id: String,
    raw: [u8; KEY_LEN],
    aead: LessSafeKey,
}

impl Drop for Key {
    fn drop(&mut self) {
        self.raw.zeroize();
    }
}

/// The secrets keys: the current one and any older ones still being rotated out.
pub struct KeyRing {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("ids", &self.ids())
            .finish_non_exhaustive()
    }
}

fn make_key(id: String, raw: [u8; KEY_LEN]) -> Result<Key, SealError> {
    let unbound = UnboundKey::new(&AES_256_GCM, &raw)
        .map_err(|_| SealError::KeyFile("bad key length".into()))?;
    Ok(Key {
        id,
        raw,
        aead: LessSafeKey::new(unbound),
    })
}

fn new_key() -> Result<Key, SealError> {
    let id = HEXLOWER.encode(&crate::token::random_bytes::<4>());
    make_key(id, crate::token::random_bytes::<KEY_LEN>())
}

impl KeyRing {
    /// A ring with one new random key.
    pub fn generate() -> Result<KeyRing, SealError> {
        Ok(KeyRing {
            keys: vec![new_key()?],
        })
    }

    /// Parse a key file's text.
    pub fn parse(text: &str) -> Result<KeyRing, SealError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| SealError::KeyFile(format!("line {}: {what}", n + 1));
            let mut parts = line.split_whitespace();
            if parts.next() != Some(LINE_TAG) {
                return Err(bad("unknown format"));
            }
            let id = parts.next().ok_or_else(|| bad("no key id"))?;
            if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("the key id must be 8 hex digits"));
            }
            let mut decoded = BASE64
                .decode(parts.next().ok_or_else(|| bad("no key"))?.as_bytes())
                .map_err(|_| bad("the key is not base64"))?;
            if decoded.len() != KEY_LEN || parts.next().is_some() {
                decoded.zeroize();
                return Err(bad("the key must be 32 bytes"));
            }
            let mut raw = [0u8; KEY_LEN];
            raw.copy_from_slice(&decoded);
            decoded.zeroize();
            if keys.iter().any(|k: &Key| k.id == id) {
                return Err(bad("duplicate key id"));
            }
            keys.push(make_key(id.to_ascii_lowercase(), raw)?);
        }
        if keys.is_empty() {
            return Err(SealError::KeyFile("no key in the file".into()));
        }
        Ok(KeyRing { keys })
    }

    /// The key file text for this ring (current key first).
    pub fn to_file(&self) -> String {
        let mut out = String::from(
            "# Palisade secrets key: encrypts TOTP secrets and queued mail in the database.\n\
             # Keep it secret and backed up apart from the database; without it those values are lost.\n",
        );
        for key in &self.keys {
            out.push_str(&format!(
                "{LINE_TAG} {} {}\n",
                key.id,
                BASE64.encode(&key.raw)
            ));
        }
        out
    }

    /// The key ids, current first.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    /// The id of the key that seals new values.
    pub fn current_id(&self) -> &str {
        self.keys.first().map_or("", |k| k.id.as_str())
    }

    /// A ring whose current key is a new one, keeping the old keys for opening.
    pub fn rotated(&self) -> Result<KeyRing, SealError> {
        let mut keys = vec![new_key()?];
        for k in &self.keys {
            keys.push(make_key(k.id.clone(), k.raw)?);
        }
        Ok(KeyRing { keys })
    }

    /// A ring with only the current key (after every value is re-sealed with it).
    pub fn current_only(&self) -> Result<KeyRing, SealError> {
        let k = self
            .keys
            .first()
            .ok_or_else(|| SealError::KeyFile("empty ring".into()))?;
        Ok(KeyRing {
            keys: vec![make_key(k.id.clone(), k.raw)?],
        })
    }

    /// Encrypt `plaintext` under the current key, bound to `context`.
    pub fn seal(&self, context: &str, plaintext: &str) -> String {
        // A ring always has a key: every constructor refuses an empty one.
        let Some(key) = self.keys.first() else {
            return String::new();
        };
        let nonce_bytes = crate::token::random_bytes::<NONCE_LEN>();
        let mut buf = plaintext.as_bytes().to_vec();
        let aad = format!("{}:{context}", key.id);
        // Sealing with a valid key and a buffer of any size below 64 GiB cannot fail.
        if key
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .is_err()
        {
            panic!("AES-GCM seal failed");
        }
        let mut blob = nonce_bytes.to_vec();
        blob.extend_from_slice(&buf);
        buf.zeroize();
        format!("{PREFIX}{}:{}", key.id, BASE64URL_NOPAD.encode(&blob))
    }

    /// Decrypt a sealed value made for `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<String, SealError> {
        let rest = sealed.strip_prefix(PREFIX).ok_or(SealError::Malformed)?;
        let (id, body) = rest.split_once(':').ok_or(SealError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let mut blob = BASE64URL_NOPAD
            .decode(body.as_bytes())
            .map_err(|_| SealError::Malformed)?;
        if blob.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Malformed);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&blob[..NONCE_LEN]);
        let aad = format!("{id}:{context}");
        let plain = key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut blob[NONCE_LEN..],
            )
            .map_err(|_| SealError::Authentication)?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| SealError::Authentication);
        blob.zeroize();
        text
    }

    /// Whether a stored value is sealed (otherwise it is plaintext awaiting upgrade).
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }

    /// The key id a sealed value names.
    pub fn key_id_of(value: &str) -> Option<&str> {
        value
            .strip_prefix(PREFIX)?
            .split_once(':')
            .map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stor3_round_trip_and_context_binding() {
        let ring = KeyRing::generate().expect("ring");
        let sealed = ring.seal("users.totp:a", "JBSWY3DPEHPK3PXP");
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_ne!(
            sealed,
            ring.seal("users.totp:a", "JBSWY3DPEHPK3PXP"),
            "nonces are random"
        );
        assert_eq!(
            ring.open("users.totp:a", &sealed).as_deref(),
            Ok("JBSWY3DPEHPK3PXP")
        );
        assert_eq!(
            ring.open("users.totp:b", &sealed),
            Err(SealError::Authentication),
            "a value moved to another row must not open"
        );
    }

    #[test]
    fn stor3_tampering_and_wrong_keys_fail() {
        let ring = KeyRing::generate().expect("ring");
        let sealed = ring.seal("c", "secret");
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert!(ring.open("c", &tampered).is_err());
        let other = KeyRing::generate().expect("ring");
        assert!(matches!(
            other.open("c", &sealed),
            Err(SealError::UnknownKey(_))
        ));
        // Same id, different key bytes: authentication fails.
        let forged = KeyRing::parse(
            &other
                .to_file()
                .replace(other.current_id(), ring.current_id()),
        )
        .expect("parse");
        assert_eq!(forged.open("c", &sealed), Err(SealError::Authentication));
    }

    #[test]
    fn stor3_key_file_round_trip_and_rotation() {
        let ring = KeyRing::generate().expect("ring");
        let parsed = KeyRing::parse(&ring.to_file()).expect("parse");
        assert_eq!(parsed.ids(), ring.ids());
        let old = ring.seal("c", "v");
        let rotated = ring.rotated().expect("rotate");
        assert_ne!(rotated.current_id(), ring.current_id());
        assert_eq!(rotated.open("c", &old).as_deref(), Ok("v"));
        let only = rotated.current_only().expect("only");
        assert!(only.open("c", &old).is_err());
        assert!(KeyRing::parse("").is_err());
        assert!(KeyRing::parse("palisade-secrets-key-v1 0011aabb c2hvcnQ=").is_err());
    }
}
