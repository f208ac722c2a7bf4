//! Test kit for the bare TUF client: repositories built by the reference implementation
//! (python-tuf 7.0, `tests/tuf/scenario.py`), served over loopback HTTP by a small
//! server that counts requests and can answer with endless data, and the real
//! `palisade-agent tuf` binary. Every loop and wait is bounded.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The python interpreter with python-tuf 7.0.0. `None` (test skipped, with a message)
/// only when PALISADE_E2E_REQUIRED is not set; with it, a missing python-tuf fails.
pub fn python() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("PALISADE_TUF_PYTHON") {
        candidates.push(p.into());
    }
    candidates.push(workspace.join("target/tuf-venv/bin/python"));
    candidates.push("python3".into());
    for candidate in candidates {
        let ok = Command::new(&candidate)
            .args([
                "-c",
                "import tuf, cryptography, sys; sys.exit(tuf.__version__ != '7.0.0')",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(candidate);
        }
    }
    let message = "python-tuf 7.0.0 (with cryptography) is not installed: run ./scripts/test.sh \
                   (it installs it into target/tuf-venv), or `pip install tuf==7.0.0 cryptography` \
                   and set PALISADE_TUF_PYTHON to that python";
    if std::env::var("PALISADE_E2E_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    None
}

/// A scenario's steps, built once by python-tuf into a temporary directory.
pub struct Scenario {
    pub dir: tempfile::TempDir,
}

impl Scenario {
    pub fn build(python: &Path, name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tuf/scenario.py");
        let out = Command::new(python)
            .arg(&script)
            .arg(name)
            .arg(dir.path())
            .output()
            .expect("run scenario.py");
        assert!(
            out.status.success(),
            "scenario.py {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    /// The root the client is initialised with (version 1).
    pub fn trusted_root(&self) -> PathBuf {
        self.dir.path().join("root.json")
    }

    pub fn step(&self, step: &str) -> PathBuf {
        let path = self.dir.path().join(step);
        assert!(path.is_dir(), "no step {step}");
        path
    }

    /// A metadata file of a step, as published.
    pub fn published(&self, step: &str, file: &str) -> Vec<u8> {
        std::fs::read(self.step(step).join("metadata").join(file)).expect("published file")
    }
}

#[derive(Default)]
struct State {
    root: PathBuf,
    endless: HashSet<String>,
    hits: HashMap<String, usize>,
    /// Close the connection after this many body bytes (an interrupted download).
    cut: HashMap<String, usize>,
    /// `Range` headers received, with their path.
    ranges: Vec<(String, String)>,
}

/// A loopback HTTP/1.1 server for one step directory at a time (`/metadata/...`,
/// `/targets/...`). One request per connection.
pub struct Server {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        Self { port, state, stop }
    }

    /// Serve this step directory from now on.
    pub fn serve_step(&self, dir: &Path) {
        self.state.lock().expect("state").root = dir.to_path_buf();
    }

    /// Answer this URL path with an endless body (no length) instead of the file.
    pub fn endless(&self, path: &str) {
        self.state
            .lock()
            .expect("state")
            .endless
            .insert(path.to_owned());
    }

    /// Close the connection after `bytes` body bytes when `path` is next served.
    pub fn cut_once(&self, path: &str, bytes: usize) {
        self.state
            .lock()
            .expect("state")
            .cut
            .insert(path.to_owned(), bytes);
    }

    /// `Range` headers received so far, with their URL path.
    pub fn ranges(&self) -> Vec<(String, String)> {
        self.state.lock().expect("state").ranges.clone()
    }

    /// Requests so far for URL paths under `prefix`.
    pub fn hits(&self, prefix: &str) -> usize {
        let state = self.state.lock().expect("state");
        state
            .hits
            .iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn metadata_url(&self) -> String {
        format!("http://127.0.0.1:{}/metadata/", self.port)
    }

    pub fn targets_url(&self) -> String {
        format!("http://127.0.0.1:{}/targets/", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut conn: TcpStream, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let range_start = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("range")
            .then(|| value.trim().to_owned())
    });
    let (root, endless, cut) = {
        let mut s = state.lock().expect("state");
        *s.hits.entry(path.clone()).or_default() += 1;
        if let Some(r) = &range_start {
            s.ranges.push((path.clone(), r.clone()));
        }
        let cut = s.cut.remove(&path);
        (s.root.clone(), s.endless.contains(&path), cut)
    };
    let range_start: Option<usize> = range_start
        .and_then(|r| r.strip_prefix("bytes=").map(str::to_owned))
        .and_then(|r| r.strip_suffix('-').and_then(|n| n.parse().ok()));
    if endless {
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        let chunk = vec![b'A'; 64 * 1024];
        // At most 256 MiB: far beyond any declared length, and a bound for the test.
        for _ in 0..4096 {
            if conn.write_all(&chunk).is_err() {
                return;
            }
        }
        return;
    }
    let relative = path.trim_start_matches('/');
    let file = (!relative.split('/').any(|part| part == ".."))
        .then(|| root.join(relative))
        .and_then(|p| std::fs::read(p).ok());
    if let (Some(body), Some(start)) = (&file, range_start)
        && start < body.len()
    {
        let _ = conn
            .write_all(
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
                    body.len() - start,
                    body.len() - 1,
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|()| conn.write_all(&body[start..]));
        return;
    }
    if let (Some(body), Some(n)) = (&file, cut) {
        let _ = conn
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|()| conn.write_all(&body[..n.min(body.len())]));
        return;
    }
    let _ = match file {
        Some(body) => conn
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|()| conn.write_all(&body)),
        None => conn
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    };
}

/// The outcome of one `palisade-agent tuf` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// One client: a metadata directory and an output directory, driving the binary with
/// exactly the interface the TUF conformance suite uses.
pub struct Client {
    pub dir: tempfile::TempDir,
}

impl Client {
    /// A client initialised with the scenario's trusted root (must succeed).
    pub fn init(scenario: &Scenario) -> Self {
        let client = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        std::fs::create_dir_all(client.metadata_dir()).expect("metadata dir");
        std::fs::create_dir_all(client.target_dir()).expect("target dir");
        let run = client.run(&[
            "--metadata-dir".as_ref(),
            client.metadata_dir().as_os_str(),
            "init".as_ref(),
            scenario.trusted_root().as_os_str(),
        ]);
        assert_eq!(run.code, 0, "init failed: {}", run.stderr);
        client
    }

    pub fn metadata_dir(&self) -> PathBuf {
        self.dir.path().join("metadata")
    }

    pub fn target_dir(&self) -> PathBuf {
        self.dir.path().join("targets")
    }

    pub fn trusted(&self, file: &str) -> Option<Vec<u8>> {
        std::fs::read(self.metadata_dir().join(file)).ok()
    }

    /// The `signed.version` of a trusted metadata file.
    pub fn version(&self, role: &str) -> u64 {
        let bytes = self.trusted(&format!("{role}.json")).expect("trusted file");
        let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        value["signed"]["version"].as_u64().expect("version")
    }

    pub fn refresh(&self, server: &Server) -> Run {
        self.run(&[
            "--metadata-url".as_ref(),
            server.metadata_url().as_ref(),
            "--metadata-dir".as_ref(),
            self.metadata_dir().as_os_str(),
            "refresh".as_ref(),
        ])
    }

    pub fn download(&self, server: &Server, names: &[&str]) -> Run {
        let metadata_url = server.metadata_url();
        let targets_url = server.targets_url();
        let metadata_dir = self.metadata_dir();
        let target_dir = self.target_dir();
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--metadata-url".as_ref(),
            metadata_url.as_ref(),
            "--metadata-dir".as_ref(),
            metadata_dir.as_os_str(),
        ];
        for name in names {
            args.push("--target-name".as_ref());
            args.push(name.as_ref());
        }
        args.extend([
            "--target-base-url".as_ref(),
            targets_url.as_ref(),
            "--target-dir".as_ref(),
            target_dir.as_os_str(),
            "download".as_ref(),
        ]);
        self.run(&args)
    }

    /// Files in the output directory, sorted.
    pub fn downloaded(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.target_dir())
            .expect("target dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn run(&self, args: &[&std::ffi::OsStr]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_palisade-agent"))
            .arg("tuf")
            .args(args)
            .output()
            .expect("run palisade-agent");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A device for the updater tests: a state directory with the maker's update root and
/// a factory firmware version, driven through the real `palisade-agent` binary.
pub struct Device {
    pub dir: tempfile::TempDir,
}

impl Device {
    /// A device running firmware `version` that trusts the scenario's root.
    pub fn new(scenario: &Scenario, version: &str) -> Self {
        let device = Self::without_root(version);
        let run = device.agent(
            &[
                "update-root",
                "--state-dir",
                &device.state_dir(),
                &scenario.trusted_root().to_string_lossy(),
            ],
            &[],
        );
        assert_eq!(run.code, 0, "update-root: {}", run.stderr);
        device
    }

    /// A device with no trusted update root.
    pub fn without_root(version: &str) -> Self {
        let device = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let state = device.dir.path().join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        // The maker's factory version, as `run --firmware-version` stores it.
        std::fs::write(state.join("firmware_version"), version).expect("firmware version");
        device
    }

    pub fn state_dir(&self) -> String {
        self.dir.path().join("state").to_string_lossy().into_owned()
    }

    /// `palisade-agent update` for `target` (product MODEL) claiming `version`.
    pub fn update(
        &self,
        server: &Server,
        target: &str,
        version: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Run {
        let state = self.state_dir();
        let (metadata_url, targets_url) = (server.metadata_url(), server.targets_url());
        let mut args = vec![
            "update",
            "--state-dir",
            &state,
            "--metadata-url",
            &metadata_url,
            "--target-base-url",
            &targets_url,
            "--product",
            "MODEL",
            "--target",
            target,
            "--version",
            version,
            "--health-timeout",
            "20s",
        ];
        args.extend_from_slice(extra);
        self.agent(&args, env)
    }

    pub fn status(&self) -> String {
        let run = self.agent(&["status", "--state-dir", &self.state_dir()], &[]);
        assert_eq!(run.code, 0, "status: {}", run.stderr);
        run.stdout
    }

    /// `slots/boot.json` (null if none yet).
    pub fn boot(&self) -> serde_json::Value {
        std::fs::read(self.dir.path().join("state/slots/boot.json"))
            .map(|b| serde_json::from_slice(&b).expect("boot.json"))
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn slot_image(&self, slot: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.path().join(format!("state/slots/{slot}/image"))).ok()
    }

    /// Files left in the download directory.
    pub fn downloads(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("state/update-downloads"))
            .map(|d| {
                d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn agent(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_palisade-agent"))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run palisade-agent");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The status reports printed (JSON lines with a `step`).
    pub fn reports(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("step").is_some())
            .collect()
    }

    pub fn steps(&self) -> Vec<String> {
        self.reports()
            .iter()
            .map(|r| r["step"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Scenario {
    /// The URL path under which a step serves target `name` (consistent snapshots:
    /// `HASH.name`), and the published bytes.
    pub fn served_target(&self, step: &str, name: &str) -> (String, Vec<u8>) {
        let dir = self.step(step).join("targets");
        for entry in std::fs::read_dir(&dir).expect("targets dir") {
            let file = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            if file.ends_with(&format!(".{name}")) {
                let bytes = std::fs::read(dir.join(&file)).expect("target");
                return (format!("/targets/{file}"), bytes);
            }
        }
        panic!("no served target {name}");
    }
}
