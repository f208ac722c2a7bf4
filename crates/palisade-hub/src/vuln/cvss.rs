//! CVSS vectors, parsed and scored (VULN-2, VULN-6). v3.1 base vectors: parsed
//! strictly and scored with the formulas of the FIRST specification (section 7.1 and
//! Appendix A's `Roundup`), so a score can be reproduced by hand from the vector alone.
//! v4.0 vectors: parsed and scored by the RustSec `cvss` crate, because v4.0 has no
//! formula: its score comes from a 270-entry macrovector lookup table plus an
//! interpolation by severity distance (specification section 8), which a well-kept,
//! dependency-free crate already implements and tests against Red Hat's suite; copying
//! that table by hand would only add a place for typos. Our tests pin scores of the
//! FIRST calculator for published example vectors.

use serde::Serialize;

/// Longest vector accepted (a full vector with every environmental metric is ~140).
pub const MAX_VECTOR_LEN: usize = 200;

/// Qualitative severity (specification section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// The rating of a score given in tenths (0..=100).
    pub fn from_tenths(score: i64) -> Severity {
        match score {
            i64::MIN..=0 => Severity::None,
            1..=39 => Severity::Low,
            40..=69 => Severity::Medium,
            70..=89 => Severity::High,
            _ => Severity::Critical,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::None => "none",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
    pub fn parse(s: &str) -> Option<Severity> {
        [
            Severity::None,
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// Why a vector was refused; `Display` is shown to staff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CvssError {
    #[error("A CVSS vector starts with \"CVSS:3.1/\" or \"CVSS:4.0/\" (the versions scored here).")]
    Version,
    #[error("The CVSS vector is longer than {MAX_VECTOR_LEN} characters.")]
    TooLong,
    #[error("The CVSS vector has an unknown or malformed metric: {0}.")]
    Metric(String),
    #[error("The CVSS vector gives metric {0} more than once.")]
    Duplicate(String),
    #[error("The CVSS vector lacks the base metric {0}.")]
    Missing(&'static str),
    #[error("The CVSS v4.0 vector is not valid: {0}.")]
    V4(String),
}

/// A parsed v3.1 or v4.0 vector with its score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cvss {
    /// The vector as normalised (base metrics in specification order, then the rest).
    pub vector: String,
    /// The score in tenths (98 means 9.8), to keep floats out of storage: the base
    /// score for v3.1; for v4.0 the one score the vector yields (CVSS-B, or CVSS-BT /
    /// -BE / -BTE when threat or environmental metrics are given, as v4.0 defines).
    pub score_tenths: i64,
    pub severity: Severity,
}

const BASE: [&str; 8] = ["AV", "AC", "PR", "UI", "S", "C", "I", "A"];
/// Temporal and environmental metrics: accepted and kept in the vector, not scored
/// (the base score is what the policy's deadlines use).
const OTHER: [(&str, &str); 14] = [
    ("E", "XUPFH"),
    ("RL", "XOTWU"),
    ("RC", "XURC"),
    ("CR", "XLMH"),
    ("IR", "XLMH"),
    ("AR", "XLMH"),
    ("MAV", "XNALP"),
    ("MAC", "XLH"),
    ("MPR", "XNLH"),
    ("MUI", "XNR"),
    ("MS", "XUC"),
    ("MC", "XNLH"),
    ("MI", "XNLH"),
    ("MA", "XNLH"),
];

fn allowed(metric: &str) -> Option<&'static str> {
    match metric {
        "AV" => Some("NALP"),
        "AC" => Some("LH"),
        "PR" | "C" | "I" | "A" => Some("NLH"),
        "UI" => Some("NR"),
        "S" => Some("UC"),
        _ => OTHER.iter().find(|(m, _)| *m == metric).map(|(_, v)| *v),
    }
}

/// Appendix A: the smallest number with one decimal that is >= `x`, computed on
/// integers so floating-point noise (e.g. 4.000000001) does not bump a score.
fn roundup_tenths(x: f64) -> i64 {
    let int_input = (x * 100_000.0).round() as i64;
    if int_input % 10_000 == 0 {
        int_input / 10_000
    } else {
        int_input / 10_000 + 1
    }
}

/// Parse and score a CVSS v3.1 vector such as `CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H`
/// or a v4.0 one such as `CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N`.
pub fn parse(text: &str) -> Result<Cvss, CvssError> {
    let text = text.trim();
    if text.len() > MAX_VECTOR_LEN {
        return Err(CvssError::TooLong);
    }
    if text.starts_with("CVSS:4.0/") {
        return parse_v4(text);
    }
    let rest = text.strip_prefix("CVSS:3.1/").ok_or(CvssError::Version)?;
    let mut seen: Vec<(&str, char)> = Vec::new();
    for part in rest.split('/') {
        let shown = || part.chars().take(12).collect::<String>();
        let (metric, value) = part
            .split_once(':')
            .ok_or_else(|| CvssError::Metric(shown()))?;
        let mut chars = value.chars();
        let (Some(v), None) = (chars.next(), chars.next()) else {
            return Err(CvssError::Metric(shown()));
        };
        if !allowed(metric).is_some_and(|vals| vals.contains(v)) {
            return Err(CvssError::Metric(shown()));
        }
        if seen.iter().any(|(m, _)| *m == metric) {
            return Err(CvssError::Duplicate(metric.to_owned()));
        }
        seen.push((metric, v));
    }
    let get = |m: &'static str| {
        seen.iter()
            .find(|(k, _)| *k == m)
            .map(|(_, v)| *v)
            .ok_or(CvssError::Missing(m))
    };
    let (av, ac, pr, ui, s, c, i, a) = (
        get("AV")?,
        get("AC")?,
        get("PR")?,
        get("UI")?,
        get("S")?,
        get("C")?,
        get("I")?,
        get("A")?,
    );
    let changed = s == 'C';
    let av = match av {
        'N' => 0.85,
        'A' => 0.62,
        'L' => 0.55,
        _ => 0.2,
    };
    let ac = if ac == 'L' { 0.77 } else { 0.44 };
    let pr = match (pr, changed) {
        ('N', _) => 0.85,
        ('L', false) => 0.62,
        ('L', true) => 0.68,
        (_, false) => 0.27,
        (_, true) => 0.5,
    };
    let ui = if ui == 'N' { 0.85 } else { 0.62 };
    let cia = |v: char| match v {
        'H' => 0.56,
        'L' => 0.22,
        _ => 0.0,
    };
    let iss = 1.0 - (1.0 - cia(c)) * (1.0 - cia(i)) * (1.0 - cia(a));
    let impact = if changed {
        7.52 * (iss - 0.029) - 3.25 * (iss - 0.02_f64).powi(15)
    } else {
        6.42 * iss
    };
    let exploitability = 8.22 * av * ac * pr * ui;
    let score_tenths = if impact <= 0.0 {
        0
    } else if changed {
        roundup_tenths((1.08 * (impact + exploitability)).min(10.0))
    } else {
        roundup_tenths((impact + exploitability).min(10.0))
    };
    let mut parts: Vec<String> = BASE
        .iter()
        .filter_map(|m| seen.iter().find(|(k, _)| k == m))
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    parts.extend(
        seen.iter()
            .filter(|(k, _)| !BASE.contains(k))
            .map(|(k, v)| format!("{k}:{v}")),
    );
    Ok(Cvss {
        vector: format!("CVSS:3.1/{}", parts.join("/")),
        score_tenths,
        severity: Severity::from_tenths(score_tenths),
    })
}

/// A v4.0 vector: every metric checked (known, allowed value, given once, all base
/// metrics present) and scored by the `cvss` crate; the vector is normalised to the
/// specification's metric order.
fn parse_v4(text: &str) -> Result<Cvss, CvssError> {
    let vector: ::cvss::v4::Vector = text
        .parse()
        .map_err(|e: ::cvss::Error| CvssError::V4(e.to_string().chars().take(120).collect()))?;
    let value = vector.score().value();
    if !(0.0..=10.0).contains(&value) {
        return Err(CvssError::V4("the score is out of range".into()));
    }
    // The crate rounds to one decimal already; tenths as an integer.
    let score_tenths = (value * 10.0).round() as i64;
    Ok(Cvss {
        vector: vector.to_string(),
        score_tenths,
        severity: Severity::from_tenths(score_tenths),
    })
}

/// `CVSS_V3` or `CVSS_V4`: the OSV severity type of a stored vector.
pub fn osv_type(vector: &str) -> &'static str {
    if vector.starts_with("CVSS:4.0/") {
        "CVSS_V4"
    } else {
        "CVSS_V3"
    }
}

/// A score in tenths as text (`9.8`).
pub fn fmt_score(tenths: i64) -> String {
    format!("{}.{}", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference scores for well-known vectors, cross-checked with an independent
    /// implementation (the Python `cvss` package).
    #[test]
    fn scores_match_the_specification() {
        for (vector, tenths, severity) in [
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                98,
                Severity::Critical,
            ),
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H",
                100,
                Severity::Critical,
            ),
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N",
                61,
                Severity::Medium,
            ),
            (
                "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H",
                78,
                Severity::High,
            ),
            (
                "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N",
                59,
                Severity::Medium,
            ),
            (
                "CVSS:3.1/AV:P/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N",
                46,
                Severity::Medium,
            ),
            (
                "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N",
                64,
                Severity::Medium,
            ),
            (
                "CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:L/I:N/A:N",
                27,
                Severity::Low,
            ),
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N",
                0,
                Severity::None,
            ),
            (
                "CVSS:3.1/AV:A/AC:H/PR:L/UI:R/S:C/C:H/I:L/A:L",
                68,
                Severity::Medium,
            ),
        ] {
            let c = parse(vector).expect(vector);
            assert_eq!((c.score_tenths, c.severity), (tenths, severity), "{vector}");
        }
    }

    #[test]
    fn roundup_ignores_float_noise() {
        assert_eq!(roundup_tenths(4.000_000_1), 40);
        assert_eq!(roundup_tenths(4.02), 41);
        assert_eq!(roundup_tenths(10.0), 100);
    }

    #[test]
    fn malformed_vectors_are_refused() {
        for bad in [
            "",
            "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",
            "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/ZZ:1",
            "CVSS:3.1/AV:NN/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&"CVSS:3.1/".repeat(30)), Err(CvssError::TooLong));
    }

    #[test]
    fn vector_is_normalised_and_temporal_metrics_are_kept() {
        let c = parse("CVSS:3.1/A:H/I:H/C:H/S:U/UI:N/PR:N/AC:L/AV:N/E:P").expect("valid");
        assert_eq!(c.vector, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:P");
        assert_eq!(c.score_tenths, 98, "base score");
        assert_eq!(fmt_score(c.score_tenths), "9.8");
    }
}
