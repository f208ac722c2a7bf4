//! A throwaway PostgreSQL cluster for tests, started from the installed server
//! binaries (Debian's `postgresql` package keeps them in `/usr/lib/postgresql/N/bin`,
//! off `PATH`). Each cluster lives in its own temporary directory, listens only on a
//! free loopback port (plus a Unix socket inside that directory), trusts every local
//! connection, and is shut down and deleted when the `PgCluster` is dropped.
//!
//! initdb and postgres refuse to run as root, so when the tests run as root the
//! directory is handed to the `postgres` system user and both programs run as that
//! user (`setpriv`, or `runuser` where `setpriv` is missing).
//!
//! Missing server binaries are a failure, never a skip: the storage layer promises
//! to work on PostgreSQL, and an untested promise is not kept.
#![allow(dead_code)]

use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The message of the panic when no server binaries are installed.
pub const MISSING_BINARIES: &str =
    "PostgreSQL server binaries missing: run ./scripts/test.sh which installs them";

/// How long a started server may take to accept a real connection.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many fresh ports to try when a start fails (another process took the port).
const START_ATTEMPTS: usize = 5;
/// How long `Drop` waits for a fast shutdown before killing the server.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_DATABASE: AtomicU64 = AtomicU64::new(1);

/// A running throwaway cluster; dropping it stops the server and removes its files.
pub struct PgCluster {
    child: Child,
    port: u16,
    log: PathBuf,
    // Declared last so it is removed after the server has stopped (fields drop after
    // `Drop::drop` has run, in declaration order).
    dir: tempfile::TempDir,
}

/// How to run a PostgreSQL program: directly, or as the `postgres` user when we are root.
#[derive(Clone)]
enum RunAs {
    CurrentUser,
    Setpriv(PathBuf),
    Runuser(PathBuf),
}

impl RunAs {
    fn detect() -> RunAs {
        if !running_as_root() {
            return RunAs::CurrentUser;
        }
        if let Some(path) =
            first_existing(&["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"])
        {
            return RunAs::Setpriv(path);
        }
        if let Some(path) =
            first_existing(&["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"])
        {
            return RunAs::Runuser(path);
        }
        panic!(
            "running as root, but neither setpriv nor runuser is installed: cannot run \
             PostgreSQL as the postgres user (install util-linux)"
        );
    }

    /// A command running `program` as the right user. `setpriv` execs the program in
    /// place, so the child's pid is the postmaster's and signals reach it directly.
    fn command(&self, program: &Path) -> Command {
        match self {
            RunAs::CurrentUser => Command::new(program),
            RunAs::Setpriv(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(program);
                c
            }
            RunAs::Runuser(runuser) => {
                let mut c = Command::new(runuser);
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            }
        }
    }
}

fn first_existing(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The `bin` directory of the newest installed PostgreSQL server, or the panic that
/// explains how to get one. Without the binaries the tests fail whether or not
/// `PALISADE_E2E_REQUIRED=1` is set: they never skip silently.
fn server_bin_dir() -> PathBuf {
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let bin = entry.path().join("bin");
            if !bin.join("initdb").is_file() || !bin.join("postgres").is_file() {
                return None;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name
                .split('.')
                .map(|part| part.parse::<u64>().unwrap_or(0))
                .collect();
            Some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    // Other layouts (a source build, another distribution) put initdb on PATH.
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
    });
    if let Some(dir) = on_path {
        return dir;
    }
    if std::env::var("PALISADE_E2E_REQUIRED").as_deref() == Ok("1") {
        panic!("{MISSING_BINARIES} (PALISADE_E2E_REQUIRED=1)");
    }
    panic!("{MISSING_BINARIES}");
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of the probe listener")
        .port()
}

fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_else(|e| format!("(cannot read {}: {e})", log.display()))
}

/// Send a signal by name with the `kill` command (no libc, no unsafe code).
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stop a server: fast shutdown (SIGINT ends client sessions, unlike SIGTERM's smart
/// shutdown, which would wait for pools still open), then SIGKILL after a bound.
fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), "INT");
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

enum Attempt {
    Ready(Child),
    /// The server exited early, probably because the port was taken meanwhile.
    Retry(String),
}

impl PgCluster {
    /// Create, start and wait for a new cluster. Panics (with the server log) if it
    /// cannot be started.
    pub async fn start() -> PgCluster {
        let bin = server_bin_dir();
        let run_as = RunAs::detect();
        let dir = tempfile::Builder::new()
            .prefix("palisade-pg-")
            .tempdir()
            .expect("create a temporary directory for the PostgreSQL cluster");
        let base = dir.path().to_path_buf();
        if !matches!(run_as, RunAs::CurrentUser) {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&base)
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown postgres:postgres {} failed: {status}",
                base.display()
            );
        }
        let data = base.join("data");

        let initdb = run_as
            .command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            // The postgres user may not be allowed into our working directory.
            .current_dir(&base)
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed ({}):\n{}\n{}",
            initdb.status,
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );

        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let log = base.join(format!("server-{attempt}.log"));
            match Self::start_server(&run_as, &bin, &base, &data, port, &log).await {
                Attempt::Ready(child) => {
                    return PgCluster {
                        child,
                        port,
                        log,
                        dir,
                    };
                }
                Attempt::Retry(why) => {
                    failures.push(format!("attempt {attempt} on port {port}: {why}"))
                }
            }
        }
        panic!(
            "PostgreSQL did not start after {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    async fn start_server(
        run_as: &RunAs,
        bin: &Path,
        base: &Path,
        data: &Path,
        port: u16,
        log: &Path,
    ) -> Attempt {
        let out = std::fs::File::create(log).expect("create the server log file");
        let err = out.try_clone().expect("clone the server log file handle");
        let mut child = run_as
            .command(&bin.join("postgres"))
            .arg("-D")
            .arg(data)
            .arg("-k")
            .arg(base)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-p",
                &port.to_string(),
                "-c",
                "fsync=off",
            ])
            .current_dir(base)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn postgres");
        let url = admin_url(port);
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_error = String::from("no connection attempted yet");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Attempt::Retry(format!(
                    "postgres exited early ({status}); log:\n{}",
                    read_log(log)
                ));
            }
            if Instant::now() >= deadline {
                stop(&mut child);
                panic!(
                    "PostgreSQL on port {port} was not ready within {READY_TIMEOUT:?} (last error: {last_error}); log:\n{}",
                    read_log(log)
                );
            }
            let tcp = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(("127.0.0.1", port)),
            )
            .await;
            match tcp {
                Ok(Ok(_)) => match sqlx::postgres::PgConnection::connect(&url).await {
                    Ok(conn) => {
                        let _ = conn.close().await;
                        return Attempt::Ready(child);
                    }
                    // "the database system is starting up" and the like.
                    Err(e) => last_error = format!("sqlx connect: {e}"),
                },
                Ok(Err(e)) => last_error = format!("TCP connect: {e}"),
                Err(_) => last_error = "TCP connect timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the cluster's administrative `postgres` database.
    pub fn admin_url(&self) -> String {
        admin_url(self.port)
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Create a new, empty, uniquely named database and return its URL.
    pub async fn fresh_database_url(&self) -> String {
        let n = NEXT_DATABASE.fetch_add(1, Ordering::Relaxed);
        let name = format!("palisade_test_{}_{n}", std::process::id());
        let mut conn = sqlx::postgres::PgConnection::connect(&self.admin_url())
            .await
            .unwrap_or_else(|e| {
                panic!("connect to {}: {e}; log:\n{}", self.admin_url(), self.log())
            });
        // The name is ours (digits, letters, underscores): safe to interpolate.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

fn admin_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        stop(&mut self.child);
        // `dir` (a TempDir) is removed when the fields drop, right after this.
    }
}
