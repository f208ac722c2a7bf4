//! UPD-1, UPD-6, issue 4 "root key rotation works": `palisade release rotate-root`
//! makes root 2 listing new root and targets keys, signed by the old root threshold
//! and the new keys; after it, a release published with the NEW keys downloads and
//! verifies on a device that still trusts only the shipped root 1 (the agent's TUF
//! client follows the chain). Attacks: a root 3 signed only by keys the current root
//! does not list is refused by the hub (and the device keeps root 2); rotating with
//! keys that are not the current root keys fails before anything is uploaded; the old
//! targets key can no longer publish.

mod release_kit;

use palisade_hub::updates::tuf::{self, SigningKey};
use release_kit::{Device, Kit, MODEL};

fn load(dir: &std::path::Path, name: &str) -> SigningKey {
    SigningKey::from_pkcs8(&std::fs::read(dir.join(name)).expect("key file")).expect("key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_follow_a_rotation_signed_by_old_and_new_keys() {
    let kit = Kit::start().await;
    let old = kit.keys_init("old-keys");
    kit.init_repo(&old);
    let shipped = kit.shipped_root().await;
    let v1 = vec![1u8; 50_000];
    let out = kit.publish(&old, "1.0.0", &v1, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Rotating with keys the current root does not list is refused up front.
    let stranger = kit.keys_init("stranger-keys");
    let new = kit.keys_init("new-keys");
    let out = kit.palisade(&[
        "release",
        "rotate-root",
        "--product",
        MODEL,
        "--keys",
        stranger.to_str().expect("utf8"),
        "--new-keys",
        new.to_str().expect("utf8"),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong --keys"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = kit.palisade(&[
        "release",
        "rotate-root",
        "--product",
        MODEL,
        "--keys",
        old.to_str().expect("utf8"),
        "--new-keys",
        new.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "rotate-root: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("root version 2"));

    // The old targets key no longer signs for this model; the new one does.
    let out = kit.publish(&old, "2.0.0", b"old key", false);
    assert!(!out.status.success(), "the old targets key must be refused");
    let v2: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let out = kit.publish(&new, "2.0.0", &v2, true);
    assert!(
        out.status.success(),
        "publish with the new keys: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A device shipped with root 1 follows the chain to root 2 and gets 2.0.0.
    let relay = kit.relay().await;
    let device = Device::new(&shipped);
    let got = device
        .download(&relay, &format!("{MODEL}-2.0.0.img"))
        .await
        .expect("the device follows the rotation");
    assert_eq!(got, v2);
    let trusted: serde_json::Value = serde_json::from_slice(
        &std::fs::read(device.dir.path().join("metadata/root.json")).expect("root"),
    )
    .expect("json");
    assert_eq!(trusted["signed"]["version"], 2);

    // Attack: root 3 signed only by keys root 2 does not list (the new threshold is
    // missing): the hub refuses it, and the device still trusts root 2.
    let online: serde_json::Value = kit
        .client()
        .get(format!(
            "{}/api/v1/products/{MODEL}/tuf/keys",
            kit.hub.url()
        ))
        .bearer_auth(&kit.token)
        .send()
        .await
        .expect("keys")
        .json()
        .await
        .expect("json");
    let key = |role: &str| serde_json::from_value(online[role]["key"].clone()).expect("key");
    let rogue = [
        load(&stranger, "root-1.pk8"),
        load(&stranger, "root-2.pk8"),
        load(&stranger, "root-3.pk8"),
    ];
    let rogue_refs: Vec<&SigningKey> = rogue.iter().collect();
    let rogue_targets = load(&stranger, "targets.pk8");
    let root3 = tuf::new_root(
        3,
        &rogue_refs,
        2,
        &rogue_targets,
        key("snapshot"),
        key("timestamp"),
        palisade_hub::db::now() + 86_400,
        &rogue_refs,
    )
    .expect("root 3");
    let response = kit
        .client()
        .post(format!(
            "{}/api/v1/products/{MODEL}/tuf/root",
            kit.hub.url()
        ))
        .bearer_auth(&kit.token)
        .header("content-type", "application/json")
        .body(tuf::to_bytes(&root3).expect("bytes"))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 409);
    let body = response.text().await.expect("body");
    assert!(
        body.contains("not signed by the current root keys"),
        "{body}"
    );
    device.refresh(&relay).await.expect("refresh still fine");
    let trusted: serde_json::Value = serde_json::from_slice(
        &std::fs::read(device.dir.path().join("metadata/root.json")).expect("root"),
    )
    .expect("json");
    assert_eq!(trusted["signed"]["version"], 2);
    kit.hub.shutdown().await;
}
