//! `palisade bench updates`: one release image served to many devices at once (issue 4
//! benchmark). A hub in this process prepares a data directory the way a release
//! manager would (offline keys, `release init-repo`, `release publish` of an image of
//! `--image-mib` MiB with pseudo-random bytes), then `palisade serve` runs on it as a
//! separate process, so its peak resident memory (VmHWM, reset after start) is the
//! hub's alone. `--devices` simulated devices, `--concurrency` at a time, each on its
//! own HTTPS connection (hub CA pinned), GET the image from the public
//! `/tuf/{model}/targets/{name}` route the agent uses, counting the bytes. The same
//! clients then fetch the same file from a minimal tokio-rustls server in this process
//! that writes it straight from disk (the loopback TLS limit, measured in the same
//! run), and the ratio is printed. Last, the agent's TUF target verification
//! (`TufClient::fetch_resumable` on a complete download: length and SHA-256 against the
//! trusted targets metadata the real client refreshed from the hub) against
//! `sha256sum` on the same file, best of three each, and that ratio.

use crate::release_cli::{self, HubArgs, KeysAction, ReleaseAction};
use anyhow::{Context, Result, bail};
use palisade_hub::config::Config;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{Email, ProductId, Username};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MODEL: &str = "bench-image";
const VERSION: &str = "2.0.0";
/// One device's download may take this long at most (the bench always ends).
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(1800);

pub async fn run(devices: u32, image_mib: u32, concurrency: u32, work: &Path) -> Result<()> {
    if work.exists() && std::fs::read_dir(work)?.next().is_some() {
        bail!("{} is not empty", work.display());
    }
    std::fs::create_dir_all(work)?;
    let hub_dir = work.join("hub");
    let image = work.join("image.img");
    write_image(&image, u64::from(image_mib) * 1024 * 1024)?;
    prepare(&hub_dir, work, &image).await?;

    let port = free_port()?;
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--data-dir"])
        .arg(&hub_dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--mqtt-listen", "127.0.0.1:0"])
        .env_remove("PALISADE_CONFIG")
        .env("PALISADE_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting palisade serve")?;
    let hub = Served(child);
    let result = measure(&hub, port, &hub_dir, &image, devices, concurrency, work).await;
    drop(hub);
    result
}

/// The `palisade serve` child, stopped when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn measure(
    hub: &Served,
    port: u16,
    hub_dir: &Path,
    image: &Path,
    devices: u32,
    concurrency: u32,
    work: &Path,
) -> Result<()> {
    let base = format!("https://127.0.0.1:{port}");
    let ca_pem = std::fs::read(hub_dir.join("pki/ca.pem"))?;
    let tls = palisade_agent::tls::client_config(&ca_pem, None)?;
    wait_healthy(&base, &tls).await?;
    let pid = hub.0.id();

    // The real agent TUF client: refresh from the hub, then where the target is served.
    let metadata_dir = work.join("agent-metadata");
    std::fs::create_dir_all(&metadata_dir)?;
    let root = fetch(&tls, &format!("{base}/tuf/{MODEL}/metadata/1.root.json")).await?;
    std::fs::write(work.join("root.json"), root)?;
    palisade_agent::tuf::init(&metadata_dir, &work.join("root.json"))?;
    let client = palisade_agent::tuf::TufClient::with_tls(
        &metadata_dir,
        &format!("{base}/tuf/{MODEL}/metadata/"),
        Some(&format!("{base}/tuf/{MODEL}/targets/")),
        Some(tls.clone()),
    )?;
    let repo = client.refresh().await?;
    let name = format!("{MODEL}-{VERSION}.img");
    let target = client.trusted_target(&repo, &name)?;
    let length = target.length;

    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let before = proc_kib(pid, "VmRSS:");
    let hub_run = download_all(&tls, target.url.as_str(), length, devices, concurrency).await?;
    let peak = proc_kib(pid, "VmHWM:");

    let plain = PlainServer::start(hub_dir, image).await?;
    let plain_url = format!("https://127.0.0.1:{}/image", plain.port);
    let plain_run = download_all(&tls, &plain_url, length, devices, concurrency).await?;
    plain.stop();

    let mib = length as f64 / 1_048_576.0;
    let total = mib * f64::from(devices);
    println!(
        "image {mib:.1} MiB, {devices} devices, {} at a time, HTTPS over loopback",
        concurrency.min(devices)
    );
    println!(
        "hub:       {total:.0} MiB in {:.1} s = {:.0} MiB/s; hub peak RSS {:.1} MiB (RSS before the downloads {:.1} MiB)",
        hub_run.as_secs_f64(),
        total / hub_run.as_secs_f64(),
        peak as f64 / 1024.0,
        before as f64 / 1024.0
    );
    println!(
        "plain TLS: {total:.0} MiB in {:.1} s = {:.0} MiB/s (tokio-rustls copy of the same file)",
        plain_run.as_secs_f64(),
        total / plain_run.as_secs_f64()
    );
    println!(
        "throughput ratio hub/plain TLS: {:.2}",
        plain_run.as_secs_f64() / hub_run.as_secs_f64()
    );

    // Verification: the agent's path on a complete download, and sha256sum.
    let part = work.join("verify.part");
    std::fs::copy(image, &part)?;
    let mut agent_best = Duration::MAX;
    let mut sum_best = Duration::MAX;
    let hex: String = target.sha256.iter().map(|b| format!("{b:02x}")).collect();
    for _ in 0..3 {
        let started = Instant::now();
        let fetched = client.fetch_resumable(&target, &part).await?;
        agent_best = agent_best.min(started.elapsed());
        if fetched {
            bail!("the complete download was fetched again");
        }
        let started = Instant::now();
        let out = Command::new("sha256sum").arg(&part).output()?;
        sum_best = sum_best.min(started.elapsed());
        if !out.status.success() || !String::from_utf8_lossy(&out.stdout).starts_with(&hex) {
            bail!("sha256sum disagrees with the signed targets metadata");
        }
    }
    println!(
        "verify:    agent TUF target check {:.3} s ({:.0} MiB/s), sha256sum {:.3} s ({:.0} MiB/s), best of 3",
        agent_best.as_secs_f64(),
        mib / agent_best.as_secs_f64(),
        sum_best.as_secs_f64(),
        mib / sum_best.as_secs_f64()
    );
    println!(
        "verification ratio agent/sha256sum time: {:.2}",
        agent_best.as_secs_f64() / sum_best.as_secs_f64()
    );
    Ok(())
}

/// Pseudo-random bytes (xorshift), so nothing on the way can compress them.
fn write_image(path: &Path, length: u64) -> Result<()> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1024 * 1024];
    let mut left = length;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = usize::try_from(left.min(buf.len() as u64))?;
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(())
}

/// A data directory with a product model whose repository has `image` published as
/// VERSION, made through the same commands a release manager runs.
async fn prepare(hub_dir: &Path, work: &Path, image: &Path) -> Result<()> {
    let hub = palisade_hub::start(Config::for_data_dir(hub_dir))
        .await
        .context("starting the preparing hub")?;
    let result = async {
        let db = &hub.db;
        db.create_product(&ProductModel {
            id: ProductId::parse(MODEL).map_err(|e| anyhow::anyhow!("{e}"))?,
            name: "Bench image".into(),
            hardware_revision: "r1".into(),
            fields: vec![FieldSpec {
                name: "on".into(),
                kind: FieldKind::Boolean,
                unit: String::new(),
                purpose: "benchmark".into(),
                personal: false,
                retention_days: None,
                optional: false,
            }],
            created_at: 0,
        })
        .await?;
        let admin = db
            .insert_user(NewUser {
                username: &Username::parse("bench-releases").map_err(|e| anyhow::anyhow!("{e}"))?,
                email: &Email::parse("bench@example.org").map_err(|e| anyhow::anyhow!("{e}"))?,
                role: Role::Admin,
                status: Status::Active,
                password_hash: None,
            })
            .await?;
        let (_, token) = db.create_api_token(&admin.id, "bench", 3600).await?;
        let keys = work.join("keys");
        release_cli::keys(KeysAction::Init {
            out: keys.clone(),
            root_threshold: 2,
            root_keys: 3,
        })?;
        let args = HubArgs {
            hub: hub.url(),
            token,
            ca: Some(hub.ca_cert_path.clone()),
        };
        release_cli::release(ReleaseAction::InitRepo {
            product: MODEL.into(),
            keys: keys.clone(),
            hub: args.clone(),
        })
        .await?;
        release_cli::release(ReleaseAction::Publish {
            product: MODEL.into(),
            version: VERSION.into(),
            file: image.to_path_buf(),
            security: false,
            notes: None,
            sbom: None,
            // Devices fetch the image straight from the TUF route: no offer needed.
            rollout: None,
            soak_minutes: 60,
            keys,
            hub: args,
        })
        .await?;
        anyhow::Ok(())
    }
    .await;
    hub.shutdown().await;
    result
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn http_client(tls: &rustls::ClientConfig) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .connect_timeout(Duration::from_secs(30))
        .timeout(DOWNLOAD_LIMIT)
        .build()?)
}

async fn fetch(tls: &rustls::ClientConfig, url: &str) -> Result<Vec<u8>> {
    let response = http_client(tls)?.get(url).send().await?;
    if !response.status().is_success() {
        bail!("{url}: {}", response.status());
    }
    Ok(response.bytes().await?.to_vec())
}

async fn wait_healthy(base: &str, tls: &rustls::ClientConfig) -> Result<()> {
    for _ in 0..300 {
        if fetch(tls, &format!("{base}/healthz")).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("palisade serve did not answer on {base} within a minute")
}

/// `devices` downloads of `url`, `concurrency` at once, each on its own connection;
/// every one must deliver exactly `length` bytes. Returns the wall time.
async fn download_all(
    tls: &rustls::ClientConfig,
    url: &str,
    length: u64,
    devices: u32,
    concurrency: u32,
) -> Result<Duration> {
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1) as usize));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..devices {
        let client = http_client(tls)?;
        let (gate, url) = (gate.clone(), url.to_owned());
        tasks.spawn(async move {
            let _turn = gate.acquire_owned().await;
            let mut response = client.get(&url).send().await?;
            if !response.status().is_success() {
                bail!("{url}: {}", response.status());
            }
            let mut got: u64 = 0;
            while let Some(chunk) = response.chunk().await? {
                got += chunk.len() as u64;
            }
            if got != length {
                bail!("{url}: {got} bytes, expected {length}");
            }
            anyhow::Ok(())
        });
    }
    let mut failed = 0usize;
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done.context("download task")? {
            failed += 1;
            if failed <= 3 {
                eprintln!("download failed: {e:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {devices} downloads failed");
    }
    Ok(started.elapsed())
}

/// A field of /proc/PID/status in KiB (0 if unreadable).
fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

/// The reference: TLS with the hub's own certificate, then the file as one HTTP/1.1
/// response written from disk in 64 KiB reads, for any request.
struct PlainServer {
    port: u16,
    stop: tokio::sync::watch::Sender<bool>,
}

impl PlainServer {
    async fn start(hub_dir: &Path, image: &Path) -> Result<Self> {
        let pki = hub_dir.join("pki");
        let mut chain =
            palisade_agent::tls::parse_certs(&std::fs::read(pki.join("server.pem"))?, "server")?;
        chain.extend(palisade_agent::tls::parse_certs(
            &std::fs::read(pki.join("ca.pem"))?,
            "CA",
        )?);
        let key = palisade_agent::tls::parse_key(&std::fs::read(pki.join("server.key"))?, "key")?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let image: PathBuf = image.to_path_buf();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(_) => continue,
                    },
                    _ = stopped.changed() => return,
                };
                let (acceptor, image) = (acceptor.clone(), image.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let _ = serve_file(stream, &image).await;
                    }
                });
            }
        });
        Ok(Self { port, stop })
    }

    fn stop(self) {
        let _ = self.stop.send(true);
    }
}

async fn serve_file(
    mut stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    image: &Path,
) -> Result<()> {
    // The request head (bounded), whatever it asks for.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || stream.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let mut file = tokio::fs::File::open(image).await?;
    let length = file.metadata().await?.len();
    stream
        .write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n]).await?;
    }
    stream.shutdown().await?;
    Ok(())
}
