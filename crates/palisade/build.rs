//! Writes Palisade's own SBOM (CycloneDX 1.5 JSON, VULN-5) into OUT_DIR from the lock
//! file: the packages that the hub and the agent link, that is the normal dependencies
//! of `palisade-hub`, `palisade-agent` and `palisade-crypto` (from their manifests,
//! so test-only dependencies are left out) and everything those depend on in
//! Cargo.lock. The lock file does not say which of a registry package's dependencies
//! are build-time or for other platforms, so the list errs on the side of too many.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const MEMBERS: [&str; 4] = [
    "palisade",
    "palisade-hub",
    "palisade-agent",
    "palisade-crypto",
];

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir).join("../..");
    let lock_path = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock: toml::Table = std::fs::read_to_string(&lock_path)
        .expect("Cargo.lock is readable")
        .parse()
        .expect("Cargo.lock is TOML");
    let packages = lock
        .get("package")
        .and_then(|p| p.as_array())
        .expect("Cargo.lock lists packages");

    struct Pkg {
        name: String,
        version: String,
        checksum: Option<String>,
        registry: bool,
        deps: Vec<String>,
    }
    let pkgs: Vec<Pkg> = packages
        .iter()
        .filter_map(|p| {
            let t = p.as_table()?;
            Some(Pkg {
                name: t.get("name")?.as_str()?.to_owned(),
                version: t.get("version")?.as_str()?.to_owned(),
                checksum: t
                    .get("checksum")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned),
                registry: t
                    .get("source")
                    .and_then(|s| s.as_str())
                    .is_some_and(|s| s.starts_with("registry+")),
                deps: t
                    .get("dependencies")
                    .and_then(|d| d.as_array())
                    .map(|d| {
                        d.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect();
    // A dependency entry is "name" or "name version" or "name version (source)".
    let resolve = |entry: &str| -> Option<usize> {
        let mut parts = entry.split(' ');
        let name = parts.next()?;
        let version = parts.next();
        pkgs.iter()
            .position(|p| p.name == name && version.is_none_or(|v| p.version == v))
    };

    let mut seen = BTreeSet::new();
    let mut stack = Vec::new();
    for member in MEMBERS {
        let manifest = root.join("crates").join(member).join("Cargo.toml");
        println!("cargo:rerun-if-changed={}", manifest.display());
        let m: toml::Table = std::fs::read_to_string(&manifest)
            .expect("member manifest is readable")
            .parse()
            .expect("member manifest is TOML");
        let normal: BTreeSet<String> = m
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| {
                d.iter()
                    .map(|(k, v)| {
                        v.get("package")
                            .and_then(|p| p.as_str())
                            .unwrap_or(k)
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some(i) = pkgs.iter().position(|p| p.name == member) else {
            continue;
        };
        seen.insert(i);
        for d in &pkgs[i].deps {
            let name = d.split(' ').next().unwrap_or(d);
            if normal.contains(name)
                && let Some(j) = resolve(d)
            {
                stack.push(j);
            }
        }
    }
    while let Some(i) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        for d in &pkgs[i].deps {
            if let Some(j) = resolve(d) {
                stack.push(j);
            }
        }
    }

    let mut components: BTreeMap<(String, String), serde_json::Value> = BTreeMap::new();
    for i in seen {
        let p = &pkgs[i];
        let purl = format!("pkg:cargo/{}@{}", p.name, p.version);
        let mut c = serde_json::json!({
            "type": "library",
            "bom-ref": purl,
            "name": p.name,
            "version": p.version,
            "purl": purl,
        });
        if let Some(sum) = &p.checksum {
            c["hashes"] = serde_json::json!([{ "alg": "SHA-256", "content": sum }]);
        }
        if !p.registry {
            c["description"] = serde_json::json!("part of Palisade (this workspace)");
        }
        components.insert((p.name.clone(), p.version.clone()), c);
    }
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let bom = serde_json::json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "component": {
                "type": "application",
                "bom-ref": format!("pkg:cargo/palisade@{version}"),
                "name": "palisade",
                "version": version,
                "description": "Palisade hub and device agent",
                "purl": format!("pkg:cargo/palisade@{version}"),
            },
            "tools": {
                "components": [{ "type": "application", "name": "palisade build.rs (from Cargo.lock)" }]
            }
        },
        "components": components.into_values().collect::<Vec<_>>(),
    });
    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("own-sbom.cdx.json");
    std::fs::write(
        out,
        serde_json::to_string_pretty(&bom).expect("the SBOM serialises"),
    )
    .expect("OUT_DIR is writable");
}
