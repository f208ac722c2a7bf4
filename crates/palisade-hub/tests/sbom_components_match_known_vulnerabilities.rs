//! VULN-4: an SBOM's components are matched against the offline vulnerability database
//! by ecosystem, package name and each ecosystem's version ranges, on embedded SQLite
//! and on a real PostgreSQL server. The database is the 1,200 real RustSec records in
//! OSV form; the expected findings were read off those records by hand (e.g. tokio
//! 1.18.4 is hit by RUSTSEC-2023-0005, fixed in 1.18.5, but not by RUSTSEC-2023-0001,
//! fixed in 1.18.4 itself). Negatives: a component at a fixed version, a component with
//! the same name in another ecosystem, a component without a package URL, and one
//! naming an unknown package match nothing; a re-stored SBOM replaces the old one.

#[path = "common/postgres.rs"]
mod postgres;

use palisade_hub::accounts::Actor;
use palisade_hub::config::Config;
use palisade_hub::db::Db;
use palisade_hub::db::vulndb::SbomInfo;
use palisade_hub::vuln::{matching, sbom, vulndb};
use postgres::PgCluster;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn records_dir() -> std::path::PathBuf {
    shared_data().join("osv-rustsec/crates")
}

const SBOM: &str = r#"{
  "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
  "components": [
    {"type": "library", "name": "tokio", "version": "1.18.4", "purl": "pkg:cargo/tokio@1.18.4"},
    {"type": "library", "name": "smallvec", "version": "1.6.0", "purl": "pkg:cargo/smallvec@1.6.0"},
    {"type": "library", "name": "openssl", "version": "0.10.48", "purl": "pkg:cargo/openssl@0.10.48"},
    {"type": "library", "name": "time", "version": "0.3.47", "purl": "pkg:cargo/time@0.3.47"},
    {"type": "library", "name": "time", "version": "0.3.46", "purl": "pkg:cargo/time@0.3.46"},
    {"type": "library", "name": "regex", "version": "1.5.4", "purl": "pkg:npm/regex@1.5.4"},
    {"type": "library", "name": "hyper", "version": "0.14.9"},
    {"type": "library", "name": "no-such-crate-anywhere", "version": "1.0.0", "purl": "pkg:cargo/no-such-crate-anywhere@1.0.0"},
    {"type": "firmware", "name": "board", "version": "2",
     "components": [{"type": "library", "name": "Smallvec", "purl": "pkg:cargo/Smallvec@0.6.9"}]}
  ]
}"#;

fn expected() -> BTreeMap<(&'static str, &'static str), BTreeSet<&'static str>> {
    BTreeMap::from([
        (
            ("tokio", "1.18.4"),
            BTreeSet::from(["RUSTSEC-2023-0005", "RUSTSEC-2025-0023"]),
        ),
        (("smallvec", "1.6.0"), BTreeSet::from(["RUSTSEC-2021-0003"])),
        (
            ("openssl", "0.10.48"),
            BTreeSet::from([
                "RUSTSEC-2023-0044",
                "RUSTSEC-2023-0072",
                "RUSTSEC-2024-0357",
                "RUSTSEC-2025-0004",
                "RUSTSEC-2025-0022",
            ]),
        ),
        (("time", "0.3.46"), BTreeSet::from(["RUSTSEC-2026-0009"])),
        // Names are case-insensitive on crates.io; the version comes from the purl.
        (
            ("Smallvec", "0.6.9"),
            BTreeSet::from([
                "RUSTSEC-2018-0018",
                "RUSTSEC-2019-0009",
                "RUSTSEC-2019-0012",
                "RUSTSEC-2021-0003",
            ]),
        ),
    ])
}

async fn contract(url: &str, dir: &Path) {
    let ring = palisade_crypto::sealed::KeyRing::generate().expect("secrets key");
    let db = Db::connect_with_secrets(url, ring).await.expect("database");
    let config = Config::for_data_dir(&dir.join("data"));
    let report = vulndb::import_path(&db, &config, &Actor::cli(), &records_dir())
        .await
        .expect("the real records import");
    assert!(report.counts.added >= 1200, "{:?}", report.counts);

    let parsed = sbom::parse(SBOM.as_bytes()).expect("SBOM parses");
    assert_eq!(parsed.components.len(), 10);
    let found = matching::match_components(&db, &parsed.components)
        .await
        .expect("match");
    let mut got: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for f in &found {
        got.entry((f.component.clone(), f.version.clone()))
            .or_default()
            .insert(f.vulnerability.id.clone());
    }
    let want: BTreeMap<(String, String), BTreeSet<String>> = expected()
        .into_iter()
        .map(|((c, v), ids)| {
            (
                (c.to_owned(), v.to_owned()),
                ids.into_iter().map(str::to_owned).collect(),
            )
        })
        .collect();
    assert_eq!(got, want, "findings on {url}");
    let tokio = found
        .iter()
        .find(|f| f.vulnerability.id == "RUSTSEC-2023-0005")
        .expect("tokio finding");
    assert!(!tokio.vulnerability.summary.is_empty());

    // Stored per (model, version) and read back identically; a re-upload replaces it.
    let info = SbomInfo {
        product: "cam-v2".into(),
        version: "1.2.0".into(),
        format: "CycloneDX".into(),
        spec_version: "1.5".into(),
        sha256: "00".repeat(32),
        components: parsed.components.len() as i64,
        uploaded_by: "test".into(),
        uploaded_at: 1,
    };
    db.store_sbom(&info, &parsed.components)
        .await
        .expect("store");
    let (back, components) = db
        .sbom("cam-v2", "1.2.0")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(back.components, 10);
    assert_eq!(components.len(), 10);
    let again = matching::match_components(&db, &components)
        .await
        .expect("match");
    assert_eq!(again.len(), found.len(), "stored components match the same");
    db.store_sbom(&info, &parsed.components[..1])
        .await
        .expect("replace");
    let (_, components) = db
        .sbom("cam-v2", "1.2.0")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(components.len(), 1);
    assert!(db.sbom("cam-v2", "9.9.9").await.expect("read").is_none());
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_match_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("hub.db").display());
    contract(&url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_match_on_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = PgCluster::start().await;
    let url = cluster.fresh_database_url().await;
    contract(&url, dir.path()).await;
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
