//! VULN-2, VULN-6 (issue 5: "CVSS v3.1 or v4.0 vector parsed and scored"): CVSS v4.0
//! vectors are parsed and scored wherever v3.1 is accepted (triage, advisories, the
//! OSV feed's `CVSS_V4` severity). The expected scores are those the FIRST v4.0
//! calculator gives for these vectors (cross-checked with Red Hat's independent Python
//! `cvss` 3.6 package). Negatives: vectors missing a base metric, giving one twice,
//! with an unknown metric or value, of an unknown version, or overlong are refused.

use palisade_hub::vuln::cvss::{self, CvssError, Severity};

#[test]
fn published_example_vectors_have_the_first_calculator_scores() {
    for (vector, tenths, severity) in [
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
            93,
            Severity::Critical,
        ),
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H",
            100,
            Severity::Critical,
        ),
        (
            "CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
            85,
            Severity::High,
        ),
        (
            "CVSS:4.0/AV:P/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
            70,
            Severity::High,
        ),
        (
            "CVSS:4.0/AV:L/AC:L/AT:P/PR:N/UI:P/VC:H/VI:H/VA:H/SC:L/SI:L/SA:L",
            73,
            Severity::High,
        ),
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:H/UI:N/VC:L/VI:L/VA:L/SC:N/SI:N/SA:N",
            51,
            Severity::Medium,
        ),
        (
            "CVSS:4.0/AV:N/AC:H/AT:N/PR:N/UI:A/VC:L/VI:N/VA:N/SC:N/SI:N/SA:N",
            21,
            Severity::Low,
        ),
        (
            "CVSS:4.0/AV:A/AC:H/AT:P/PR:L/UI:P/VC:L/VI:L/VA:N/SC:N/SI:N/SA:N",
            10,
            Severity::Low,
        ),
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N",
            0,
            Severity::None,
        ),
        // A threat metric lowers the score (CVSS-BT): unreported exploitation.
        (
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:U",
            81,
            Severity::High,
        ),
    ] {
        let c = cvss::parse(vector).expect(vector);
        assert_eq!((c.score_tenths, c.severity), (tenths, severity), "{vector}");
        assert_eq!(cvss::osv_type(&c.vector), "CVSS_V4");
    }
}

#[test]
fn v4_vectors_are_normalised_to_specification_order() {
    let c = cvss::parse("CVSS:4.0/SA:N/SI:N/SC:N/VA:H/VI:H/VC:H/UI:N/PR:N/AT:N/AC:L/AV:N")
        .expect("valid in any order");
    assert_eq!(
        c.vector,
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"
    );
    assert_eq!(c.score_tenths, 93);
    // v3.1 keeps working, and keeps its own OSV type.
    let v3 = cvss::parse("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").expect("v3.1");
    assert_eq!(v3.score_tenths, 98);
    assert_eq!(cvss::osv_type(&v3.vector), "CVSS_V3");
}

#[test]
fn malformed_v4_vectors_are_refused() {
    for bad in [
        // A base metric (SA) missing.
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N",
        // AV given twice.
        "CVSS:4.0/AV:N/AV:L/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        // A value AV does not have.
        "CVSS:4.0/AV:X/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        // A v3.1 metric (S for scope) where v4.0 has none of that name and value.
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/S:U",
        // An unknown metric.
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/ZZ:1",
        // A trailing slash, an empty vector, no metrics.
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/",
        "CVSS:4.0/",
        // v3.1 metrics under a v4.0 prefix.
        "CVSS:4.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
    ] {
        assert!(cvss::parse(bad).is_err(), "{bad:?} must be refused");
    }
    // Versions that are not scored here.
    for bad in [
        "CVSS:4.1/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        "AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
    ] {
        assert_eq!(cvss::parse(bad), Err(CvssError::Version), "{bad:?}");
    }
    let long = format!(
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N{}",
        "/E:A".repeat(40)
    );
    assert_eq!(cvss::parse(&long), Err(CvssError::TooLong));
}
