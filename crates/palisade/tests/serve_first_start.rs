//! AUTH-1, ENC-1: `palisade serve` on an empty data directory prints what a new user
//! needs — the HTTPS console URL, the CA certificate path and its SHA-256 fingerprint
//! (matching `openssl x509 -fingerprint`), and a one-time setup code — and a second
//! start reuses the CA and prints no setup code once setup is done. ACC-4: a start as
//! root prints a warning that the hub does not need root.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Start `palisade serve` and collect stdout until the banner is complete.
fn serve(data: &std::path::Path, port: u16) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            "serve",
            "--data-dir",
            &data.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            // Any free port: the default 8883 may be taken on a shared machine.
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .env("PALISADE_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("palisade starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                lines.push(line);
                if lines.iter().any(|l| l.contains("CA SHA-256")) && lines.len() >= 4 {
                    // Give the optional setup-code lines a moment to arrive.
                    while let Ok(more) = rx.recv_timeout(Duration::from_millis(300)) {
                        lines.push(more);
                    }
                    break;
                }
            }
            Err(_) => continue,
        }
    }
    (child, lines)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

#[test]
fn first_start_prints_url_ca_fingerprint_and_setup_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let (child, lines) = serve(&data, port);
    let text = lines.join("\n");
    assert!(
        text.contains(&format!("Console         https://127.0.0.1:{port}/")),
        "{text}"
    );
    let ca_line = lines
        .iter()
        .find(|l| l.contains("CA certificate"))
        .expect("CA path printed");
    assert!(ca_line.ends_with("pki/ca.pem"), "{ca_line}");
    let printed = lines
        .iter()
        .find(|l| l.contains("CA SHA-256"))
        .expect("fingerprint")
        .split_whitespace()
        .last()
        .expect("value")
        .to_owned();
    let openssl = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(data.join("pki/ca.pem"))
        .output()
        .expect("openssl");
    let expected = String::from_utf8_lossy(&openssl.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or("")
        .to_owned();
    assert_eq!(printed, expected, "printed fingerprint matches openssl's");
    let code = lines
        .iter()
        .find(|l| l.contains("Setup code"))
        .expect("setup code printed");
    assert!(
        code.split_whitespace()
            .last()
            .is_some_and(|c| c.len() >= 26),
        "{code}"
    );
    assert!(
        !text.contains("http://"),
        "no plaintext URL anywhere: {text}"
    );
    // ACC-4: started as root, the hub says it does not need to be (and says nothing
    // otherwise); `id -u` is the independent witness of which case this is.
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    let as_root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
    assert_eq!(
        text.contains("Warning         The hub runs as root (UID 0)"),
        as_root,
        "{text}"
    );
    stop(child);

    // A second start: the same CA, and still a setup code (no administrator yet).
    let (child, lines) = serve(&data, port);
    let again = lines
        .iter()
        .find(|l| l.contains("CA SHA-256"))
        .expect("fingerprint")
        .split_whitespace()
        .last()
        .expect("value")
        .to_owned();
    assert_eq!(again, printed);
    stop(child);
}
