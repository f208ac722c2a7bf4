//! VULN-6: the advisory feed is machine-readable OSV. Every published advisory's
//! record (`/advisories/{id}.json`) and the whole feed (`/advisories/osv.json`, an
//! array of records) validate against the published, unmodified OSV JSON schema
//! (`tests/data/osv-schema.json`) with Python's `jsonschema` — an independent
//! validator, not our own code. Each record names affected and fixed versions.
//! Negative cases: the validator does reject records that break the schema (an
//! unregistered id prefix, a missing `modified`, a malformed CVSS vector), so a pass
//! means something; drafts are not in the feed.

mod common;

use common::TestHub;
use palisade_hub::accounts::Actor;
use palisade_hub::vuln::advisories::{self, AdvisoryInput};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Python with `jsonschema`: PALISADE_TUF_PYTHON, the test venv that
/// scripts/test.sh makes (target/tuf-venv), or the system python3.
fn python() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("PALISADE_TUF_PYTHON") {
        candidates.push(p.into());
    }
    candidates.push(workspace.join("target/tuf-venv/bin/python"));
    candidates.push("python3".into());
    for c in candidates {
        let ok = Command::new(&c)
            .args(["-c", "import jsonschema"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(c);
        }
    }
    let message = "Python jsonschema is not installed: run ./scripts/test.sh (it installs it into target/tuf-venv)";
    if std::env::var("PALISADE_E2E_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    None
}

const VALIDATE: &str = r#"
import json, sys
from jsonschema import validators, FormatChecker
schema = json.load(open(sys.argv[1]))
cls = validators.validator_for(schema)
cls.check_schema(schema)
v = cls(schema, format_checker=FormatChecker())
doc = json.load(open(sys.argv[2]))
records = doc if isinstance(doc, list) else [doc]
bad = 0
for r in records:
    for e in v.iter_errors(r):
        bad += 1
        print(r.get("id"), list(e.absolute_path), e.message[:300])
print("records", len(records), "errors", bad)
sys.exit(1 if bad else 0)
"#;

/// Validate a JSON document (a record or an array of records); Ok or the errors.
fn validate(py: &Path, dir: &Path, name: &str, json: &str) -> Result<String, String> {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/osv-schema.json");
    let file = dir.join(name);
    std::fs::write(&file, json).expect("write");
    let out = Command::new(py)
        .args(["-c", VALIDATE])
        .arg(&schema)
        .arg(&file)
        .output()
        .expect("python runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

fn input(
    summary: &str,
    affected: &str,
    fixed: &str,
    cvss: &str,
    cve: &str,
    credit: &str,
) -> AdvisoryInput {
    AdvisoryInput {
        cve: cve.into(),
        summary: summary.into(),
        details: "## Impact\n\nAn attacker on the network can read the device's Wi-Fi password."
            .into(),
        affected: affected.into(),
        fixed_version: fixed.into(),
        cvss_vector: cvss.into(),
        remediation: "Update the firmware.".into(),
        credit: credit.into(),
        report: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osv_records_and_feed_validate() {
    let Some(py) = python() else { return };
    let hub = TestHub::start().await;
    hub.create_product("thermo-1").await;
    hub.create_product("lamp-1").await;
    let db = &hub.hub.db;
    let actor = Actor::cli();
    let full = advisories::create(
        db,
        &actor,
        &input(
            "Wi-Fi password readable over the network",
            "thermo-1 1.2.0 1.3.0\nlamp-1 v2.0 2.0.5",
            "1.3.0",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N",
            "CVE-2026-41234",
            "Rita Researcher",
        ),
    )
    .await
    .expect("create");
    // A minimal one: unscored, no fix yet, no CVE, no credit.
    let minimal = advisories::create(
        db,
        &actor,
        &input("Unfixed issue", "thermo-1 0.9.0", "", "", "", ""),
    )
    .await
    .expect("create");
    let draft = advisories::create(
        db,
        &actor,
        &input("Draft only", "thermo-1 1.0.0", "", "", "", ""),
    )
    .await
    .expect("create");
    for id in [&full, &minimal] {
        let a = db.advisory(id).await.expect("db").expect("advisory");
        advisories::publish(db, &hub.hub.state.config, &actor, &a)
            .await
            .expect("publish");
    }

    let mut anon = hub.browser();
    let dir = tempfile::tempdir().expect("tmp");
    for id in [&full, &minimal] {
        let page = anon.get(&format!("/advisories/{id}.json")).await;
        assert_eq!(page.status, 200);
        assert!(page.header("content-type").starts_with("application/json"));
        validate(&py, dir.path(), "one.json", &page.body)
            .unwrap_or_else(|e| panic!("{id}: {e}\n{}", page.body));
    }
    let page = anon.get("/advisories/osv.json").await;
    assert_eq!(page.status, 200);
    let ok = validate(&py, dir.path(), "all.json", &page.body)
        .unwrap_or_else(|e| panic!("{e}\n{}", page.body));
    assert!(ok.contains("records 2 errors 0"), "{ok}");
    assert!(
        !page.body.contains(draft.as_str()),
        "drafts are not in the feed"
    );

    // The record says what a consumer needs: ids, affected and fixed versions.
    let all: serde_json::Value = serde_json::from_str(&page.body).expect("json");
    let rec = all
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["database_specific"]["palisade_id"] == full.as_str())
        .expect("record");
    assert_eq!(rec["id"], format!("x_{full}"));
    assert_eq!(rec["aliases"][0], "CVE-2026-41234");
    assert_eq!(rec["severity"][0]["type"], "CVSS_V3");
    let thermo = &rec["affected"][1]; // sorted by product: lamp-1, thermo-1
    assert_eq!(thermo["database_specific"]["product_model"], "thermo-1");
    assert_eq!(thermo["ranges"][0]["type"], "SEMVER");
    assert_eq!(thermo["ranges"][0]["events"][0]["introduced"], "1.2.0");
    assert_eq!(thermo["ranges"][0]["events"][1]["fixed"], "1.3.0");
    assert_eq!(
        rec["affected"][0]["ranges"][0]["events"][0]["introduced"], "2.0.0",
        "canonical semver"
    );

    // The validator is not a rubber stamp: broken records fail.
    let mut broken = rec.clone();
    broken["id"] = serde_json::json!(full.as_str()); // PAL is not a registered prefix
    assert!(validate(&py, dir.path(), "b1.json", &broken.to_string()).is_err());
    let mut broken = rec.clone();
    broken.as_object_mut().expect("object").remove("modified");
    assert!(validate(&py, dir.path(), "b2.json", &broken.to_string()).is_err());
    let mut broken = rec.clone();
    broken["severity"][0]["score"] = serde_json::json!("CVSS:3.1/AV:Q");
    assert!(validate(&py, dir.path(), "b3.json", &broken.to_string()).is_err());

    // A draft's record is not served.
    assert_eq!(
        anon.get(&format!("/advisories/{draft}.json")).await.status,
        404
    );
    hub.hub.shutdown().await;
}
