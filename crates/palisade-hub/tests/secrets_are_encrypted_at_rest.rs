//! STOR-3: secrets in the database (TOTP secrets, pending TOTP secrets, queued mail
//! bodies) are sealed with authenticated encryption under a key kept outside the
//! database (`DATA_DIR/secrets.key`, 0600). A raw scan of the SQLite files does not
//! find a TOTP secret; a missing, wrong or world-readable key stops the hub with a
//! clear error (fail closed); values stored in plaintext by an older version are
//! sealed at start; `rotate_key` re-encrypts everything and sign-in keeps working.

mod common;

use common::{ADMIN, ADMIN_PASSWORD, TestHub};
use palisade_crypto::sealed::KeyRing;
use palisade_hub::config::Config;
use palisade_hub::ids::Username;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Every byte of the SQLite database and its WAL.
fn database_bytes(data: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["palisade.sqlite3", "palisade.sqlite3-wal"] {
        all.extend(std::fs::read(data.join(name)).unwrap_or_default());
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn restart(dir: tempfile::TempDir) -> TestHub {
    let config = Config::for_data_dir(&dir.path().join("data"));
    let hub = palisade_hub::start(config).await.expect("hub restarts");
    TestHub { hub, dir }
}

async fn start_error(data: &Path) -> String {
    match palisade_hub::start(Config::for_data_dir(data)).await {
        Ok(hub) => {
            hub.shutdown().await;
            panic!("the hub started although its secrets key is unusable");
        }
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_secrets_are_sealed_and_a_bad_key_fails_closed() {
    let hub = TestHub::start().await;
    let data = hub.data_dir();
    let key_file = data.join("secrets.key");
    let mode = std::fs::metadata(&key_file).expect("key file created at first start");
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let (_admin, secret) = hub.setup_admin().await;
    let base32 = secret.to_base32();
    let stored: String = sqlx::query_scalar("SELECT totp_secret FROM users")
        .fetch_one(hub.hub.db.pool())
        .await
        .expect("stored secret");
    assert!(stored.starts_with("enc1:"), "sealed value stored: {stored}");
    assert!(!stored.contains(&base32));

    // The attack: read the database files. The secret is not there in any form the
    // hub could use without the key.
    let bytes = database_bytes(&data);
    assert!(
        contains(&bytes, "enc1:"),
        "the scan reads the stored values"
    );
    assert!(
        !contains(&bytes, &base32),
        "the TOTP secret is in the database file in plaintext"
    );

    // Tampering with a sealed value (or moving it to another account) fails
    // authentication instead of being used.
    let TestHub { hub: running, dir } = hub;
    running.shutdown().await;
    let good_key = std::fs::read_to_string(&key_file).expect("key");

    // Missing key: refused, naming the file and the key id it needs.
    std::fs::remove_file(&key_file).expect("remove key");
    let e = start_error(&data).await;
    assert!(e.contains("secrets.key is missing"), "{e}");
    assert!(!key_file.exists(), "a new key is not made over sealed data");

    // A different key: refused.
    let other = KeyRing::generate().expect("ring");
    palisade_hub::pki::write_atomic(&key_file, other.to_file().as_bytes(), 0o600).expect("write");
    let e = start_error(&data).await;
    assert!(e.contains("not in the secrets key file"), "{e}");

    // The right key bytes under the same id, but readable by others: refused.
    palisade_hub::pki::write_atomic(&key_file, good_key.as_bytes(), 0o644).expect("write");
    let e = start_error(&data).await;
    assert!(e.contains("readable by other users"), "{e}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // A sealed value altered in the database: refused at start, not used.
    {
        let db = palisade_hub::db::Db::connect(&format!(
            "sqlite://{}?mode=rw",
            data.join("palisade.sqlite3").display()
        ))
        .await
        .expect("db");
        let mut bytes = stored.clone().into_bytes();
        let i = bytes.len() - 3;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        sqlx::query("UPDATE users SET totp_secret = $1")
            .bind(String::from_utf8(bytes).expect("ascii"))
            .execute(db.pool())
            .await
            .expect("tamper");
        let e = start_error(&data).await;
        assert!(e.contains("failed authentication"), "{e}");
        sqlx::query("UPDATE users SET totp_secret = $1")
            .bind(&stored)
            .execute(db.pool())
            .await
            .expect("restore");
        db.close().await;
    }

    // The right key again: the hub starts and the administrator signs in with TOTP.
    let hub = restart(dir).await;
    let mut b = hub.browser();
    let page = b
        .sign_in(ADMIN, ADMIN_PASSWORD, Some((&secret, common::now() + 30)))
        .await;
    assert_eq!(page.location(), "/", "{}", page.body);
    hub.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_from_an_older_version_is_sealed_and_rotation_keeps_sign_in() {
    let hub = TestHub::start().await;
    let data = hub.data_dir();
    let (_admin, secret) = hub.setup_admin().await;
    let TestHub { hub: running, dir } = hub;
    running.shutdown().await;

    // An older hub stored the TOTP secret (and a pending one) in plaintext.
    {
        let db = palisade_hub::db::Db::connect(&format!(
            "sqlite://{}?mode=rw",
            data.join("palisade.sqlite3").display()
        ))
        .await
        .expect("db");
        sqlx::query("UPDATE users SET totp_secret = $1, totp_pending = $2")
            .bind(secret.to_base32())
            .bind("JBSWY3DPEHPK3PXP")
            .execute(db.pool())
            .await
            .expect("plaintext");
        db.close().await;
    }
    let hub = restart(dir).await;
    let row: (String, String) = sqlx::query_as("SELECT totp_secret, totp_pending FROM users")
        .fetch_one(hub.hub.db.pool())
        .await
        .expect("row");
    assert!(
        row.0.starts_with("enc1:") && row.1.starts_with("enc1:"),
        "{row:?}"
    );
    let user = hub
        .hub
        .db
        .user_by_username(&Username::parse(ADMIN).expect("name"))
        .await
        .expect("db")
        .expect("admin");
    assert_eq!(user.totp_secret, Some(secret.to_base32()));
    assert_eq!(user.totp_pending.as_deref(), Some("JBSWY3DPEHPK3PXP"));

    // Rotation: a new key id, every value re-sealed with it, the old key gone.
    let config = Config::for_data_dir(&data);
    let TestHub { hub: running, dir } = hub;
    running.shutdown().await;
    let old_file = std::fs::read_to_string(data.join("secrets.key")).expect("key");
    let old_id = KeyRing::parse(&old_file)
        .expect("parse")
        .current_id()
        .to_owned();
    let rotation = palisade_hub::secrets::rotate_key(&config)
        .await
        .expect("rotate");
    assert_eq!(rotation.old_keys, vec![old_id.clone()]);
    assert_ne!(rotation.new_key, old_id);
    // The two TOTP values, and any mail still queued.
    assert!(rotation.resealed >= 2, "{rotation:?}");
    let new_ring = KeyRing::parse(&std::fs::read_to_string(data.join("secrets.key")).expect("key"))
        .expect("parse");
    assert_eq!(new_ring.ids(), vec![rotation.new_key.clone()]);

    let hub = restart(dir).await;
    let stored: String = sqlx::query_scalar("SELECT totp_secret FROM users")
        .fetch_one(hub.hub.db.pool())
        .await
        .expect("row");
    assert!(
        stored.starts_with(&format!("enc1:{}:", rotation.new_key)),
        "{stored}"
    );
    let mut b = hub.browser();
    let page = b
        .sign_in(ADMIN, ADMIN_PASSWORD, Some((&secret, common::now() + 30)))
        .await;
    assert_eq!(
        page.location(),
        "/",
        "sign-in works after rotation: {}",
        page.body
    );
    let TestHub { hub: running, dir } = hub;
    running.shutdown().await;

    // The old key no longer opens anything: restoring it is refused.
    palisade_hub::pki::write_atomic(&data.join("secrets.key"), old_file.as_bytes(), 0o600)
        .expect("write");
    let e = start_error(&data).await;
    assert!(e.contains(&rotation.new_key), "{e}");
    drop(dir);
}
