//! The operator's OpenPGP key that signs security.txt (RFC 9116 §2.3): loading and
//! checking it, and cleartext signatures (RFC 9580 §7), one per distinct content.

use crate::error::{Error, Result};
use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, Deserializable, SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureConfig, SignatureType, Subpacket, SubpacketData};
use pgp::types::{KeyDetails, KeyVersion, Password, SigningKey, Timestamp};
use std::path::Path;
use std::sync::Arc;

/// Largest key file accepted: an armoured RSA-4096 key with subkeys is ~10 KiB.
const MAX_KEY_FILE_BYTES: u64 = 256 * 1024;

/// Administrators are warned this long before the key stops being able to sign.
pub const EXPIRY_WARNING_SECS: i64 = 30 * 86_400;

/// Which part of the key signs: the primary key, or a signing-capable subkey.
#[derive(Clone, Copy)]
enum Part {
    Primary,
    Subkey(usize),
}

/// A loaded, checked signing key with its passphrase and the last signed text.
pub struct SecurityTxtKey {
    key: SignedSecretKey,
    part: Part,
    password: Password,
    /// Upper-case hex fingerprint of the signing (sub)key, for logs and the console.
    pub fingerprint: String,
    /// Unix seconds after which the signing part no longer signs (`None`: no expiry).
    pub expires_at: Option<i64>,
    /// The last content signed and its signed form. Keyed by content, so requests never
    /// cost a signature: one is made when the content changes (daily, with `Expires`).
    /// An async mutex, so the one request that signs makes the others wait for its result.
    cache: tokio::sync::Mutex<Option<Cached>>,
}

/// The last signed security.txt.
struct Cached {
    content: String,
    signed: Arc<str>,
    /// The content's own `Expires` (unix seconds).
    valid_until: i64,
    /// After a failed signing, when to try again (unix seconds).
    retry_at: i64,
}

impl std::fmt::Debug for SecurityTxtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityTxtKey")
            .field("fingerprint", &self.fingerprint)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn fail(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Config(format!("{}: {what}", path.display()))
}

/// A time for messages, e.g. `2027-01-31 12:00 UTC`.
pub fn utc(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// The newest signature of `sigs` by creation time.
fn newest(sigs: &[Signature]) -> Option<&Signature> {
    sigs.iter()
        .max_by_key(|s| s.created().map_or(0, |t| t.as_secs()))
}

/// Unix seconds at which a key created at `created` expires per `sig`, if it does.
fn expiry(created: Timestamp, sig: &Signature) -> Option<i64> {
    sig.key_expiration_time()
        .map(|d| d.as_secs())
        .filter(|&d| d != 0)
        .map(|d| i64::from(created.as_secs()) + i64::from(d))
}

impl SecurityTxtKey {
    /// Load an ASCII-armoured secret key from `path` (which must be private to the hub's
    /// user), pick the part that may sign (the primary key if its flags allow, else the
    /// newest signing subkey), and prove it signs with `passphrase` at `now`.
    pub fn load(path: &Path, passphrase: Option<&str>, now: i64) -> Result<SecurityTxtKey> {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(fail(path, "is not a file"));
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(fail(
                path,
                format!(
                    "is readable by other users (mode {:o}); run chmod 600 on it",
                    mode & 0o777
                ),
            ));
        }
        let mut text = String::new();
        file.take(MAX_KEY_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|_| {
                fail(
                    path,
                    "is not an ASCII-armoured OpenPGP secret key (not text)",
                )
            })?;
        if text.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(fail(
                path,
                "is larger than 256 KiB; export only the one secret key",
            ));
        }
        let (key, _) = SignedSecretKey::from_string(&text).map_err(|e| {
            fail(
                path,
                format!(
                    "is not an ASCII-armoured OpenPGP secret key ({e}); export one with gpg --armor --export-secret-keys KEYID"
                ),
            )
        })?;
        key.verify_bindings().map_err(|e| {
            fail(
                path,
                format!(
                    "the key's signatures do not verify ({e}); export it without others' certifications: gpg --armor --export-options export-minimal --export-secret-keys KEYID"
                ),
            )
        })?;
        if !key.details.revocation_signatures.is_empty() {
            return Err(fail(path, "the key is revoked"));
        }
        let primary_created = key.primary_key.created_at();
        // The primary key's flags and expiry live on its newest self-signature (direct-key
        // or user ID binding).
        let mut self_sigs: Vec<&Signature> = key.details.direct_signatures.iter().collect();
        for u in &key.details.users {
            self_sigs.extend(u.signatures.iter());
        }
        let primary_self = self_sigs
            .into_iter()
            .max_by_key(|s| s.created().map_or(0, |t| t.as_secs()));
        let primary_expiry = primary_self.and_then(|s| expiry(primary_created, s));
        let primary_signs = primary_self.is_some_and(|s| s.key_flags().sign());

        let mut part = None;
        let mut part_expiry = None;
        if primary_signs {
            part = Some(Part::Primary);
            part_expiry = primary_expiry;
        } else {
            let mut best: Option<(usize, u32)> = None;
            for (i, sub) in key.secret_subkeys.iter().enumerate() {
                let Some(binding) = newest(&sub.signatures) else {
                    continue;
                };
                if binding.typ() != Some(SignatureType::SubkeyBinding)
                    || !binding.key_flags().sign()
                {
                    continue;
                }
                let sub_expiry = expiry(sub.key.created_at(), binding);
                if sub_expiry.is_some_and(|e| e <= now) {
                    continue;
                }
                let created = sub.key.created_at().as_secs();
                if best.is_none_or(|(_, c)| created > c) {
                    best = Some((i, created));
                    part_expiry = sub_expiry;
                }
            }
            if let Some((i, _)) = best {
                part = Some(Part::Subkey(i));
            }
        }
        let Some(part) = part else {
            return Err(fail(
                path,
                "has no key that may sign (neither the primary key nor a subkey has the sign flag, or every signing subkey has expired)",
            ));
        };
        // A subkey cannot outlive its primary key.
        let expires_at = match (part_expiry, primary_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = expires_at
            && at <= now
        {
            return Err(fail(
                path,
                format!(
                    "the signing key expired on {}; extend it with gpg --quick-set-expire and export it again",
                    utc(at)
                ),
            ));
        }
        let password = passphrase.map_or_else(Password::empty, Password::from);
        let fingerprint = match part {
            Part::Primary => key.primary_key.fingerprint(),
            Part::Subkey(i) => key.secret_subkeys[i].key.fingerprint(),
        };
        let signer = SecurityTxtKey {
            fingerprint: fingerprint.to_string().to_ascii_uppercase(),
            key,
            part,
            password,
            expires_at,
            cache: tokio::sync::Mutex::new(None),
        };
        // Prove the passphrase unlocks it and the signature verifies with the public key.
        let probe = signer
            .sign_now("palisade: signing test\n")
            .map_err(|e| fail(path, format!("cannot sign with this key: {e}")))?;
        let (message, _) = CleartextSignedMessage::from_string(&probe)
            .map_err(|e| fail(path, format!("the test signature does not parse: {e}")))?;
        let verified = match signer.part {
            Part::Primary => message
                .verify(signer.key.primary_key.public_key())
                .map(|_| ()),
            Part::Subkey(i) => message
                .verify(signer.key.secret_subkeys[i].key.public_key())
                .map(|_| ()),
        };
        verified.map_err(|e| fail(path, format!("the test signature does not verify: {e}")))?;
        Ok(signer)
    }

    /// The public half (primary key, user IDs and subkeys), ASCII-armoured, to publish.
    pub fn public_key_armored(&self) -> Result<String> {
        let public: SignedPublicKey = self.key.to_public_key();
        public
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| Error::Config(format!("OpenPGP public key: {e}")))
    }

    /// Whether the key no longer signs within [`EXPIRY_WARNING_SECS`] of `now`.
    pub fn expires_soon(&self, now: i64) -> bool {
        self.expires_at
            .is_some_and(|at| at - now <= EXPIRY_WARNING_SECS)
    }

    /// `text` as a cleartext-signed message (`Hash: SHA512`, dash-escaped). Signs
    /// afresh only when `text` differs from the last one signed. `valid_until` is the
    /// text's own `Expires`: if signing fails (the key expired while the hub ran), the
    /// last signed file is served while its `Expires` holds, never an unsigned one.
    pub async fn signed(
        self: &Arc<Self>,
        text: &str,
        valid_until: i64,
        now: i64,
    ) -> Result<Arc<str>> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && (c.content == text || c.retry_at > now)
        {
            if c.content == text || c.valid_until > now {
                return Ok(c.signed.clone());
            }
            return Err(Error::Config(format!(
                "the OpenPGP key {} cannot sign security.txt",
                self.fingerprint
            )));
        }
        let fresh = if self.expires_at.is_some_and(|at| at <= now) {
            Err(Error::Config(format!(
                "the OpenPGP key {} that signs security.txt has expired",
                self.fingerprint
            )))
        } else {
            // Unlocking the key runs its passphrase's key derivation: off the async workers.
            let this = Arc::clone(self);
            let owned = text.to_owned();
            tokio::task::spawn_blocking(move || this.sign_now(&owned))
                .await
                .map_err(|e| Error::Task(e.to_string()))
                .and_then(|r| r)
        };
        match fresh {
            Ok(signed) => {
                let signed: Arc<str> = signed.into();
                *cache = Some(Cached {
                    content: text.to_owned(),
                    signed: signed.clone(),
                    valid_until,
                    retry_at: 0,
                });
                Ok(signed)
            }
            Err(e) => {
                tracing::error!(fingerprint = %self.fingerprint, "security.txt not re-signed: {e}");
                match cache.as_mut() {
                    // Try again in a minute, not on every request.
                    Some(c) => {
                        c.retry_at = now + 60;
                        if c.valid_until > now {
                            Ok(c.signed.clone())
                        } else {
                            Err(e)
                        }
                    }
                    None => Err(e),
                }
            }
        }
    }

    fn sign_now(&self, text: &str) -> Result<String> {
        match self.part {
            Part::Primary => sign_with(&self.key.primary_key, &self.password, text),
            Part::Subkey(i) => sign_with(&self.key.secret_subkeys[i].key, &self.password, text),
        }
    }
}

/// A cleartext signature by `key` over `text`. The line break before the signature
/// block belongs to the framework (RFC 9580 §7.1), so a trailing one is not signed.
fn sign_with(key: &impl SigningKey, password: &Password, text: &str) -> Result<String> {
    let err = |e: pgp::errors::Error| Error::Config(format!("OpenPGP signing: {e}"));
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut config = match key.version() {
        KeyVersion::V6 => SignatureConfig::v6(
            rand_core::OsRng,
            SignatureType::Text,
            key.algorithm(),
            HashAlgorithm::Sha512,
        )
        .map_err(err)?,
        _ => SignatureConfig::v4(SignatureType::Text, key.algorithm(), HashAlgorithm::Sha512),
    };
    config.hashed_subpackets = vec![
        Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::now())).map_err(err)?,
        Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint())).map_err(err)?,
    ];
    if key.version() <= KeyVersion::V4 {
        // Older verifiers (gpg 2.2) find the key by this id.
        config.unhashed_subpackets =
            vec![Subpacket::regular(SubpacketData::IssuerKeyId(key.legacy_key_id())).map_err(err)?];
    }
    let message = CleartextSignedMessage::new(text, config, key, password).map_err(err)?;
    message
        .to_armored_string(ArmorOptions::default())
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_public_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.asc");
        std::fs::write(&path, "not a key\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let e = SecurityTxtKey::load(&path, None, 0).expect_err("garbage");
        assert!(e.to_string().contains("not an ASCII-armoured"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = SecurityTxtKey::load(&path, None, 0).expect_err("readable");
        assert!(e.to_string().contains("readable by other users"), "{e}");
    }
}
