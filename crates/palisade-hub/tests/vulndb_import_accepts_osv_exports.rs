//! VULN-4: `palisade vulndb import` (and the admin API route) accept OSV records as a
//! single JSON file, a directory, and the per-ecosystem zip export, using the 1,200
//! real RustSec records in OSV form. Importing is idempotent (by id and `modified`: the
//! same export twice changes nothing, a newer `modified` updates). Attacks and mistakes
//! that must fail without storing anything, with the bad file named in the error: a
//! broken record in a directory, a broken entry in a zip, an oversized file, a zip entry
//! that lies about its size, and a document that is not OSV at all. The API refuses
//! non-administrators.

mod common;

use common::TestHub;
use palisade_hub::accounts::Actor;
use palisade_hub::config::Config;
use palisade_hub::db::Db;
use palisade_hub::vuln::vulndb::{self, ImportError};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

fn records_dir() -> PathBuf {
    shared_data().join("osv-rustsec/crates")
}

fn real_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(records_dir())
        .expect("the real OSV records are in ../shared/data")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 1200, "{} records", files.len());
    files
}

fn write_zip(path: &Path, entries: &[(String, Vec<u8>)]) {
    let file = std::fs::File::create(path).expect("zip file");
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        zip.start_file(name.as_str(), options).expect("entry");
        zip.write_all(bytes).expect("write");
    }
    zip.finish().expect("finish");
}

async fn import(
    db: &Db,
    config: &Config,
    path: &Path,
) -> Result<vulndb::ImportReport, ImportError> {
    vulndb::import_path(db, config, &Actor::cli(), path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osv_json_directory_and_zip_import_idempotently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("hub.db").display());
    let db = Db::connect(&url).await.expect("database");
    let config = Config::for_data_dir(&dir.path().join("data"));
    let files = real_files();

    // One file.
    let r = import(&db, &config, &files[0]).await.expect("single file");
    assert_eq!((r.files, r.counts.added, r.counts.updated), (1, 1, 0));

    // The whole directory: everything but the first is new.
    let r = import(&db, &config, &records_dir())
        .await
        .expect("directory");
    assert_eq!(r.files, files.len());
    assert_eq!(r.counts.added, files.len() - 1);
    assert_eq!(r.counts.unchanged, 1);
    let total = db.vuln_record_count().await.expect("count");
    assert_eq!(total as usize, files.len());

    // Again: nothing changes.
    let r = import(&db, &config, &records_dir()).await.expect("again");
    assert_eq!((r.counts.added, r.counts.updated), (0, 0));
    assert_eq!(r.counts.unchanged, files.len());

    // The OSV zip export: 20 records re-published with a newer `modified`, 5 new ids,
    // the rest as they were.
    let mut entries = Vec::new();
    for (i, f) in files.iter().take(100).enumerate() {
        let mut v: Value = serde_json::from_slice(&std::fs::read(f).expect("read")).expect("json");
        if i < 20 {
            v["modified"] = Value::String("2099-01-01T00:00:00Z".into());
            v["summary"] = Value::String(format!("updated summary {i}"));
        }
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        entries.push((name, serde_json::to_vec(&v).expect("json")));
        if i < 5 {
            v["id"] = Value::String(format!("TEST-NEW-{i}"));
            entries.push((
                format!("TEST-NEW-{i}.json"),
                serde_json::to_vec(&v).expect("json"),
            ));
        }
    }
    let zip_path = dir.path().join("crates.io.zip");
    write_zip(&zip_path, &entries);
    let r = import(&db, &config, &zip_path).await.expect("zip");
    assert_eq!(r.files, 105);
    assert_eq!(
        (r.counts.added, r.counts.updated, r.counts.unchanged),
        (5, 20, 80)
    );
    let again = import(&db, &config, &zip_path).await.expect("zip again");
    assert_eq!(again.counts.unchanged, 105);
    let first_id = {
        let v: Value = serde_json::from_slice(&entries[0].1).expect("json");
        v["id"].as_str().expect("id").to_owned()
    };
    let summaries = db
        .vuln_record_summaries(&[first_id.as_str()])
        .await
        .expect("summaries");
    assert_eq!(summaries[0].summary, "updated summary 0");

    // --- refused, naming the file, storing nothing -----------------------------------
    let before = db.vuln_record_count().await.expect("count");
    let bad_dir = dir.path().join("bad");
    std::fs::create_dir_all(bad_dir.join("sub")).expect("dir");
    for (i, f) in files.iter().take(3).enumerate() {
        let mut v: Value = serde_json::from_slice(&std::fs::read(f).expect("read")).expect("json");
        v["id"] = Value::String(format!("TEST-GOOD-{i}"));
        std::fs::write(bad_dir.join(format!("good-{i}.json")), v.to_string()).expect("write");
    }
    let broken = r#"{"id": "TEST-BROKEN-1", "summary": "no modified time", "affected": []}"#;
    std::fs::write(bad_dir.join("sub/broken-record.json"), broken).expect("write");
    let err = import(&db, &config, &bad_dir)
        .await
        .expect_err("broken record");
    let message = err.to_string();
    assert!(matches!(err, ImportError::Invalid(_)), "{message}");
    assert!(message.contains("sub/broken-record.json"), "{message}");
    assert!(message.contains("modified"), "{message}");

    let bad_event = r#"{"id": "TEST-BROKEN-2", "modified": "2024-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "crates.io", "name": "x"},
        "ranges": [{"type": "SEMVER", "events": [{"introduced": "0", "fixed": "1.0.0"}]}]}]}"#;
    let bad_zip = dir.path().join("bad.zip");
    write_zip(
        &bad_zip,
        &[
            ("ok.json".into(), entries[0].1.clone()),
            (
                "advisories/two-keys.json".into(),
                bad_event.as_bytes().to_vec(),
            ),
        ],
    );
    let message = import(&db, &config, &bad_zip)
        .await
        .expect_err("bad entry")
        .to_string();
    assert!(
        message.contains("bad.zip!advisories/two-keys.json"),
        "{message}"
    );

    let not_json = dir.path().join("notes.json");
    std::fs::write(&not_json, "this is not JSON").expect("write");
    let message = import(&db, &config, &not_json)
        .await
        .expect_err("not json")
        .to_string();
    assert!(
        message.contains("notes.json") && message.contains("not JSON"),
        "{message}"
    );

    let not_osv = dir.path().join("other.json");
    std::fs::write(&not_osv, r#"{"hello": "world"}"#).expect("write");
    let message = import(&db, &config, &not_osv)
        .await
        .expect_err("not OSV")
        .to_string();
    assert!(
        message.contains("other.json") && message.contains("OSV"),
        "{message}"
    );

    // Oversized: a 9 MiB file, and a zip entry of 9 MiB (compressed to almost nothing).
    let mut big =
        br#"{"id": "TEST-BIG", "modified": "2024-01-01T00:00:00Z", "details": ""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 9 * 1024 * 1024));
    big.extend(br#""}"#);
    let big_file = dir.path().join("big.json");
    std::fs::write(&big_file, &big).expect("write");
    let message = import(&db, &config, &big_file)
        .await
        .expect_err("big")
        .to_string();
    assert!(
        message.contains("big.json") && message.contains("larger"),
        "{message}"
    );
    let bomb = dir.path().join("bomb.zip");
    write_zip(&bomb, &[("huge.json".into(), big)]);
    let message = import(&db, &config, &bomb)
        .await
        .expect_err("bomb")
        .to_string();
    assert!(
        message.contains("bomb.zip!huge.json") && message.contains("larger"),
        "{message}"
    );

    assert_eq!(
        db.vuln_record_count().await.expect("count"),
        before,
        "nothing was stored"
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_import_is_for_administrators() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.setup_admin().await;
    let mut operator = hub.invite(&mut admin, "ops-olga", "operator").await;
    let record = std::fs::read_to_string(&real_files()[0]).expect("record");
    let body: Value = serde_json::from_str(&record).expect("json");

    let post = |b: &common::Browser, body: &Value| {
        b.request(reqwest::Method::POST, "/api/v1/vulndb/import")
            .header("x-csrf-token", b.csrf.clone().unwrap_or_default())
            .json(body)
    };
    let page = operator.send(post(&operator, &body)).await;
    assert_eq!(page.status, 403, "{}", page.body);
    let mut anon = hub.browser();
    anon.get("/login").await;
    let page = anon.send(post(&anon, &body)).await;
    assert_eq!(page.status, 401);

    let page = admin.send(post(&admin, &body)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let report: Value = serde_json::from_str(&page.body).expect("json");
    assert_eq!(report["added"], 1);
    let page = admin
        .send(post(
            &admin,
            &Value::Array(vec![body.clone(), body.clone()]),
        ))
        .await;
    let report: Value = serde_json::from_str(&page.body).expect("json");
    assert_eq!(report["added"], 0, "{}", page.body);

    let page = admin
        .send(post(
            &admin,
            &serde_json::json!({"id": "X", "modified": "yesterday"}),
        ))
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("modified"), "{}", page.body);
    let audit = hub.hub.db.audit_entries(50, None).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "vulndb.import" && e.actor == common::ADMIN)
    );
    hub.hub.shutdown().await;
}

/// `shared/data` beside the repository (the workspace's parent, or further up for a
/// git worktree), or `PALISADE_SHARED_DATA`.
fn shared_data() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("PALISADE_SHARED_DATA") {
        return dir.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/data"))
        .find(|d| d.is_dir())
        .expect("shared/data (the OSV records and schemas) beside the repository")
}
