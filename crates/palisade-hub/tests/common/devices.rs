//! Test kit for devices: a product model with declared telemetry fields, an enrolled
//! device whose key, certificate and the hub CA are PEM files (as a real device keeps
//! them, for `mosquitto_pub`/`mosquitto_sub`), and bounded runs of the mosquitto clients.

use super::TestHub;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::ids::{DeviceId, ProductId};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A device's files and identity.
pub struct TestDevice {
    pub id: DeviceId,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The fields the test product declares.
pub fn test_fields() -> Vec<FieldSpec> {
    let field = |name: &str, kind, unit: &str| FieldSpec {
        name: name.into(),
        kind,
        unit: unit.into(),
        purpose: "test telemetry".into(),
        personal: false,
        retention_days: None,
        optional: false,
    };
    vec![
        field("temperature", FieldKind::Number, "°C"),
        field("seq", FieldKind::Integer, ""),
        field("on", FieldKind::Boolean, ""),
        field("label", FieldKind::String, ""),
    ]
}

fn write_files(
    dir: &Path,
    key_pem: &str,
    cert_pem: &str,
    ca_pem: &str,
) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("device dir");
    let (cert, key, ca) = (dir.join("dev.pem"), dir.join("dev.key"), dir.join("ca.pem"));
    std::fs::write(&cert, cert_pem).expect("cert");
    std::fs::write(&key, key_pem).expect("key");
    std::fs::write(&ca, ca_pem).expect("ca");
    (cert, key, ca)
}

impl TestHub {
    /// The port devices connect to.
    pub fn mqtt_port(&self) -> u16 {
        self.hub.mqtt_addr.port()
    }

    /// Create a product model with [`test_fields`].
    pub async fn create_product(&self, id: &str) -> ProductId {
        let id = ProductId::parse(id).expect("product id");
        self.hub
            .db
            .insert_product(&ProductModel {
                id: id.clone(),
                name: format!("Test {id}"),
                hardware_revision: "1".into(),
                fields: test_fields(),
                created_at: 0,
            })
            .await
            .expect("product");
        id
    }

    /// Enrol a device of `product` as the API does (claim code, CSR made "on the
    /// device", certificate from the hub CA) and write its PEM files.
    pub async fn enroll_device(&self, product: &ProductId) -> TestDevice {
        let db = &self.hub.db;
        let codes = db
            .create_claim_codes(product, 1, 3600)
            .await
            .expect("claim code");
        let id = DeviceId::generate();
        let (key_pem, csr) = palisade_crypto::ca::device_key_and_csr(id.as_str()).expect("csr");
        let cert = self
            .hub
            .state
            .hub_ca
            .issue_device(&csr, id.as_str())
            .expect("device certificate");
        db.enroll_device(&codes[0].claim, &id, &cert.sha256, cert.not_after)
            .await
            .expect("enrol")
            .expect("claim code valid");
        let dir = self.dir.path().join("devices").join(id.as_str());
        let (cert, key, ca) =
            write_files(&dir, &key_pem, &cert.cert_pem, &self.hub.state.hub_ca_pem);
        TestDevice { id, cert, key, ca }
    }

    /// A device certificate from another CA (a fresh one), for a device id the hub
    /// does not know; the hub's own CA file is used to verify the hub.
    pub fn foreign_device(&self) -> TestDevice {
        let other = palisade_crypto::ca::HubCa::generate().expect("other CA");
        let id = DeviceId::generate();
        let (key_pem, csr) = palisade_crypto::ca::device_key_and_csr(id.as_str()).expect("csr");
        let cert = other.issue_device(&csr, id.as_str()).expect("certificate");
        let dir = self.dir.path().join("foreign").join(id.as_str());
        let (cert, key, ca) =
            write_files(&dir, &key_pem, &cert.cert_pem, &self.hub.state.hub_ca_pem);
        TestDevice { id, cert, key, ca }
    }
}

impl TestDevice {
    /// `mosquitto_*` connection options for this device against `port`.
    pub fn args(&self, port: u16) -> Vec<String> {
        [
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--cafile",
            &self.ca.display().to_string(),
            "--cert",
            &self.cert.display().to_string(),
            "--key",
            &self.key.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    pub fn topic(&self, leaf: &str) -> String {
        format!("devices/{}/{leaf}", self.id)
    }
}

/// What a mosquitto client run produced. `code` is `None` if it had to be killed.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    pub fn text(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `program` (a mosquitto client) with `args`, feeding `stdin`, killed after `limit`.
pub async fn run(program: &str, args: &[String], stdin: Option<&str>, limit: Duration) -> Run {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs (apt-get install mosquitto-clients): {e}"));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.expect("stdin");
        drop(pipe);
    }
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("{program}: {e}"),
        Err(_) => Run {
            code: None,
            stdout: String::new(),
            stderr: format!("{program} killed after {limit:?}"),
        },
    }
}

/// `mosquitto_pub` as `device`, one message.
pub async fn publish(
    hub: &TestHub,
    device: &TestDevice,
    version: &str,
    qos: u8,
    topic: &str,
    message: &str,
) -> Run {
    let mut args = device.args(hub.mqtt_port());
    args.extend(
        [
            "-V",
            version,
            "-q",
            &qos.to_string(),
            "-t",
            topic,
            "-m",
            message,
            "-d",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    run("mosquitto_pub", &args, None, Duration::from_secs(20)).await
}

/// Wait (bounded) until `check` holds.
pub async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A TLS connection to the device listener with `device`'s certificate, for tests that
/// must send bytes no well-behaved client would.
pub async fn raw_tls(
    hub: &TestHub,
    device: &TestDevice,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    super::install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&device.ca).expect("ca") {
        roots.add(ca.expect("ca pem")).expect("root");
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&device.cert)
        .expect("cert")
        .collect::<Result<_, _>>()
        .expect("cert pem");
    let key = PrivateKeyDer::from_pem_file(&device.key).expect("key");
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client config");
    let tcp = tokio::net::TcpStream::connect(hub.hub.mqtt_addr)
        .await
        .expect("connect");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

/// An MQTT 3.1.1 CONNECT (clean session, keep-alive 60 s, client id "t").
pub const CONNECT_V311: [u8; 15] = [
    0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b't',
];

/// The MQTT variable-length encoding of `n`.
pub fn remaining_length(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = u8::try_from(n % 128).expect("7 bits");
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}
