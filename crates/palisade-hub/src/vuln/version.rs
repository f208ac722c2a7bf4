//! Semantic versions (semver 2.0.0 precedence) for advisory ranges and the firmware
//! versions devices report. A small comparison because the `semver` crate is not in
//! the tree; the vulndb module's ecosystem version ranges may replace it at merge.

use std::cmp::Ordering;

/// A parsed version: `MAJOR[.MINOR[.PATCH]][-PRE][+BUILD]`, with an optional leading
/// `v` (devices often report `v1.2`). Missing parts count as 0; build metadata is
/// ignored for precedence, as semver requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    core: [u64; 3],
    pre: Vec<Ident>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ident {
    Num(u64),
    Text(String),
}

/// Longest version text accepted.
pub const MAX_LEN: usize = 64;

impl Version {
    /// Parse a version; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Version> {
        let t = text.trim();
        if t.is_empty() || t.len() > MAX_LEN {
            return None;
        }
        let t = t.strip_prefix('v').unwrap_or(t);
        let t = t.split_once('+').map_or(t, |(v, _)| v);
        let (core_text, pre_text) = match t.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (t, None),
        };
        let mut core = [0u64; 3];
        let parts: Vec<&str> = core_text.split('.').collect();
        if parts.is_empty() || parts.len() > 3 {
            return None;
        }
        for (slot, part) in core.iter_mut().zip(&parts) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *slot = part.parse().ok()?;
        }
        let mut pre = Vec::new();
        if let Some(p) = pre_text {
            for id in p.split('.') {
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return None;
                }
                pre.push(if id.bytes().all(|b| b.is_ascii_digit()) {
                    Ident::Num(id.parse().ok()?)
                } else {
                    Ident::Text(id.to_owned())
                });
            }
        }
        Some(Version { core, pre })
    }
}

/// The canonical form: `MAJOR.MINOR.PATCH[-PRE]` (what the OSV SEMVER ranges carry).
impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.core[0], self.core[1], self.core[2])?;
        for (i, id) in self.pre.iter().enumerate() {
            f.write_str(if i == 0 { "-" } else { "." })?;
            match id {
                Ident::Num(n) => write!(f, "{n}")?,
                Ident::Text(t) => f.write_str(t)?,
            }
        }
        Ok(())
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core.cmp(&other.core).then_with(|| {
            // A pre-release sorts before its release.
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let o = match (a, b) {
                            (Ident::Num(x), Ident::Num(y)) => x.cmp(y),
                            (Ident::Num(_), Ident::Text(_)) => Ordering::Less,
                            (Ident::Text(_), Ident::Num(_)) => Ordering::Greater,
                            (Ident::Text(x), Ident::Text(y)) => x.cmp(y),
                        };
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            }
        })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Is `v` in `[introduced, fixed)`? No `fixed`: every version from `introduced` on.
pub fn in_range(v: &Version, introduced: &Version, fixed: Option<&Version>) -> bool {
    v >= introduced && fixed.is_none_or(|f| v < f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).expect(s)
    }

    #[test]
    fn vuln6_precedence_follows_semver() {
        let order = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.2.0",
            "1.10.0",
            "2.0.0",
        ];
        for pair in order.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(v("v1.2"), v("1.2.0"));
        assert_eq!(v("1.2.0+build.5"), v("1.2.0"));
        assert_eq!(v("v1.2").to_string(), "1.2.0");
        assert_eq!(v("1.0.0-rc.1").to_string(), "1.0.0-rc.1");
    }

    #[test]
    fn vuln6_range_boundaries() {
        let (intro, fixed) = (v("1.2.0"), v("1.3.0"));
        assert!(!in_range(&v("1.1.9"), &intro, Some(&fixed)));
        assert!(
            in_range(&v("1.2.0"), &intro, Some(&fixed)),
            "introduced is inclusive"
        );
        assert!(in_range(&v("1.2.9"), &intro, Some(&fixed)));
        assert!(
            !in_range(&v("1.3.0"), &intro, Some(&fixed)),
            "fixed is exclusive"
        );
        assert!(
            in_range(&v("1.3.0-rc.1"), &intro, Some(&fixed)),
            "a pre-release of the fix is before it"
        );
        assert!(in_range(&v("9.0.0"), &intro, None));
    }

    #[test]
    fn vuln6_garbage_is_not_a_version() {
        for bad in [
            "",
            "x",
            "1..2",
            "1.2.3.4",
            "1.2.3-",
            "1.2.3-a..b",
            "1.-2",
            "١.٢",
            &"9".repeat(80),
        ] {
            assert!(Version::parse(bad).is_none(), "{bad:?}");
        }
    }
}
