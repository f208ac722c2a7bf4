//! DATA-3, DATA-4, PRIV-2, WEB-2: the owner privacy page in headless Chromium — the
//! account page links to it; it shows the data inventory, the owner's devices, the
//! marketing switch and the policy acceptance; export is offered only after the
//! password is typed again; the export downloads as a valid ZIP holding the device's
//! telemetry; deleting (typing the user name) shows the confirmation and ends the
//! session — with no CSP violation on any page. Driven by
//! `tests/e2e/owner_privacy_page.py` through chromedriver. The hub then holds no
//! account, the device is released, and both operations are audited.

mod common;

use common::TestHub;
use palisade_hub::ids::{DeviceId, Username};
use std::process::Command;

const OWNER: &str = "owner-pia";
const PASSWORD: &str = "juniper cobalt harbour violin";
const ROWS: i64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_exports_and_deletes_in_chromium() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is missing: ./scripts/test.sh installs Chromium and chromedriver"
        );
    }
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let (mut admin, _) = hub.setup_admin().await;
    hub.invite(&mut admin, OWNER, "owner").await;
    let owner = db
        .user_by_username(&Username::parse(OWNER).expect("name"))
        .await
        .expect("db")
        .expect("owner");
    let product = hub.create_product("e2e-v1").await;
    let device: DeviceId = hub.enroll_device(&product).await.id;
    let since = palisade_hub::telemetry::now_ms() - 60_000;
    sqlx::query("UPDATE devices SET owner_id = $1, owned_since_ms = $2 WHERE id = $3")
        .bind(owner.id.as_str())
        .bind(since)
        .bind(device.as_str())
        .execute(db.pool())
        .await
        .expect("own");
    let batch: Vec<_> = (0..ROWS)
        .map(|i| {
            (
                device.clone(),
                since + 1 + i * 1000,
                format!(r#"{{"temperature": {}, "seq": {i}}}"#, 18 + i % 5),
            )
        })
        .collect();
    db.insert_telemetry_batch(&batch).await.expect("telemetry");

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/e2e/owner_privacy_page.py");
    let shots = hub.dir.path().join("screenshots");
    let args = vec![
        script.display().to_string(),
        "--url".into(),
        hub.hub.url(),
        "--spki-hash".into(),
        hub.hub.server_spki_sha256.clone(),
        "--username".into(),
        OWNER.into(),
        "--password".into(),
        PASSWORD.into(),
        "--telemetry-rows".into(),
        ROWS.to_string(),
        "--screenshot-dir".into(),
        shots.display().to_string(),
    ];
    let output = tokio::task::spawn_blocking(move || Command::new("python3").args(&args).output())
        .await
        .expect("task")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if let Ok(keep) = std::env::var("PALISADE_E2E_SCREENSHOTS") {
        let _ = std::fs::create_dir_all(&keep);
        for entry in std::fs::read_dir(&shots).into_iter().flatten().flatten() {
            let _ = std::fs::copy(
                entry.path(),
                std::path::Path::new(&keep).join(entry.file_name()),
            );
        }
    }
    assert!(
        output.status.success(),
        "browser test failed\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("re-auth -> export -> delete passed"),
        "{stdout}"
    );

    // The hub agrees: the account is gone, the device released, both audited.
    assert!(db.user(&owner.id).await.expect("db").is_none());
    let d = db.device(&device).await.expect("db").expect("device");
    assert!(d.owner_id.is_none());
    let actions: Vec<String> = db
        .audit_entries(100, None)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(actions.iter().any(|a| a == "account.export"), "{actions:?}");
    assert!(actions.iter().any(|a| a == "account.delete"), "{actions:?}");
    hub.hub.shutdown().await;
}
