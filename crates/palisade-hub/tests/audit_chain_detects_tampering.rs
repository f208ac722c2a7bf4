//! MON-1: security events are in the audit log before the action is acknowledged,
//! without secrets, and the hash chain exposes an edited or deleted entry.

mod common;

use common::{ADMIN, ADMIN_PASSWORD, TestHub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_audit_row_is_detected() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.setup_admin().await;
    let mut wrong = hub.browser();
    wrong
        .sign_in(ADMIN, "definitely not the password", None)
        .await;

    let entries = hub.hub.db.audit_entries(100, None).await.expect("entries");
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    for expected in ["setup.code_issued", "setup", "mfa.enrol", "login"] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    assert!(
        entries
            .iter()
            .any(|e| e.action == "login" && e.outcome == "failure" && e.source == "127.0.0.1")
    );
    let all = format!("{entries:?}");
    assert!(
        !all.contains(ADMIN_PASSWORD) && !all.contains("definitely not"),
        "no secrets in the audit log"
    );
    assert!(
        !all.contains(&hub.hub.setup_code.clone().expect("code")),
        "the setup code is not logged"
    );

    let page = admin.get("/audit").await;
    assert!(page.body.contains("Chain intact"), "{}", page.body);

    // Tamper: rewrite what a failed login said.
    let seq = entries
        .iter()
        .find(|e| e.outcome == "failure")
        .expect("failure")
        .seq;
    sqlx::query("UPDATE audit_log SET outcome = 'success' WHERE seq = $1")
        .bind(seq)
        .execute(hub.hub.db.pool())
        .await
        .expect("tamper");
    let report = hub.hub.db.verify_audit_chain().await.expect("verify");
    assert_eq!(report.first_broken, Some(seq));
    let page = admin.get("/audit").await;
    assert!(page.body.contains("TAMPERING DETECTED"), "{}", page.body);
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_last_audit_row_is_detected() {
    let hub = TestHub::start().await;
    hub.setup_admin().await;
    let report = hub.hub.db.verify_audit_chain().await.expect("verify");
    assert_eq!(report.first_broken, None);
    sqlx::query("DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)")
        .execute(hub.hub.db.pool())
        .await
        .expect("delete");
    let report = hub.hub.db.verify_audit_chain().await.expect("verify");
    assert!(
        report.first_broken.is_some(),
        "truncation is detected: {report:?}"
    );
    hub.hub.shutdown().await;
}
