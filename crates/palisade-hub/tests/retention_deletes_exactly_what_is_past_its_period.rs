//! DATA-2: the retention job deletes exactly what is past its period, per category,
//! from the one table `privacy::inventory::RETENTION` (which `/privacy/data`
//! publishes), on SQLite and on PostgreSQL. Rows are seeded on both sides of every
//! boundary with controlled timestamps: one unit before the boundary goes, the
//! boundary itself stays. Telemetry follows each field's declared period (a field with
//! a shorter period is removed from older readings); open vulnerability reports,
//! unsent mail and policy acceptances (evidence) are never deleted. Batches of two rows
//! make every deletion loop run several times. The console's `/retention` page
//! (administrators only) shows the last and next run and counts, never contents.

mod common;

use common::postgres::PgCluster;
use palisade_hub::audit::{Event, Outcome};
use palisade_hub::config::Retention;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::db::{Backend, Db};
use palisade_hub::ids::ProductId;
use palisade_hub::privacy::inventory;
use palisade_hub::retention::run_once;
use std::collections::BTreeMap;

const DAY: i64 = 86_400;
const DAY_MS: i64 = DAY * 1000;
const D1: &str = "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1";
const D2: &str = "d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2";
const USER: &str = "u1";

fn field(name: &str, days: Option<u32>) -> FieldSpec {
    FieldSpec {
        name: name.into(),
        kind: FieldKind::Number,
        unit: String::new(),
        purpose: format!("{name} for the test"),
        personal: false,
        retention_days: days,
        optional: false,
    }
}

async fn exec(db: &Db, sql: &'static str, text: &[&str], ints: &[i64]) {
    let mut q = sqlx::query(sql);
    for t in text {
        q = q.bind(*t);
    }
    for i in ints {
        q = q.bind(*i);
    }
    q.execute(db.pool()).await.expect(sql);
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(db.pool())
        .await
        .expect(sql)
}

async fn product(db: &Db, id: &str, fields: Vec<FieldSpec>) {
    db.create_product(&ProductModel {
        id: ProductId::parse(id).expect("id"),
        name: id.into(),
        hardware_revision: "1".into(),
        fields,
        created_at: 0,
    })
    .await
    .expect("product");
}

async fn device(db: &Db, id: &str, product: &str) {
    exec(
        db,
        "INSERT INTO devices (id, product_id, status, cert_sha256, cert_not_after, pairing_code_hash, created_at) \
         VALUES ($1, $2, 'active', $3, 0, $4, 0)",
        &[id, product, &format!("cert-{id}"), &format!("pair-{id}")],
        &[],
    )
    .await;
}

async fn telemetry(db: &Db, device: &str, payload: &str, at_ms: i64) {
    exec(
        db,
        "INSERT INTO telemetry (device_id, payload, received_at_ms) VALUES ($1, $2, $3)",
        &[device, payload],
        &[at_ms],
    )
    .await;
}

async fn scenario(db: Db) {
    let retention = Retention {
        batch_rows: 2,
        pause_ms: 0,
        ..Retention::default()
    };
    // Audit entries are written at the real time; two groups a second apart give a
    // boundary between them: the run's `now` puts the audit cutoff at group B's first.
    for i in 0..3 {
        db.audit(Event {
            actor: "test",
            source: "-",
            action: "old.entry",
            target: &i.to_string(),
            outcome: Outcome::Success,
            detail: "",
        })
        .await
        .expect("audit");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let first_b = db
        .audit(Event {
            actor: "test",
            source: "-",
            action: "new.entry",
            target: "b",
            outcome: Outcome::Success,
            detail: "",
        })
        .await
        .expect("audit");
    let b_at = db
        .audit_entries(1, Some(first_b + 1))
        .await
        .expect("entries")[0]
        .at;
    let now = b_at + i64::from(retention.audit_days) * DAY;
    let now_ms = now * 1000;
    let days = |d: u32| i64::from(d) * DAY;

    // Telemetry: "env" keeps humidity for the default 365 days, temperature for 30;
    // "meter" keeps level for 10 days.
    product(
        &db,
        "env-v1",
        vec![field("temperature", Some(30)), field("humidity", None)],
    )
    .await;
    product(&db, "meter-v1", vec![field("level", Some(10))]).await;
    device(&db, D1, "env-v1").await;
    device(&db, D2, "meter-v1").await;
    let year_ms = i64::from(retention.telemetry_days) * DAY_MS;
    for i in 1..=5 {
        telemetry(
            &db,
            D1,
            r#"{"humidity":1,"temperature":1}"#,
            now_ms - year_ms - i,
        )
        .await;
    }
    telemetry(&db, D1, r#"{"humidity":2}"#, now_ms - year_ms).await; // boundary: stays
    telemetry(
        &db,
        D1,
        r#"{"humidity":3,"temperature":3}"#,
        now_ms - 30 * DAY_MS - 1,
    )
    .await;
    telemetry(&db, D1, r#"{"temperature":4}"#, now_ms - 31 * DAY_MS).await; // emptied
    telemetry(
        &db,
        D1,
        r#"{"humidity":5,"temperature":5}"#,
        now_ms - 30 * DAY_MS,
    )
    .await;
    for i in 1..=3 {
        telemetry(&db, D2, r#"{"level":1}"#, now_ms - 10 * DAY_MS - i).await;
    }
    telemetry(&db, D2, r#"{"level":2}"#, now_ms - 10 * DAY_MS).await;

    // Device events: 365 days.
    for (id, at) in [
        ("e-old", (now - days(365)) * 1000 - 1),
        ("e-edge", (now - days(365)) * 1000),
    ] {
        exec(
            &db,
            "INSERT INTO device_events (id, device_id, name, source, payload, received_at_ms) \
             VALUES ($1, $2, 'x', 'device', '{}', $3)",
            &[id, D1],
            &[at],
        )
        .await;
    }
    // Stored device sessions: once expired.
    for (device, expires) in [(D1, now - 1), (D2, now)] {
        exec(
            &db,
            "INSERT INTO mqtt_sessions (device_id, subscriptions, expires_at) VALUES ($1, '[]', $2)",
            &[device],
            &[expires],
        )
        .await;
    }

    // An account with sessions, tokens and links.
    exec(
        &db,
        "INSERT INTO users (id, username, email, role, status, created_at) VALUES ($1, 'owner', 'o@example.com', 'owner', 'active', 0)",
        &[USER],
        &[],
    )
    .await;
    for (hash, expires) in [("s-old", now - 1), ("s-edge", now)] {
        exec(
            &db,
            "INSERT INTO sessions (token_hash, user_id, stage, csrf, created_at, last_seen_at, source, user_agent, expires_at) \
             VALUES ($1, $2, 'full', 'c', 0, 0, '-', '-', $3)",
            &[hash, USER],
            &[expires],
        )
        .await;
    }
    for (id, expires, revoked) in [
        ("t-expired", now - days(30) - 1, None),
        ("t-edge", now - days(30), None),
        ("t-revoked", now + days(30), Some(now - days(30) - 1)),
        ("t-live", now + days(30), None),
    ] {
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at, revoked_at) \
             VALUES ($1, $2, 'n', $3, 0, $4, $5)",
        )
        .bind(id)
        .bind(USER)
        .bind(format!("h-{id}"))
        .bind(expires)
        .bind(revoked)
        .execute(db.pool())
        .await
        .expect("token");
    }
    for (hash, expires) in [("o-old", now - 1), ("o-edge", now)] {
        exec(
            &db,
            "INSERT INTO one_time_tokens (token_hash, purpose, user_id, created_at, expires_at) VALUES ($1, 'reset', $2, 0, $3)",
            &[hash, USER],
            &[expires],
        )
        .await;
        exec(
            &db,
            "INSERT INTO setup_codes (code_hash, created_at, expires_at) VALUES ($1, 0, $2)",
            &[hash],
            &[expires],
        )
        .await;
    }
    // Mail: delivered records go after 30 days; unsent mail is never deleted here.
    for (id, sent) in [
        ("m-old", Some(now - days(30) - 1)),
        ("m-edge", Some(now - days(30))),
        ("m-unsent", None),
    ] {
        sqlx::query(
            "INSERT INTO outbox (id, recipient, subject, body, category, created_at, next_attempt_at, sent_at) \
             VALUES ($1, 'o@example.com', 's', '', 'security', 0, 0, $2)",
        )
        .bind(id)
        .bind(sent)
        .execute(db.pool())
        .await
        .expect("mail");
    }
    // Reports: closed ones after 730 days from their last change; open ones stay.
    for (id, state, updated) in [
        ("r-closed-old", "duplicate", now - days(730) - 1),
        ("r-closed-edge", "disclosed", now - days(730)),
        ("r-open-old", "triaged", now - days(2000)),
    ] {
        exec(
            &db,
            "INSERT INTO vuln_reports (id, status_hash, title, description, reporter_name, reporter_email, product, \
             source_key, state, cvss_vector, cvss_score, affected, assignee_id, received_at, last_update_at, updated_at) \
             VALUES ($1, $2, 't', 'd', '', '', '', 'k', $3, '', -1, '', '', 0, 0, $4)",
            &[id, &format!("sh-{id}"), state],
            &[updated],
        )
        .await;
    }
    // Earlier runs' records: 90 days.
    for (id, started) in [
        ("run-old", now - days(90) - 1),
        ("run-edge", now - days(90)),
    ] {
        exec(
            &db,
            "INSERT INTO retention_runs (id, started_at, finished_at, counts, error) VALUES ($1, $2, $2, '{}', '')",
            &[id],
            &[started],
        )
        .await;
    }
    // Policy acceptances are evidence: never deleted by the job, however old.
    exec(
        &db,
        "INSERT INTO policy_acceptances (user_id, version, accepted_at) VALUES ($1, 1, 0)",
        &[USER],
        &[],
    )
    .await;

    let report = run_once(&db, &retention, now).await.expect("retention run");
    let counts: BTreeMap<&str, u64> = report.counts.iter().map(|c| (c.key, c.deleted)).collect();
    let expected: BTreeMap<&str, u64> = [
        ("telemetry", 5 + 3),
        ("device_events", 1),
        ("mqtt_sessions", 1),
        ("sessions", 1),
        ("api_tokens", 2),
        ("one_time_tokens", 2),
        ("outbox", 1),
        ("reports", 1),
        ("retention_runs", 1),
        ("audit", 3),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, expected, "{:?}", db.backend());
    // temperature removed from two readings; one of them had nothing else and went.
    assert_eq!(report.telemetry_fields_removed, 2);
    // Every rule of the published table ran, except the one that keeps evidence.
    for rule in inventory::RETENTION {
        assert_eq!(
            counts.contains_key(rule.key),
            rule.key != "policy_acceptances",
            "{}",
            rule.key
        );
    }

    let d1: Vec<String> = sqlx::query_scalar(
        "SELECT payload FROM telemetry WHERE device_id = $1 ORDER BY received_at_ms",
    )
    .bind(D1)
    .fetch_all(db.pool())
    .await
    .expect("telemetry");
    assert_eq!(
        d1,
        [
            r#"{"humidity":2}"#,
            r#"{"humidity":3}"#,
            r#"{"humidity":5,"temperature":5}"#
        ],
        "readings past the row period gone, temperature removed after 30 days"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM telemetry WHERE payload = '{\"level\":2}'"
        )
        .await,
        1
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM telemetry").await, 4);
    for (sql, left) in [
        ("SELECT COUNT(*) FROM device_events WHERE id = 'e-edge'", 1),
        ("SELECT COUNT(*) FROM device_events", 1),
        ("SELECT COUNT(*) FROM mqtt_sessions", 1),
        (
            "SELECT COUNT(*) FROM sessions WHERE token_hash = 's-edge'",
            1,
        ),
        ("SELECT COUNT(*) FROM sessions", 1),
        (
            "SELECT COUNT(*) FROM api_tokens WHERE id IN ('t-edge', 't-live')",
            2,
        ),
        ("SELECT COUNT(*) FROM api_tokens", 2),
        (
            "SELECT COUNT(*) FROM one_time_tokens WHERE token_hash = 'o-edge'",
            1,
        ),
        (
            "SELECT COUNT(*) FROM setup_codes WHERE code_hash = 'o-edge'",
            1,
        ),
        (
            "SELECT COUNT(*) FROM outbox WHERE id IN ('m-edge', 'm-unsent')",
            2,
        ),
        ("SELECT COUNT(*) FROM outbox", 2),
        (
            "SELECT COUNT(*) FROM vuln_reports WHERE id IN ('r-closed-edge', 'r-open-old')",
            2,
        ),
        ("SELECT COUNT(*) FROM vuln_reports", 2),
        (
            "SELECT COUNT(*) FROM retention_runs WHERE id = 'run-edge'",
            1,
        ),
        ("SELECT COUNT(*) FROM policy_acceptances", 1),
        (
            "SELECT COUNT(*) FROM audit_log WHERE action = 'old.entry'",
            0,
        ),
        (
            "SELECT COUNT(*) FROM audit_log WHERE action = 'new.entry'",
            1,
        ),
    ] {
        assert_eq!(count(&db, sql).await, left, "{sql} on {:?}", db.backend());
    }
    // The chain that remains still verifies from the checkpoint.
    let chain = db.verify_audit_chain().await.expect("verify");
    assert_eq!(chain.first_broken, None, "{chain:?}");
    assert_eq!(db.audit_checkpoint().await.expect("checkpoint").0, 3);

    // A second run finds nothing more (nothing else crossed a boundary).
    let again = run_once(&db, &retention, now).await.expect("second run");
    assert_eq!(again.total(), 0, "{:?}", again.counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data2_retention_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("hub.db").display());
    let db = Db::connect(&url).await.expect("db");
    assert_eq!(db.backend(), Backend::Sqlite);
    scenario(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data2_retention_on_postgres() {
    let cluster = PgCluster::start().await;
    let db = Db::connect(&cluster.fresh_database_url().await)
        .await
        .expect("db");
    assert_eq!(db.backend(), Backend::Postgres);
    scenario(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data2_console_shows_runs_as_counts_to_administrators_only() {
    let hub = common::TestHub::start().await;
    let (mut admin, _) = hub.setup_admin().await;
    let page = admin.get("/retention").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("The job has not run yet."),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("id=\"period-telemetry\""),
        "{}",
        page.body
    );

    let config = hub.hub.state.config.clone();
    let report = palisade_hub::retention::run_and_record(&hub.hub.db, &config.retention)
        .await
        .expect("run");
    let page = admin.get("/retention").await;
    assert!(!page.body.contains("The job has not run yet."));
    assert!(page.body.contains("id=\"last-counts\""), "{}", page.body);
    // What the run deleted is shown as a number per kind.
    for c in &report.counts {
        assert!(
            page.body.contains(&format!(
                "<tr><td>{}</td><td>{}</td></tr>",
                c.key, c.deleted
            )),
            "{} missing: {}",
            c.key,
            page.body
        );
    }
    let audited = hub.hub.db.audit_entries(10, None).await.expect("audit");
    assert!(audited.iter().any(|e| e.action == "retention.run"));

    // Not for anyone else: an anonymous visitor is sent to sign in, never shown it.
    let anonymous = hub.browser().get("/retention").await;
    assert_ne!(anonymous.status, 200);
    assert!(!anonymous.body.contains("last-counts"));
    hub.hub.shutdown().await;
}
