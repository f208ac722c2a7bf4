//! Test kit for releases: a live hub with a product model and a staff API token, the
//! `palisade keys|release` commands run as a release manager would, and a loopback
//! HTTP relay in front of the hub's `/tuf/{model}/` so the agent's bare TUF client
//! (which trusts public CAs, not the hub CA, for its `https://`) reads the live hub's
//! repository. TUF metadata carries its own integrity, so the relay adds no trust.
#![allow(dead_code)]

use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{Email, ProductId, Username};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const MODEL: &str = "lamp-v1";

pub struct Kit {
    pub hub: palisade_hub::RunningHub,
    pub dir: tempfile::TempDir,
    pub token: String,
}

impl Kit {
    pub async fn start() -> Kit {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = palisade_hub::start(palisade_hub::config::Config::for_data_dir(
            &dir.path().join("hub"),
        ))
        .await
        .expect("hub");
        hub.db
            .create_product(&ProductModel {
                id: ProductId::parse(MODEL).expect("id"),
                name: "Lamp".into(),
                hardware_revision: "A".into(),
                fields: vec![FieldSpec {
                    name: "on".into(),
                    kind: FieldKind::Boolean,
                    unit: String::new(),
                    purpose: "lamp state shown to the owner".into(),
                    personal: false,
                    retention_days: None,
                    optional: false,
                }],
                created_at: 0,
            })
            .await
            .expect("product");
        let admin = hub
            .db
            .insert_user(NewUser {
                username: &Username::parse("release-manager").expect("username"),
                email: &Email::parse("rm@example.org").expect("email"),
                role: Role::Admin,
                status: Status::Active,
                password_hash: None,
            })
            .await
            .expect("admin");
        let (_, token) = hub
            .db
            .create_api_token(&admin.id, "release", 3600)
            .await
            .expect("token");
        Kit { hub, dir, token }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("hub")
    }

    /// Run `palisade ARGS` with the hub URL, CA and token added for `release`.
    pub fn palisade(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
        cmd.args(args).env_remove("PALISADE_CONFIG");
        if args.first() == Some(&"release") {
            cmd.arg("--hub")
                .arg(self.hub.url())
                .arg("--ca")
                .arg(&self.hub.ca_cert_path)
                .env("PALISADE_TOKEN", &self.token);
        }
        cmd.output().expect("run palisade")
    }

    pub fn keys_init(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        let out = self.palisade(&["keys", "init", "--out", dir.to_str().expect("utf8")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    }

    pub fn init_repo(&self, keys: &Path) {
        let out = self.palisade(&[
            "release",
            "init-repo",
            "--product",
            MODEL,
            "--keys",
            keys.to_str().expect("utf8"),
        ]);
        assert!(
            out.status.success(),
            "init-repo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Publish `version` with an image of `bytes`; returns the command's output.
    pub fn publish(&self, keys: &Path, version: &str, bytes: &[u8], security: bool) -> Output {
        let image = self.path(&format!("image-{version}.img"));
        std::fs::write(&image, bytes).expect("image");
        let mut args = vec![
            "release",
            "publish",
            "--product",
            MODEL,
            "--version",
            version,
            "--file",
            image.to_str().expect("utf8"),
            "--keys",
            keys.to_str().expect("utf8"),
        ];
        if security {
            args.push("--security");
        }
        self.palisade(&args)
    }

    /// An HTTPS client of the hub (hub CA pinned).
    pub fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.hub.ca_cert_path).expect("ca");
        let roots = {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots.add(c.expect("cert")).expect("add");
            }
            roots
        };
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("tls")
        .with_root_certificates(roots)
        .with_no_client_auth();
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()
            .expect("client")
    }

    /// Start the relay; returns its base URL (`http://127.0.0.1:P/`), under which
    /// `metadata/` and `targets/` are the model's repository on the live hub.
    pub async fn relay(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let upstream = format!("{}/tuf/{MODEL}/", self.hub.url());
        let client = self.client();
        tokio::spawn(async move {
            // Bounded: a test makes far fewer requests.
            for _ in 0..10_000 {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (client, upstream) = (client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024
                    {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request);
                    let path = text
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("/")
                        .trim_start_matches('/')
                        .to_owned();
                    let (status, body) = match client.get(format!("{upstream}{path}")).send().await
                    {
                        Ok(r) => (
                            r.status().as_u16(),
                            r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                        ),
                        Err(_) => (502, Vec::new()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(&body).await;
                });
            }
        });
        format!("http://127.0.0.1:{port}/")
    }

    /// The root devices are shipped with (version 1), fetched from the hub.
    pub async fn shipped_root(&self) -> PathBuf {
        let bytes = self
            .client()
            .get(format!(
                "{}/tuf/{MODEL}/metadata/1.root.json",
                self.hub.url()
            ))
            .send()
            .await
            .expect("fetch")
            .bytes()
            .await
            .expect("body");
        let path = self.path("shipped-root.json");
        std::fs::write(&path, &bytes).expect("write");
        path
    }
}

/// A device-side TUF client (the agent's, as `palisade-agent tuf` runs it).
pub struct Device {
    pub dir: tempfile::TempDir,
}

impl Device {
    pub fn new(root: &Path) -> Device {
        let dir = tempfile::tempdir().expect("tempdir");
        palisade_agent::tuf::init(&dir.path().join("metadata"), root).expect("init");
        Device { dir }
    }

    /// Refresh, then download `name`; the file's bytes on success.
    pub async fn download(&self, relay: &str, name: &str) -> Result<Vec<u8>, String> {
        let client = palisade_agent::tuf::TufClient::new(
            &self.dir.path().join("metadata"),
            &format!("{relay}metadata/"),
            Some(&format!("{relay}targets/")),
        )
        .map_err(|e| format!("{e:?}"))?;
        let repo = client.refresh().await.map_err(|e| format!("{e:?}"))?;
        let out = self.dir.path().join("out");
        std::fs::create_dir_all(&out).map_err(|e| format!("{e:?}"))?;
        let done = client
            .download(&repo, name, &out)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let path = match done {
            palisade_agent::tuf::Downloaded::Fetched(p)
            | palisade_agent::tuf::Downloaded::AlreadyPresent(p) => p,
        };
        std::fs::read(path).map_err(|e| format!("{e:?}"))
    }

    pub async fn refresh(&self, relay: &str) -> Result<(), String> {
        let client = palisade_agent::tuf::TufClient::new(
            &self.dir.path().join("metadata"),
            &format!("{relay}metadata/"),
            None,
        )
        .map_err(|e| format!("{e:?}"))?;
        client
            .refresh()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    }
}

/// The python interpreter with python-tuf 7.0 (`target/tuf-venv`, made by
/// `scripts/test.sh`), or `None` with a message; required with PALISADE_E2E_REQUIRED=1.
pub fn python_tuf() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("PALISADE_TUF_PYTHON") {
        candidates.push(p.into());
    }
    candidates.push(workspace.join("target/tuf-venv/bin/python"));
    for candidate in candidates {
        let ok = Command::new(&candidate)
            .args([
                "-c",
                "import tuf, sys; sys.exit(tuf.__version__ != '7.0.0')",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(candidate);
        }
    }
    let message =
        "python-tuf 7.0.0 is not installed (./scripts/test.sh puts it in target/tuf-venv)";
    if std::env::var("PALISADE_E2E_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{message}");
    }
    eprintln!("SKIPPED (python-tuf part): {message}");
    None
}
