//! PRIV-4: a product declaration lists the device's sensing capabilities (camera,
//! microphone, location, motion, presence, biometric), each with its purpose; they are
//! published on `/privacy/data` without sign-in. Negative cases: `palisade config check
//! --product` and `palisade product add` refuse an unknown capability, a capability
//! without a purpose, and one declared twice, and save nothing.

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

const FIELDS: &str = r#"[{"name": "temperature", "type": "number", "unit": "celsius", "purpose": "room temperature shown to the owner"},
 {"name": "location", "type": "string", "purpose": "which room, for the floor plan", "personal": true, "optional": true}]"#;

fn declaration(sensing: &str) -> String {
    format!(r#"{{"fields": {FIELDS}, "sensing": {sensing}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensing_capabilities_are_checked_and_published() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8 path").to_owned()
    };
    let good = write(
        "good.json",
        &declaration(
            r#"[{"capability": "camera", "purpose": "shows who is at the door"},
                {"capability": "motion", "purpose": "starts a recording when someone approaches"}]"#,
        ),
    );
    let unknown = write(
        "unknown.json",
        &declaration(r#"[{"capability": "xray", "purpose": "sees through walls"}]"#),
    );
    let no_purpose = write(
        "no-purpose.json",
        &declaration(r#"[{"capability": "microphone", "purpose": " "}]"#),
    );
    let twice = write(
        "twice.json",
        &declaration(
            r#"[{"capability": "location", "purpose": "a"}, {"capability": "location", "purpose": "b"}]"#,
        ),
    );

    let (code, text) = palisade(&data, &["config", "check", "--product", &good]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("2 field(s) (1 optional), 2 sensing capability(ies)"),
        "{text}"
    );
    for (file, says) in [
        (&unknown, "unknown variant `xray`"),
        (&no_purpose, "say why the device has it"),
        (&twice, "declared twice"),
    ] {
        let (code, text) = palisade(&data, &["config", "check", "--product", file]);
        assert_ne!(code, 0, "{file}: {text}");
        assert!(text.contains(says), "{file}: {text}");
        let (code, text) = palisade(
            &data,
            &[
                "product",
                "add",
                "bad-v1",
                "--name",
                "Bad",
                "--hardware",
                "1",
                "--fields",
                file,
            ],
        );
        assert_ne!(code, 0, "{file}: {text}");
    }
    let (code, text) = palisade(
        &data,
        &[
            "product",
            "add",
            "bad-v2",
            "--name",
            "Bad",
            "--hardware",
            "1",
            "--field",
            "temperature:number:celsius:shown to the owner",
            "--sensing",
            "thermal-imaging:sees heat",
        ],
    );
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("sensing capability \"thermal-imaging\" is unknown"),
        "{text}"
    );

    let (code, text) = palisade(
        &data,
        &[
            "product",
            "add",
            "doorbell-v1",
            "--name",
            "Doorbell",
            "--hardware",
            "B",
            "--fields",
            &good,
        ],
    );
    assert_eq!(code, 0, "{text}");
    let (code, text) = palisade(
        &data,
        &[
            "product",
            "add",
            "speaker-v1",
            "--name",
            "Speaker",
            "--hardware",
            "1",
            "--field",
            "volume:integer::volume shown in the app",
            "--sensing",
            "microphone:hears the wake word, on the device only",
        ],
    );
    assert_eq!(code, 0, "{text}");
    let (_, list) = palisade(&data, &["product", "list"]);
    assert!(
        !list.contains("bad-v"),
        "nothing saved of a refused declaration: {list}"
    );

    // Published without sign-in, with the purposes.
    let hub = palisade_hub::start(palisade_hub::config::Config::for_data_dir(&data))
        .await
        .expect("hub");
    let ca_pem = std::fs::read(&hub.ca_cert_path).expect("ca");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).expect("ca pem"))
        .build()
        .expect("client");
    let page = client
        .get(format!("{}/privacy/data", hub.url()))
        .send()
        .await
        .expect("GET /privacy/data");
    assert_eq!(page.status(), 200);
    let body = page.text().await.expect("body");
    for expected in [
        "Camera (images or video)",
        "shows who is at the door",
        "Motion sensor",
        "starts a recording when someone approaches",
        "Microphone (sound)",
        "hears the wake word, on the device only",
        "yes: the owner can switch it off per device",
    ] {
        assert!(
            body.contains(expected),
            "{expected} missing from /privacy/data"
        );
    }
    assert!(!body.contains("xray") && !body.contains("thermal"));
    hub.shutdown().await;
}
