//! DATA-3 (deletion), STOR (secure deletion), ACC-3: an owner deletes their account
//! after re-authenticating and typing their user name. A marker string stored in the
//! account's e-mail address, its telemetry, a device event and an API token name is
//! then nowhere in the SQLite files (WAL checkpointed; `secure_delete` overwrites
//! freed pages); the devices are released (must be claimed again), the confirmation
//! e-mail reached the former address (and its outbox row is gone), sign-in and the old
//! session and token fail, another owner's data is untouched, the audit chain still
//! verifies; an unaccepted substantive policy change does not stand in the way. The
//! user name is kept only in audit entries written before the deletion
//! (documented in docs/privacy.md). On PostgreSQL the same deletion leaves no row with
//! the marker. Attacks: deletion without a recent re-authentication, with a wrong
//! confirmation, and by the last administrator, are refused.

mod common;

use common::{Browser, TestHub, link_token};
use palisade_hub::db::Db;
use palisade_hub::db::device_events::EventSource;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{DeviceId, Email, ProductId, UserId, Username};
use sqlx::Row;

const MARKER: &str = "zqmarker7f3a9c";
const PASSWORD: &str = "juniper cobalt harbour violin";

/// Invite an owner with a chosen e-mail address; returns the signed-in browser.
async fn invite_with_email(
    hub: &TestHub,
    admin: &mut Browser,
    username: &str,
    email: &str,
) -> Browser {
    admin.get("/users").await;
    let page = admin
        .post_form(
            "/users/invite",
            &[("username", username), ("email", email), ("role", "owner")],
        )
        .await;
    assert!(page.body.contains("Invitation sent"), "{}", page.body);
    let mail = hub.wait_for_mail(email, "/invite?token=").await;
    let token = link_token(&mail, "/invite");
    let mut b = hub.browser();
    b.get(&format!("/invite?token={token}")).await;
    let page = b
        .post_form("/invite", &[("token", &token), ("password", PASSWORD)])
        .await;
    assert_eq!(page.location(), "/", "{}", page.body);
    b.get("/account").await;
    b
}

async fn own(db: &Db, device: &DeviceId, owner: &UserId) -> i64 {
    let since = palisade_hub::telemetry::now_ms() - 60_000;
    sqlx::query("UPDATE devices SET owner_id = $1, owned_since_ms = $2 WHERE id = $3")
        .bind(owner.as_str())
        .bind(since)
        .bind(device.as_str())
        .execute(db.pool())
        .await
        .expect("own");
    since
}

/// Store the marker in everything of `owner` that `devices` hold.
async fn seed(db: &Db, owner: &UserId, devices: &[DeviceId]) {
    for d in devices {
        let since = own(db, d, owner).await;
        let rows: Vec<_> = (0..2_000i64)
            .map(|i| {
                (
                    d.clone(),
                    since + i,
                    format!(r#"{{"seq":{i},"label":"{MARKER}-{i}"}}"#),
                )
            })
            .collect();
        for chunk in rows.chunks(500) {
            db.insert_telemetry_batch(chunk).await.expect("telemetry");
        }
        db.insert_device_event(
            d,
            since + 1,
            "note",
            EventSource::Device,
            &format!(r#"{{"event":"{MARKER}"}}"#),
        )
        .await
        .expect("event");
    }
    db.create_api_token(owner, &format!("{MARKER}-token"), 3600)
        .await
        .expect("token");
}

fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("data dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if path.is_file() && name.starts_with("palisade.sqlite3") {
            let bytes = std::fs::read(&path).expect("read");
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(name);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_account_leaves_no_trace_in_the_database_files() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let (mut admin, admin_secret) = hub.setup_admin().await;
    let email = format!("{MARKER}@example.org");
    let mut dora = invite_with_email(&hub, &mut admin, "owner-dora", &email).await;
    let mut erin = hub.invite(&mut admin, "owner-erin", "owner").await;
    let dora_id = db
        .user_by_username(&Username::parse("owner-dora").expect("n"))
        .await
        .expect("db")
        .expect("dora")
        .id;
    let erin_id = db
        .user_by_username(&Username::parse("owner-erin").expect("n"))
        .await
        .expect("db")
        .expect("erin")
        .id;
    let product = hub.create_product("thermo-v1").await;
    let d1 = hub.enroll_device(&product).await.id;
    let d2 = hub.enroll_device(&product).await.id;
    let e1 = hub.enroll_device(&product).await.id;
    seed(db, &dora_id, &[d1.clone(), d2.clone()]).await;
    own(db, &e1, &erin_id).await;
    db.insert_telemetry_batch(&[(
        e1.clone(),
        palisade_hub::telemetry::now_ms(),
        r#"{"label":"erin"}"#.into(),
    )])
    .await
    .expect("telemetry");
    dora.post_form("/account/marketing", &[("marketing", "on")])
        .await;
    let (_, dora_token) = db
        .create_api_token(&dora_id, "script", 3600)
        .await
        .expect("token");
    let session = dora.session().expect("session");

    // A substantive policy change Dora has not accepted blocks the console, but not her
    // own data pages: she may take her data and leave without accepting.
    let policy = "# Policy\n\n## What data we collect\n\nYour e-mail address.\n\n## Why we collect it\n\nTo run the service.\n\n## Who receives it\n\nNo third parties.\n\n## How long we keep it\n\n30 days.\n\n## Your rights\n\nExport and delete on your account page.\n\n## Contact\n\nprivacy@example.org\n";
    palisade_hub::privacy::publish(
        db,
        &palisade_hub::accounts::Actor::cli(),
        policy,
        palisade_hub::privacy::Change::Substantive,
        "first policy",
        &hub.hub.url(),
    )
    .await
    .expect("publish");
    assert_eq!(dora.get("/account").await.location(), "/privacy/accept");
    assert_eq!(dora.get("/account/privacy").await.status, 200);

    // Attack: no recent re-authentication: refused, nothing deleted.
    dora.get("/account/privacy").await;
    let page = dora
        .post_form("/account/delete", &[("confirm", "owner-dora")])
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(db.user(&dora_id).await.expect("db").is_some());
    // Attack: re-authenticated, but the confirmation is not her user name.
    let page = dora
        .post_form("/account/privacy/reauth", &[("password", PASSWORD)])
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let page = dora.get("/account/privacy").await;
    assert!(page.body.contains("id=\"delete-form\""), "{}", page.body);
    let page = dora
        .post_form("/account/delete", &[("confirm", "yes")])
        .await;
    assert!(page.body.contains("Type your user name"), "{}", page.body);
    assert!(db.user(&dora_id).await.expect("db").is_some());
    // Attack: the last administrator cannot delete their account, even re-authenticated.
    admin.get("/account/privacy").await;
    // The next step: enrolment used the current one, and a step works once.
    let code = admin_secret.code_at(common::now() + 30).expect("code");
    let page = admin
        .post_form(
            "/account/privacy/reauth",
            &[("password", common::ADMIN_PASSWORD), ("code", &code)],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let page = admin.get("/account/privacy").await;
    assert!(page.body.contains("id=\"last-admin\""), "{}", page.body);
    let page = admin
        .post_form("/account/delete", &[("confirm", common::ADMIN)])
        .await;
    assert!(page.body.contains("last administrator"), "{}", page.body);
    assert_eq!(db.active_admin_count().await.expect("db"), 1);

    // Dora deletes her account.
    dora.get("/account/privacy").await;
    let page = dora
        .post_form("/account/delete", &[("confirm", "owner-dora")])
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("Your account and your data were deleted"),
        "{}",
        page.body
    );
    assert!(dora.session().is_none(), "the session cookie is cleared");

    // The confirmation reached the former address; then its outbox row is gone too.
    let mail = hub
        .wait_for_mail(&email, "was deleted at your request")
        .await;
    assert!(mail.contains("2 devices were released"), "{mail}");
    let mut outbox_empty = false;
    for _ in 0..100 {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE recipient = $1")
            .bind(&email)
            .fetch_one(db.pool())
            .await
            .expect("outbox")
            .try_get("n")
            .expect("n");
        if n == 0 {
            outbox_empty = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(outbox_empty, "the delivered confirmation is not kept");

    // Devices released; Erin's device and data untouched.
    for d in [&d1, &d2] {
        let dev = db.device(d).await.expect("db").expect("device row stays");
        assert!(dev.owner_id.is_none() && dev.owned_since_ms.is_none());
        assert!(db.telemetry(d, 10).await.expect("db").is_empty());
    }
    let e = db.device(&e1).await.expect("db").expect("e1");
    assert_eq!(e.owner_id.as_ref(), Some(&erin_id));
    assert_eq!(db.telemetry(&e1, 10).await.expect("db").len(), 1);
    assert_eq!(erin.get("/account/privacy").await.status, 200);

    // Sign-in, the old session and the API token all fail.
    let mut again = hub.browser();
    let page = again.sign_in("owner-dora", PASSWORD, None).await;
    assert_ne!(page.location(), "/", "{}", page.body);
    let mut old = hub.browser();
    old.cookies
        .insert("__Host-palisade_session".into(), session);
    let page = old.get("/account").await;
    assert_ne!(page.status, 200);
    let r = old
        .request(reqwest::Method::GET, "/api/v1/me")
        .header("authorization", format!("Bearer {dora_token}"));
    assert_eq!(old.send(r).await.status, 401);

    // The user name survives only in audit entries written before the deletion.
    let users_named: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM users WHERE username = 'owner-dora'")
            .fetch_one(db.pool())
            .await
            .expect("users")
            .try_get("n")
            .expect("n");
    assert_eq!(users_named, 0);
    let report = db.verify_audit_chain().await.expect("chain");
    assert_eq!(report.first_broken, None);
    let deletion = db
        .audit_entries(50, None)
        .await
        .expect("audit")
        .into_iter()
        .find(|e| e.action == "account.delete")
        .expect("the deletion is audited");
    assert_eq!(deletion.target, dora_id.as_str());
    assert!(!deletion.actor.contains("dora") && !deletion.detail.contains("dora"));

    // No marker in the database files once the WAL is checkpointed.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(db.pool())
        .await
        .expect("checkpoint");
    let found = files_containing(&hub.data_dir(), MARKER);
    assert!(found.is_empty(), "marker found in {found:?}");
    // The scan works: Erin's e-mail (still an account) is found.
    let erin_mail = db
        .user(&erin_id)
        .await
        .expect("db")
        .expect("erin")
        .email
        .to_string();
    assert!(!files_containing(&hub.data_dir(), &erin_mail).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_deleted_rows_are_gone() {
    common::install_crypto();
    let cluster = common::postgres::PgCluster::start().await;
    let url = cluster.fresh_database_url().await;
    let ring = palisade_crypto::sealed::KeyRing::generate().expect("ring");
    let db = Db::connect_with_secrets(&url, ring).await.expect("connect");
    let product = ProductId::parse("thermo-v1").expect("id");
    db.create_product(&ProductModel {
        id: product.clone(),
        name: "Thermo".into(),
        hardware_revision: "1".into(),
        fields: vec![FieldSpec {
            name: "label".into(),
            kind: FieldKind::String,
            unit: String::new(),
            purpose: "test".into(),
            personal: false,
            retention_days: None,
            optional: false,
        }],
        created_at: 0,
    })
    .await
    .expect("product");
    let username = Username::parse("owner-dora").expect("name");
    let email = Email::parse(&format!("{MARKER}@example.org")).expect("email");
    let user = db
        .insert_user(NewUser {
            username: &username,
            email: &email,
            role: Role::Owner,
            status: Status::Active,
            password_hash: Some("$argon2id$test-hash"),
        })
        .await
        .expect("user");
    let codes = db
        .create_claim_codes(&product, 2, 3600)
        .await
        .expect("codes");
    let mut devices = Vec::new();
    for (i, c) in codes.iter().enumerate() {
        let id = DeviceId::generate();
        db.enroll_device(&c.claim, &id, &format!("{i}").repeat(64), 1)
            .await
            .expect("db")
            .expect("enrolled");
        devices.push(id);
    }
    seed(&db, &user.id, &devices).await;
    db.enqueue_mail(
        email.as_str(),
        "hello",
        "body",
        palisade_hub::mail::Category::Security,
    )
    .await
    .expect("mail");

    let erased = palisade_hub::privacy::erase::erase_account(&db, &user, "127.0.0.1", "Palisade")
        .await
        .expect("erase");
    assert_eq!(erased.devices_released, 2);
    assert_eq!(erased.telemetry_deleted, 4_000);
    assert_eq!(erased.events_deleted, 2);

    // Every row of every table, as text: the marker only in the queued confirmation
    // (an erasure message, deleted once delivered), nowhere else.
    let tables: Vec<String> = sqlx::query(
        "SELECT CAST(table_name AS TEXT) AS t FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(db.pool())
    .await
    .expect("tables")
    .iter()
    .map(|r| r.try_get("t").expect("t"))
    .collect();
    assert!(tables.iter().any(|t| t == "telemetry"));
    for table in &tables {
        let sql = format!("SELECT COUNT(*) AS n FROM {table} x WHERE x::text LIKE $1");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(format!("%{MARKER}%"));
        if table == "outbox" {
            q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) AS n FROM {table} x WHERE x::text LIKE $1 AND category <> 'erasure'"
            )))
            .bind(format!("%{MARKER}%"));
        }
        let n: i64 = q
            .fetch_one(db.pool())
            .await
            .expect("scan")
            .try_get("n")
            .expect("n");
        assert_eq!(n, 0, "marker in table {table}");
    }
    for d in &devices {
        let dev = db.device(d).await.expect("db").expect("device");
        assert!(dev.owner_id.is_none());
    }
    db.close().await;
}
