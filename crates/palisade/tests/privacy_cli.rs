//! PRIV-1, STOR-3: `palisade privacy check|publish` refuses a policy missing a required
//! section (listing what is missing, publishing nothing) and publishes a complete one;
//! `palisade secrets rotate-key` replaces the secrets key (0600) with a new one and the
//! database still opens with it.

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

const POLICY: &str = "# Policy\n\n## What data we collect\n\nYour e-mail address.\n\n## Why we collect it\n\nTo run the service.\n\n## Who receives it\n\nNo third parties.\n\n## How long we keep it\n\n30 days.\n\n## Your rights\n\nExport and delete on your account page.\n\n## Contact\n\nprivacy@example.org\n";

fn key_id(data: &Path) -> String {
    let text = std::fs::read_to_string(data.join("secrets.key")).expect("key file");
    text.lines()
        .find(|l| l.starts_with("palisade-secrets-key-v1 "))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("a key line")
        .to_owned()
}

#[test]
fn policy_publishing_and_key_rotation_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let incomplete = dir.path().join("incomplete.md");
    std::fs::write(&incomplete, POLICY.replace("## Contact", "## Other")).expect("write");
    let complete = dir.path().join("policy.md");
    std::fs::write(&complete, POLICY).expect("write");

    let (code, text) = palisade(
        &data,
        &["privacy", "check", incomplete.to_str().expect("p")],
    );
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("missing section: contact"), "{text}");
    let (code, text) = palisade(
        &data,
        &[
            "privacy",
            "publish",
            incomplete.to_str().expect("p"),
            "--minor",
        ],
    );
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("was not published"), "{text}");
    assert!(text.contains("missing section: contact"), "{text}");

    // One of --substantive / --minor is required.
    let (code, _) = palisade(
        &data,
        &["privacy", "publish", complete.to_str().expect("p")],
    );
    assert_ne!(code, 0);
    let (code, text) = palisade(
        &data,
        &[
            "privacy",
            "publish",
            complete.to_str().expect("p"),
            "--substantive",
            "--summary",
            "first policy",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("version 1 published"), "{text}");

    // The key exists (made by the first command), 0600; rotation replaces it.
    let key = data.join("secrets.key");
    let mode = std::fs::metadata(&key).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = key_id(&data);
    let (code, text) = palisade(&data, &["secrets", "rotate-key"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("secrets key rotated"), "{text}");
    let after = key_id(&data);
    assert_ne!(before, after);
    assert!(
        !std::fs::read_to_string(&key)
            .expect("key")
            .contains(&before)
    );
    let mode = std::fs::metadata(&key).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The database opens with the new key: a second minor version publishes.
    let (code, text) = palisade(
        &data,
        &[
            "privacy",
            "publish",
            complete.to_str().expect("p"),
            "--minor",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("version 2 published"), "{text}");
}
