//! AUTH-1, AUTH-8, WEB-2: the real console in headless Chromium — setup, TOTP
//! enrolment, sign-out, password + TOTP sign-in, the device list and a device page
//! with its SVG telemetry chart, the vulnerability report form (VULN-1), the triage
//! page (VULN-3), and the advisory drafted from the fixed report, published and read on
//! its public page (VULN-6) — with the hub's key pinned and the test failing on
//! any Content-Security-Policy violation. The browser is driven by
//! `tests/e2e/console_setup_mfa_login.py` through chromedriver.

mod common;

use common::{ADMIN, ADMIN_EMAIL, ADMIN_PASSWORD, TestHub};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_mfa_enrolment_and_login_in_chromium() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is missing: ./scripts/test.sh installs Chromium and chromedriver"
        );
    }
    let hub = TestHub::start().await;
    // A device with telemetry, so the script can open its page and chart.
    let product = hub.create_product("e2e-v1").await;
    let device = hub.enroll_device(&product).await;
    let batch: Vec<_> = (0..20_i64)
        .map(|i| {
            (
                device.id.clone(),
                1_800_000_000_000 + i * 60_000,
                format!(r#"{{"temperature": {}, "seq": {i}}}"#, 18 + i % 5),
            )
        })
        .collect();
    hub.hub
        .db
        .insert_telemetry_batch(&batch)
        .await
        .expect("telemetry");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/e2e/console_setup_mfa_login.py");
    let shots = hub.dir.path().join("screenshots");
    let args = vec![
        script.display().to_string(),
        "--url".into(),
        hub.hub.url(),
        "--spki-hash".into(),
        hub.hub.server_spki_sha256.clone(),
        "--setup-code".into(),
        hub.hub.setup_code.clone().expect("code"),
        "--username".into(),
        ADMIN.into(),
        "--email".into(),
        ADMIN_EMAIL.into(),
        "--password".into(),
        ADMIN_PASSWORD.into(),
        "--screenshot-dir".into(),
        shots.display().to_string(),
        "--device-id".into(),
        device.id.to_string(),
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
        stdout.contains("setup -> MFA enrolment -> login passed"),
        "{stdout}"
    );
    // The hub saw it all: the admin exists with MFA on.
    let users = hub.hub.db.users().await.expect("users");
    assert_eq!(users.len(), 1);
    assert!(users[0].has_mfa());
    // The report sent through the form was triaged to fixed, and publishing its
    // advisory disclosed it (VULN-6).
    let reports = hub.hub.db.reports(10).await.expect("reports");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].state.as_str(), "disclosed");
    let advisories = hub.hub.db.advisories(false).await.expect("advisories");
    assert_eq!(advisories.len(), 1);
    assert_eq!(
        advisories[0].report_id.as_deref(),
        Some(reports[0].id.as_str())
    );
    hub.hub.shutdown().await;
}
