//! STOR: the storage layer keeps one contract on both engines. The same suite, written
//! once against the public API of `palisade_hub::db::Db`, runs against embedded SQLite
//! (a temporary file) and against a real PostgreSQL server (a throwaway cluster), so
//! a query that works on one engine only, a type that decodes differently through
//! sqlx's Any driver, a missing constraint or a lost foreign key fails here.
//!
//! Covered: forward-only migrations that refuse a newer schema (and, on PostgreSQL,
//! survive several hub nodes starting at once); users and their uniqueness; cascading
//! deletes; the TOTP replay guard and recovery codes (AUTH-8); failed-login counters
//! and locks (AUTH-7); sessions (AUTH-11); the single-use setup code (AUTH-2); one-time
//! links and per-object API token revocation; the hash-chained audit log, including
//! tamper detection and concurrent writers (MON-1); the mail outbox; and the console's
//! device views (bounded fleet search with literal `LIKE` wildcards, status filter, a
//! device's audit trail).
//!
//! PostgreSQL is never skipped: without its server binaries the test fails and says
//! how to install them.

#[path = "common/postgres.rs"]
mod postgres;

use palisade_hub::audit::{ChainReport, Event, Outcome};
use palisade_hub::db::sessions::{SessionTimes, Stage};
use palisade_hub::db::tokens::{API_TOKEN_PREFIX, Purpose};
use palisade_hub::db::users::{NewUser, Role, Status, User};
use palisade_hub::db::{Backend, Db, LATEST_VERSION, now};
use palisade_hub::error::Error;
use palisade_hub::ids::{Email, UserId, Username};
use palisade_hub::mail::{Category, Delivery, deliver_due};
use postgres::PgCluster;
use sqlx::Row;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where fresh, empty databases come from.
enum Engine {
    Sqlite {
        dir: tempfile::TempDir,
        next: AtomicU32,
    },
    Postgres(PgCluster),
}

impl Engine {
    fn sqlite() -> Engine {
        Engine::Sqlite {
            dir: tempfile::tempdir().expect("temporary directory for SQLite files"),
            next: AtomicU32::new(1),
        }
    }

    fn backend(&self) -> Backend {
        match self {
            Engine::Sqlite { .. } => Backend::Sqlite,
            Engine::Postgres(_) => Backend::Postgres,
        }
    }

    /// The URL of a new, empty database.
    async fn fresh_url(&self) -> String {
        match self {
            Engine::Sqlite { dir, next } => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join(format!("hub-{n}.db")).display()
                )
            }
            Engine::Postgres(cluster) => cluster.fresh_database_url().await,
        }
    }

    /// A new, empty, migrated database.
    async fn fresh_db(&self) -> Db {
        let url = self.fresh_url().await;
        let db = Db::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("Db::connect({url}) failed: {e}"));
        assert_eq!(
            db.backend(),
            self.backend(),
            "Db::connect picked the wrong backend for {url}"
        );
        db
    }
}

/// The whole contract; every part gets its own database so failures stay local.
async fn contract(engine: &Engine) {
    migrations(engine).await;
    if engine.backend() == Backend::Postgres {
        // Several hub nodes share one PostgreSQL database; the embedded SQLite file
        // belongs to a single hub process, so this part is PostgreSQL's alone.
        nodes_starting_together(engine).await;
    }
    users(engine.fresh_db().await).await;
    foreign_keys_cascade(engine.fresh_db().await).await;
    totp_replay_guard(engine.fresh_db().await).await;
    failed_logins_and_locks(engine.fresh_db().await).await;
    recovery_codes(engine.fresh_db().await).await;
    sessions(engine.fresh_db().await).await;
    setup_codes(engine.fresh_db().await).await;
    one_time_tokens(engine.fresh_db().await).await;
    api_tokens(engine.fresh_db().await).await;
    audit_chain(engine).await;
    audit_concurrent_writers(engine.fresh_db().await).await;
    outbox(engine.fresh_db().await).await;
    device_views(engine.fresh_db().await).await;
    telemetry_batches(engine.fresh_db().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_contract_sqlite() {
    let engine = Engine::sqlite();
    contract(&engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_contract_postgres() {
    let engine = Engine::Postgres(PgCluster::start().await);
    contract(&engine).await;
}

// --- helpers -------------------------------------------------------------------------

fn times() -> SessionTimes {
    SessionTimes {
        idle_secs: 3600,
        absolute_secs: 86_400,
    }
}

async fn add_user(db: &Db, name: &str, role: Role, status: Status) -> User {
    let username = Username::parse(name).expect("valid test user name");
    let email = Email::parse(&format!("{name}@example.org")).expect("valid test e-mail");
    db.insert_user(NewUser {
        username: &username,
        email: &email,
        role,
        status,
        password_hash: Some("$argon2id$test-hash"),
    })
    .await
    .unwrap_or_else(|e| panic!("insert_user({name}) failed: {e}"))
}

async fn reload(db: &Db, id: &UserId) -> User {
    db.user(id)
        .await
        .expect("look up user")
        .expect("user exists")
}

/// `SELECT COUNT(*)` of a table's rows belonging to a user (raw SQL, engine-neutral).
async fn count_for_user(db: &Db, sql: &'static str, user: &UserId) -> i64 {
    sqlx::query(sql)
        .bind(user.as_str())
        .fetch_one(db.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .try_get("n")
        .expect("count column n")
}

async fn exec(db: &Db, sql: &'static str, args: &[i64]) -> u64 {
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind(*a);
    }
    q.execute(db.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .rows_affected()
}

fn event<'a>(action: &'a str, detail: &'a str) -> Event<'a> {
    Event {
        actor: "alice",
        source: "127.0.0.1",
        action,
        target: "bob",
        outcome: Outcome::Success,
        detail,
    }
}

async fn append_events(db: &Db, n: i64) {
    for i in 1..=n {
        let detail = format!("event number {i}");
        let seq = db
            .audit(event("test.event", &detail))
            .await
            .expect("append audit event");
        assert_eq!(
            seq, i,
            "audit() returns consecutive sequence numbers from 1"
        );
    }
}

// --- the contract --------------------------------------------------------------------

/// STOR: migrations bring a new database to LATEST_VERSION, are idempotent, and a
/// database written by a newer binary is refused rather than misread.
async fn migrations(engine: &Engine) {
    let url = engine.fresh_url().await;
    let db = Db::connect(&url).await.expect("first connect migrates");
    assert_eq!(
        db.schema_version().await.expect("schema_version"),
        LATEST_VERSION
    );
    let alice = add_user(&db, "alice", Role::Owner, Status::Active).await;

    let again = Db::connect(&url)
        .await
        .expect("second connect is idempotent");
    assert_eq!(
        again.schema_version().await.expect("schema_version"),
        LATEST_VERSION
    );
    let rows: i64 = sqlx::query("SELECT COUNT(*) AS n FROM schema_migrations")
        .fetch_one(again.pool())
        .await
        .expect("count schema_migrations")
        .try_get("n")
        .expect("n");
    assert_eq!(
        rows,
        palisade_hub::db::MIGRATION_COUNT,
        "each migration is recorded exactly once"
    );
    assert!(
        again.user(&alice.id).await.expect("lookup").is_some(),
        "data survives a reconnect"
    );
    again.close().await;

    // A version from the future: the binary must refuse to touch the database.
    sqlx::query(
        "INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
    )
    .bind(LATEST_VERSION + 1)
    .bind("from a newer palisade")
    .bind(now())
    .execute(db.pool())
    .await
    .expect("insert future schema version");
    db.close().await;
    match Db::connect(&url).await {
        Err(Error::SchemaTooNew { found, supported }) => {
            assert_eq!(found, LATEST_VERSION + 1);
            assert_eq!(supported, LATEST_VERSION);
        }
        Err(other) => panic!("a too-new schema must give SchemaTooNew, got: {other}"),
        Ok(_) => panic!("Db::connect accepted a schema newer than this binary"),
    }
}

/// STOR: hub nodes starting together on one empty PostgreSQL database all come up,
/// and the schema is migrated exactly once.
async fn nodes_starting_together(engine: &Engine) {
    for _round in 0..3 {
        let url = engine.fresh_url().await;
        let mut nodes = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let url = url.clone();
            nodes.spawn(async move { Db::connect(&url).await });
        }
        while let Some(joined) = nodes.join_next().await {
            let db = joined
                .expect("connect task panicked")
                .unwrap_or_else(|e| panic!("a node starting together with others failed: {e}"));
            db.close().await;
        }
        let db = Db::connect(&url)
            .await
            .expect("connect after the concurrent start");
        assert_eq!(
            db.schema_version().await.expect("schema_version"),
            LATEST_VERSION
        );
        let rows: i64 = sqlx::query("SELECT COUNT(*) AS n FROM schema_migrations")
            .fetch_one(db.pool())
            .await
            .expect("count schema_migrations")
            .try_get("n")
            .expect("n");
        assert_eq!(
            rows,
            palisade_hub::db::MIGRATION_COUNT,
            "each migration applied exactly once"
        );
        db.close().await;
    }
}

/// STOR: users are stored and found by id, user name and e-mail; both are unique;
/// status and role changes drive the active-administrator count.
async fn users(db: Db) {
    let alice = add_user(&db, "alice", Role::Owner, Status::Active).await;
    assert_eq!(alice.username.as_str(), "alice");
    assert_eq!(alice.email.as_str(), "alice@example.org");
    assert_eq!(alice.role, Role::Owner);
    assert_eq!(alice.status, Status::Active);
    assert_eq!(alice.password_hash.as_deref(), Some("$argon2id$test-hash"));
    assert_eq!(alice.totp_secret, None);
    assert_eq!(alice.totp_pending, None);
    assert_eq!(
        (
            alice.totp_last_step,
            alice.failed_logins,
            alice.locked_until
        ),
        (0, 0, 0)
    );
    assert!(!alice.hard_locked);
    assert_eq!(alice.last_login_at, None);
    assert!(
        (now() - alice.created_at).abs() < 60,
        "created_at is now, in Unix seconds"
    );

    let by_id = reload(&db, &alice.id).await;
    assert_eq!(by_id.username, alice.username);
    let by_name = db
        .user_by_username(&Username::parse("Alice").expect("name"))
        .await
        .expect("user_by_username")
        .expect("found by user name");
    assert_eq!(by_name.id, alice.id);
    let by_email = db
        .user_by_email(&Email::parse("ALICE@example.org").expect("email"))
        .await
        .expect("user_by_email")
        .expect("found by e-mail");
    assert_eq!(by_email.id, alice.id);
    assert!(
        db.user(&UserId::generate())
            .await
            .expect("lookup")
            .is_none(),
        "unknown id finds nothing"
    );
    assert!(
        db.user_by_username(&Username::parse("nobody").expect("name"))
            .await
            .expect("lookup")
            .is_none()
    );

    // Uniqueness of user name and e-mail, reported as a conflict, not a database error.
    let other_email = Email::parse("other@example.org").expect("email");
    let dup_name = db
        .insert_user(NewUser {
            username: &alice.username,
            email: &other_email,
            role: Role::Owner,
            status: Status::Pending,
            password_hash: None,
        })
        .await;
    assert!(
        matches!(dup_name, Err(Error::Conflict(_))),
        "duplicate user name: {:?}",
        dup_name.err()
    );
    let other_name = Username::parse("other").expect("name");
    let dup_email = db
        .insert_user(NewUser {
            username: &other_name,
            email: &alice.email,
            role: Role::Owner,
            status: Status::Pending,
            password_hash: None,
        })
        .await;
    assert!(
        matches!(dup_email, Err(Error::Conflict(_))),
        "duplicate e-mail: {:?}",
        dup_email.err()
    );
    assert_eq!(
        db.users().await.expect("users").len(),
        1,
        "a refused insert stores nothing"
    );

    // Status and role; only active administrators count.
    assert_eq!(db.active_admin_count().await.expect("count"), 0);
    let root = add_user(&db, "root", Role::Admin, Status::Pending).await;
    assert_eq!(
        db.active_admin_count().await.expect("count"),
        0,
        "a pending admin does not count"
    );
    db.set_status(&root.id, Status::Active)
        .await
        .expect("set_status");
    assert_eq!(reload(&db, &root.id).await.status, Status::Active);
    assert_eq!(db.active_admin_count().await.expect("count"), 1);
    db.set_role(&root.id, Role::Operator)
        .await
        .expect("set_role");
    assert_eq!(reload(&db, &root.id).await.role, Role::Operator);
    assert_eq!(
        db.active_admin_count().await.expect("count"),
        0,
        "an operator does not count"
    );
    db.set_role(&root.id, Role::Admin).await.expect("set_role");
    assert_eq!(db.active_admin_count().await.expect("count"), 1);
    db.set_status(&root.id, Status::Disabled)
        .await
        .expect("set_status");
    assert_eq!(reload(&db, &root.id).await.status, Status::Disabled);
    assert_eq!(
        db.active_admin_count().await.expect("count"),
        0,
        "a disabled admin does not count"
    );
    db.close().await;
}

/// STOR: deleting a user deletes everything hanging off it (foreign keys are enforced
/// on both engines, including SQLite, where they are off unless asked for).
async fn foreign_keys_cascade(db: Db) {
    let alice = add_user(&db, "alice", Role::Owner, Status::Active).await;
    let bob = add_user(&db, "bob", Role::Owner, Status::Active).await;
    let (raw, _) = db
        .create_session(&alice.id, Stage::Full, times(), "127.0.0.1", "test")
        .await
        .expect("create_session");
    db.create_session(&alice.id, Stage::Mfa, times(), "127.0.0.1", "test")
        .await
        .expect("create_session");
    let (bob_raw, _) = db
        .create_session(&bob.id, Stage::Full, times(), "127.0.0.1", "test")
        .await
        .expect("create_session");
    db.replace_recovery_codes(&alice.id, &["r1".to_owned(), "r2".to_owned()])
        .await
        .expect("replace_recovery_codes");
    db.create_api_token(&alice.id, "ci", 3600)
        .await
        .expect("create_api_token");
    db.create_one_time_token(&alice.id, Purpose::VerifyEmail, 3600)
        .await
        .expect("create_one_time_token");

    let sessions = "SELECT COUNT(*) AS n FROM sessions WHERE user_id = $1";
    let codes = "SELECT COUNT(*) AS n FROM recovery_codes WHERE user_id = $1";
    let api = "SELECT COUNT(*) AS n FROM api_tokens WHERE user_id = $1";
    let links = "SELECT COUNT(*) AS n FROM one_time_tokens WHERE user_id = $1";
    assert_eq!(count_for_user(&db, sessions, &alice.id).await, 2);
    assert_eq!(count_for_user(&db, codes, &alice.id).await, 2);

    let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(alice.id.as_str())
        .execute(db.pool())
        .await
        .expect("delete user")
        .rows_affected();
    assert_eq!(deleted, 1);
    assert_eq!(
        count_for_user(&db, sessions, &alice.id).await,
        0,
        "sessions cascade"
    );
    assert_eq!(
        count_for_user(&db, codes, &alice.id).await,
        0,
        "recovery codes cascade"
    );
    assert_eq!(
        count_for_user(&db, api, &alice.id).await,
        0,
        "API tokens cascade"
    );
    assert_eq!(
        count_for_user(&db, links, &alice.id).await,
        0,
        "one-time tokens cascade"
    );
    assert!(db.session(&raw, times()).await.expect("session").is_none());
    assert!(
        db.session(&bob_raw, times())
            .await
            .expect("session")
            .is_some(),
        "other users are untouched"
    );

    // And a row pointing at no user is refused outright.
    let orphan = sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
        .bind(UserId::generate().as_str())
        .bind("orphan")
        .execute(db.pool())
        .await;
    assert!(
        orphan.is_err(),
        "a recovery code for a missing user must violate the foreign key"
    );
    db.close().await;
}

/// AUTH-8: TOTP enrolment and the replay guard (RFC 6238 §5.2): a time step is
/// accepted once, and never one older than the newest accepted.
async fn totp_replay_guard(db: Db) {
    let alice = add_user(&db, "alice", Role::Admin, Status::Active).await;
    assert!(
        !db.activate_totp(&alice.id, 100).await.expect("activate"),
        "nothing pending to activate"
    );

    db.set_totp_pending(&alice.id, Some("JBSWY3DPEHPK3PXP"))
        .await
        .expect("set_totp_pending");
    let pending = reload(&db, &alice.id).await;
    assert_eq!(pending.totp_pending.as_deref(), Some("JBSWY3DPEHPK3PXP"));
    assert!(
        !pending.has_mfa(),
        "a pending secret is not yet a second factor"
    );

    assert!(
        db.activate_totp(&alice.id, 100).await.expect("activate"),
        "pending secret activates"
    );
    let active = reload(&db, &alice.id).await;
    assert_eq!(active.totp_secret.as_deref(), Some("JBSWY3DPEHPK3PXP"));
    assert_eq!(active.totp_pending, None);
    assert_eq!(active.totp_last_step, 100);
    assert!(active.has_mfa());

    assert!(
        !db.accept_totp_step(&alice.id, 100).await.expect("accept"),
        "the enrolment step is used up"
    );
    assert!(
        db.accept_totp_step(&alice.id, 101).await.expect("accept"),
        "a newer step is accepted"
    );
    assert!(
        !db.accept_totp_step(&alice.id, 101).await.expect("accept"),
        "the same step is never accepted twice"
    );
    assert!(
        !db.accept_totp_step(&alice.id, 99).await.expect("accept"),
        "an older step is refused"
    );
    assert_eq!(reload(&db, &alice.id).await.totp_last_step, 101);

    db.set_totp_pending(&alice.id, None)
        .await
        .expect("clear pending");
    db.clear_totp(&alice.id).await.expect("clear_totp");
    assert!(!reload(&db, &alice.id).await.has_mfa());
    db.close().await;
}

/// AUTH-7: failed sign-ins count up, a lock (timed or hard) is stored, and clearing
/// resets all.
async fn failed_logins_and_locks(db: Db) {
    let alice = add_user(&db, "alice", Role::Owner, Status::Active).await;
    for expected in 1..=3 {
        assert_eq!(
            db.add_failed_login(&alice.id)
                .await
                .expect("add_failed_login"),
            expected
        );
    }
    assert_eq!(reload(&db, &alice.id).await.failed_logins, 3);

    let until = now() + 600;
    db.set_lock(&alice.id, until, false)
        .await
        .expect("set_lock");
    let locked = reload(&db, &alice.id).await;
    assert_eq!(locked.locked_until, until);
    assert!(!locked.hard_locked);
    assert!(locked.is_locked(now()));
    assert!(!locked.is_locked(until), "a timed lock ends");

    db.set_lock(&alice.id, 0, true)
        .await
        .expect("set_lock hard");
    let hard = reload(&db, &alice.id).await;
    assert!(hard.hard_locked, "hard lock is stored");
    assert!(
        hard.is_locked(now() + 1_000_000),
        "a hard lock does not time out"
    );

    db.clear_failures(&alice.id).await.expect("clear_failures");
    let cleared = reload(&db, &alice.id).await;
    assert_eq!(
        (
            cleared.failed_logins,
            cleared.locked_until,
            cleared.hard_locked
        ),
        (0, 0, false)
    );
    assert!(!cleared.is_locked(now()));

    db.add_failed_login(&alice.id)
        .await
        .expect("add_failed_login");
    db.record_login(&alice.id).await.expect("record_login");
    let signed_in = reload(&db, &alice.id).await;
    assert_eq!(
        signed_in.failed_logins, 0,
        "a successful sign-in clears failures"
    );
    assert!(signed_in.last_login_at.is_some());
    db.close().await;
}

/// AUTH-8: each recovery code works once, only for its owner, and a new set replaces
/// the old one entirely.
async fn recovery_codes(db: Db) {
    let alice = add_user(&db, "alice", Role::Admin, Status::Active).await;
    let bob = add_user(&db, "bob", Role::Admin, Status::Active).await;
    let codes: Vec<String> = ["d1", "d2", "d3"].map(String::from).to_vec();
    db.replace_recovery_codes(&alice.id, &codes)
        .await
        .expect("replace_recovery_codes");
    assert_eq!(db.unused_recovery_codes(&alice.id).await.expect("count"), 3);

    assert!(
        !db.use_recovery_code(&bob.id, "d2").await.expect("use"),
        "another user's code does nothing"
    );
    assert!(
        db.use_recovery_code(&alice.id, "d2").await.expect("use"),
        "a fresh code works"
    );
    assert!(
        !db.use_recovery_code(&alice.id, "d2").await.expect("use"),
        "a used code never works again"
    );
    assert!(
        !db.use_recovery_code(&alice.id, "unknown")
            .await
            .expect("use")
    );
    assert_eq!(db.unused_recovery_codes(&alice.id).await.expect("count"), 2);

    db.replace_recovery_codes(&alice.id, &["d4".to_owned()])
        .await
        .expect("replace");
    assert!(
        !db.use_recovery_code(&alice.id, "d1").await.expect("use"),
        "replaced codes are gone"
    );
    assert_eq!(db.unused_recovery_codes(&alice.id).await.expect("count"), 1);
    assert!(db.use_recovery_code(&alice.id, "d4").await.expect("use"));
    assert_eq!(db.unused_recovery_codes(&alice.id).await.expect("count"), 0);
    db.close().await;
}

/// AUTH-11: a session is found only by its exact token, carries its stage, can be
/// ended selectively, and an expired or idle session is gone on sight.
async fn sessions(db: Db) {
    let alice = add_user(&db, "alice", Role::Owner, Status::Active).await;
    let (raw_full, full) = db
        .create_session(
            &alice.id,
            Stage::Full,
            times(),
            "203.0.113.7",
            "test browser",
        )
        .await
        .expect("create_session full");
    assert_ne!(full.token_hash, raw_full, "only the digest is stored");
    assert_eq!(full.expires_at - full.created_at, times().absolute_secs);
    let found = db
        .session(&raw_full, times())
        .await
        .expect("session")
        .expect("the new session is found by its token");
    assert_eq!(found.stage, Stage::Full);
    assert_eq!(found.user_id, alice.id);
    assert_eq!(found.csrf, full.csrf);
    assert_eq!(found.token_hash, full.token_hash);
    assert_eq!(
        (found.source.as_str(), found.user_agent.as_str()),
        ("203.0.113.7", "test browser")
    );

    let (raw_mfa, mfa) = db
        .create_session(
            &alice.id,
            Stage::Mfa,
            times(),
            "203.0.113.7",
            "test browser",
        )
        .await
        .expect("create_session mfa");
    assert_eq!(
        mfa.expires_at - mfa.created_at,
        times().idle_secs,
        "half-finished sign-ins get the idle time"
    );
    let found_mfa = db
        .session(&raw_mfa, times())
        .await
        .expect("session")
        .expect("mfa session");
    assert_eq!(found_mfa.stage, Stage::Mfa);
    let (raw_enrol, _) = db
        .create_session(
            &alice.id,
            Stage::Enrol,
            times(),
            "203.0.113.7",
            "test browser",
        )
        .await
        .expect("create_session enrol");
    assert_eq!(
        db.session(&raw_enrol, times())
            .await
            .expect("session")
            .map(|s| s.stage),
        Some(Stage::Enrol)
    );

    assert!(
        db.session("not-a-token", times())
            .await
            .expect("session")
            .is_none(),
        "wrong token"
    );
    assert!(
        db.session(&format!("{raw_full}x"), times())
            .await
            .expect("session")
            .is_none()
    );
    assert!(
        db.session(&full.token_hash, times())
            .await
            .expect("session")
            .is_none(),
        "the digest is not a token"
    );
    assert_eq!(
        db.user_sessions(&alice.id)
            .await
            .expect("user_sessions")
            .len(),
        1,
        "lists full sessions only"
    );

    // End every other session, keeping the current one.
    let ended = db
        .delete_user_sessions(&alice.id, Some(&full.token_hash))
        .await
        .expect("delete_user_sessions");
    assert_eq!(ended, 2);
    assert!(
        db.session(&raw_full, times())
            .await
            .expect("session")
            .is_some(),
        "the excepted session stays"
    );
    assert!(
        db.session(&raw_mfa, times())
            .await
            .expect("session")
            .is_none()
    );
    assert!(
        db.session(&raw_enrol, times())
            .await
            .expect("session")
            .is_none()
    );

    // Expired (absolute lifetime): not returned, and deleted.
    let (raw_old, old) = db
        .create_session(
            &alice.id,
            Stage::Full,
            times(),
            "203.0.113.7",
            "test browser",
        )
        .await
        .expect("create_session");
    let n = sqlx::query("UPDATE sessions SET expires_at = $1 WHERE token_hash = $2")
        .bind(now() - 10)
        .bind(&old.token_hash)
        .execute(db.pool())
        .await
        .expect("age the session")
        .rows_affected();
    assert_eq!(n, 1);
    assert!(
        db.session(&raw_old, times())
            .await
            .expect("session")
            .is_none(),
        "an expired session is not returned"
    );
    let left: i64 = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE token_hash = $1")
        .bind(&old.token_hash)
        .fetch_one(db.pool())
        .await
        .expect("count")
        .try_get("n")
        .expect("n");
    assert_eq!(left, 0, "an expired session is deleted on sight");

    // Idle too long: same.
    let (raw_idle, idle) = db
        .create_session(
            &alice.id,
            Stage::Full,
            times(),
            "203.0.113.7",
            "test browser",
        )
        .await
        .expect("create_session");
    sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2")
        .bind(now() - times().idle_secs - 1)
        .bind(&idle.token_hash)
        .execute(db.pool())
        .await
        .expect("idle the session");
    assert!(
        db.session(&raw_idle, times())
            .await
            .expect("session")
            .is_none(),
        "an idle session is not returned"
    );

    // Ending all sessions (no exception).
    assert_eq!(
        db.delete_user_sessions(&alice.id, None)
            .await
            .expect("delete"),
        1
    );
    assert!(
        db.session(&raw_full, times())
            .await
            .expect("session")
            .is_none()
    );
    db.close().await;
}

/// AUTH-2: the setup code is valid until used or replaced, works exactly once, and
/// expires.
async fn setup_codes(db: Db) {
    db.store_setup_code("ABCD-EFGH-JKLM", 3600)
        .await
        .expect("store_setup_code");
    assert!(db.setup_code_valid("ABCD-EFGH-JKLM").await.expect("valid"));
    assert!(
        db.setup_code_valid("abcd efgh jklm").await.expect("valid"),
        "typed forms normalise"
    );
    assert!(
        !db.setup_code_valid("ABCD-EFGH-JKLN").await.expect("valid"),
        "a wrong code is invalid"
    );

    db.store_setup_code("NPQR-STUV-WXYZ", 3600)
        .await
        .expect("store_setup_code");
    assert!(
        !db.setup_code_valid("ABCD-EFGH-JKLM").await.expect("valid"),
        "a new code invalidates the old one"
    );
    assert!(
        !db.consume_setup_code("ABCD-EFGH-JKLM")
            .await
            .expect("consume")
    );
    assert!(db.setup_code_valid("NPQR-STUV-WXYZ").await.expect("valid"));
    assert!(
        db.consume_setup_code("NPQR-STUV-WXYZ")
            .await
            .expect("consume"),
        "a valid code is consumed once"
    );
    assert!(
        !db.consume_setup_code("NPQR-STUV-WXYZ")
            .await
            .expect("consume"),
        "and never again"
    );
    assert!(
        !db.setup_code_valid("NPQR-STUV-WXYZ").await.expect("valid"),
        "a used code is invalid"
    );

    db.store_setup_code("EXPI-REDC-ODE2", -1)
        .await
        .expect("store_setup_code");
    assert!(
        !db.setup_code_valid("EXPI-REDC-ODE2").await.expect("valid"),
        "an expired code is invalid"
    );
    assert!(
        !db.consume_setup_code("EXPI-REDC-ODE2")
            .await
            .expect("consume"),
        "an expired code cannot be used"
    );
    db.close().await;
}

/// STOR: an e-mailed one-time link is bound to its purpose, can be checked without
/// being used, is used exactly once, is replaced by a newer link, and expires.
async fn one_time_tokens(db: Db) {
    let alice = add_user(&db, "alice", Role::Owner, Status::Pending).await;
    let token = db
        .create_one_time_token(&alice.id, Purpose::VerifyEmail, 3600)
        .await
        .expect("create_one_time_token");
    assert_eq!(
        db.one_time_token_user(&token, Purpose::ResetPassword, false)
            .await
            .expect("lookup"),
        None,
        "a token is only good for its own purpose"
    );
    assert_eq!(
        db.one_time_token_user(&token, Purpose::ResetPassword, true)
            .await
            .expect("lookup"),
        None
    );
    assert_eq!(
        db.one_time_token_user(&token, Purpose::VerifyEmail, false)
            .await
            .expect("lookup"),
        Some(alice.id.clone()),
        "peeking finds the user"
    );
    assert_eq!(
        db.one_time_token_user(&token, Purpose::VerifyEmail, true)
            .await
            .expect("consume"),
        Some(alice.id.clone()),
        "peeking did not use the token up; consuming works once"
    );
    assert_eq!(
        db.one_time_token_user(&token, Purpose::VerifyEmail, true)
            .await
            .expect("consume"),
        None
    );
    assert_eq!(
        db.one_time_token_user(&token, Purpose::VerifyEmail, false)
            .await
            .expect("lookup"),
        None
    );
    assert_eq!(
        db.one_time_token_user("not-a-token", Purpose::VerifyEmail, false)
            .await
            .expect("lookup"),
        None
    );

    let first = db
        .create_one_time_token(&alice.id, Purpose::ResetPassword, 3600)
        .await
        .expect("create");
    let second = db
        .create_one_time_token(&alice.id, Purpose::ResetPassword, 3600)
        .await
        .expect("create");
    assert_eq!(
        db.one_time_token_user(&first, Purpose::ResetPassword, false)
            .await
            .expect("lookup"),
        None,
        "a newer link of the same purpose ends the older one"
    );
    assert_eq!(
        db.one_time_token_user(&second, Purpose::ResetPassword, false)
            .await
            .expect("lookup"),
        Some(alice.id.clone())
    );

    let expired = db
        .create_one_time_token(&alice.id, Purpose::Invite, -1)
        .await
        .expect("create");
    assert_eq!(
        db.one_time_token_user(&expired, Purpose::Invite, true)
            .await
            .expect("lookup"),
        None,
        "an expired link finds nothing"
    );
    db.close().await;
}

/// STOR: API tokens find their owner, record use, and are revoked per object (only
/// by their owner); a revoked token finds nothing.
async fn api_tokens(db: Db) {
    let alice = add_user(&db, "alice", Role::Operator, Status::Active).await;
    let mallory = add_user(&db, "mallory", Role::Operator, Status::Active).await;
    let (id, raw) = db
        .create_api_token(&alice.id, "ci", 3600)
        .await
        .expect("create_api_token");
    assert!(
        raw.starts_with(API_TOKEN_PREFIX),
        "tokens carry the scanner-friendly prefix"
    );
    assert_eq!(
        db.api_token_user(&raw).await.expect("lookup"),
        Some(alice.id.clone())
    );
    assert_eq!(
        db.api_token_user(&format!("{raw}x")).await.expect("lookup"),
        None,
        "wrong token"
    );

    let listed = db.api_tokens(&alice.id).await.expect("api_tokens");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].name.as_str()),
        (id.as_str(), "ci")
    );
    assert!(listed[0].last_used_at.is_some(), "use is recorded");
    assert!(
        db.api_tokens(&mallory.id)
            .await
            .expect("api_tokens")
            .is_empty()
    );

    assert!(
        !db.revoke_api_token(&mallory.id, &id).await.expect("revoke"),
        "another user cannot revoke it"
    );
    assert_eq!(
        db.api_token_user(&raw).await.expect("lookup"),
        Some(alice.id.clone()),
        "still live"
    );
    assert!(
        db.revoke_api_token(&alice.id, &id).await.expect("revoke"),
        "the owner revokes it"
    );
    assert!(
        !db.revoke_api_token(&alice.id, &id).await.expect("revoke"),
        "revoking twice reports nothing done"
    );
    assert_eq!(
        db.api_token_user(&raw).await.expect("lookup"),
        None,
        "a revoked token finds nothing"
    );
    assert!(
        db.api_tokens(&alice.id)
            .await
            .expect("api_tokens")
            .is_empty()
    );

    let (_, expired) = db
        .create_api_token(&alice.id, "old", -1)
        .await
        .expect("create_api_token");
    assert_eq!(
        db.api_token_user(&expired).await.expect("lookup"),
        None,
        "an expired token finds nothing"
    );
    let (_, other) = db
        .create_api_token(&alice.id, "other", 3600)
        .await
        .expect("create_api_token");
    db.revoke_user_api_tokens(&alice.id)
        .await
        .expect("revoke_user_api_tokens");
    assert_eq!(
        db.api_token_user(&other).await.expect("lookup"),
        None,
        "revoking all of a user's tokens"
    );
    db.close().await;
}

/// MON-1: the audit log is a hash chain; editing an entry, deleting the newest entry
/// or deleting one in the middle is detected at the right sequence number.
async fn audit_chain(engine: &Engine) {
    let intact = |entries| ChainReport {
        entries,
        first_broken: None,
    };

    // Edited entry.
    let db = engine.fresh_db().await;
    assert_eq!(
        db.verify_audit_chain().await.expect("verify"),
        intact(0),
        "an empty log verifies"
    );
    append_events(&db, 5).await;
    assert_eq!(db.verify_audit_chain().await.expect("verify"), intact(5));
    let listed = db.audit_entries(10, None).await.expect("audit_entries");
    assert_eq!(
        listed.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [5, 4, 3, 2, 1],
        "newest first"
    );
    assert_eq!(listed[2].detail, "event number 3");
    assert_eq!(listed[2].outcome, "success");
    let page = db
        .audit_entries(2, Some(4))
        .await
        .expect("audit_entries page");
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [3, 2],
        "paging backwards"
    );
    assert_eq!(
        exec(
            &db,
            "UPDATE audit_log SET detail = 'edited' WHERE seq = $1",
            &[3]
        )
        .await,
        1
    );
    assert_eq!(
        db.verify_audit_chain().await.expect("verify"),
        ChainReport {
            entries: 2,
            first_broken: Some(3)
        },
        "an edited entry breaks the chain at that entry"
    );
    db.close().await;

    // Newest entry deleted: only the head row can tell.
    let db = engine.fresh_db().await;
    append_events(&db, 5).await;
    assert_eq!(
        exec(&db, "DELETE FROM audit_log WHERE seq = $1", &[5]).await,
        1
    );
    let report = db.verify_audit_chain().await.expect("verify");
    assert_eq!(
        report.first_broken,
        Some(5),
        "deleting the newest entry is detected: {report:?}"
    );
    db.close().await;

    // An entry in the middle deleted.
    let db = engine.fresh_db().await;
    append_events(&db, 5).await;
    assert_eq!(
        exec(&db, "DELETE FROM audit_log WHERE seq = $1", &[3]).await,
        1
    );
    let report = db.verify_audit_chain().await.expect("verify");
    assert_eq!(
        report.first_broken,
        Some(3),
        "a gap in the chain is detected: {report:?}"
    );
    db.close().await;
}

/// MON-1, STOR: concurrent writers serialise on the chain head: every append commits,
/// sequence numbers are unique and gapless, and the chain does not fork.
async fn audit_concurrent_writers(db: Db) {
    append_events(&db, 5).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let db = db.clone();
        tasks.spawn(async move {
            let detail = format!("concurrent {i}");
            db.audit(event("test.concurrent", &detail)).await
        });
    }
    let mut seqs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let seq = joined
            .expect("audit task panicked")
            .unwrap_or_else(|e| panic!("a concurrent audit() failed: {e}"));
        seqs.push(seq);
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (6..=25).collect::<Vec<i64>>(),
        "20 unique, gapless sequence numbers"
    );
    assert_eq!(
        db.verify_audit_chain().await.expect("verify"),
        ChainReport {
            entries: 25,
            first_broken: None
        }
    );
    db.close().await;
}

/// STOR: queued mail is delivered once, as a private (0600) .eml file.
async fn outbox(db: Db) {
    let dir = tempfile::tempdir().expect("temporary mail directory");
    let mail_dir = dir.path().join("mail");
    // Without SMTP configured, mail is delivered as files.
    let delivery = Delivery::Files(mail_dir.clone());
    db.enqueue_mail(
        "alice@example.org",
        "Your password was changed",
        "Hello.\nIt was you?",
        Category::Security,
    )
    .await
    .expect("enqueue_mail");
    assert_eq!(
        deliver_due(&db, &delivery).await.expect("deliver_due"),
        1,
        "one message delivered"
    );

    let files: Vec<_> = std::fs::read_dir(&mail_dir)
        .expect("mail directory exists")
        .map(|e| e.expect("directory entry").path())
        .collect();
    assert_eq!(files.len(), 1, "exactly one file: {files:?}");
    let file = &files[0];
    assert_eq!(file.extension().and_then(|e| e.to_str()), Some("eml"));
    let mode = std::fs::metadata(file)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "mail files are private, mode {mode:o}");
    let text = std::fs::read_to_string(file).expect("read .eml");
    assert!(
        text.contains("Subject: Your password was changed\r\n"),
        "{text}"
    );
    assert!(text.contains("To: alice@example.org\r\n"), "{text}");
    assert!(text.contains("X-Palisade-Category: security\r\n"), "{text}");
    assert!(text.contains("Hello.\r\nIt was you?"), "{text}");

    assert_eq!(
        deliver_due(&db, &delivery).await.expect("deliver_due"),
        0,
        "nothing is delivered twice"
    );
    assert_eq!(
        std::fs::read_dir(&mail_dir)
            .expect("mail directory")
            .count(),
        1
    );
    db.close().await;
}

/// The console's device listing and audit trail behave the same on both engines.
async fn device_views(db: Db) {
    use palisade_hub::db::devices::{DeviceStatus, ProductModel};
    use palisade_hub::ids::{DeviceId, ProductId};
    let product = ProductId::parse("cam-v2").expect("id");
    db.insert_product(&ProductModel {
        id: product.clone(),
        name: "Camera".into(),
        hardware_revision: "B".into(),
        fields: Vec::new(),
        created_at: 0,
    })
    .await
    .expect("product");
    let codes = db
        .create_claim_codes(&product, 2, 3600)
        .await
        .expect("codes");
    let mut ids = Vec::new();
    for (code, fingerprint) in codes.iter().zip(["ab", "cd"]) {
        let id = DeviceId::generate();
        db.enroll_device(&code.claim, &id, &fingerprint.repeat(32), now() + 3600)
            .await
            .expect("enrol")
            .expect("valid");
        ids.push(id);
    }
    assert_eq!(db.fleet_devices("", None).await.expect("all").len(), 2);
    assert_eq!(
        db.fleet_devices("CAM-", None).await.expect("product").len(),
        2
    );
    let one = db
        .fleet_devices(&ids[1].as_str()[..10], None)
        .await
        .expect("id");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id, ids[1]);
    // LIKE wildcards typed by a person are literal characters.
    assert!(db.fleet_devices("%", None).await.expect("%").is_empty());
    assert!(db.fleet_devices("_", None).await.expect("_").is_empty());
    db.set_device_status(&ids[0], DeviceStatus::Revoked)
        .await
        .expect("revoke");
    let revoked = db
        .fleet_devices("", Some(DeviceStatus::Revoked))
        .await
        .expect("revoked");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].id, ids[0]);

    for target in [ids[0].as_str(), ids[1].as_str(), ids[0].as_str()] {
        db.audit(Event {
            actor: "tester",
            source: "127.0.0.1",
            action: "device.test",
            target,
            outcome: Outcome::Success,
            detail: "",
        })
        .await
        .expect("audit");
    }
    let trail = db
        .audit_entries_for_target(ids[0].as_str(), 10)
        .await
        .expect("trail");
    assert_eq!(trail.len(), 2);
    assert!(trail[0].seq > trail[1].seq, "newest first");
    assert!(trail.iter().all(|e| e.target == ids[0].as_str()));
}

/// Group commit stores a batch larger than one multi-row INSERT (256 rows) completely,
/// on both engines, with every value intact.
async fn telemetry_batches(db: Db) {
    use palisade_hub::db::devices::ProductModel;
    use palisade_hub::ids::{DeviceId, ProductId};
    let product = ProductId::parse("meter").expect("id");
    db.insert_product(&ProductModel {
        id: product.clone(),
        name: "Meter".into(),
        hardware_revision: "A".into(),
        fields: Vec::new(),
        created_at: 0,
    })
    .await
    .expect("product");
    let codes = db
        .create_claim_codes(&product, 1, 3600)
        .await
        .expect("codes");
    let id = DeviceId::generate();
    db.enroll_device(&codes[0].claim, &id, &"ef".repeat(32), now() + 3600)
        .await
        .expect("enrol")
        .expect("valid");
    let batch: Vec<(DeviceId, i64, String)> = (0..600_i64)
        .map(|i| {
            (
                id.clone(),
                1_000_000 + i,
                format!("{{\"n\":{i},\"quote\":\"it's\"}}"),
            )
        })
        .collect();
    db.insert_telemetry_batch(&batch).await.expect("batch");
    let stored = db.telemetry(&id, 10_000).await.expect("read");
    assert_eq!(stored.len(), 600);
    assert_eq!(
        stored[0],
        (1_000_599, "{\"n\":599,\"quote\":\"it's\"}".to_owned()),
        "newest first, payload intact"
    );
    assert_eq!(stored[599].0, 1_000_000);
    db.insert_telemetry_batch(&[])
        .await
        .expect("an empty batch is fine");
}
