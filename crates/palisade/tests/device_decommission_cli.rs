//! ACC-3, DATA-3: `palisade device decommission ID` on the hub machine does what a
//! factory reset reported by the device does, for a device whose reset never reached
//! the hub: the device becomes `decommissioned`, loses its owner and its telemetry, its
//! claim code is re-armed for a new enrolment, and the action is audited with actor
//! `cli`. Refused: a device that is not active, and an id that is not a device id.

use palisade_hub::config::Config;
use palisade_hub::db::devices::{DeviceStatus, FieldKind, FieldSpec, ProductModel};
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{DeviceId, Email, ProductId, Username};
use std::path::Path;
use std::process::Command;

fn palisade(data: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("PALISADE_LOG", "error")
        .output()
        .expect("palisade runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommission_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = Config::for_data_dir(&data);
    let db = palisade_hub::open_database(&config).await.expect("db");
    let product = ProductId::parse("cam-v2").expect("id");
    db.create_product(&ProductModel {
        id: product.clone(),
        name: "Camera".into(),
        hardware_revision: "B".into(),
        fields: vec![FieldSpec {
            name: "temperature".into(),
            kind: FieldKind::Number,
            unit: String::new(),
            purpose: "shown to the owner".into(),
            personal: false,
            retention_days: None,
            optional: false,
        }],
        created_at: 0,
    })
    .await
    .expect("product");
    let codes = db
        .create_claim_codes(&product, 1, 3600)
        .await
        .expect("codes");
    let device = DeviceId::generate();
    db.enroll_device(&codes[0].claim, &device, &"a".repeat(64), 1)
        .await
        .expect("db")
        .expect("enrolled");
    let owner = db
        .insert_user(NewUser {
            username: &Username::parse("owner-anna").expect("name"),
            email: &Email::parse("anna@example.org").expect("email"),
            role: Role::Owner,
            status: Status::Active,
            password_hash: None,
        })
        .await
        .expect("owner");
    db.claim_device(&codes[0].pairing, &owner.id)
        .await
        .expect("claim");
    db.insert_telemetry_batch(&[(device.clone(), 1, r#"{"temperature":1}"#.into())])
        .await
        .expect("telemetry");
    db.close().await;

    let (code, text) = palisade(&data, &["device", "decommission", "not-an-id"]);
    assert_ne!(code, 0, "{text}");

    let (code, text) = palisade(&data, &["device", "decommission", device.as_str()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("decommissioned"), "{text}");

    let db = palisade_hub::open_database(&config).await.expect("db");
    let gone = db.device(&device).await.expect("db").expect("row kept");
    assert_eq!(gone.status, DeviceStatus::Decommissioned);
    assert_eq!(gone.owner_id, None);
    assert!(db.telemetry(&device, 10).await.expect("db").is_empty());
    assert_eq!(
        db.claim_code_product(&codes[0].claim).await.expect("db"),
        Some(product),
        "the claim code is re-armed"
    );
    let audit = db
        .audit_entries_for_target(device.as_str(), 10)
        .await
        .expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "device.decommission" && e.actor == "cli"),
        "{audit:?}"
    );
    db.close().await;

    // Only an active device can be decommissioned.
    let (code, text) = palisade(&data, &["device", "decommission", device.as_str()]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("only an active device"), "{text}");
}
