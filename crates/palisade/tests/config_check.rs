//! DESIGN.md invariant 3 (fail closed) and 7 (secrets never printed): `palisade config
//! check` lists every problem at once and exits 1; `serve` refuses to start on the
//! same configuration; the database password never appears in the output. VULN-2: a
//! garbage or group-readable security.txt OpenPGP key is refused by both with a clear
//! message, and the passphrase is never printed.

use std::process::Command;

fn palisade(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.args(args).env("PALISADE_LOG", "error");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("palisade runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn config_check_reports_every_problem_and_serve_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("palisade.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:notaport\"\npublic_url = \"http://hub.example\"\ntls_cert = \"/nonexistent/cert.pem\"\n[limits]\nmax_body_bytes = 1\n",
    )
    .expect("write");
    let env = [(
        "PALISADE_DATABASE_URL",
        "postgres://palisade:hunter2secret@db.example.com/palisade",
    )];
    let config = file.display().to_string();
    let (code, text) = palisade(&["config", "check", "--config", &config], &env);
    assert_eq!(code, 1, "{text}");
    for key in [
        "listen:",
        "public_url:",
        "tls_cert/tls_key:",
        "database_url:",
        "limits:",
    ] {
        assert!(text.contains(key), "{key} reported: {text}");
    }
    assert!(text.contains("5 problem(s)"), "{text}");
    assert!(
        !text.contains("hunter2secret"),
        "the database password is never printed: {text}"
    );

    let data = dir.path().join("data");
    let (code, text) = palisade(
        &[
            "serve",
            "--config",
            &config,
            "--data-dir",
            &data.display().to_string(),
        ],
        &env,
    );
    assert_eq!(code, 1, "serve refuses a bad configuration: {text}");
    assert!(
        !data.exists(),
        "nothing is created before the configuration is valid"
    );
    assert!(!text.contains("hunter2secret"), "{text}");
}

#[test]
fn config_check_accepts_the_defaults_and_shows_no_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    let (code, text) = palisade(
        &["config", "check", "--data-dir", &data],
        &[(
            "PALISADE_DATABASE_URL",
            "postgres://u:pw-secret@127.0.0.1/p",
        )],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("configuration OK"), "{text}");
    assert!(text.contains("postgres://u:***@127.0.0.1/p"), "{text}");
    assert!(!text.contains("pw-secret"), "{text}");
}

#[test]
fn setup_new_code_is_refused_without_the_flag() {
    let (code, text) = palisade(&["setup"], &[]);
    assert_eq!(code, 1);
    assert!(text.contains("--new-code"), "{text}");
}

#[test]
fn a_bad_security_txt_key_is_refused_by_check_and_serve() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("security-txt.asc");
    std::fs::write(&key, "this is not an OpenPGP key\n").expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let file = dir.path().join("palisade.toml");
    std::fs::write(
        &file,
        format!(
            "[disclosure]\nsecurity_txt_openpgp_key = {:?}\n",
            key.display().to_string()
        ),
    )
    .expect("write");
    let config = file.display().to_string();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let env = [(
        "PALISADE_SECURITY_TXT_KEY_PASSPHRASE",
        "sesame-passphrase-xyz",
    )];
    let (code, text) = palisade(
        &[
            "config",
            "check",
            "--config",
            &config,
            "--data-dir",
            &data_arg,
        ],
        &env,
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("disclosure.security_txt_openpgp_key")
            && text.contains("is not an ASCII-armoured OpenPGP secret key"),
        "{text}"
    );
    assert!(!text.contains("sesame-passphrase-xyz"), "{text}");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, text) = palisade(
        &["serve", "--config", &config, "--data-dir", &data_arg],
        &env,
    );
    assert_eq!(code, 1, "serve refuses: {text}");
    assert!(text.contains("readable by other users"), "{text}");
    assert!(
        !data.exists(),
        "nothing created before the configuration is valid"
    );
}
