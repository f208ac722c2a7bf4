//! Issue 4 "the console warns well before any role's metadata expires" (UPD-1, UPD-2):
//! targets metadata signed offline with a 10-day expiry puts a warning naming the model,
//! the role, its version and the re-signing command on the staff console (home and
//! `/releases`), and raises exactly one audit entry and one staff e-mail per role
//! version, however often the check runs. Negative cases: a model whose metadata is
//! valid for a year is not mentioned, and re-signed targets (a new version with a
//! long expiry) end the warning.

mod common;

use common::{ADMIN_EMAIL, TestHub};
use palisade_hub::updates::{expiry, tuf};

const DAY: i64 = 86_400;

struct Offline {
    root: tuf::SigningKey,
    targets: tuf::SigningKey,
}

/// A repository for `model` with root valid for a year and targets for `targets_days`.
async fn repository(hub: &TestHub, model: &str, targets_days: i64) -> Offline {
    let id = hub.create_product(model).await;
    let repo = &hub.hub.state.updates;
    let (_, root) = tuf::SigningKey::generate().expect("key");
    let (_, targets) = tuf::SigningKey::generate().expect("key");
    let online = repo.online_keys();
    let key = |role: &str| serde_json::from_value(online[role]["key"].clone()).expect("key");
    let now = palisade_hub::db::now();
    let signed_root = tuf::new_root(
        1,
        &[&root],
        1,
        &targets,
        key("snapshot"),
        key("timestamp"),
        now + 365 * DAY,
        &[&root],
    )
    .expect("root");
    repo.install_root(&id, &tuf::to_bytes(&signed_root).expect("bytes"))
        .await
        .expect("root accepted");
    let empty = tuf::empty_targets(now + targets_days * DAY).expect("targets");
    let signed = tuf::sign(empty, &[&targets]).expect("sign");
    repo.install_targets(&id, &tuf::to_bytes(&signed).expect("bytes"))
        .await
        .expect("targets accepted");
    Offline { root, targets }
}

#[tokio::test]
async fn expiring_targets_are_warned_once_and_the_warning_ends_when_re_signed() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.setup_admin().await;
    let short = repository(&hub, "lamp-v1", 10).await;
    let _long = repository(&hub, "kettle-v1", 365).await;

    for path in ["/", "/releases"] {
        let page = admin.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            page.body
                .contains("lamp-v1: the targets metadata (version 1) expires on"),
            "{path}: {}",
            page.body
        );
        assert!(
            page.body
                .contains("palisade release rotate-root --product lamp-v1")
        );
        assert!(
            !page.body.contains("kettle-v1: the"),
            "a model valid for a year is not mentioned: {path}"
        );
        // Hub-signed roles were just refreshed: nothing to say about them.
        assert!(!page.body.contains("the timestamp metadata (version"));
        assert!(!page.body.contains("the snapshot metadata (version"));
    }

    // One alert per role version, however often the check runs.
    let db = &hub.hub.db;
    let repo = &hub.hub.state.updates;
    assert_eq!(expiry::alert(db, repo).await.expect("alert"), 1);
    assert_eq!(expiry::alert(db, repo).await.expect("alert"), 0);
    let entries = db
        .audit_entries_for_target("lamp-v1", 100)
        .await
        .expect("audit");
    let warnings: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "tuf.expiry_warning")
        .collect();
    assert_eq!(warnings.len(), 1, "{entries:?}");
    assert!(warnings[0].detail.contains("targets metadata (version 1)"));
    let mail = hub
        .wait_for_mail(ADMIN_EMAIL, "Update metadata of lamp-v1 expires soon")
        .await;
    assert!(mail.contains("rotate-root"), "{mail}");
    assert!(
        db.audit_entries_for_target("kettle-v1", 100)
            .await
            .expect("audit")
            .iter()
            .all(|e| e.action != "tuf.expiry_warning")
    );

    // Re-signed for a year (targets version 2): the warning ends.
    let id = palisade_hub::ids::ProductId::parse("lamp-v1").expect("id");
    let mut renewed = tuf::empty_targets(palisade_hub::db::now() + 365 * DAY).expect("targets");
    renewed.version = std::num::NonZeroU64::new(2).expect("2");
    let signed = tuf::sign(renewed, &[&short.targets]).expect("sign");
    repo.install_targets(&id, &tuf::to_bytes(&signed).expect("bytes"))
        .await
        .expect("renewed targets accepted");
    let page = admin.get("/releases").await;
    assert!(
        !page.body.contains("lamp-v1: the targets metadata"),
        "{}",
        page.body
    );
    assert_eq!(expiry::alert(db, repo).await.expect("alert"), 0);
    let _ = short.root;
    hub.hub.shutdown().await;
}
