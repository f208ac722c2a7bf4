//! Test kit for the agent's integration tests: a real Mosquitto broker with mutual TLS
//! on a free loopback port, certificates from `palisade_crypto` (the hub's own CA code),
//! an enrolled state directory, and the real `palisade-agent` binary as a child process.
//! Every wait is bounded.
#![allow(dead_code)]

use palisade_agent::state::{AgentConfig, StateDir};
use palisade_crypto::ca::{CertAndKey, HubCa};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const DEVICE_ID: &str = "dev-0123456789abcdef";

/// Fail the test with a clear message if a required tool is missing.
pub fn require_tool(name: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
        "/bin",
    ] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!(
        "`{name}` is not installed: run ./scripts/test.sh (it installs mosquitto and mosquitto-clients)"
    );
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).expect("write test file");
    path.to_path_buf()
}

/// Poll `check` until it returns `Some`, at most `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Certificate and key files for a TLS client (e.g. mosquitto_pub) issued by `ca`.
pub struct ClientFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Issue a client certificate for `name` from a fresh key, as a device would get one.
pub fn client_files(dir: &Path, ca: &HubCa, name: &str) -> ClientFiles {
    let (key, csr) = palisade_crypto::ca::device_key_and_csr(name).expect("csr");
    let cert = ca
        .issue_device(&csr, name)
        .expect("issue client certificate");
    ClientFiles {
        cert: write(&dir.join(format!("{name}.pem")), &cert.cert_pem),
        key: write(&dir.join(format!("{name}.key")), &key),
    }
}

/// A server certificate from `ca`, for the given names.
pub fn server_cert(ca: &HubCa, names: &[&str]) -> CertAndKey {
    ca.issue_server(&names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
        .expect("server certificate")
}

/// A server certificate from `ca` for 127.0.0.1 and localhost that expired yesterday.
pub fn expired_server_cert(ca: &HubCa) -> CertAndKey {
    use rcgen::{
        CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
        PKCS_ECDSA_P256_SHA256,
    };
    let ca_key = KeyPair::from_pem(&ca.material.key_pem).expect("ca key");
    let issuer = Issuer::from_ca_cert_pem(&ca.material.cert_pem, ca_key).expect("issuer");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let cert = params.signed_by(&key, &issuer).expect("sign");
    CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A Mosquitto broker requiring client certificates from `ca_pem`, killed on drop.
pub struct Broker {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Broker {
    pub fn start(dir: &Path, port: u16, ca_pem: &str, server: &CertAndKey) -> Self {
        let mosquitto = require_tool("mosquitto");
        let tag = format!("broker-{port}");
        let ca = write(&dir.join(format!("{tag}-ca.pem")), ca_pem);
        let cert = write(&dir.join(format!("{tag}.pem")), &server.cert_pem);
        let key = write(&dir.join(format!("{tag}.key")), &server.key_pem);
        // When run as root, Mosquitto switches to the `mosquitto` user unless told to stay
        // (it must read the key files in this private temporary directory).
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&Command::new("id").arg("-un").output().expect("id").stdout)
                    .trim()
                    .to_owned()
            });
        let conf = write(
            &dir.join(format!("{tag}.conf")),
            &format!(
                "user {user}\n\
                 persistence false\n\
                 log_dest stderr\n\
                 log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
                 connection_messages true\n\
                 listener {port} 127.0.0.1\n\
                 cafile {}\ncertfile {}\nkeyfile {}\n\
                 require_certificate true\n\
                 use_identity_as_username true\n\
                 allow_anonymous false\n",
                ca.display(),
                cert.display(),
                key.display()
            ),
        );
        let log = dir.join(format!("{tag}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(mosquitto)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("start mosquitto");
        let mut broker = Self { child, port, log };
        wait_until("mosquitto to listen", Duration::from_secs(10), || {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("mosquitto exited ({status}): {}", broker.log_text());
            }
            broker
                .log_text()
                .contains("mosquitto version")
                .then_some(())
                .and_then(|()| TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()))
        });
        broker
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A state directory as enrolment leaves it, with a device certificate from `ca` for a
/// key made by the agent's own code.
pub fn enrolled_state(dir: &Path, ca: &HubCa, mqtt_host: &str, mqtt_port: u16) -> PathBuf {
    let root = dir.join("state");
    let state = StateDir::new(&root);
    let _lock = state.lock().expect("state dir");
    let (key_pem, csr_pem) = palisade_agent::enroll::generate_key_and_csr().expect("key");
    state.save_key(&key_pem).expect("save key");
    let cert = ca
        .issue_device(&csr_pem, DEVICE_ID)
        .expect("device certificate");
    let config = AgentConfig {
        device_id: DEVICE_ID.to_owned(),
        hub_url: format!("https://{mqtt_host}:8443"),
        mqtt_host: mqtt_host.to_owned(),
        mqtt_port,
        not_after: cert.not_after,
        enrolled_at: 0,
        cert_issued_at: 0,
    };
    state
        .save_enrollment(&cert.cert_pem, &ca.material.cert_pem, &config)
        .expect("save enrollment");
    root
}

/// The agent binary as a child process, its stderr collected line by line.
pub struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Agent {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_palisade-agent"))
            .args(args)
            .env("PALISADE_AGENT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start palisade-agent");
        let lines = spawn_line_reader(child.stderr.take().expect("stderr"));
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait for a log line containing `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line containing {needle:?} within {timeout:?}; agent said:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn drain_log(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// SIGTERM, then wait (bounded) for a graceful exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.drain_log();
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "agent did not stop within 15 s of SIGTERM:\n{}",
                    self.drain_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait (bounded) for the process to exit by itself; returns (code, stdout).
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut out = String::new();
                if let Some(mut stdout) = self.child.stdout.take() {
                    let _ = stdout.read_to_string(&mut out);
                }
                std::thread::sleep(Duration::from_millis(50));
                self.drain_log();
                return (status.code(), out);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "agent did not exit within {timeout:?}:\n{}",
                    self.drain_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_line_reader(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    rx
}

/// `mosquitto_sub` as an independent client with its own certificate, printing
/// `topic payload` lines; killed on drop.
pub struct Subscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub messages: Vec<String>,
    errors: mpsc::Receiver<String>,
}

impl Subscriber {
    /// Subscribe to `topics` at QoS 1 as `client`; returns once messages flow (a probe
    /// published on `test/ready` has come back), so nothing published afterwards is
    /// missed.
    pub fn start(port: u16, ca: &Path, client: &ClientFiles, topics: &[&str]) -> Self {
        let mut cmd = Command::new(require_tool("mosquitto_sub"));
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-v",
        ])
        .arg("--cafile")
        .arg(ca)
        .arg("--cert")
        .arg(&client.cert)
        .arg("--key")
        .arg(&client.key)
        .args(["-W", "300", "-t", "test/ready"]);
        for topic in topics {
            cmd.args(["-t", topic]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mosquitto_sub");
        let lines = spawn_line_reader(child.stdout.take().expect("stdout"));
        let errors = spawn_line_reader(child.stderr.take().expect("stderr"));
        let mut sub = Self {
            child,
            lines,
            messages: Vec::new(),
            errors,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            publish(port, ca, client, "test/ready", "{}");
            let mut ready = false;
            while let Ok(line) = sub.lines.recv_timeout(Duration::from_millis(300)) {
                ready |= line.starts_with("test/ready ");
                sub.take(line);
            }
            if ready {
                return sub;
            }
            if Instant::now() > deadline {
                let err: Vec<String> = sub.errors.try_iter().collect();
                panic!("mosquitto_sub did not start receiving: {}", err.join("\n"));
            }
        }
    }

    fn take(&mut self, line: String) {
        // Late probe echoes are not messages under test.
        if !line.starts_with("test/ready ") {
            self.messages.push(line);
        }
    }

    /// Wait until `n` messages have arrived in total; returns all of them.
    pub fn wait_messages(&mut self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        while self.messages.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.take(line),
                Err(_) => panic!(
                    "only {} of {n} messages within {timeout:?}: {:?}",
                    self.messages.len(),
                    self.messages
                ),
            }
        }
        self.messages.clone()
    }

    /// Collect whatever arrives during `period`; returns all messages so far.
    pub fn drain(&mut self, period: Duration) -> Vec<String> {
        let deadline = Instant::now() + period;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.take(line),
                Err(_) => return self.messages.clone(),
            }
        }
    }

    /// Wait for the next message on `topic`, returning its JSON payload.
    pub fn next_on(&mut self, topic: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let mut cursor = 0;
        loop {
            while cursor < self.messages.len() {
                let line = self.messages[cursor].clone();
                if let Some(payload) = line.strip_prefix(&format!("{topic} ")) {
                    self.messages.remove(cursor);
                    return serde_json::from_str(payload).expect("JSON payload");
                }
                cursor += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.take(line),
                Err(_) => panic!(
                    "no message on {topic} within {timeout:?}; got {:?}",
                    self.messages
                ),
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publish one message with `mosquitto_pub` (QoS 1) as the client `client`.
pub fn publish(port: u16, ca: &Path, client: &ClientFiles, topic: &str, payload: &str) {
    let out = Command::new(require_tool("mosquitto_pub"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            "mqttv5",
            "-q",
            "1",
        ])
        .arg("--cafile")
        .arg(ca)
        .arg("--cert")
        .arg(&client.cert)
        .arg("--key")
        .arg(&client.key)
        .args(["-t", topic, "-m", payload])
        .stdin(Stdio::null())
        .output()
        .expect("run mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Processes whose command line is exactly `argv` (from /proc).
pub fn processes_with_cmdline(argv: &[&str]) -> usize {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted))
                .count()
        })
        .unwrap_or(0)
}

/// Sockets of process `pid` that accept connections or datagrams from the network or
/// other processes: TCP in LISTEN state, any UDP or raw socket, listening Unix sockets.
/// Read from /proc (socket inodes of the process's descriptors, matched against the
/// socket tables of its network namespace).
pub fn listening_sockets(pid: u32) -> Vec<String> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the agent's descriptors")
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_owned)
        })
        .collect();
    let mut found = Vec::new();
    for table in ["tcp", "tcp6", "udp", "udp6", "raw", "raw6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && inodes.contains(cols[9]) {
                let listening = !table.starts_with("tcp") || cols[3] == "0A";
                if listening {
                    found.push(format!("{table}: {line}"));
                }
            }
        }
    }
    let unix = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    for line in unix.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // Flags 00010000 = __SO_ACCEPTCON: a listening socket.
        if cols.len() > 6 && inodes.contains(cols[6]) && cols[3] == "00010000" {
            found.push(format!("unix: {line}"));
        }
    }
    assert!(
        !inodes.is_empty(),
        "the agent should hold at least its MQTT connection"
    );
    found
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
