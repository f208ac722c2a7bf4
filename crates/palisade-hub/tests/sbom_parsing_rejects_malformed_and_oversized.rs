//! VULN-4, VULN-8: SBOM parsing (CycloneDX JSON 1.4–1.6, SPDX JSON 2.2/2.3) is bounded
//! and refuses malformed input with a clear message: not JSON, the wrong document type
//! or version, wrong field types, a bad package URL, more than 50,000 components,
//! nesting deeper than 64 levels, more than 16 MiB (also over HTTP, where the route's
//! body limit answers 413). A fuzz-style loop of mutated real SBOMs (truncations at
//! every kind of offset, byte flips, splices) must never panic. Over HTTP, storing an
//! SBOM is for staff: anonymous callers get 401 and owners 403.

mod common;

use common::TestHub;
use palisade_hub::vuln::sbom::{self, MAX_COMPONENTS, MAX_SBOM_BYTES};
use serde_json::{Value, json};

fn cyclonedx() -> String {
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
        "version": 1,
        "metadata": {"component": {"type": "firmware", "name": "cam-v2", "version": "1.2.0"}},
        "components": [
            {"type": "library", "bom-ref": "a", "name": "serde", "version": "1.0.1", "purl": "pkg:cargo/serde@1.0.1",
             "hashes": [{"alg": "SHA-256", "content": "00"}], "licenses": [{"license": {"id": "MIT"}}]},
            {"type": "library", "name": "openssl", "version": "3.0.11-1", "purl": "pkg:deb/debian/openssl@3.0.11-1?arch=arm64"},
            {"type": "library", "name": "@angular/core", "version": "16.0.0", "purl": "pkg:npm/%40angular/core@16.0.0"},
            {"type": "library", "name": "Django", "version": "4.2.1", "purl": "pkg:pypi/django@4.2.1"},
            {"type": "operating-system", "name": "linux", "version": "6.1",
             "components": [{"type": "library", "name": "busybox", "version": "1.36.1"}]}
        ]
    })
    .to_string()
}

fn spdx() -> String {
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "cam-v2-1.2.0",
        "documentNamespace": "https://example.org/spdx/cam-v2-1.2.0",
        "creationInfo": {"created": "2026-01-01T00:00:00Z", "creators": ["Tool: test"]},
        "packages": [
            {"SPDXID": "SPDXRef-1", "name": "serde", "versionInfo": "1.0.1", "downloadLocation": "NOASSERTION",
             "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                               "referenceLocator": "pkg:cargo/serde@1.0.1"}]},
            {"SPDXID": "SPDXRef-2", "name": "zlib", "versionInfo": "1.3", "downloadLocation": "NOASSERTION"}
        ]
    })
    .to_string()
}

#[test]
fn real_shapes_parse() {
    let c = sbom::parse(cyclonedx().as_bytes()).expect("CycloneDX");
    assert_eq!(c.spec_version, "1.6");
    assert_eq!(c.components.len(), 6);
    let eco: Vec<(&str, &str, &str)> = c
        .components
        .iter()
        .map(|c| (c.ecosystem.as_str(), c.package.as_str(), c.version.as_str()))
        .collect();
    assert_eq!(eco[0], ("crates.io", "serde", "1.0.1"));
    assert_eq!(eco[1], ("Debian", "openssl", "3.0.11-1"));
    assert_eq!(eco[2], ("npm", "@angular/core", "16.0.0"));
    assert_eq!(eco[3], ("PyPI", "django", "4.2.1"));
    assert_eq!(
        eco[5],
        ("", "busybox", "1.36.1"),
        "no purl: listed, never matched"
    );
    let s = sbom::parse(spdx().as_bytes()).expect("SPDX");
    assert_eq!(s.spec_version, "2.3");
    assert_eq!(s.components.len(), 2);
    assert_eq!(s.components[0].ecosystem, "crates.io");
    for v in ["1.4", "1.5"] {
        let doc = cyclonedx().replace("\"1.6\"", &format!("\"{v}\""));
        assert!(sbom::parse(doc.as_bytes()).is_ok(), "{v}");
    }
    assert!(sbom::parse(spdx().replace("SPDX-2.3", "SPDX-2.2").as_bytes()).is_ok());
}

#[test]
fn malformed_input_is_refused_with_a_reason() {
    let with = |f: &dyn Fn(&mut Value), needle: &str| {
        let mut v: Value = serde_json::from_str(&cyclonedx()).expect("json");
        f(&mut v);
        let e = sbom::parse(v.to_string().as_bytes()).expect_err(needle);
        assert!(e.0.contains(needle), "{needle:?} not in {:?}", e.0);
    };
    with(&|v| v["specVersion"] = json!("1.3"), "specVersion");
    with(&|v| v["specVersion"] = json!(1.5), "specVersion");
    with(&|v| v["components"] = json!({"a": 1}), "components");
    with(&|v| v["components"][0] = json!("serde"), "object");
    with(&|v| v["components"][0]["name"] = json!(7), "name");
    with(&|v| v["components"][0]["name"] = json!(""), "no name");
    with(
        &|v| v["components"][0]["purl"] = json!("cargo/serde"),
        "package URL",
    );
    with(
        &|v| v["components"][0]["purl"] = json!("pkg:cargo/x@%zz"),
        "package URL",
    );
    with(
        &|v| v["components"][0]["version"] = json!("1\u{0}"),
        "control",
    );
    with(
        &|v| v["components"][0]["name"] = json!("n".repeat(600)),
        "longer",
    );
    with(&|v| v["bomFormat"] = json!("SomethingElse"), "CycloneDX");
    for (doc, needle) in [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ("\"text\"", "JSON object"),
        ("{\"spdxVersion\": \"SPDX-3.0\"}", "SPDX version"),
        (
            "{\"spdxVersion\": \"SPDX-2.3\", \"packages\": 5}",
            "packages",
        ),
        (
            "{\"spdxVersion\": \"SPDX-2.3\", \"packages\": [{\"name\": \"x\", \"externalRefs\": [{\"referenceType\": \"purl\", \"referenceLocator\": \"nonsense\"}]}]}",
            "package URL",
        ),
    ] {
        let e = sbom::parse(doc.as_bytes()).expect_err(doc);
        assert!(e.0.contains(needle), "{needle:?} not in {:?}", e.0);
    }
}

#[test]
fn bounds_hold() {
    // Nesting: arrays, objects and nested components.
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    assert!(
        sbom::parse(deep.as_bytes())
            .expect_err("refused")
            .0
            .contains("nests")
    );
    let mut nested = json!({"type": "library", "name": "leaf"});
    for _ in 0..40 {
        nested = json!({"type": "library", "name": "n", "components": [nested]});
    }
    let doc = json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": [nested]});
    assert!(
        sbom::parse(doc.to_string().as_bytes())
            .expect_err("refused")
            .0
            .contains("nests")
    );
    // Brackets inside strings do not count.
    let doc = json!({"bomFormat": "CycloneDX", "specVersion": "1.5",
        "components": [{"type": "library", "name": "[".repeat(200)}]});
    assert!(sbom::parse(doc.to_string().as_bytes()).is_ok());

    // Component count, both formats.
    let many: Vec<Value> = (0..=MAX_COMPONENTS)
        .map(|i| json!({"type": "library", "name": format!("c{i}")}))
        .collect();
    let doc = json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": many});
    assert!(
        sbom::parse(doc.to_string().as_bytes())
            .expect_err("refused")
            .0
            .contains("more than")
    );
    let many: Vec<Value> = (0..=MAX_COMPONENTS)
        .map(|i| json!({"name": format!("c{i}")}))
        .collect();
    let doc = json!({"spdxVersion": "SPDX-2.3", "packages": many});
    assert!(
        sbom::parse(doc.to_string().as_bytes())
            .expect_err("refused")
            .0
            .contains("more than")
    );

    // Size.
    let big = vec![b' '; MAX_SBOM_BYTES + 1];
    assert!(sbom::parse(&big).expect_err("refused").0.contains("larger"));
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_sboms_never_panic() {
    let seeds = [cyclonedx().into_bytes(), spdx().into_bytes()];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let interesting = b"{}[]\",:\\0-9e+.%@/\x00\xff";
    let mut parsed = 0;
    for seed in &seeds {
        // Every truncation.
        for cut in 0..seed.len() {
            let _ = sbom::parse(&seed[..cut]);
        }
        for _ in 0..4000 {
            let mut doc = seed.clone();
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(doc.len());
                match rng.below(4) {
                    0 => doc[at] = interesting[rng.below(interesting.len())],
                    1 => doc[at] ^= 1 << rng.below(8),
                    2 => {
                        let len = rng.below(16).min(doc.len() - at);
                        doc.drain(at..at + len);
                    }
                    _ => {
                        let from = rng.below(doc.len());
                        let len = rng.below(32).min(doc.len() - from);
                        let chunk: Vec<u8> = doc[from..from + len].to_vec();
                        doc.splice(at..at, chunk);
                    }
                }
                if doc.is_empty() {
                    break;
                }
            }
            if sbom::parse(&doc).is_ok() {
                parsed += 1;
            }
        }
    }
    // Some mutations stay valid (e.g. a flipped letter inside a name): the loop
    // exercises both paths.
    assert!(parsed > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_upload_is_bounded_and_for_staff() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.setup_admin().await;
    hub.create_product("cam-v2").await;
    let mut owner = hub.invite(&mut admin, "owner-anna", "owner").await;
    let path = "/api/v1/products/cam-v2/versions/1.2.0/sbom";
    let post = |b: &common::Browser, path: &str, body: Vec<u8>| {
        b.request(reqwest::Method::POST, path)
            .header("x-csrf-token", b.csrf.clone().unwrap_or_default())
            .header("content-type", "application/json")
            .body(body)
    };

    let page = admin
        .send(post(&admin, path, cyclonedx().into_bytes()))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let v: Value = serde_json::from_str(&page.body).expect("json");
    assert_eq!(v["components"].as_array().map(Vec::len), Some(6));

    let page = admin
        .send(post(
            &admin,
            path,
            b"{\"bomFormat\": \"CycloneDX\"".to_vec(),
        ))
        .await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("not valid JSON"), "{}", page.body);
    let page = admin
        .send(post(&admin, path, vec![b' '; MAX_SBOM_BYTES + 1]))
        .await;
    assert_eq!(page.status, 413, "{}", page.body);
    // Unknown product, or a version that is not one: 404.
    let page = admin
        .send(post(
            &admin,
            "/api/v1/products/nope/versions/1.0/sbom",
            cyclonedx().into_bytes(),
        ))
        .await;
    assert_eq!(page.status, 404);
    let page = admin
        .send(post(
            &admin,
            "/api/v1/products/cam-v2/versions/1.0%20x/sbom",
            cyclonedx().into_bytes(),
        ))
        .await;
    assert_eq!(page.status, 404);

    let page = owner
        .send(post(&owner, path, cyclonedx().into_bytes()))
        .await;
    assert_eq!(page.status, 403);
    assert_eq!(owner.get(path).await.status, 403);
    let mut anon = hub.browser();
    anon.get("/login").await;
    let page = anon.send(post(&anon, path, cyclonedx().into_bytes())).await;
    assert_eq!(page.status, 401);

    // The stored SBOM is unchanged by the refused uploads.
    let page = admin.get(path).await;
    let v: Value = serde_json::from_str(&page.body).expect("json");
    assert_eq!(
        v["components"].as_array().map(Vec::len),
        Some(6),
        "{}",
        page.body
    );
    let audit = hub.hub.db.audit_entries(50, None).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "sbom.store" && e.outcome == "failure")
    );
    hub.hub.shutdown().await;
}
