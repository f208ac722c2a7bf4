//! Package URLs (`pkg:type/namespace/name@version?qualifiers#subpath`) and the OSV
//! ecosystem each type maps to, plus the lookup key both an SBOM component and an OSV
//! `affected` entry reduce to, so matching is one index lookup per component.

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
            // The OSV Debian data is by source package; a purl may name it.
            let pkg = qualifier("source")
                .map(|s| s.split(' ').next().unwrap_or(&s).to_owned())
                .unwrap_or_else(|| name.clone());
            (distro.to_owned(), pkg)
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
            ("Debian".into(), "openssl".into(), "3.0.11-1".into())
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
