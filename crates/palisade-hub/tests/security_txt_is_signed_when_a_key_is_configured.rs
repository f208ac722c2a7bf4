//! VULN-2 (RFC 9116 §2.3), VULN-1, DESIGN.md invariants 3 and 7: with an operator's
//! OpenPGP key configured, `/.well-known/security.txt` is an OpenPGP cleartext-signed
//! message (RFC 9580 §7, `Hash: SHA512`) that real GnuPG verifies against the exported
//! public key, and whose signed text still parses per RFC 9116 (one Expires, Contact,
//! Canonical equals the served URL). Requests do not cost signatures: the signed text
//! is cached by content. Administrators are warned when the key expires within 30 days.
//! Negative cases: a tampered body fails `gpg --verify`; a key file readable by others,
//! a garbage key file, a wrong passphrase and an expired key each refuse the
//! configuration with a clear message (so `palisade serve` does not start); without a
//! key the file is served unsigned, as before.

mod common;

use common::TestHub;
use common::security_txt::{cleartext_body, fields, parse_expires};
use palisade_hub::config::{Config, Overrides, Problem};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PASSPHRASE: &str = "quartz lantern meadow ripple";

/// A throwaway GnuPG home; its agent is stopped when dropped.
struct GnuPg {
    home: tempfile::TempDir,
}

impl GnuPg {
    fn new() -> GnuPg {
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        GnuPg { home }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .expect("gpg runs (apt-get install gnupg)")
    }

    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A new key `uid` (`algo usage expire`, as `--quick-gen-key` takes them), protected
    /// by [`PASSPHRASE`]; returns its fingerprint.
    fn generate(&self, uid: &str, algo: &str, usage: &str, expire: &str) -> String {
        self.ok(&[
            "--passphrase",
            PASSPHRASE,
            "--quick-gen-key",
            uid,
            algo,
            usage,
            expire,
        ]);
        let listing = String::from_utf8(self.ok(&["--with-colons", "--list-secret-keys", uid]))
            .expect("utf-8");
        listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("fingerprint")
            .to_owned()
    }

    /// The secret key, ASCII-armoured, written to `path` with `mode`.
    fn export_secret(&self, fpr: &str, path: &Path, mode: u32) {
        let armored = self.ok(&[
            "--passphrase",
            PASSPHRASE,
            "--armor",
            "--export-secret-keys",
            fpr,
        ]);
        std::fs::write(path, armored).expect("write key");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// `gpg --verify` of `signed` in this home; returns (success, status lines).
    fn verify(&self, signed: &str) -> (bool, String) {
        let file = self.home.path().join("security.txt");
        std::fs::write(&file, signed).expect("write");
        let out = self.run(&["--status-fd", "1", "--verify", file.to_str().expect("path")]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for GnuPg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}

/// `Config::load` of a file with `[disclosure]` naming `key` (and a passphrase file).
fn load(dir: &Path, key: &Path, passphrase: &str) -> Result<Config, Vec<Problem>> {
    let pass = dir.join("passphrase");
    std::fs::write(&pass, format!("{passphrase}\n")).expect("write");
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let file = dir.join("palisade.toml");
    std::fs::write(
        &file,
        format!(
            "[disclosure]\ncontact_email = \"security@example.com\"\nsecurity_txt_openpgp_key = {:?}\nsecurity_txt_openpgp_passphrase_file = {:?}\n",
            key.display().to_string(),
            pass.display().to_string()
        ),
    )
    .expect("write");
    let overrides = Overrides {
        config_file: Some(file),
        data_dir: Some(dir.join("unused-data")),
        ..Overrides::default()
    };
    Config::load(&overrides, &|_| None)
}

fn refused(result: Result<Config, Vec<Problem>>, needle: &str) -> String {
    let problems = result.expect_err("configuration refused");
    let text = format!("{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.key == "disclosure.security_txt_openpgp_key" && p.message.contains(needle)),
        "{needle}: {text}"
    );
    assert!(!text.contains(PASSPHRASE), "never the passphrase: {text}");
    text
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_security_txt_verifies_with_gpg_and_still_parses() {
    let signer = GnuPg::new();
    let fpr = signer.generate(
        "Example Security <security@example.com>",
        "ed25519",
        "sign",
        "1y",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("security-txt.asc");
    signer.export_secret(&fpr, &key, 0o600);
    let loaded = load(dir.path(), &key, PASSPHRASE).expect("the exported key is accepted");
    let signing = loaded.security_txt_key.clone().expect("key loaded");
    assert_eq!(signing.fingerprint, fpr);

    // A verifier that knows only the public key.
    let verifier = GnuPg::new();
    let public = signer.ok(&["--armor", "--export", &fpr]);
    let public_file = verifier.home.path().join("public.asc");
    std::fs::write(&public_file, public).expect("write");
    verifier.ok(&["--import", public_file.to_str().expect("path")]);

    let port = free_port();
    let hub = TestHub::start_with(|c| {
        c.listen = ([127, 0, 0, 1], port).into();
        c.public_url = format!("https://127.0.0.1:{port}");
        c.disclosure = loaded.disclosure.clone();
        c.security_txt_key = loaded.security_txt_key.clone();
    })
    .await;
    let page = hub.browser().get("/.well-known/security.txt").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/plain; charset=utf-8");
    assert!(
        page.body
            .starts_with("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .trim_end()
            .ends_with("-----END PGP SIGNATURE-----"),
        "{}",
        page.body
    );
    let (good, status) = verifier.verify(&page.body);
    assert!(good, "gpg --verify: {status}\n{}", page.body);
    assert!(status.contains("[GNUPG:] GOODSIG"), "{status}");
    assert!(
        status.contains(&format!("[GNUPG:] VALIDSIG {fpr}")),
        "{status}"
    );

    // The signed text is the RFC 9116 file.
    let body = cleartext_body(&page.body);
    let f = fields(&body);
    let all = |n: &str| -> Vec<&str> {
        f.iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let expires = all("expires");
    assert_eq!(expires.len(), 1, "exactly one Expires: {body}");
    let at = parse_expires(expires[0]);
    let now = common::now() as i64;
    assert!(at > now && at - now < 365 * 86_400, "{body}");
    let contacts = all("contact");
    assert!(
        contacts.contains(&"mailto:security@example.com"),
        "{contacts:?}"
    );
    assert!(
        contacts.contains(&hub.url("/security").as_str()),
        "{contacts:?}"
    );
    assert_eq!(
        all("canonical"),
        vec![hub.url("/.well-known/security.txt").as_str()]
    );

    // Requests do not cost signatures: a second request a second later gets the same
    // bytes (a new signature would carry a new creation time).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = hub.browser().get("/.well-known/security.txt").await;
    assert_eq!(
        again.body, page.body,
        "cached by content, not signed per request"
    );

    // Attack: a changed contact no longer verifies.
    let tampered = page.body.replace(
        "Contact: mailto:security@example.com",
        "Contact: mailto:attacker@example.net",
    );
    assert_ne!(tampered, page.body);
    let (good, status) = verifier.verify(&tampered);
    assert!(!good, "a tampered file must not verify: {status}");
    assert!(status.contains("[GNUPG:] BADSIG"), "{status}");
    hub.hub.shutdown().await;

    // Negative: the same key readable by others, or a wrong passphrase, is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    refused(
        load(dir.path(), &key, PASSPHRASE),
        "readable by other users",
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    refused(
        load(dir.path(), &key, "not the passphrase"),
        "cannot sign with this key",
    );
    // Negative: only the public key (no secret) is refused.
    let public_only = dir.path().join("public.asc");
    std::fs::write(&public_only, signer.ok(&["--armor", "--export", &fpr])).expect("write");
    std::fs::set_permissions(&public_only, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    refused(
        load(dir.path(), &public_only, PASSPHRASE),
        "not an ASCII-armoured OpenPGP secret key",
    );
}

#[test]
fn garbage_or_expired_keys_refuse_the_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.asc");
    std::fs::write(
        &garbage,
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nbm90IGEga2V5\n-----END PGP PRIVATE KEY BLOCK-----\n",
    )
    .expect("write");
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let text = refused(
        load(dir.path(), &garbage, PASSPHRASE),
        "not an ASCII-armoured OpenPGP secret key",
    );
    assert!(text.contains("gpg --armor --export-secret-keys"), "{text}");
    let missing = dir.path().join("missing.asc");
    refused(load(dir.path(), &missing, PASSPHRASE), "missing.asc");

    // A key that expired refuses to start (and says how to extend it).
    let gpg = GnuPg::new();
    let fpr = gpg.generate("Short <short@example.com>", "ed25519", "sign", "seconds=1");
    let key = dir.path().join("expired.asc");
    gpg.export_secret(&fpr, &key, 0o600);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let text = refused(load(dir.path(), &key, PASSPHRASE), "expired");
    assert!(text.contains("--quick-set-expire"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_are_warned_before_the_key_expires_and_no_key_means_unsigned() {
    // No key: unsigned, as before.
    let plain = TestHub::start().await;
    let page = plain.browser().get("/.well-known/security.txt").await;
    assert_eq!(page.status, 200);
    assert!(page.body.starts_with("# Security contact"), "{}", page.body);
    assert!(!page.body.contains("BEGIN PGP"), "{}", page.body);
    let (mut admin, _) = plain.setup_admin().await;
    let home = admin.get("/").await;
    assert!(
        !home.body.contains("security.txt"),
        "no warning without a key"
    );
    plain.hub.shutdown().await;

    // A key expiring in 10 days: the file is signed, and administrators are warned.
    let gpg = GnuPg::new();
    let fpr = gpg.generate("Soon <soon@example.com>", "ed25519", "sign", "10d");
    let dir = tempfile::tempdir().expect("tempdir");
    let key: PathBuf = dir.path().join("soon.asc");
    gpg.export_secret(&fpr, &key, 0o600);
    let loaded = load(dir.path(), &key, PASSPHRASE).expect("still valid for 10 days");
    let hub = TestHub::start_with(|c| {
        c.disclosure = loaded.disclosure.clone();
        c.security_txt_key = loaded.security_txt_key.clone();
    })
    .await;
    let page = hub.browser().get("/.well-known/security.txt").await;
    assert!(page.body.starts_with("-----BEGIN PGP SIGNED MESSAGE-----"));
    let (mut admin, _) = hub.setup_admin().await;
    let home = admin.get("/").await;
    assert!(
        home.body
            .contains(&format!("The OpenPGP key {fpr} that signs")),
        "{}",
        home.body
    );
    assert!(
        home.body.contains("gpg --quick-set-expire"),
        "{}",
        home.body
    );
    hub.hub.shutdown().await;
}
