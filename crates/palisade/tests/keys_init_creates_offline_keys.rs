//! UPD-2 (trust anchor), issue 4: `palisade keys init` makes the OFFLINE root keys
//! (threshold configurable) and the targets key as files of mode 0600 in a private
//! directory, without any hub, and prints their public key ids. Attacks: running it
//! again over existing keys is refused (keys are never overwritten), and a directory
//! that others can read is refused.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn keys_init(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["keys", "init", "--out"])
        .arg(dir)
        .args(extra)
        .env_remove("PALISADE_CONFIG")
        .output()
        .expect("run palisade")
}

#[test]
fn offline_keys_are_private_files_and_never_overwritten() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("offline-keys");
    let out = keys_init(&dir, &["--root-threshold", "2", "--root-keys", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir_mode = std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let mut ids = Vec::new();
    for name in [
        "root-1.pk8",
        "root-2.pk8",
        "root-3.pk8",
        "targets.pk8",
        "keys.json",
    ] {
        let meta = std::fs::metadata(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        if name.ends_with(".pk8") {
            let line = stdout
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{name} id printed: {stdout}"));
            let id = line.split_whitespace().nth(1).expect("id").to_owned();
            assert_eq!(id.len(), 64, "a SHA-256 key id: {id}");
            ids.push(id);
        }
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "four distinct keys");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("keys.json")).expect("keys.json"))
            .expect("json");
    assert_eq!(summary["root_threshold"], 2);
    assert_eq!(summary["root"].as_array().expect("root ids").len(), 3);
    // Public ids only: no private key material in what is printed.
    assert!(!stdout.contains("PRIVATE"));

    // Attack: a second run over the same directory refuses and changes nothing.
    let before = std::fs::read(dir.join("targets.pk8")).expect("key");
    let again = keys_init(&dir, &[]);
    assert!(!again.status.success(), "overwriting must be refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwritten"));
    assert_eq!(std::fs::read(dir.join("targets.pk8")).expect("key"), before);

    // Attack: a directory others can read is refused.
    let open = tmp.path().join("shared");
    std::fs::create_dir(&open).expect("dir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let refused = keys_init(&open, &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("readable by others"));
    assert!(!open.join("targets.pk8").exists());

    // A threshold above the number of keys is refused.
    let bad = keys_init(
        &tmp.path().join("bad"),
        &["--root-threshold", "3", "--root-keys", "2"],
    );
    assert!(!bad.status.success());
}
