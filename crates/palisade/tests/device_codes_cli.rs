//! AUTH-2, DATA-1, DESIGN.md invariant 7: `palisade product add` stores only product
//! models whose telemetry fields are declared with a purpose; `palisade device codes`
//! makes unique, ≥128-bit claim and pairing codes, writes them to a new file readable
//! by its owner only (mode 0600), never overwrites an existing file, and leaves no
//! code in the hub's data directory (only digests are stored).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn palisade(data: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("PALISADE_LOG", "error")
        .output()
        .expect("palisade runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Every byte under `dir`, for "is this secret stored anywhere" checks.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            bytes.extend(all_bytes(&path));
        } else if let Ok(b) = std::fs::read(&path) {
            bytes.extend(b);
        }
    }
    bytes
}

#[test]
fn claim_codes_are_unique_long_private_and_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");

    // Product models: fields need a valid name and a purpose.
    let (code, text) = palisade(
        &data,
        &[
            "product",
            "add",
            "cam-v2",
            "--name",
            "Garden camera",
            "--hardware",
            "B2",
            "--field",
            "temperature:number:celsius:room temperature shown to the owner",
            "--field",
            "motion:boolean::motion alerts sent to the owner",
        ],
    );
    assert_eq!(code, 0, "{text}");
    for bad in [
        "Temperature:number::shown to the owner",
        "temperature:float::shown to the owner",
        "temperature:number:celsius:",
    ] {
        let (code, text) = palisade(
            &data,
            &[
                "product",
                "add",
                "bad-model",
                "--name",
                "x",
                "--hardware",
                "A",
                "--field",
                bad,
            ],
        );
        assert_eq!(code, 1, "{bad} refused: {text}");
    }
    let (code, text) = palisade(
        &data,
        &[
            "product",
            "add",
            "cam-v2",
            "--name",
            "again",
            "--hardware",
            "A",
        ],
    );
    assert_eq!(code, 1, "a duplicate id is refused: {text}");
    let fields = dir.path().join("fields.json");
    std::fs::write(
        &fields,
        r#"[{"name": "humidity", "type": "integer", "unit": "%", "purpose": "comfort display"},
            {"name": "humidity", "type": "integer", "unit": "%", "purpose": "twice"}]"#,
    )
    .expect("write");
    let fields_arg = fields.display().to_string();
    let args = [
        "product",
        "add",
        "thermo-v1",
        "--name",
        "Thermostat",
        "--hardware",
        "A",
        "--fields",
        &fields_arg,
    ];
    let (code, text) = palisade(&data, &args);
    assert_eq!(code, 1, "duplicate fields refused: {text}");
    std::fs::write(
        &fields,
        r#"[{"name": "humidity", "type": "integer", "unit": "%", "purpose": "comfort display"}]"#,
    )
    .expect("write");
    let (code, text) = palisade(&data, &args);
    assert_eq!(code, 0, "{text}");
    let (code, text) = palisade(&data, &["product", "list", "--output", "json"]);
    assert_eq!(code, 0, "{text}");
    let products: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(products.as_array().expect("array").len(), 2);
    assert_eq!(products[0]["id"], "cam-v2");
    assert_eq!(products[0]["fields"].as_array().expect("fields").len(), 2);
    assert_eq!(products[0]["fields"][1]["unit"], "");

    // Claim codes.
    let out = dir.path().join("codes.csv");
    let out_arg = out.display().to_string();
    let codes_args = [
        "device",
        "codes",
        "--product",
        "cam-v2",
        "--count",
        "5",
        "--out",
        &out_arg,
    ];
    let (code, text) = palisade(&data, &codes_args);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("5 claim codes"), "{text}");
    let mode = std::fs::metadata(&out).expect("file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the codes file is private");
    let csv = std::fs::read_to_string(&out).expect("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "claim_code,pairing_code,expires_at");
    assert_eq!(lines.len(), 6, "{csv}");
    let mut seen = std::collections::BTreeSet::new();
    for line in &lines[1..] {
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols.len(), 3, "{line}");
        for secret in &cols[..2] {
            let plain = secret.replace('-', "");
            assert!(plain.len() >= 26, "≥128 bits of base32: {secret}");
            assert!(
                plain
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
                "base32: {secret}"
            );
            assert!(seen.insert(plain), "every code is unique");
        }
        assert!(cols[2].ends_with('Z') && cols[2].contains('T'), "{line}");
    }
    assert_eq!(seen.len(), 10);

    // Never overwritten, and nothing is issued when the file cannot be made.
    let (code, text) = palisade(&data, &codes_args);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("already exists"), "{text}");
    assert_eq!(std::fs::read_to_string(&out).expect("csv"), csv);

    // Bounds and unknown products.
    let other = dir.path().join("other.csv").display().to_string();
    for (count, product) in [("0", "cam-v2"), ("100001", "cam-v2"), ("1", "no-such")] {
        let (code, text) = palisade(
            &data,
            &[
                "device",
                "codes",
                "--product",
                product,
                "--count",
                count,
                "--out",
                &other,
            ],
        );
        assert_ne!(code, 0, "{count} {product}: {text}");
    }
    assert!(!Path::new(&other).exists());

    // The hub's data directory holds no code, only digests.
    let stored = all_bytes(&data);
    for secret in &seen {
        assert!(
            !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a claim or pairing code is stored in the clear"
        );
    }

    // Devices: none enrolled yet; revoking an unknown device fails.
    let (code, text) = palisade(&data, &["device", "list", "--output", "json"]);
    assert_eq!(code, 0, "{text}");
    let devices: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(devices, serde_json::json!([]));
    let (code, text) = palisade(
        &data,
        &["device", "revoke", "0123456789abcdef0123456789abcdef"],
    );
    assert_eq!(code, 1, "{text}");
    let (code, _) = palisade(&data, &["device", "revoke", "../../etc/passwd"]);
    assert_eq!(code, 1);
}
