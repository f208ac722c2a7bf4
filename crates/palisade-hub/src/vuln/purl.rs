//! Package URLs (`pkg:type/namespace/name@version?qualifiers#subpath`) and the OSV
//! ecosystem each type maps to, plus the lookup key both an SBOM component and an OSV
//! `affected` entry reduce to, so matching is one index lookup per component.
//! A `deb` purl's `distro` qualifier (`debian-12`, `bookworm`, `ubuntu-22.04`) becomes
//! the release of its ecosystem (`Debian:12`, `Ubuntu:22.04`), so a record for one
//! distro release matches only components declaring that release.

use super::versions::base_ecosystem;

/// What a package URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The OSV ecosystem (`crates.io`, `npm`, `PyPI`, `Go`, `Debian`, …).
    pub ecosystem: String,
    /// The name as OSV writes it (`@scope/name` for npm, `group:artifact` for Maven).
    pub name: String,
    /// Empty when the purl has no version.
    pub version: String,
}

/// Longest package URL accepted.
pub const MAX_PURL: usize = 2048;

fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parse a package URL; `None` if it is not one.
pub fn parse(purl: &str) -> Option<Package> {
    if purl.len() > MAX_PURL || purl.chars().any(char::is_control) {
        return None;
    }
    let rest = purl.strip_prefix("pkg:")?;
    let rest = rest.trim_start_matches('/');
    let rest = rest.split('#').next().unwrap_or(rest);
    let (rest, qualifiers) = match rest.split_once('?') {
        Some((r, q)) => (r, q),
        None => (rest, ""),
    };
    let (path, version) = match rest.rsplit_once('@') {
        // `@` inside the path is an encoded npm scope only when percent-encoded, so
        // the last `@` after the last `/` starts the version.
        Some((p, v)) if !v.contains('/') => (p, decode(v)?),
        _ => (rest, String::new()),
    };
    let (kind, path) = path.split_once('/')?;
    let kind = kind.to_ascii_lowercase();
    if kind.is_empty()
        || !kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
    {
        return None;
    }
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect::<Option<_>>()?;
    let (name, namespace) = segments.split_last()?;
    if name.is_empty() {
        return None;
    }
    let namespace = namespace.join("/");
    let qualifier = |key: &str| {
        qualifiers
            .split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(decode)
    };
    let (ecosystem, name) = match kind.as_str() {
        "cargo" => ("crates.io".to_owned(), name.clone()),
        "npm" => (
            "npm".to_owned(),
            if namespace.is_empty() {
                name.clone()
            } else {
                format!("{namespace}/{name}")
            },
        ),
        "pypi" => ("PyPI".to_owned(), name.clone()),
        "golang" => (
            "Go".to_owned(),
            if namespace.is_empty() {
                name.clone()
            } else {
                format!("{namespace}/{name}")
            },
        ),
        "deb" => {
            let distro = match namespace.to_ascii_lowercase().as_str() {
                "ubuntu" => "Ubuntu",
                _ => "Debian",
            };
            let distro = match qualifier("distro").and_then(|d| distro_release(distro, &d)) {
                Some(release) => format!("{distro}:{release}"),
                None => distro.to_owned(),
            };
            // The OSV Debian data is by source package; a purl may name it.
            let pkg = qualifier("source")
                .map(|s| s.split(' ').next().unwrap_or(&s).to_owned())
                .unwrap_or_else(|| name.clone());
            (distro, pkg)
        }
        "apk" => ("Alpine".to_owned(), name.clone()),
        "maven" => ("Maven".to_owned(), format!("{namespace}:{name}")),
        "gem" => ("RubyGems".to_owned(), name.clone()),
        "nuget" => ("NuGet".to_owned(), name.clone()),
        "composer" => ("Packagist".to_owned(), format!("{namespace}/{name}")),
        "hex" => ("Hex".to_owned(), name.clone()),
        "pub" => ("Pub".to_owned(), name.clone()),
        other => (
            other.to_owned(),
            if namespace.is_empty() {
                name.clone()
            } else {
                format!("{namespace}/{name}")
            },
        ),
    };
    Some(Package {
        ecosystem,
        name,
        version,
    })
}

/// Debian's release numbers by code name (the purl spec allows either form).
const DEBIAN_CODENAMES: [(&str, &str); 7] = [
    ("jessie", "8"),
    ("stretch", "9"),
    ("buster", "10"),
    ("bullseye", "11"),
    ("bookworm", "12"),
    ("trixie", "13"),
    ("forky", "14"),
];

/// Ubuntu's release numbers by code name (those OSV has records for).
const UBUNTU_CODENAMES: [(&str, &str); 8] = [
    ("xenial", "16.04"),
    ("bionic", "18.04"),
    ("focal", "20.04"),
    ("jammy", "22.04"),
    ("mantic", "23.10"),
    ("noble", "24.04"),
    ("oracular", "24.10"),
    ("plucky", "25.04"),
];

/// The release a `distro` qualifier names, as OSV writes it (`debian-12` or
/// `bookworm` → `12`; `ubuntu-22.04` or `jammy` → `22.04`); `None` if it names
/// another distribution or nothing recognisable.
fn distro_release(distro: &str, qualifier: &str) -> Option<String> {
    let q = qualifier.trim().to_ascii_lowercase();
    let (prefix, names): (&str, &[(&str, &str)]) = match distro {
        "Ubuntu" => ("ubuntu-", &UBUNTU_CODENAMES),
        _ => ("debian-", &DEBIAN_CODENAMES),
    };
    if let Some(n) = q.strip_prefix(prefix) {
        let ok = !n.is_empty()
            && n.len() <= 8
            && n.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && n.starts_with(|c: char| c.is_ascii_digit());
        return ok.then(|| n.to_owned());
    }
    names
        .iter()
        .find(|(name, _)| *name == q)
        .map(|(_, n)| (*n).to_owned())
}

/// The release part of a Debian or Ubuntu ecosystem (`Debian:12` → `12`,
/// `Ubuntu:22.04:LTS` and `Ubuntu:Pro:22.04:LTS` → `22.04`); `None` for the bare
/// ecosystem and for every other ecosystem.
fn distro_release_of(ecosystem: &str) -> Option<&str> {
    let mut parts = ecosystem.split(':');
    match parts.next()? {
        "Debian" | "Ubuntu" => parts.find(|p| p.starts_with(|c: char| c.is_ascii_digit())),
        _ => None,
    }
}

/// Whether a record's affected ecosystem applies to a component's: a record for a
/// Debian or Ubuntu release (`Debian:12`) applies only to components declaring that
/// same release (`pkg:deb/debian/openssl@…?distro=debian-12`); a record for the bare
/// ecosystem applies to all of it; other ecosystems are not split by release.
pub fn release_matches(record_ecosystem: &str, component_ecosystem: &str) -> bool {
    match distro_release_of(record_ecosystem) {
        None => true,
        Some(release) => distro_release_of(component_ecosystem) == Some(release),
    }
}

/// The lookup key of a package in an ecosystem: the ecosystem without its release,
/// lower-cased, and the name normalised as that ecosystem compares names (PyPI per
/// PEP 503; crates.io, npm and Go without case; others exactly).
pub fn key(ecosystem: &str, name: &str) -> String {
    let eco = base_ecosystem(ecosystem).trim().to_ascii_lowercase();
    let name = name.trim();
    let name = match eco.as_str() {
        "pypi" => {
            let mut out = String::with_capacity(name.len());
            let mut sep = false;
            for c in name.chars() {
                if matches!(c, '-' | '_' | '.') {
                    sep = true;
                } else {
                    if sep && !out.is_empty() {
                        out.push('-');
                    }
                    sep = false;
                    out.push(c.to_ascii_lowercase());
                }
            }
            out
        }
        "crates.io" | "npm" | "go" | "debian" | "ubuntu" | "alpine" => name.to_ascii_lowercase(),
        _ => name.to_owned(),
    };
    format!("{eco}|{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> (String, String, String) {
        let p = parse(s).expect(s);
        (p.ecosystem, p.name, p.version)
    }

    #[test]
    fn common_types() {
        assert_eq!(
            p("pkg:cargo/serde@1.0.1"),
            ("crates.io".into(), "serde".into(), "1.0.1".into())
        );
        assert_eq!(
            p("pkg:deb/debian/openssl@3.0.11-1?arch=amd64&distro=debian-12"),
            ("Debian:12".into(), "openssl".into(), "3.0.11-1".into())
        );
        assert_eq!(
            p("pkg:npm/%40angular/core@16.0.0"),
            ("npm".into(), "@angular/core".into(), "16.0.0".into())
        );
        assert_eq!(
            p("pkg:pypi/Django@4.2.1"),
            ("PyPI".into(), "Django".into(), "4.2.1".into())
        );
        assert_eq!(
            p("pkg:golang/golang.org/x/net@v0.17.0"),
            ("Go".into(), "golang.org/x/net".into(), "v0.17.0".into())
        );
        assert_eq!(
            p("pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"),
            (
                "Maven".into(),
                "org.apache.logging.log4j:log4j-core".into(),
                "2.14.1".into()
            )
        );
        assert_eq!(
            p("pkg:deb/debian/libssl3@3.0.11-1?source=openssl"),
            ("Debian".into(), "openssl".into(), "3.0.11-1".into())
        );
        assert_eq!(p("pkg:cargo/ring").2, "");
    }

    #[test]
    fn not_purls() {
        for bad in [
            "",
            "cargo/serde@1",
            "pkg:",
            "pkg:cargo",
            "pkg:cargo/",
            "pkg:ca rgo/x@1",
            "pkg:cargo/x@%zz",
            "pkg:cargo/x\n@1",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_normalise_names() {
        assert_eq!(key("PyPI", "Zope.Interface"), key("PyPI", "zope-interface"));
        assert_eq!(key("Debian:12", "OpenSSL"), key("Debian", "openssl"));
        assert_ne!(key("crates.io", "serde"), key("npm", "serde"));
        assert_ne!(key("Maven", "A:b"), key("Maven", "a:b"));
    }
}
