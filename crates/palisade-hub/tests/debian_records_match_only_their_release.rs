//! VULN-4 (issue 5: "respecting each ecosystem's version ranges", Debian-style): an OSV
//! record for a Debian or Ubuntu release (`Debian:12`, `Ubuntu:22.04:LTS`) matches only
//! components that declare that release in their package URL (`?distro=debian-12` or
//! the code name `bookworm`), with Debian version order at the fix boundary; a record
//! for the bare ecosystem (`Debian`) matches every release. Negatives: the same
//! package and version declared for Debian 11, or with no distro at all, is not matched
//! by a `Debian:12` record; the fixed backport itself (`~deb12u2`) is not affected;
//! an Ubuntu 20.04 component is not matched by a 22.04 record. Checked both through
//! the database matcher and the in-memory one.

use palisade_hub::accounts::Actor;
use palisade_hub::config::Config;
use palisade_hub::db::Db;
use palisade_hub::vuln::{matching, osv, purl, sbom, vulndb};
use std::collections::BTreeSet;

const RECORDS: &str = r#"[
 {"id": "DEBIAN-TEST-12", "modified": "2026-01-01T00:00:00Z", "summary": "openssl in bookworm",
  "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u2"}]}]}]},
 {"id": "DEBIAN-TEST-11", "modified": "2026-01-01T00:00:00Z", "summary": "openssl in bullseye",
  "affected": [{"package": {"ecosystem": "Debian:11", "name": "openssl"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.1.1w-0+deb11u2"}]}]}]},
 {"id": "DEBIAN-TEST-ALL", "modified": "2026-01-01T00:00:00Z", "summary": "zlib everywhere",
  "affected": [{"package": {"ecosystem": "Debian", "name": "zlib"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:1.3.dfsg-1"}]}]}]},
 {"id": "UBUNTU-TEST-2204", "modified": "2026-01-01T00:00:00Z", "summary": "curl in jammy",
  "affected": [{"package": {"ecosystem": "Ubuntu:22.04:LTS", "name": "curl"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "7.81.0-1ubuntu1.16"}]}]}]}
]"#;

/// (name given in the SBOM, purl, records expected to match it)
const CASES: &[(&str, &str, &[&str])] = &[
    // Debian 12 by number and by code name, just below the fix.
    (
        "a",
        "pkg:deb/debian/openssl@3.0.11-1~deb12u1?distro=debian-12",
        &["DEBIAN-TEST-12"],
    ),
    (
        "b",
        "pkg:deb/debian/openssl@3.0.11-1~deb12u1?arch=arm64&distro=bookworm",
        &["DEBIAN-TEST-12"],
    ),
    // The fix itself, and the later unstable version: not affected.
    (
        "c",
        "pkg:deb/debian/openssl@3.0.11-1~deb12u2?distro=debian-12",
        &[],
    ),
    ("d", "pkg:deb/debian/openssl@3.0.11-1?distro=debian-12", &[]),
    // The same version declared for Debian 11: the bookworm record does not apply,
    // and 3.0.11 is past bullseye's fix.
    (
        "e",
        "pkg:deb/debian/openssl@3.0.11-1~deb12u1?distro=debian-11",
        &[],
    ),
    // Bullseye's own record, at its boundary.
    (
        "f",
        "pkg:deb/debian/openssl@1.1.1w-0+deb11u1?distro=bullseye",
        &["DEBIAN-TEST-11"],
    ),
    (
        "g",
        "pkg:deb/debian/openssl@1.1.1w-0+deb11u2?distro=debian-11",
        &[],
    ),
    // No distro declared: no release-specific record applies.
    ("h", "pkg:deb/debian/openssl@3.0.11-1~deb12u1", &[]),
    // A record for the bare ecosystem applies to every release, and to none declared.
    (
        "i",
        "pkg:deb/debian/zlib@1:1.2.13.dfsg-1?distro=debian-12",
        &["DEBIAN-TEST-ALL"],
    ),
    (
        "j",
        "pkg:deb/debian/zlib@1:1.2.13.dfsg-1",
        &["DEBIAN-TEST-ALL"],
    ),
    (
        "k",
        "pkg:deb/debian/zlib@1:1.3.dfsg-1?distro=debian-11",
        &[],
    ),
    // Ubuntu: 22.04 by number and code name; 20.04 not.
    (
        "l",
        "pkg:deb/ubuntu/curl@7.81.0-1ubuntu1.15?distro=ubuntu-22.04",
        &["UBUNTU-TEST-2204"],
    ),
    (
        "m",
        "pkg:deb/ubuntu/curl@7.81.0-1ubuntu1.15?distro=jammy",
        &["UBUNTU-TEST-2204"],
    ),
    (
        "n",
        "pkg:deb/ubuntu/curl@7.81.0-1ubuntu1.15?distro=ubuntu-20.04",
        &[],
    ),
    (
        "o",
        "pkg:deb/ubuntu/curl@7.81.0-1ubuntu1.16?distro=ubuntu-22.04",
        &[],
    ),
];

fn sbom_json() -> String {
    let components: Vec<serde_json::Value> = CASES
        .iter()
        .map(|(name, purl, _)| {
            let version = purl
                .split('@')
                .nth(1)
                .and_then(|v| v.split('?').next())
                .unwrap_or("");
            serde_json::json!({"type": "library", "name": name, "version": version, "purl": purl})
        })
        .collect();
    serde_json::json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1, "components": components})
        .to_string()
}

fn check(found: &[matching::Finding], how: &str) {
    for (name, purl, want) in CASES {
        let got: BTreeSet<&str> = found
            .iter()
            .filter(|f| f.component == *name)
            .map(|f| f.vulnerability.id.as_str())
            .collect();
        let want: BTreeSet<&str> = want.iter().copied().collect();
        assert_eq!(got, want, "{how}: {purl}");
    }
    let fix = found
        .iter()
        .find(|f| f.component == "a")
        .and_then(|f| f.fixed.clone());
    assert_eq!(fix.as_deref(), Some("3.0.11-1~deb12u2"), "{how}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_specific_records_match_only_their_release() {
    let records = osv::parse_document(RECORDS.as_bytes()).expect("records");
    let parsed = sbom::parse(sbom_json().as_bytes()).expect("sbom");
    assert_eq!(parsed.components.len(), CASES.len());

    check(
        &matching::match_records(&records, &parsed.components),
        "in memory",
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("hub.db").display());
    let ring = palisade_crypto::sealed::KeyRing::generate().expect("key");
    let db = Db::connect_with_secrets(&url, ring).await.expect("db");
    let config = Config::for_data_dir(&dir.path().join("data"));
    vulndb::import_records(&db, &config, &Actor::cli(), &records, "test")
        .await
        .expect("import");
    check(
        &matching::match_components(&db, &parsed.components)
            .await
            .expect("match"),
        "database",
    );
    db.close().await;
}

#[test]
fn distro_qualifiers_name_the_release() {
    let eco = |p: &str| purl::parse(p).expect(p).ecosystem;
    assert_eq!(
        eco("pkg:deb/debian/openssl@1?distro=debian-12"),
        "Debian:12"
    );
    assert_eq!(eco("pkg:deb/debian/openssl@1?distro=bookworm"), "Debian:12");
    assert_eq!(eco("pkg:deb/debian/openssl@1?distro=trixie"), "Debian:13");
    assert_eq!(eco("pkg:deb/ubuntu/curl@1?distro=jammy"), "Ubuntu:22.04");
    assert_eq!(eco("pkg:deb/debian/openssl@1"), "Debian");
    // Unknown or malformed distro values are not guessed at.
    assert_eq!(eco("pkg:deb/debian/openssl@1?distro=sid-ish"), "Debian");
    assert_eq!(eco("pkg:deb/debian/openssl@1?distro=debian-"), "Debian");
    assert!(purl::release_matches("Debian:12", "Debian:12"));
    assert!(purl::release_matches("Debian", "Debian:12"));
    assert!(!purl::release_matches("Debian:12", "Debian:11"));
    assert!(!purl::release_matches("Debian:12", "Debian"));
    assert!(purl::release_matches(
        "Ubuntu:Pro:22.04:LTS",
        "Ubuntu:22.04"
    ));
    // Other ecosystems are not split by release.
    assert!(purl::release_matches("Alpine:v3.18", "Alpine"));
}
