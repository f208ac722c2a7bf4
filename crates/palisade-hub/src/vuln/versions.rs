//! Version comparison per ecosystem and OSV range evaluation (VULN-4): semver
//! (crates.io, npm, Go, Hex, Pub), Debian/Ubuntu (Debian policy §5.6.12), PyPI (PEP 440
//! basics) and a generic fallback; `introduced` inclusive, `fixed` exclusive,
//! `last_affected` inclusive, `limit` exclusive.
//!
//! Written by hand rather than with crates: the `semver` crate rejects the lenient
//! forms real SBOMs carry (`v1.2`, Go's `v0.0.0-2023…` pseudo-versions are fine, but
//! `1.2` is not), and no small, well-kept crate does Debian ordering (the candidates
//! are unmaintained or pull in a whole package-manager library). Each comparison is a
//! few dozen lines and tested at its edges below.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// How versions of an ecosystem are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Semver,
    Debian,
    Pypi,
    Generic,
}

impl Scheme {
    /// The ordering an OSV ecosystem uses (`Debian:12` → Debian).
    pub fn for_ecosystem(ecosystem: &str) -> Scheme {
        match base_ecosystem(ecosystem).to_ascii_lowercase().as_str() {
            "crates.io" | "npm" | "go" | "hex" | "pub" | "swifturl" => Scheme::Semver,
            "debian" | "ubuntu" => Scheme::Debian,
            "pypi" => Scheme::Pypi,
            _ => Scheme::Generic,
        }
    }

    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Scheme::Semver => semver_cmp(a, b),
            Scheme::Debian => debian_cmp(a, b),
            Scheme::Pypi => match (Pep440::parse(a), Pep440::parse(b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => generic_cmp(a, b),
            },
            Scheme::Generic => generic_cmp(a, b),
        }
    }
}

/// The ecosystem without its release suffix (`Debian:12` → `Debian`).
pub fn base_ecosystem(ecosystem: &str) -> &str {
    ecosystem.split(':').next().unwrap_or(ecosystem)
}

/// One event of an OSV range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

impl Event {
    fn version(&self) -> &str {
        match self {
            Event::Introduced(v) | Event::Fixed(v) | Event::LastAffected(v) | Event::Limit(v) => v,
        }
    }
}

/// An OSV range of type SEMVER or ECOSYSTEM (GIT ranges name commits, which an SBOM
/// version cannot be compared with; they are not stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub events: Vec<Event>,
}

/// What an OSV `affected` entry says about one package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affects {
    pub ranges: Vec<Range>,
    /// Versions listed one by one (exact match).
    pub versions: Vec<String>,
}

impl Affects {
    /// Whether `version` is affected, ordered by `scheme`.
    pub fn contains(&self, scheme: Scheme, version: &str) -> bool {
        let version = version.trim();
        if version.is_empty() {
            return false;
        }
        if self
            .versions
            .iter()
            .any(|v| v == version || scheme.compare(v, version) == Ordering::Equal)
        {
            return true;
        }
        self.ranges.iter().any(|r| r.contains(scheme, version))
    }
}

impl Affects {
    /// The lowest `fixed` version above `version` in a range that affects it: the
    /// version to move to. `None` when no affecting range names a fix.
    pub fn fixed_for(&self, scheme: Scheme, version: &str) -> Option<String> {
        self.ranges
            .iter()
            .filter(|r| r.contains(scheme, version))
            .flat_map(|r| r.events.iter())
            .filter_map(|e| match e {
                Event::Fixed(f) if scheme.compare(f, version) == Ordering::Greater => Some(f),
                _ => None,
            })
            .min_by(|a, b| scheme.compare(a, b))
            .cloned()
    }
}

impl Range {
    /// The OSV evaluation: walk the events in version order; an `introduced` at or
    /// below the version opens, a `fixed` at or below it (or a `last_affected` below
    /// it) closes. A `limit` at or below the version excludes it outright.
    pub fn contains(&self, scheme: Scheme, version: &str) -> bool {
        let cmp = |v: &str| {
            if v == "0" {
                // OSV's "from the beginning of time".
                Ordering::Less
            } else {
                scheme.compare(v, version)
            }
        };
        if self
            .events
            .iter()
            .any(|e| matches!(e, Event::Limit(l) if cmp(l) != Ordering::Greater))
        {
            return false;
        }
        let mut events: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| !matches!(e, Event::Limit(_)))
            .collect();
        events.sort_by(|a, b| {
            let (x, y) = (a.version(), b.version());
            match (x == "0", y == "0") {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                (false, false) => scheme.compare(x, y),
            }
        });
        let mut affected = false;
        for e in events {
            match e {
                Event::Introduced(v) if cmp(v) != Ordering::Greater => affected = true,
                Event::Fixed(v) if cmp(v) != Ordering::Greater => affected = false,
                Event::LastAffected(v) if cmp(v) == Ordering::Less => affected = false,
                _ => {}
            }
        }
        affected
    }
}

// --- semver -----------------------------------------------------------------------

/// Semantic Versioning 2.0 precedence, leniently: a leading `v` and missing minor or
/// patch numbers are accepted (`v1.2` = `1.2.0`), build metadata is ignored. A core
/// that is not numeric falls back to the generic order.
pub fn semver_cmp(a: &str, b: &str) -> Ordering {
    match (Semver::parse(a), Semver::parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => generic_cmp(a, b),
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Semver<'a> {
    core: [u64; 3],
    pre: Vec<&'a str>,
}

impl<'a> Semver<'a> {
    fn parse(s: &'a str) -> Option<Self> {
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let s = s.split('+').next().unwrap_or(s);
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, p.split('.').collect()),
            None => (s, Vec::new()),
        };
        let mut numbers = [0u64; 3];
        let mut parts = core.split('.');
        for (i, n) in numbers.iter_mut().enumerate() {
            match parts.next() {
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    *n = p.parse().ok()?
                }
                None if i > 0 => {}
                _ => return None,
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(Semver { core: numbers, pre })
    }
}

impl Ord for Semver<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core.cmp(&other.core).then_with(|| {
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                // A pre-release is below its release.
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (x, y) in self.pre.iter().zip(&other.pre) {
                        let o = prerelease_ident_cmp(x, y);
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

impl PartialOrd for Semver<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn prerelease_ident_cmp(x: &str, y: &str) -> Ordering {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (numeric(x), numeric(y)) {
        (true, true) => numeric_str_cmp(x, y),
        // Numeric identifiers have lower precedence than alphanumeric ones.
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
    }
}

/// Compare two digit strings as numbers of any length.
fn numeric_str_cmp(x: &str, y: &str) -> Ordering {
    let x = x.trim_start_matches('0');
    let y = y.trim_start_matches('0');
    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
}

// --- Debian -----------------------------------------------------------------------

/// Debian version ordering (policy §5.6.12): `[epoch:]upstream[-revision]`; epochs
/// numerically, then upstream and revision with `verrevcmp`, in which `~` sorts before
/// everything, even the end of the string (`1.0~rc1` < `1.0`).
pub fn debian_cmp(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = debian_split(a.trim());
    let (eb, ub, rb) = debian_split(b.trim());
    numeric_str_cmp(ea, eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

fn debian_split(v: &str) -> (&str, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => (e, r),
        _ => ("0", v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

/// The weight of a character in the non-digit parts: `~` lowest, then the end of
/// the part, then letters, then everything else.
fn debian_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // The non-digit prefix, character by character.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = debian_order(a.get(i).copied());
            let bc = debian_order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        // Then the digit run, numerically.
        let si = i;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        let sj = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let x = std::str::from_utf8(&a[si..i]).unwrap_or("");
        let y = std::str::from_utf8(&b[sj..j]).unwrap_or("");
        let o = numeric_str_cmp(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

// --- PEP 440 ----------------------------------------------------------------------

/// The parts of a PEP 440 version that order it: epoch, release (trailing zeros
/// dropped), pre-release, post-release, development release. Local labels are ignored.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pep440 {
    epoch: u64,
    release: Vec<u64>,
    /// (0, _) a dev release with no pre or post; (1, n) a/b/rc; (2, 0) none.
    pre: (u8, u8, u64),
    /// `None` sorts before `Some`.
    post: Option<u64>,
    /// (1, 0) no dev part, (0, n) `.devN`, which sorts first.
    dev: (u8, u64),
}

impl Pep440 {
    fn parse(s: &str) -> Option<Pep440> {
        let s = s.trim().to_ascii_lowercase();
        let s = s.strip_prefix('v').unwrap_or(&s);
        let s = s.split('+').next().unwrap_or(s);
        let (epoch, rest) = match s.split_once('!') {
            Some((e, r)) => (e.parse().ok()?, r),
            None => (0, s),
        };
        let bytes = rest.as_bytes();
        let mut pos = 0;
        let mut release = Vec::new();
        loop {
            let start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            if pos == start {
                return None;
            }
            release.push(rest[start..pos].parse().ok()?);
            if pos + 1 < bytes.len() && bytes[pos] == b'.' && bytes[pos + 1].is_ascii_digit() {
                pos += 1;
            } else {
                break;
            }
        }
        while release.len() > 1 && release.last() == Some(&0) {
            release.pop();
        }
        let mut tail = &rest[pos..];
        let mut pre = None;
        let mut post = None;
        let mut dev = None;
        let number = |t: &str| -> (u64, usize) {
            let t2 = t.trim_start_matches(['.', '-', '_']);
            let skipped = t.len() - t2.len();
            let digits = t2.bytes().take_while(u8::is_ascii_digit).count();
            (t2[..digits].parse().unwrap_or(0), skipped + digits)
        };
        while !tail.is_empty() {
            let t = tail.trim_start_matches(['.', '-', '_']);
            let labels: [(&str, Option<u8>); 10] = [
                ("alpha", Some(0)),
                ("beta", Some(1)),
                ("preview", Some(2)),
                ("pre", Some(2)),
                ("rc", Some(2)),
                ("a", Some(0)),
                ("b", Some(1)),
                ("c", Some(2)),
                ("post", None),
                ("dev", None),
            ];
            let mut matched = false;
            for (label, rank) in labels {
                if let Some(after) = t.strip_prefix(label) {
                    let (n, used) = number(after);
                    match (label, rank) {
                        ("post", _) => post = Some(n),
                        ("dev", _) => dev = Some(n),
                        (_, Some(r)) => pre = Some((r, n)),
                        _ => return None,
                    }
                    tail = &after[used..];
                    matched = true;
                    break;
                }
            }
            if !matched {
                // `1.0-1` is an implicit post-release.
                if let Some(after) = tail.strip_prefix('-') {
                    let (n, used) = number(after);
                    if used == 0 {
                        return None;
                    }
                    post = Some(n);
                    tail = &after[used..];
                } else {
                    return None;
                }
            }
        }
        let pre_key = match (pre, post, dev) {
            (Some((r, n)), _, _) => (1, r, n),
            (None, None, Some(_)) => (0, 0, 0),
            _ => (2, 0, 0),
        };
        Some(Pep440 {
            epoch,
            release,
            pre: pre_key,
            post,
            dev: dev.map(|n| (0, n)).unwrap_or((1, 0)),
        })
    }
}

// --- generic ----------------------------------------------------------------------

/// For ecosystems without a known order: runs of digits numerically, other runs
/// as text, a missing run lowest.
pub fn generic_cmp(a: &str, b: &str) -> Ordering {
    let split = |s: &str| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut last_digit = None;
        for c in s.trim().chars() {
            let d = c.is_ascii_digit();
            if !c.is_ascii_alphanumeric() {
                last_digit = None;
                continue;
            }
            match (last_digit, out.last_mut()) {
                (Some(ld), Some(cur)) if ld == d => cur.push(c),
                _ => out.push(c.to_string()),
            }
            last_digit = Some(d);
        }
        out
    };
    let (x, y) = (split(a), split(b));
    for (p, q) in x.iter().zip(&y) {
        let pd = p.bytes().all(|b| b.is_ascii_digit());
        let qd = q.bytes().all(|b| b.is_ascii_digit());
        let o = match (pd, qd) {
            (true, true) => numeric_str_cmp(p, q),
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => p.cmp(q),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    x.len().cmp(&y.len())
}

// --- product versions -----------------------------------------------------------

// What staff write and devices report about Palisade's own products (advisory ranges,
// fixed versions): semver, parsed strictly into an owned value with a canonical form
// (`v1.2` → `1.2.0`) because it is stored and shown. Third-party versions from SBOMs
// and OSV records go through the lenient comparisons above instead, which never
// refuse a version (an unparsable one falls back to the generic order).

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
pub const MAX_VERSION_LEN: usize = 64;

impl Version {
    /// Parse a version; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Version> {
        let t = text.trim();
        if t.is_empty() || t.len() > MAX_VERSION_LEN {
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
    use Ordering::*;

    fn range(events: &[Event]) -> Range {
        Range {
            events: events.to_vec(),
        }
    }
    fn i(v: &str) -> Event {
        Event::Introduced(v.into())
    }
    fn f(v: &str) -> Event {
        Event::Fixed(v.into())
    }
    fn la(v: &str) -> Event {
        Event::LastAffected(v.into())
    }
    fn lim(v: &str) -> Event {
        Event::Limit(v.into())
    }

    #[test]
    fn semver_precedence() {
        let s = Scheme::Semver;
        assert_eq!(s.compare("1.0.0", "1.0.0"), Equal);
        assert_eq!(s.compare("v1.2", "1.2.0"), Equal);
        assert_eq!(s.compare("1.0.0+build.5", "1.0.0"), Equal);
        assert_eq!(s.compare("1.0.0-alpha", "1.0.0"), Less);
        assert_eq!(s.compare("1.0.0-alpha", "1.0.0-alpha.1"), Less);
        assert_eq!(s.compare("1.0.0-alpha.1", "1.0.0-alpha.beta"), Less);
        assert_eq!(s.compare("1.0.0-beta.2", "1.0.0-beta.11"), Less);
        assert_eq!(s.compare("1.0.0-rc.1", "1.0.0"), Less);
        assert_eq!(s.compare("1.9.0", "1.10.0"), Less);
        assert_eq!(s.compare("0.0.0-20230101-abc", "0.0.1"), Less);
    }

    #[test]
    fn debian_order_follows_policy() {
        let d = Scheme::Debian;
        assert_eq!(d.compare("1.0~rc1-1", "1.0-1"), Less);
        assert_eq!(d.compare("1.0~~", "1.0~"), Less);
        assert_eq!(d.compare("1.0", "1.0a"), Less);
        assert_eq!(d.compare("1.0a", "1.0+"), Less);
        assert_eq!(d.compare("1:0.9", "2.0"), Greater);
        assert_eq!(d.compare("3.0.11-1", "3.0.11-1~deb12u1"), Greater);
        assert_eq!(d.compare("3.0.11-1~deb12u2", "3.0.11-1~deb12u1"), Greater);
        assert_eq!(d.compare("2.36-9+deb12u4", "2.36-9+deb12u10"), Less);
        assert_eq!(d.compare("1.2.3", "1.2.3-0"), Equal);
        assert_eq!(d.compare("0:1.2-1", "1.2-1"), Equal);
        assert_eq!(d.compare("1.10", "1.9"), Greater);
    }

    #[test]
    fn pep440_basics() {
        let p = Scheme::Pypi;
        assert_eq!(p.compare("1.0.dev1", "1.0a1"), Less);
        assert_eq!(p.compare("1.0a1", "1.0b1"), Less);
        assert_eq!(p.compare("1.0b2", "1.0rc1"), Less);
        assert_eq!(p.compare("1.0rc1", "1.0"), Less);
        assert_eq!(p.compare("1.0", "1.0.post1"), Less);
        assert_eq!(p.compare("1.0", "1.0.0"), Equal);
        assert_eq!(p.compare("1!0.1", "2.0"), Greater);
        assert_eq!(p.compare("2.0.1", "2.0.10"), Less);
        assert_eq!(p.compare("1.0-1", "1.0.post1"), Equal);
        assert_eq!(p.compare("1.0a1.dev1", "1.0a1"), Less);
    }

    #[test]
    fn range_boundaries() {
        let s = Scheme::Semver;
        let r = range(&[i("1.2.0"), f("1.2.5")]);
        assert!(!r.contains(s, "1.1.9"));
        assert!(r.contains(s, "1.2.0"), "introduced is inclusive");
        assert!(r.contains(s, "1.2.4"));
        assert!(!r.contains(s, "1.2.5"), "fixed is exclusive");
        assert!(
            r.contains(s, "1.2.5-rc.1"),
            "a pre-release of the fix is below it"
        );
        let r = range(&[i("0"), la("2.0.0")]);
        assert!(r.contains(s, "0.0.1"));
        assert!(r.contains(s, "2.0.0"), "last_affected is inclusive");
        assert!(!r.contains(s, "2.0.1"));
        let r = range(&[i("0"), lim("1.5.0")]);
        assert!(r.contains(s, "1.4.9"));
        assert!(!r.contains(s, "1.5.0"), "limit is exclusive");
        // Two windows: [1.0, 1.1) and [2.0, 2.3).
        let r = range(&[i("2.0.0"), f("2.3.0"), i("1.0.0"), f("1.1.0")]);
        assert!(r.contains(s, "1.0.5"));
        assert!(!r.contains(s, "1.5.0"));
        assert!(r.contains(s, "2.2.9"));
        assert!(!r.contains(s, "2.3.0"));
        // Introduced with no fix: everything from there on.
        let r = range(&[i("3.0.0")]);
        assert!(!r.contains(s, "2.9.9"));
        assert!(r.contains(s, "99.0.0"));
    }

    #[test]
    fn debian_range_boundaries() {
        let d = Scheme::Debian;
        let r = range(&[i("0"), f("3.0.11-1~deb12u2")]);
        assert!(r.contains(d, "3.0.11-1~deb12u1"));
        assert!(!r.contains(d, "3.0.11-1~deb12u2"));
        assert!(!r.contains(d, "3.0.11-1"), "3.0.11-1 is after ~deb12u2");
        assert!(r.contains(d, "3.0.9-1"));
        assert!(!r.contains(d, "1:1.0-1"), "a higher epoch is later");
    }

    #[test]
    fn exact_versions_list() {
        let a = Affects {
            ranges: vec![],
            versions: vec!["1.0.1".into(), "1.0.3".into()],
        };
        assert!(a.contains(Scheme::Semver, "1.0.1"));
        assert!(!a.contains(Scheme::Semver, "1.0.2"));
        assert!(!a.contains(Scheme::Semver, ""));
    }

    #[test]
    fn generic_fallback() {
        assert_eq!(generic_cmp("r10", "r9"), Greater);
        assert_eq!(generic_cmp("1.0", "1.0.1"), Less);
        assert_eq!(generic_cmp("2024.01", "2024.01"), Equal);
        assert_eq!(Scheme::for_ecosystem("Debian:12"), Scheme::Debian);
        assert_eq!(Scheme::for_ecosystem("crates.io"), Scheme::Semver);
        assert_eq!(Scheme::for_ecosystem("Maven"), Scheme::Generic);
    }

    // --- product versions (formerly vuln/version.rs) ---

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
