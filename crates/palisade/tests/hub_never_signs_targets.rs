//! UPD-2, UPD-4, issue 4 trust model: the hub holds only the snapshot and timestamp
//! keys. Attacks that must fail:
//! 1. targets metadata signed by a key the root does not list for targets (an
//!    attacker's offline keys, or the hub's own snapshot key) is refused by the hub;
//! 2. a compromised hub — its snapshot/timestamp keys and its files — serves targets
//!    metadata listing an evil image signed with its own keys: the device's TUF client
//!    (the agent's) refuses it and downloads nothing;
//! 3. the same compromised hub serves the OLDER targets metadata (rollback) under
//!    freshly signed snapshot and timestamp: the client refuses it;
//! 4. a root rotation not signed by the old root threshold is refused by the hub.
//!
//! After every attack the legitimate release still verifies.

mod release_kit;

use palisade_hub::updates::tuf::{self, SigningKey};
use release_kit::{Device, Kit, MODEL};
use std::collections::HashMap;
use std::path::Path;
use tough::schema::{Hashes, Metafile, Signed, Snapshot, Target, Targets, Timestamp};

fn key(path: &Path) -> SigningKey {
    SigningKey::from_pkcs8(&std::fs::read(path).expect("key file")).expect("key")
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

fn metafile(bytes: &[u8], version: std::num::NonZeroU64) -> Metafile {
    Metafile {
        length: Some(bytes.len() as u64),
        hashes: Some(Hashes {
            sha256: sha256(bytes).into(),
            _extra: HashMap::new(),
        }),
        version,
        _extra: HashMap::new(),
    }
}

fn version_of(bytes: &[u8]) -> std::num::NonZeroU64 {
    let v: serde_json::Value = serde_json::from_slice(bytes).expect("json");
    std::num::NonZeroU64::new(v["signed"]["version"].as_u64().expect("version")).expect("nonzero")
}

/// What a compromised hub can do: write `targets` and sign fresh snapshot and
/// timestamp with ITS keys, with versions above what it served before.
fn compromised_serve(data_dir: &Path, targets: &[u8]) {
    let meta = data_dir.join(format!("tuf/repos/{MODEL}/metadata"));
    let snapshot_key = key(&data_dir.join("tuf/keys/snapshot.pk8"));
    let timestamp_key = key(&data_dir.join("tuf/keys/timestamp.pk8"));
    let old_snapshot = std::fs::read(meta.join("snapshot.json")).expect("snapshot");
    let old_timestamp = std::fs::read(meta.join("timestamp.json")).expect("timestamp");
    let far = palisade_hub::db::now() + 86_400;
    let mut s = Snapshot::new(
        tuf::SPEC_VERSION.into(),
        version_of(&old_snapshot).checked_add(1).expect("v"),
        tuf::expiry(far).expect("exp"),
    );
    s.meta.insert(
        "targets.json".into(),
        metafile(targets, version_of(targets)),
    );
    let snapshot = tuf::to_bytes(&tuf::sign(s, &[&snapshot_key]).expect("sign")).expect("bytes");
    let mut t = Timestamp::new(
        tuf::SPEC_VERSION.into(),
        version_of(&old_timestamp).checked_add(1).expect("v"),
        tuf::expiry(far).expect("exp"),
    );
    t.meta.insert(
        "snapshot.json".into(),
        metafile(&snapshot, version_of(&snapshot)),
    );
    let timestamp = tuf::to_bytes(&tuf::sign(t, &[&timestamp_key]).expect("sign")).expect("bytes");
    std::fs::write(meta.join("targets.json"), targets).expect("write");
    std::fs::write(meta.join("snapshot.json"), snapshot).expect("write");
    std::fs::write(meta.join("timestamp.json"), timestamp).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_foreign_keys_nor_a_compromised_hub_can_sign_targets() {
    let kit = Kit::start().await;
    let keys = kit.keys_init("offline-keys");
    let attacker = kit.keys_init("attacker-keys");
    kit.init_repo(&keys);
    let root = kit.shipped_root().await;
    let v1 = vec![7u8; 50_000];
    let out = kit.publish(&keys, "1.0.0", &v1, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta_dir = kit.data_dir().join(format!("tuf/repos/{MODEL}/metadata"));
    let legit_v2_targets = std::fs::read(meta_dir.join("targets.json")).expect("targets");

    // 1. The CLI with foreign keys refuses (the root does not list that key) ...
    let out = kit.publish(&attacker, "2.0.0", b"evil", false);
    assert!(!out.status.success());
    // ... and the hub refuses such targets sent to it directly, whoever signed them.
    let evil = b"evil firmware".to_vec();
    let name = format!("{MODEL}-2.0.0.img");
    let client = kit.client();
    let r = client
        .put(format!(
            "{}/api/v1/products/{MODEL}/targets/{name}",
            kit.hub.url()
        ))
        .bearer_auth(&kit.token)
        .body(evil.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 201, "the image upload alone publishes nothing");
    let current: Signed<Targets> = tuf::parse(&legit_v2_targets).expect("targets");
    let mut forged = current.signed.clone();
    forged.version = forged.version.checked_add(1).expect("v");
    let mut custom = HashMap::new();
    custom.insert("version".to_owned(), serde_json::json!("2.0.0"));
    custom.insert("security".to_owned(), serde_json::json!(false));
    forged.targets.insert(
        tough::TargetName::new(name.clone()).expect("name"),
        Target {
            length: evil.len() as u64,
            hashes: Hashes {
                sha256: sha256(&evil).into(),
                _extra: HashMap::new(),
            },
            custom,
            _extra: HashMap::new(),
        },
    );
    let hub_snapshot_key = key(&kit.data_dir().join("tuf/keys/snapshot.pk8"));
    for signer in [
        key(&attacker.join("targets.pk8")),
        hub_snapshot_key,
        key(&keys.join("root-1.pk8")),
    ] {
        let signed = tuf::sign(forged.clone(), &[&signer]).expect("sign");
        let r = client
            .post(format!("{}/api/v1/products/{MODEL}/releases", kit.hub.url()))
            .bearer_auth(&kit.token)
            .json(&serde_json::json!({"version": "2.0.0", "security": false, "notes": "", "targets": signed}))
            .send()
            .await
            .expect("publish");
        assert_eq!(
            r.status(),
            409,
            "targets signed by {signer:?} must be refused"
        );
        let body = r.text().await.unwrap_or_default();
        assert!(
            body.contains("not signed by the offline targets key"),
            "{body}"
        );
    }
    assert_eq!(
        std::fs::read(meta_dir.join("targets.json")).expect("targets"),
        legit_v2_targets
    );

    let relay = kit.relay().await;
    let device = Device::new(&root);
    assert_eq!(
        device
            .download(&relay, &format!("{MODEL}-1.0.0.img"))
            .await
            .expect("v1"),
        v1
    );

    // 2. A compromised hub signs the forged targets with the keys it holds.
    let by_timestamp_key = tuf::sign(
        forged.clone(),
        &[&key(&kit.data_dir().join("tuf/keys/timestamp.pk8"))],
    )
    .expect("sign");
    compromised_serve(
        &kit.data_dir(),
        &tuf::to_bytes(&by_timestamp_key).expect("bytes"),
    );
    let got = device.download(&relay, &name).await;
    eprintln!("compromised hub, forged targets: {got:?}");
    assert!(
        got.as_ref()
            .is_err_and(|e| e.contains("SignatureThreshold")),
        "a target the offline key did not sign must not verify: {got:?}"
    );
    // A fresh device (only the shipped root) refuses it too.
    let fresh = Device::new(&root);
    assert!(fresh.download(&relay, &name).await.is_err());

    // Back to the legitimate targets, then v2 is published properly.
    compromised_serve(&kit.data_dir(), &legit_v2_targets);
    let legit_v2 = vec![9u8; 60_000];
    let out = kit.publish(&keys, "2.0.0", &legit_v2, true);
    // The attacker's image already sits under that name, so the honest upload is
    // refused rather than silently replaced ...
    assert!(!out.status.success());
    let out = kit.publish(&keys, "2.0.1", &legit_v2, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v201 = format!("{MODEL}-2.0.1.img");
    assert_eq!(
        device.download(&relay, &v201).await.expect("2.0.1"),
        legit_v2
    );

    // 3. Rollback: the compromised hub serves the older targets (1.0.0 only) under
    // freshly signed snapshot and timestamp. The client refuses to go back.
    compromised_serve(&kit.data_dir(), &legit_v2_targets);
    let r = device.refresh(&relay).await;
    eprintln!("compromised hub, older targets: {r:?}");
    assert!(
        r.as_ref().is_err_and(|e| e.contains("Rollback")),
        "older targets metadata must be refused: {r:?}"
    );

    // 4. A root rotation signed only by the attacker (not the old threshold).
    let online = kit.hub.state.updates.online_keys();
    let k = |role: &str| serde_json::from_value(online[role]["key"].clone()).expect("key");
    let a1 = key(&attacker.join("root-1.pk8"));
    let a2 = key(&attacker.join("root-2.pk8"));
    let at = key(&attacker.join("targets.pk8"));
    let far = palisade_hub::db::now() + 86_400;
    let rotation = tuf::new_root(
        2,
        &[&a1, &a2],
        2,
        &at,
        k("snapshot"),
        k("timestamp"),
        far,
        &[&a1, &a2],
    )
    .expect("root");
    let r = client
        .post(format!(
            "{}/api/v1/products/{MODEL}/tuf/root",
            kit.hub.url()
        ))
        .bearer_auth(&kit.token)
        .body(tuf::to_bytes(&rotation).expect("bytes"))
        .send()
        .await
        .expect("rotate");
    assert_eq!(
        r.status(),
        409,
        "rotation without the old threshold is refused"
    );
    // Only ONE of the two required old root signatures: refused as well.
    let o1 = key(&keys.join("root-1.pk8"));
    let rotation = tuf::new_root(
        2,
        &[&a1, &a2],
        2,
        &at,
        k("snapshot"),
        k("timestamp"),
        far,
        &[&o1, &a1, &a2],
    )
    .expect("root");
    let r = client
        .post(format!(
            "{}/api/v1/products/{MODEL}/tuf/root",
            kit.hub.url()
        ))
        .bearer_auth(&kit.token)
        .body(tuf::to_bytes(&rotation).expect("bytes"))
        .send()
        .await
        .expect("rotate");
    assert_eq!(r.status(), 409);
    // With the old threshold (2 of 3) and the new keys: accepted.
    let o2 = key(&keys.join("root-2.pk8"));
    let rotation = tuf::new_root(
        2,
        &[&a1, &a2],
        2,
        &at,
        k("snapshot"),
        k("timestamp"),
        far,
        &[&o1, &o2, &a1, &a2],
    )
    .expect("root");
    let r = client
        .post(format!(
            "{}/api/v1/products/{MODEL}/tuf/root",
            kit.hub.url()
        ))
        .bearer_auth(&kit.token)
        .body(tuf::to_bytes(&rotation).expect("bytes"))
        .send()
        .await
        .expect("rotate");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}
