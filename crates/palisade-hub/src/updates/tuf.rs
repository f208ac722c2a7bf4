//! TUF 1.0 metadata for releases on `tough`'s schema types: Ed25519 keys in PKCS#8
//! files, signing a role over its canonical JSON, and the checks both the hub and the
//! offline tools apply (the root chain and a role's signature threshold), using
//! tough's own verification so hub, CLI and agent agree on what is valid.

use crate::error::{Error, Result};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::{Ed25519Key, Ed25519Scheme, Key};
use tough::schema::{Role, Root, Signature, Signed};

/// The TUF specification version written into every role.
pub const SPEC_VERSION: &str = "1.0.0";

/// An Ed25519 signing key and its TUF key id.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    key: Key,
    id: Decoded<Hex>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        write!(f, "SigningKey({})", self.id_hex())
    }
}

impl SigningKey {
    /// A new key from the OS CSPRNG, with its PKCS#8 document (the key file's content).
    pub fn generate() -> Result<(Vec<u8>, SigningKey)> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| Error::Config("could not generate an Ed25519 key".into()))?;
        let bytes = doc.as_ref().to_vec();
        let key = Self::from_pkcs8(&bytes)?;
        Ok((bytes, key))
    }

    /// Load a key from its PKCS#8 document.
    pub fn from_pkcs8(bytes: &[u8]) -> Result<SigningKey> {
        let pair = Ed25519KeyPair::from_pkcs8(bytes)
            .map_err(|_| Error::Config("not an Ed25519 PKCS#8 key".into()))?;
        let key = public_key(pair.public_key().as_ref());
        let id = key
            .key_id()
            .map_err(|e| Error::Config(format!("key id: {e}")))?;
        Ok(SigningKey { pair, key, id })
    }

    /// The public key as TUF metadata lists it.
    pub fn key(&self) -> &Key {
        &self.key
    }

    pub fn id(&self) -> &Decoded<Hex> {
        &self.id
    }

    pub fn id_hex(&self) -> String {
        hex(self.id.as_ref())
    }
}

/// The TUF form of an Ed25519 public key.
pub fn public_key(public: &[u8]) -> Key {
    Key::Ed25519 {
        keyval: Ed25519Key {
            public: public.to_vec().into(),
            _extra: HashMap::new(),
        },
        scheme: Ed25519Scheme::Ed25519,
        _extra: HashMap::new(),
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sign `role` with each of `keys` (over its canonical JSON form).
pub fn sign<T: Role>(role: T, keys: &[&SigningKey]) -> Result<Signed<T>> {
    let canonical = role
        .canonical_form()
        .map_err(|e| Error::Config(format!("canonical JSON: {e}")))?;
    let signatures = keys
        .iter()
        .map(|k| Signature {
            keyid: k.id.clone(),
            sig: k.pair.sign(&canonical).as_ref().to_vec().into(),
        })
        .collect();
    Ok(Signed {
        signed: role,
        signatures,
    })
}

/// The bytes served for a signed role.
pub fn to_bytes<T: Serialize>(signed: &Signed<T>) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(signed).map_err(|e| Error::Config(format!("metadata JSON: {e}")))
}

/// Parse signed metadata of role `T`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<Signed<T>, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not valid TUF metadata: {e}"))
}

/// An `expires` value (any type that deserialises from an RFC 3339 string, such as
/// tough's timestamp type) for Unix time `unix`.
pub fn expiry<T: DeserializeOwned>(unix: i64) -> Result<T> {
    let at = time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| Error::Config(format!("expiry: {e}")))?;
    let text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    serde_json::from_value(serde_json::Value::String(text))
        .map_err(|e| Error::Config(format!("expiry: {e}")))
}

/// `new` may replace `old` as the trusted root (TUF 1.0 §5.3.4): the next version,
/// signed by the threshold of the OLD root's root keys and by its own threshold.
pub fn check_root_rotation(
    old: &Signed<Root>,
    new: &Signed<Root>,
) -> std::result::Result<(), String> {
    let next = old.signed.version.get().saturating_add(1);
    if new.signed.version.get() != next {
        return Err(format!(
            "a new root must be version {next}, not {}",
            new.signed.version
        ));
    }
    old.signed
        .verify_role(new)
        .map_err(|e| format!("the new root is not signed by the current root keys: {e}"))?;
    new.signed
        .verify_role(new)
        .map_err(|e| format!("the new root is not signed by its own root keys: {e}"))
}

/// A first root: version 1, signed by its own root threshold.
pub fn check_first_root(new: &Signed<Root>) -> std::result::Result<(), String> {
    if new.signed.version.get() != 1 {
        return Err("the first root must be version 1".into());
    }
    new.signed
        .verify_role(new)
        .map_err(|e| format!("the root is not signed by its root keys: {e}"))
}

/// The hub's own keys may sign only snapshot and timestamp: each role lists exactly
/// that hub key (threshold 1), and neither hub key appears in the root or targets role,
/// so a hub can never sign a target or a root.
pub fn check_online_roles(
    root: &Root,
    snapshot: &Decoded<Hex>,
    timestamp: &Decoded<Hex>,
) -> std::result::Result<(), String> {
    use tough::schema::RoleType;
    for (role, id) in [
        (RoleType::Snapshot, snapshot),
        (RoleType::Timestamp, timestamp),
    ] {
        let keys = root
            .roles
            .get(&role)
            .ok_or_else(|| format!("the root has no {role:?} role"))?;
        if keys.keyids.as_slice() != std::slice::from_ref(id) || keys.threshold.get() != 1 {
            return Err(format!(
                "the {role:?} role must list exactly the hub's key {} with threshold 1",
                hex(id.as_ref())
            ));
        }
    }
    for role in [RoleType::Root, RoleType::Targets] {
        let keys = root
            .roles
            .get(&role)
            .ok_or_else(|| format!("the root has no {role:?} role"))?;
        if keys.keyids.iter().any(|k| k == snapshot || k == timestamp) {
            return Err(format!(
                "the hub's online keys must not be {role:?} keys: those stay offline"
            ));
        }
    }
    Ok(())
}

/// A root listing `root_keys` (with `threshold`), one targets key and the hub's
/// snapshot and timestamp keys, signed by `signers` (for a rotation: the old root's
/// threshold and the new keys). Plain names (no consistent snapshots).
#[allow(clippy::too_many_arguments)]
pub fn new_root(
    version: u64,
    root_keys: &[&SigningKey],
    threshold: u64,
    targets: &SigningKey,
    snapshot: Key,
    timestamp: Key,
    expires_unix: i64,
    signers: &[&SigningKey],
) -> Result<Signed<Root>> {
    use std::num::NonZeroU64;
    use tough::schema::{RoleKeys, RoleType};
    let bad = |what: &str| Error::Config(format!("root: {what}"));
    let snapshot_id = snapshot.key_id().map_err(|e| bad(&e.to_string()))?;
    let timestamp_id = timestamp.key_id().map_err(|e| bad(&e.to_string()))?;
    let mut keys = HashMap::new();
    for k in root_keys.iter().chain(std::iter::once(&targets)) {
        keys.insert(k.id().clone(), k.key().clone());
    }
    keys.insert(snapshot_id.clone(), snapshot);
    keys.insert(timestamp_id.clone(), timestamp);
    let role = |ids: Vec<Decoded<Hex>>, threshold: u64| -> Result<RoleKeys> {
        Ok(RoleKeys {
            keyids: ids,
            threshold: NonZeroU64::new(threshold).ok_or_else(|| bad("threshold 0"))?,
            _extra: HashMap::new(),
        })
    };
    let mut roles = HashMap::new();
    roles.insert(
        RoleType::Root,
        role(
            root_keys.iter().map(|k| k.id().clone()).collect(),
            threshold,
        )?,
    );
    roles.insert(RoleType::Targets, role(vec![targets.id().clone()], 1)?);
    roles.insert(RoleType::Snapshot, role(vec![snapshot_id], 1)?);
    roles.insert(RoleType::Timestamp, role(vec![timestamp_id], 1)?);
    let root = Root {
        spec_version: SPEC_VERSION.into(),
        consistent_snapshot: false,
        version: NonZeroU64::new(version).ok_or_else(|| bad("version 0"))?,
        expires: expiry(expires_unix)?,
        keys,
        roles,
        _extra: HashMap::new(),
    };
    sign(root, signers)
}

/// Empty targets metadata (the first one of a repository).
pub fn empty_targets(expires_unix: i64) -> Result<tough::schema::Targets> {
    let mut t = tough::schema::Targets::new(
        SPEC_VERSION.into(),
        std::num::NonZeroU64::MIN,
        expiry(expires_unix)?,
    );
    t.delegations = None;
    Ok(t)
}

/// A release version: `MAJOR.MINOR.PATCH`, digits only (semantic versioning without
/// pre-release or build parts, so "newer" has one meaning for hub and device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.trim().split('.');
        let mut next = || -> Option<u64> {
            let p = parts.next()?;
            let ok = !p.is_empty()
                && p.len() <= 9
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'));
            ok.then(|| p.parse().ok()).flatten()
        };
        let v = Version(next()?, next()?, next()?);
        parts.next().is_none().then_some(v)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The target name of a release: `MODEL-VERSION.img`.
pub fn target_name(model: &str, version: &Version) -> String {
    format!("{model}-{version}.img")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_strict_semver_triples() {
        assert_eq!(Version::parse("2.0.10"), Some(Version(2, 0, 10)));
        assert!(Version::parse("2.0.10") > Version::parse("2.0.9"));
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.2.3-rc1",
            "a.b.c",
            "1..2",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn signatures_verify_with_tough() {
        let (_, k) = SigningKey::generate().expect("key");
        let (_, other) = SigningKey::generate().expect("key");
        assert_ne!(k.id_hex(), other.id_hex());
        let (pk8, _) = SigningKey::generate().expect("key");
        let again = SigningKey::from_pkcs8(&pk8).expect("load");
        let same = SigningKey::from_pkcs8(&pk8).expect("load");
        assert_eq!(again.id_hex(), same.id_hex());
    }
}
