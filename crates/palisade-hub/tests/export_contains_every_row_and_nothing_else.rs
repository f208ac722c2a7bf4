//! DATA-4 (export), ACC-3, AUTH (re-authentication): an owner's export contains every
//! row the hub holds for them — compared row by row against the database — and nothing
//! of another owner, and no secret. Seeded: two owners, devices, 12,000 telemetry rows
//! with repeated timestamps and CSV-hostile payloads (page boundaries inside runs of
//! equal times), events, consents, an API token, mail. The archive is read with
//! Python's `zipfile` (an independent reader, which also checks every CRC).
//! Attacks: the export without a recent re-authentication (console session), with a
//! wrong password, and with an API token alone, are all refused.

mod common;

use common::{Browser, TestHub};
use palisade_hub::db::Db;
use palisade_hub::db::device_events::EventSource;
use palisade_hub::ids::{DeviceId, UserId};
use serde_json::Value;
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const PASSWORD: &str = "juniper cobalt harbour violin";

/// Make `owner` own `device` from now on (the claim itself is tested elsewhere).
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

async fn user_id(db: &Db, name: &str) -> UserId {
    let u = db
        .user_by_username(&palisade_hub::ids::Username::parse(name).expect("name"))
        .await
        .expect("db")
        .expect("user");
    u.id
}

/// Download with the browser's cookies (and extra headers); returns status and bytes.
async fn download(b: &Browser, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    let mut r = b.request(reqwest::Method::GET, path);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let response = r.send().await.expect("GET");
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, kind, response.bytes().await.expect("body").to_vec())
}

/// Extract with Python's zipfile after `testzip()` (CRC of every member).
fn extract(zip: &Path, into: &Path) {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nbad = z.testzip()\nassert bad is None, bad\nz.extractall(sys.argv[2])",
        ])
        .arg(zip)
        .arg(into)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Parse RFC 4180 CSV (quoted fields may hold commas, quotes and newlines).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_holds_every_row_of_its_owner_and_nothing_else() {
    let hub = TestHub::start().await;
    let db = &hub.hub.db;
    let (mut admin, _) = hub.setup_admin().await;
    let mut anna = hub.invite(&mut admin, "owner-anna", "owner").await;
    let mut bert = hub.invite(&mut admin, "owner-bert", "owner").await;
    let anna_id = user_id(db, "owner-anna").await;
    let bert_id = user_id(db, "owner-bert").await;

    let product = hub.create_product("thermo-v1").await;
    let a1 = hub.enroll_device(&product).await.id;
    let a2 = hub.enroll_device(&product).await.id;
    let b1 = hub.enroll_device(&product).await.id;
    // One inbox notice each (the advisories' security notices land here).
    for (id, user, about) in [
        ("notice-anna", &anna_id, "PAL-2026-0001"),
        ("notice-bert", &bert_id, "PAL-2026-0002"),
    ] {
        sqlx::query(
            "INSERT INTO notices (id, user_id, kind, ref_id, subject, body, created_at, read_at) \
             VALUES ($1, $2, 'security', $3, 'Security advisory', 'Update your lamp.', 1, 0)",
        )
        .bind(id)
        .bind(user.as_str())
        .bind(about)
        .execute(db.pool())
        .await
        .expect("notice");
    }
    let since_a1 = own(db, &a1, &anna_id).await;
    let since_a2 = own(db, &a2, &anna_id).await;
    own(db, &b1, &bert_id).await;

    // Before Anna's ownership: not hers, never exported.
    db.insert_telemetry_batch(&[(
        a1.clone(),
        since_a1 - 5_000,
        r#"{"label":"before-anna"}"#.into(),
    )])
    .await
    .expect("telemetry");
    // 12,000 rows for a1, three per millisecond, payloads with commas, quotes, newlines.
    let mut batch = Vec::new();
    for i in 0..12_000i64 {
        let payload =
            serde_json::json!({ "seq": i, "label": format!("a,\"{}\"\nx", i % 7) }).to_string();
        batch.push((a1.clone(), since_a1 + 1 + i / 3, payload));
        if batch.len() == 1000 {
            db.insert_telemetry_batch(&batch).await.expect("telemetry");
            batch.clear();
        }
    }
    for i in 0..25i64 {
        batch.push((
            a2.clone(),
            since_a2 + i,
            format!(r#"{{"seq":{i},"temperature":20.5}}"#),
        ));
    }
    db.insert_telemetry_batch(&batch).await.expect("telemetry");
    db.insert_telemetry_batch(&[(
        b1.clone(),
        since_a1 + 10,
        r#"{"label":"bert-secret-kitchen"}"#.into(),
    )])
    .await
    .expect("telemetry");
    db.insert_device_event(
        &a1,
        since_a1 + 7,
        "online",
        EventSource::Device,
        r#"{"event":"online"}"#,
    )
    .await
    .expect("event");
    db.insert_device_event(
        &b1,
        since_a1 + 7,
        "online",
        EventSource::Device,
        r#"{"event":"bert-event"}"#,
    )
    .await
    .expect("event");

    // Anna opts in to marketing and makes an API token; Bert too (his must not appear).
    anna.get("/account").await;
    anna.post_form("/account/marketing", &[("marketing", "on")])
        .await;
    let (_, anna_token) = db
        .create_api_token(&anna_id, "anna-script", 3600)
        .await
        .expect("token");
    let (_, bert_token) = db
        .create_api_token(&bert_id, "bert-script", 3600)
        .await
        .expect("token");
    bert.get("/account").await;

    // Attack: no recent re-authentication — the console export is refused.
    let (status, _, body) = download(&anna, "/account/export", &[]).await;
    assert_eq!(status, 403);
    assert!(!body.starts_with(b"PK"));
    // Attack: a wrong password does not open it.
    let page = anna.get("/account/privacy").await;
    assert!(page.body.contains("id=\"reauth-form\""), "{}", page.body);
    let page = anna
        .post_form(
            "/account/privacy/reauth",
            &[("password", "wrong password entirely")],
        )
        .await;
    assert!(page.body.contains("not correct"), "{}", page.body);
    let (status, _, _) = download(&anna, "/account/export", &[]).await;
    assert_eq!(status, 403);
    // Attack: an API token alone (or with a wrong password) is refused.
    let bearer = format!("Bearer {anna_token}");
    let (status, _, _) = download(
        &anna_api(&hub),
        "/api/v1/me/export",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = download(
        &anna_api(&hub),
        "/api/v1/me/export",
        &[
            ("authorization", &bearer),
            ("x-palisade-password", "not the password"),
        ],
    )
    .await;
    assert_eq!(status, 403);

    // Re-authenticate, then export.
    anna.get("/account/privacy").await;
    let page = anna
        .post_form("/account/privacy/reauth", &[("password", PASSWORD)])
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let page = anna.get("/account/privacy").await;
    assert!(page.body.contains("id=\"export-link\""), "{}", page.body);
    let (status, kind, zip) = download(&anna, "/account/export", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(kind, "application/zip");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("export.zip");
    std::fs::write(&file, &zip).expect("write");
    let out = dir.path().join("x");
    extract(&file, &out);
    let read = |name: &str| std::fs::read_to_string(out.join(name)).expect(name);
    let names: BTreeSet<String> = std::fs::read_dir(&out)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = [
        "README.txt",
        "account.json",
        "consents.json",
        "devices.json",
        "device_events.json",
        "telemetry.csv",
        "mail.json",
        "notices.json",
        "audit.json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names, expected);

    // Account: the stored row, without secrets.
    let user = db.user(&anna_id).await.expect("db").expect("anna");
    let account: Value = serde_json::from_str(&read("account.json")).expect("json");
    assert_eq!(account["id"], anna_id.as_str());
    assert_eq!(account["username"], "owner-anna");
    assert_eq!(account["email"], user.email.as_str());
    assert_eq!(account["created_at"], user.created_at);
    assert_eq!(account["api_tokens"].as_array().map(Vec::len), Some(1));
    assert_eq!(account["api_tokens"][0]["name"], "anna-script");

    // Consents: exactly the stored rows.
    let consents: Value = serde_json::from_str(&read("consents.json")).expect("json");
    let stored = sqlx::query("SELECT purpose, granted FROM consents WHERE user_id = $1")
        .bind(anna_id.as_str())
        .fetch_all(db.pool())
        .await
        .expect("consents");
    assert_eq!(
        consents["consents"].as_array().map(Vec::len),
        Some(stored.len())
    );
    assert_eq!(consents["consents"][0]["purpose"], "marketing");
    assert_eq!(consents["consents"][0]["granted"], true);

    // Devices: exactly Anna's.
    let devices: Value = serde_json::from_str(&read("devices.json")).expect("json");
    let ids: BTreeSet<&str> = devices
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, BTreeSet::from([a1.as_str(), a2.as_str()]));

    // Telemetry: row by row, as a multiset, against the database.
    let csv = parse_csv(&read("telemetry.csv"));
    assert_eq!(csv[0], ["device_id", "received_at_ms", "payload"]);
    let mut exported: BTreeMap<(String, i64, String), usize> = BTreeMap::new();
    for row in &csv[1..] {
        assert_eq!(row.len(), 3, "{row:?}");
        *exported
            .entry((row[0].clone(), row[1].parse().expect("ms"), row[2].clone()))
            .or_default() += 1;
    }
    let mut stored: BTreeMap<(String, i64, String), usize> = BTreeMap::new();
    for (device, since) in [(&a1, since_a1), (&a2, since_a2)] {
        let rows = sqlx::query(
            "SELECT device_id, received_at_ms, payload FROM telemetry WHERE device_id = $1 AND received_at_ms >= $2",
        )
        .bind(device.as_str())
        .bind(since)
        .fetch_all(db.pool())
        .await
        .expect("rows");
        for r in rows {
            *stored
                .entry((
                    r.try_get("device_id").expect("c"),
                    r.try_get("received_at_ms").expect("c"),
                    r.try_get("payload").expect("c"),
                ))
                .or_default() += 1;
        }
    }
    assert_eq!(csv.len() - 1, 12_025);
    assert_eq!(exported, stored);

    // Events: Anna's only.
    let events: Value = serde_json::from_str(&read("device_events.json")).expect("json");
    assert_eq!(events.as_array().map(Vec::len), Some(1));
    assert_eq!(events[0]["device_id"], a1.as_str());

    // Mail: every message addressed to Anna, by id.
    let mail: Value = serde_json::from_str(&read("mail.json")).expect("json");
    let exported: BTreeSet<String> = mail
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect();
    let stored: BTreeSet<String> = sqlx::query("SELECT id FROM outbox WHERE recipient = $1")
        .bind(user.email.as_str())
        .fetch_all(db.pool())
        .await
        .expect("mail")
        .iter()
        .map(|r| r.try_get("id").expect("id"))
        .collect();
    assert!(!stored.is_empty());
    assert_eq!(exported, stored);

    // Inbox notices: Anna's, not Bert's.
    let notices: Value = serde_json::from_str(&read("notices.json")).expect("json");
    let notices = notices.as_array().expect("array");
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["id"], "notice-anna");
    assert_eq!(notices[0]["about"], "PAL-2026-0001");

    // Audit: every entry naming Anna up to the export, by sequence number.
    let audit: Value = serde_json::from_str(&read("audit.json")).expect("json");
    let exported: Vec<i64> = audit
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .collect();
    let last = *exported.last().expect("entries");
    let stored: Vec<i64> = sqlx::query(
        "SELECT seq FROM audit_log WHERE seq <= $1 AND (actor = $2 OR target = $2 OR target = $3) ORDER BY seq",
    )
    .bind(last)
    .bind("owner-anna")
    .bind(anna_id.as_str())
    .fetch_all(db.pool())
    .await
    .expect("audit")
    .iter()
    .map(|r| r.try_get("seq").expect("seq"))
    .collect();
    assert_eq!(exported, stored);
    assert!(
        audit
            .as_array()
            .expect("a")
            .iter()
            .any(|e| e["action"] == "account.export")
    );

    // Nothing of Bert, and no secret of anyone.
    let everything: String = expected.iter().map(|n| read(n)).collect();
    let bert_user = db.user(&bert_id).await.expect("db").expect("bert");
    let secret_columns: Vec<String> = sqlx::query(
        "SELECT token_hash AS s FROM api_tokens UNION SELECT token_hash AS s FROM sessions \
         UNION SELECT csrf AS s FROM sessions UNION SELECT code_hash AS s FROM recovery_codes \
         UNION SELECT pairing_code_hash AS s FROM devices UNION SELECT cert_sha256 AS s FROM devices",
    )
    .fetch_all(db.pool())
    .await
    .expect("secrets")
    .iter()
    .map(|r| r.try_get("s").expect("s"))
    .collect();
    let mut forbidden = vec![
        "owner-bert".to_owned(),
        bert_user.email.to_string(),
        b1.to_string(),
        "bert-secret-kitchen".into(),
        "bert-event".into(),
        "bert-script".into(),
        "before-anna".into(),
        anna_token.clone(),
        bert_token.clone(),
        user.password_hash.clone().expect("hash"),
    ];
    forbidden.extend(secret_columns);
    for f in &forbidden {
        assert!(
            !everything.contains(f.as_str()),
            "the export contains {f:?}"
        );
    }

    // The API: token plus password in the request gives the same telemetry.
    let (status, kind, zip) = download(
        &anna_api(&hub),
        "/api/v1/me/export",
        &[
            ("authorization", &bearer),
            ("x-palisade-password", PASSWORD),
        ],
    )
    .await;
    assert_eq!((status, kind.as_str()), (200, "application/zip"));
    let file = dir.path().join("api.zip");
    std::fs::write(&file, &zip).expect("write");
    let out2 = dir.path().join("y");
    extract(&file, &out2);
    let csv2 = std::fs::read_to_string(out2.join("telemetry.csv")).expect("csv");
    assert_eq!(parse_csv(&csv2).len(), csv.len());
}

/// A client with no cookies, for API-token requests.
fn anna_api(hub: &TestHub) -> Browser {
    hub.browser()
}
