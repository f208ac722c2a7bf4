//! Issue 4 (TUF freshness, UPD-2): the hub's timestamp metadata has a short expiry
//! (configurable) and the hub re-signs it in the background well before it expires,
//! so a client polling the live hub keeps accepting it; the snapshot follows its own
//! (longer) expiry. Attack: the root and targets stay exactly as signed offline — a
//! refresh never touches them.

mod common;

use common::TestHub;
use palisade_hub::updates::tuf::{self, SigningKey};
use std::time::Duration;

fn timestamp(bytes: &[u8]) -> (u64, String) {
    let v: serde_json::Value = serde_json::from_slice(bytes).expect("json");
    (
        v["signed"]["version"].as_u64().expect("version"),
        v["signed"]["expires"].as_str().expect("expires").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_advances_before_it_expires() {
    let hub = TestHub::start_with(|c| {
        c.limits.tuf_timestamp_expiry_secs = 6;
        c.limits.tuf_snapshot_expiry_secs = 3600;
    })
    .await;
    let product = hub.create_product("lamp-v1").await;
    let repo = hub.hub.state.updates.clone();
    let online = repo.online_keys();
    let key = |role: &str| serde_json::from_value(online[role]["key"].clone()).expect("key");
    let (_, root_key) = SigningKey::generate().expect("key");
    let (_, targets_key) = SigningKey::generate().expect("key");
    let far = palisade_hub::db::now() + 86_400;
    let root = tuf::new_root(
        1,
        &[&root_key],
        1,
        &targets_key,
        key("snapshot"),
        key("timestamp"),
        far,
        &[&root_key],
    )
    .expect("root");
    let root_bytes = tuf::to_bytes(&root).expect("bytes");
    repo.install_root(&product, &root_bytes)
        .await
        .expect("root accepted");
    let targets =
        tuf::sign(tuf::empty_targets(far).expect("targets"), &[&targets_key]).expect("sign");
    let targets_bytes = tuf::to_bytes(&targets).expect("bytes");
    repo.install_targets(&product, &targets_bytes)
        .await
        .expect("targets accepted");

    let mut anonymous = hub.browser();
    let fetch = async |b: &mut common::Browser, file: &str| {
        let page = b.get(&format!("/tuf/lamp-v1/metadata/{file}")).await;
        assert_eq!(page.status, 200, "{file}: {}", page.body);
        page.body.into_bytes()
    };
    let first = timestamp(&fetch(&mut anonymous, "timestamp.json").await);
    let first_snapshot = timestamp(&fetch(&mut anonymous, "snapshot.json").await);
    // Bounded wait: the background task re-signs when half the lifetime (3 s) is left.
    let mut advanced = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = timestamp(&fetch(&mut anonymous, "timestamp.json").await);
        if now.0 > first.0 {
            advanced = Some(now);
            break;
        }
    }
    let advanced = advanced.expect("the timestamp was re-signed before it expired");
    assert!(
        advanced.1 > first.1,
        "with a later expiry: {advanced:?} vs {first:?}"
    );
    // A fresh timestamp is valid: signed by the key the root lists for timestamp.
    let ts: tough::schema::Signed<tough::schema::Timestamp> =
        tuf::parse(&fetch(&mut anonymous, "timestamp.json").await).expect("timestamp");
    root.signed
        .verify_role(&ts)
        .expect("timestamp signed by the hub's timestamp key");
    assert!(ts.signed.expires.as_second() > palisade_hub::db::now());
    // The snapshot (1 h lifetime) was not re-signed; root and targets are untouched.
    assert_eq!(
        timestamp(&fetch(&mut anonymous, "snapshot.json").await),
        first_snapshot
    );
    assert_eq!(fetch(&mut anonymous, "root.json").await, root_bytes);
    assert_eq!(fetch(&mut anonymous, "1.root.json").await, root_bytes);
    assert_eq!(fetch(&mut anonymous, "targets.json").await, targets_bytes);
    // Not a metadata name: 404.
    let page = anonymous
        .get("/tuf/lamp-v1/metadata/..%2Fkeys%2Fsnapshot.pk8")
        .await;
    assert_eq!(page.status, 404);
}
