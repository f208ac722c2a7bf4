//! VULN-4: OSV version ranges are evaluated per ecosystem and are right at their
//! boundaries: `introduced` inclusive, `fixed` exclusive, `last_affected` inclusive,
//! `limit` exclusive, for semver (crates.io, npm, Go) and Debian versions (epochs,
//! revisions, `~` before everything), with PyPI (PEP 440) basics. Checked by hand on
//! edge cases, and on every range of the 1,200 real RustSec records: each `introduced`
//! version is affected and each `fixed` version is not. Negatives: the version just
//! below `introduced`, the `fixed` version itself, a Debian backport (`~deb12u1`) below
//! its fix, an empty version.

use palisade_hub::vuln::osv;
use palisade_hub::vuln::versions::{Affects, Event, Range, Scheme};

fn range(events: &[(&str, &str)]) -> Range {
    Range {
        events: events
            .iter()
            .map(|(k, v)| match *k {
                "introduced" => Event::Introduced((*v).into()),
                "fixed" => Event::Fixed((*v).into()),
                "last_affected" => Event::LastAffected((*v).into()),
                _ => Event::Limit((*v).into()),
            })
            .collect(),
    }
}

#[test]
fn semver_boundaries() {
    let s = Scheme::for_ecosystem("crates.io");
    let r = range(&[("introduced", "1.2.0"), ("fixed", "1.2.5")]);
    for (v, affected) in [
        ("1.1.99", false),
        ("1.2.0-rc.1", false),
        ("1.2.0", true),
        ("1.2.4", true),
        ("1.2.5-alpha", true),
        ("1.2.5", false),
        ("1.2.5+build.1", false),
        ("1.10.0", false),
        ("", false),
    ] {
        assert_eq!(r.contains(s, v), affected, "{v}");
    }
    let r = range(&[("introduced", "0"), ("last_affected", "0.9.9")]);
    assert!(r.contains(s, "0.0.0"));
    assert!(r.contains(s, "0.9.9"));
    assert!(!r.contains(s, "0.9.10"));
    let r = range(&[("introduced", "0"), ("limit", "3.0.0")]);
    assert!(r.contains(s, "2.99.99"));
    assert!(!r.contains(s, "3.0.0"));
    // npm and Go use the same order; Go versions carry a `v`.
    let go = Scheme::for_ecosystem("Go");
    let r = range(&[("introduced", "0"), ("fixed", "0.17.0")]);
    assert!(r.contains(go, "v0.16.9"));
    assert!(!r.contains(go, "v0.17.0"));
    assert!(r.contains(go, "v0.0.0-20230101000000-abcdef012345"));
}

#[test]
fn debian_boundaries() {
    let d = Scheme::for_ecosystem("Debian:12");
    let r = range(&[("introduced", "0"), ("fixed", "3.0.11-1~deb12u2")]);
    for (v, affected) in [
        ("3.0.9-1", true),
        ("3.0.11-1~deb12u1", true),
        ("3.0.11-1~deb12u2", false),
        ("3.0.11-1", false),
        ("3.0.11-1+b1", false),
        ("1:0.1-1", false),
        ("3.0.11~rc1-1", true),
    ] {
        assert_eq!(r.contains(d, v), affected, "{v}");
    }
    let r = range(&[("introduced", "2.36-9"), ("fixed", "2.36-9+deb12u4")]);
    assert!(!r.contains(d, "2.36-8"));
    assert!(r.contains(d, "2.36-9"));
    assert!(r.contains(d, "2.36-9+deb12u3"));
    assert!(!r.contains(d, "2.36-9+deb12u4"));
    assert!(
        !r.contains(d, "2.36-9+deb12u10"),
        "numeric, not text, order"
    );
}

#[test]
fn pypi_basics() {
    let p = Scheme::for_ecosystem("PyPI");
    let r = range(&[("introduced", "2.0"), ("fixed", "2.0.5")]);
    assert!(!r.contains(p, "2.0rc1"));
    assert!(r.contains(p, "2.0.0"));
    assert!(r.contains(p, "2.0.5rc1"));
    assert!(r.contains(p, "2.0.4.post1"));
    assert!(!r.contains(p, "2.0.5"));
    assert!(!r.contains(p, "2.0.10"));
}

#[test]
fn listed_versions_match_exactly() {
    let a = Affects {
        ranges: vec![],
        versions: vec!["1.0.1".into()],
    };
    assert!(a.contains(Scheme::Semver, "1.0.1"));
    assert!(!a.contains(Scheme::Semver, "1.0.2"));
}

#[test]
fn every_real_rustsec_range_is_right_at_its_boundaries() {
    let dir = shared_data().join("osv-rustsec/crates");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("records") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        for record in osv::parse_document(&bytes).expect("valid record") {
            for a in &record.affected {
                let scheme = Scheme::for_ecosystem(&a.ecosystem);
                for r in &a.affects.ranges {
                    let fixed: Vec<&str> = r
                        .events
                        .iter()
                        .filter_map(|e| match e {
                            Event::Fixed(v) => Some(v.as_str()),
                            _ => None,
                        })
                        .collect();
                    let introduced: Vec<&str> = r
                        .events
                        .iter()
                        .filter_map(|e| match e {
                            Event::Introduced(v) => Some(v.as_str()),
                            _ => None,
                        })
                        .collect();
                    for e in &r.events {
                        match e {
                            Event::Introduced(v) if v != "0" && !fixed.contains(&v.as_str()) => {
                                assert!(r.contains(scheme, v), "{} {v}", record.id);
                                checked += 1;
                            }
                            Event::Fixed(v) if !introduced.contains(&v.as_str()) => {
                                assert!(!r.contains(scheme, v), "{} fixed {v}", record.id);
                                checked += 1;
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 2000, "{checked} boundaries checked");
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
