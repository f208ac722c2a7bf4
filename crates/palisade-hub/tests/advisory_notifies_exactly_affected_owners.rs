//! VULN-6, UPD-7, PRIV-2: an advisory affecting versions >= 1.2.0 and < 1.3.0 of one
//! product model reaches exactly the owners of devices on 1.2.x — each gets ONE
//! security notice, by e-mail (category security) and in the console inbox, whatever
//! their marketing consent. Negative cases: owners of devices on 1.1 and 1.3, of a
//! device of another model on 1.2, and of a revoked device, are not told; a second
//! "notify" sends nothing; a draft cannot be notified about; an owner cannot notify.
//! The staff console shows the exposure (device count and owners).

mod common;

use common::TestHub;
use palisade_hub::db::devices::DeviceStatus;
use palisade_hub::ids::{DeviceId, ProductId, Username};

/// Enrol a device of `product` (as the API's claim-code path stores it), give it to
/// `owner` with the pairing code, and record the firmware version it reports.
async fn device(hub: &TestHub, product: &ProductId, owner: &str, firmware: &str) -> DeviceId {
    let db = &hub.hub.db;
    let codes = db
        .create_claim_codes(product, 1, 3600)
        .await
        .expect("codes");
    let id = DeviceId::generate();
    let sha = palisade_crypto::token::sha256_hex(id.as_str().as_bytes());
    db.enroll_device(&codes[0].claim, &id, &sha, common::now() as i64 + 86_400)
        .await
        .expect("enrol")
        .expect("claim code valid");
    let user = db
        .user_by_username(&Username::parse(owner).expect("name"))
        .await
        .expect("db")
        .expect("owner exists");
    db.claim_device(&codes[0].pairing, &user.id)
        .await
        .expect("claim");
    db.set_firmware_version(&id, firmware)
        .await
        .expect("version");
    id
}

fn security_mails(hub: &TestHub, to: &str) -> Vec<String> {
    hub.mail_to(to)
        .into_iter()
        .filter(|m| {
            m.contains("X-Palisade-Category: security") && m.contains("SECURITY NOTICE PAL-")
        })
        .collect()
}

/// Security mail ever queued for `to` (delivered or not): the outbox keeps its rows.
async fn queued_security_mail(hub: &TestHub, to: &str) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE recipient = $1 AND category = 'security' AND subject LIKE 'Security advisory %'")
        .bind(to)
        .fetch_one(hub.hub.db.pool())
        .await
        .expect("outbox")
        .try_get("n")
        .expect("n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_owners_on_affected_versions_get_one_security_notice() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.setup_admin().await;
    let mut on12 = hub.invite(&mut admin, "owner-onetwo", "owner").await;
    let mut on12b = hub.invite(&mut admin, "owner-patch", "owner").await;
    let mut on11 = hub.invite(&mut admin, "owner-oneone", "owner").await;
    let mut on13 = hub.invite(&mut admin, "owner-onethree", "owner").await;
    let _other = hub.invite(&mut admin, "owner-lamp", "owner").await;
    let _revoked = hub.invite(&mut admin, "owner-revoked", "owner").await;

    // One affected owner opted in to marketing and then out again; the other never
    // opted in. Both must be told (a security notice is not marketing).
    on12.post_form("/account/marketing", &[("marketing", "on")])
        .await;
    on12.post_form("/account/marketing", &[("marketing", "off")])
        .await;

    let thermo = hub.create_product("thermo-1").await;
    let lamp = hub.create_product("lamp-1").await;
    device(&hub, &thermo, "owner-onetwo", "1.2.0").await;
    device(&hub, &thermo, "owner-onetwo", "v1.2.7").await;
    device(&hub, &thermo, "owner-patch", "1.2.3").await;
    device(&hub, &thermo, "owner-oneone", "1.1.9").await;
    device(&hub, &thermo, "owner-onethree", "1.3.0").await;
    device(&hub, &lamp, "owner-lamp", "1.2.0").await;
    let gone = device(&hub, &thermo, "owner-revoked", "1.2.0").await;
    assert!(
        hub.hub
            .db
            .set_device_status(&gone, DeviceStatus::Revoked)
            .await
            .expect("revoke")
    );

    // Staff draft the advisory; a draft cannot be notified about.
    admin.get("/manage/advisories/new").await;
    let page = admin
        .post_form(
            "/manage/advisories",
            &[
                ("summary", "Unauthenticated firmware upload"),
                ("cve", "CVE-2026-41234"),
                ("affected", "thermo-1 1.2.0 1.3.0"),
                ("fixed_version", "1.3.0"),
                (
                    "cvss_vector",
                    "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                ),
                ("remediation", "Update to firmware 1.3.0."),
                (
                    "details",
                    "The upload endpoint skipped the signature check.",
                ),
                ("credit", "Rita Researcher"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let manage = page.location().to_owned();
    let id = manage.rsplit('/').next().expect("id").to_owned();
    assert!(id.starts_with("PAL-20"), "{id}");
    let page = admin.post_form(&format!("{manage}/notify"), &[]).await;
    assert!(
        page.body.contains("Publish the advisory before"),
        "{}",
        page.body
    );

    // Exposure: three affected devices (1.2.0, 1.2.7, 1.2.3), two owners.
    let page = admin.get(&manage).await;
    assert!(
        page.body.contains("id=\"affected-devices\">3<"),
        "{}",
        page.body
    );
    assert!(page.body.contains("owner-onetwo") && page.body.contains("owner-patch"));
    assert!(!page.body.contains("owner-oneone") && !page.body.contains("owner-lamp"));
    // The one-step security rollout is offered once the advisory is published.
    assert!(!page.body.contains("id=\"security-rollout\""));

    // An owner can neither publish nor notify.
    let page = on11.post_form(&format!("{manage}/notify"), &[]).await;
    assert_eq!(page.status, 403);

    let page = admin.post_form(&format!("{manage}/publish"), &[]).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let page = admin.post_form(&format!("{manage}/notify"), &[]).await;
    assert!(
        page.body
            .contains("2 owners were sent a security notice; 0 had already"),
        "{}",
        page.body
    );

    // Exactly the two owners on 1.2.x: one e-mail each (the outbox delivers to files).
    let mail = hub
        .wait_for_mail("owner-onetwo@example.org", "SECURITY NOTICE")
        .await;
    assert!(mail.contains("X-Palisade-Category: security"));
    assert!(mail.contains(&id) && mail.contains("2 of your devices"));
    assert!(
        mail.contains("never contains offers"),
        "no marketing rides on it"
    );
    hub.wait_for_mail("owner-patch@example.org", "SECURITY NOTICE")
        .await;
    for other in [
        "owner-oneone@example.org",
        "owner-onethree@example.org",
        "owner-lamp@example.org",
        "owner-revoked@example.org",
    ] {
        assert!(security_mails(&hub, other).is_empty(), "{other} was told");
    }

    // ...and in their console inbox, counted in the header until read.
    let page = on12.get("/inbox").await;
    assert!(page.body.contains("id=\"unread\">1<"), "{}", page.body);
    assert!(page.body.contains(&format!("Security advisory {id}")));
    let page = on12b.get("/").await;
    assert!(page.body.contains("id=\"unread\">1<"), "{}", page.body);
    for b in [&mut on11, &mut on13] {
        let page = b.get("/inbox").await;
        assert!(page.body.contains("id=\"no-notices\""), "{}", page.body);
        assert!(!page.body.contains("id=\"unread\""));
    }
    on12.post_form("/inbox/read", &[]).await;
    assert!(!on12.get("/inbox").await.body.contains("id=\"unread\""));

    // A second click tells no one again.
    let page = admin.post_form(&format!("{manage}/notify"), &[]).await;
    assert!(
        page.body
            .contains("0 owners were sent a security notice; 2 had already"),
        "{}",
        page.body
    );
    for owner in ["owner-onetwo@example.org", "owner-patch@example.org"] {
        assert_eq!(queued_security_mail(&hub, owner).await, 1, "{owner}");
    }
    for other in ["owner-oneone@example.org", "owner-onethree@example.org"] {
        assert_eq!(queued_security_mail(&hub, other).await, 0, "{other}");
    }
    assert_eq!(
        on12b
            .get("/api/v1/notices")
            .await
            .body
            .matches("\"kind\":\"security\"")
            .count(),
        1
    );

    // Every step is in the audit log.
    let audit = admin.get("/audit").await.body;
    for action in ["advisory.create", "advisory.publish", "advisory.notify"] {
        assert!(audit.contains(action), "{action}");
    }
    hub.hub.shutdown().await;
}
