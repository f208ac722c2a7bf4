//! `palisade bench`: the load clients behind `scripts/bench-fleet.sh`, which runs them
//! against the release hub and Mosquitto side by side. Not part of serving: nothing
//! here is used by `palisade serve`.
//!
//! - `enroll`: enrol many devices through the hub's real enrolment API with the agent
//!   library, from a claim-code CSV written by `palisade device codes`.
//! - `hold`: open N idle MQTT connections over mutual TLS from one process (tokio +
//!   rustls, one small task each; source addresses spread over 127.0.0.2… so that more
//!   connections than one address has ephemeral ports can reach one server port), and
//!   hold them while the script reads the server's memory.
//! - `commands`: end-to-end command latency: API send → the real agent executes →
//!   result recorded at the hub, next to Mosquitto's round trip for the same payload
//!   (publish to a device topic, the device's reply back through the broker).

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use palisade_agent::enroll::{ClaimCode, EnrollOptions, enroll};
use palisade_agent::limits::Limits;
use palisade_agent::mqtt::{Incoming, Session, Target};
use palisade_agent::state::StateDir;
use palisade_agent::telemetry::Source;
use palisade_agent::tls;
use palisade_hub::config::Config;
use palisade_hub::db::commands::CommandStatus;
use palisade_hub::db::devices::{FieldKind, FieldSpec, ProductModel};
use palisade_hub::db::users::{NewUser, Role, Status};
use palisade_hub::ids::{DeviceId, Email, ProductId, Username};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};

#[derive(Subcommand)]
pub enum BenchAction {
    /// Enrol devices through the hub's enrolment API (agent library), one state
    /// directory each (OUT/d1, OUT/d2, …), from `palisade device codes` CSV
    Enroll {
        /// Hub URL, e.g. https://127.0.0.1:8443
        #[arg(long)]
        hub: String,
        /// The hub CA certificate (PEM)
        #[arg(long)]
        ca: PathBuf,
        /// CSV from `palisade device codes` (first column: claim_code)
        #[arg(long)]
        codes: PathBuf,
        /// Directory for the devices' state directories
        #[arg(long)]
        out: PathBuf,
        /// Enrolments in flight at once
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
        concurrency: u16,
    },
    /// Open idle MQTT connections over mutual TLS and hold them
    Hold {
        /// The server's MQTT-over-TLS address (IPv4 loopback)
        #[arg(long)]
        mqtt: SocketAddr,
        /// How many connections
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=200_000))]
        connections: u32,
        /// One enrolled device per connection: DIR/d1 … DIR/dN (from `bench enroll`)
        #[arg(long, conflicts_with_all = ["ca", "cert", "key"])]
        devices: Option<PathBuf>,
        /// Or one certificate for every connection (e.g. Mosquitto): server CA …
        #[arg(long, requires_all = ["cert", "key"])]
        ca: Option<PathBuf>,
        /// … client certificate …
        #[arg(long)]
        cert: Option<PathBuf>,
        /// … and its key
        #[arg(long)]
        key: Option<PathBuf>,
        /// Handshakes in flight at once
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
        concurrency: u16,
        /// Written ("held N failed M") once every connection was attempted
        #[arg(long)]
        ready_file: PathBuf,
        /// Exit after this long at the latest
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=3600))]
        hold_secs: u64,
    },
    /// Command round trip: hub (in this process, fresh data directory, real agent) and
    /// Mosquitto (address and certificates given)
    Commands {
        /// How many commands, sent one after another
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        count: u32,
        /// An empty or missing directory for the hub's data and the agent's state
        #[arg(long)]
        work: PathBuf,
        /// Mosquitto's MQTT-over-TLS address
        #[arg(long)]
        mosquitto: SocketAddr,
        /// Mosquitto's CA, a client certificate and its key (PEM)
        #[arg(long)]
        mosquitto_ca: PathBuf,
        #[arg(long)]
        mosquitto_cert: PathBuf,
        #[arg(long)]
        mosquitto_key: PathBuf,
    },
    /// Vulnerability matching: synthetic OSV records (seeded from real ones, renamed)
    /// imported into a fresh SQLite database, then SBOMs of each size matched against
    /// it; prints import and match times for every combination
    Vulnmatch {
        /// SBOM sizes (components), comma-separated
        #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 5000])]
        components: Vec<usize>,
        /// Database sizes (records), comma-separated
        #[arg(long, value_delimiter = ',', default_values_t = [50_000usize, 200_000])]
        records: Vec<usize>,
        /// Real OSV records to copy (a directory of JSON files, or an OSV zip)
        #[arg(long, default_value = "../shared/data/osv-rustsec/crates")]
        seed: PathBuf,
        /// Directory for the throwaway databases
        #[arg(long, default_value = "target/bench-vulnmatch")]
        work: PathBuf,
        /// Matches timed per combination (the median is printed)
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
        rounds: u32,
    },
    /// Export and deletion of an owner with many telemetry rows while other devices
    /// ingest (hub in this process, fresh data directory)
    Privacy {
        /// The owner's devices
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        devices: u32,
        /// Telemetry rows seeded for the owner, spread over the devices
        #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
        rows: u64,
        /// An empty or missing directory for the hub's data
        #[arg(long)]
        work: PathBuf,
    },
    /// One release image served to many devices at once: `palisade serve` (separate
    /// process, peak RSS) against a plain TLS copy of the same file, and the agent's
    /// TUF target verification against sha256sum (issue 4)
    Updates {
        /// Simulated devices, each downloading the image on its own HTTPS connection
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        devices: u32,
        /// Downloads in flight at once (default: all devices at once)
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        concurrency: u32,
        /// Image size in MiB
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
        image_mib: u32,
        /// An empty or missing directory for the hub's data, keys and the image
        #[arg(long)]
        work: PathBuf,
    },
}

pub async fn run(action: BenchAction) -> Result<std::process::ExitCode> {
    match action {
        BenchAction::Enroll {
            hub,
            ca,
            codes,
            out,
            concurrency,
        } => enroll_all(hub, &ca, &codes, &out, concurrency).await?,
        BenchAction::Hold {
            mqtt,
            connections,
            devices,
            ca,
            cert,
            key,
            concurrency,
            ready_file,
            hold_secs,
        } => {
            let identities = match (devices, ca, cert, key) {
                (Some(dir), None, None, None) => Identities::Devices(dir),
                (None, Some(ca), Some(cert), Some(key)) => {
                    Identities::Shared(Arc::new(client_config(&ca, &cert, &key)?))
                }
                _ => bail!("give either --devices or --ca, --cert and --key"),
            };
            hold(
                mqtt,
                connections,
                identities,
                concurrency,
                &ready_file,
                Duration::from_secs(hold_secs),
            )
            .await?
        }
        BenchAction::Commands {
            count,
            work,
            mosquitto,
            mosquitto_ca,
            mosquitto_cert,
            mosquitto_key,
        } => {
            let tls = client_config(&mosquitto_ca, &mosquitto_cert, &mosquitto_key)?;
            commands(count, &work, mosquitto, Arc::new(tls)).await?
        }
        BenchAction::Vulnmatch {
            components,
            records,
            seed,
            work,
            rounds,
        } => {
            if components
                .iter()
                .chain(&records)
                .any(|n| !(1..=1_000_000).contains(n))
            {
                bail!("sizes must be between 1 and 1,000,000");
            }
            crate::vulndb_cli::bench(&seed, &work, &components, &records, rounds).await?
        }
        BenchAction::Privacy {
            devices,
            rows,
            work,
        } => crate::bench_privacy::run(devices, rows, &work).await?,
        BenchAction::Updates {
            devices,
            concurrency,
            image_mib,
            work,
        } => crate::bench_updates::run(devices, image_mib, concurrency, &work).await?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<rustls::ClientConfig> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let chain = tls::parse_certs(&read(cert)?, "client certificate")?;
    let key = tls::parse_key(&read(key)?, "client key")?;
    Ok(tls::client_config(&read(ca)?, Some((chain, key)))?)
}

// ------------------------------------------------------------------------- enroll

async fn enroll_all(
    hub: String,
    ca: &Path,
    codes: &Path,
    out: &Path,
    concurrency: u16,
) -> Result<()> {
    let ca_pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let csv =
        std::fs::read_to_string(codes).with_context(|| format!("reading {}", codes.display()))?;
    let claims: Vec<String> = csv
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("claim_code"))
        .filter_map(|l| l.split(',').next().map(str::to_owned))
        .collect();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(usize::from(concurrency)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, claim) in claims.into_iter().enumerate() {
        let claim_code = ClaimCode::new(claim)?;
        let state_dir = out.join(format!("d{}", i + 1));
        let (gate, hub_url, ca_pem) = (gate.clone(), hub.clone(), ca_pem.clone());
        tasks.spawn(async move {
            let _turn = gate.acquire_owned().await;
            enroll(EnrollOptions {
                hub_url,
                ca_pem,
                claim_code,
                state_dir,
                limits: Limits::default(),
            })
            .await
            .map(|_| ())
        });
    }
    let (mut enrolled, mut failed) = (0usize, 0usize);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => enrolled += 1,
            Ok(Err(e)) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("enrolment failed: {e}");
                }
            }
            Err(e) => bail!("enrolment task: {e}"),
        }
    }
    println!(
        "enrolled {enrolled} failed {failed} seconds {:.1}",
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        bail!("{failed} enrolments failed");
    }
    Ok(())
}

// ------------------------------------------------------------------------- hold

enum Identities {
    /// DIR/d{i}: one enrolled device per connection.
    Devices(PathBuf),
    /// One client certificate for all.
    Shared(Arc<rustls::ClientConfig>),
}

/// Keep-alive announced by idle connections (the hub accepts up to 600 s); a PINGREQ
/// goes out every half of it.
const IDLE_KEEP_ALIVE: u16 = 300;
/// Connections per loopback source address (its ephemeral ports run out near 28,000).
const PER_SOURCE: u32 = 20_000;

async fn hold(
    server: SocketAddr,
    connections: u32,
    identities: Identities,
    concurrency: u16,
    ready_file: &Path,
    hold_for: Duration,
) -> Result<()> {
    // Opened first: once the connections have used every descriptor the process may
    // have, creating it would fail.
    let mut ready = std::fs::File::create(ready_file)
        .with_context(|| format!("creating {}", ready_file.display()))?;
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(usize::from(concurrency)));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let mut attempts = tokio::task::JoinSet::new();
    for i in 1..=connections {
        let (tls, client_id) = match &identities {
            Identities::Devices(dir) => {
                let identity = StateDir::new(dir.join(format!("d{i}")))
                    .load_identity()
                    .with_context(|| format!("device d{i}"))?;
                let config = tls::client_config(
                    &identity.ca_pem,
                    Some((identity.cert_chain, identity.key)),
                )?;
                (Arc::new(config), identity.config.device_id)
            }
            Identities::Shared(config) => (config.clone(), format!("bench-{i}")),
        };
        // 127.0.0.2, 127.0.0.3, …: each has its own ephemeral port range towards the
        // server's one address and port.
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i / PER_SOURCE)?));
        let (gate, dropped, stopped) = (gate.clone(), dropped.clone(), stopped.clone());
        attempts.spawn(async move {
            let turn = gate.acquire_owned().await;
            let opened = tokio::time::timeout(
                Duration::from_secs(30),
                open_idle(server, source, tls, &client_id),
            )
            .await;
            drop(turn);
            match opened {
                Ok(Ok(stream)) => {
                    tokio::spawn(keep_idle(stream, dropped, stopped));
                    Ok(())
                }
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("timed out".to_owned()),
            }
        });
    }
    let (mut held, mut failed) = (0usize, 0usize);
    while let Some(done) = attempts.join_next().await {
        match done {
            Ok(Ok(())) => held += 1,
            Ok(Err(e)) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("connection failed: {e}");
                }
            }
            Err(e) => bail!("connection task: {e}"),
        }
    }
    let line = format!(
        "held {held} failed {failed} seconds {:.1}\n",
        started.elapsed().as_secs_f64()
    );
    print!("{line}");
    std::io::Write::write_all(&mut ready, line.as_bytes())
        .with_context(|| format!("writing {}", ready_file.display()))?;
    drop(ready);
    tokio::select! {
        () = tokio::time::sleep(hold_for) => {}
        _ = tokio::signal::ctrl_c() => {}
        () = terminated() => {}
    }
    let _ = stop.send(true);
    println!("dropped {}", dropped.load(Ordering::Relaxed));
    Ok(())
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

type Idle = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// MQTT 3.1.1 remaining length (variable byte integer).
fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

fn utf8_field(s: &str, out: &mut Vec<u8>) -> Result<()> {
    out.extend_from_slice(&u16::try_from(s.len())?.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// TCP from `source`, TLS with the client certificate, CONNECT (MQTT 3.1.1, clean
/// session) and SUBSCRIBE to `devices/{client_id}/commands` at QoS 1, as the idle
/// `mosquitto_sub` did in the earlier measurement. Packets are written by hand: the
/// client needs only these three and PINGREQ, and stays small.
async fn open_idle(
    server: SocketAddr,
    source: IpAddr,
    tls_config: Arc<rustls::ClientConfig>,
    client_id: &str,
) -> Result<Idle> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::new(source, 0))
        .with_context(|| format!("binding {source}"))?;
    let tcp = socket.connect(server).await.context("TCP connect")?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::IpAddress(server.ip().into());
    let mut stream = tokio_rustls::TlsConnector::from(tls_config)
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;

    let mut body = Vec::with_capacity(64);
    utf8_field("MQTT", &mut body)?;
    body.extend_from_slice(&[4, 0x02]); // protocol level 4, clean session
    body.extend_from_slice(&IDLE_KEEP_ALIVE.to_be_bytes());
    utf8_field(client_id, &mut body)?;
    let mut packet = vec![0x10];
    remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    stream.write_all(&packet).await?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.context("CONNACK")?;
    if connack[0] != 0x20 || connack[3] != 0 {
        bail!("refused: CONNACK {connack:02x?}");
    }

    let mut body = vec![0, 1]; // packet id 1
    utf8_field(&format!("devices/{client_id}/commands"), &mut body)?;
    body.push(1); // QoS 1
    let mut packet = vec![0x82];
    remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    stream.write_all(&packet).await?;
    let mut suback = [0u8; 5];
    stream.read_exact(&mut suback).await.context("SUBACK")?;
    if suback[0] != 0x90 || suback[4] > 1 {
        bail!("subscription refused: SUBACK {suback:02x?}");
    }
    Ok(stream)
}

/// Hold one connection: PINGREQ every half keep-alive; count it if the server drops it.
async fn keep_idle(mut stream: Idle, dropped: Arc<AtomicUsize>, mut stop: watch::Receiver<bool>) {
    let mut buf = [0u8; 16];
    let period = Duration::from_secs(u64::from(IDLE_KEEP_ALIVE / 2));
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {
                if stream.write_all(&[0xC0, 0]).await.is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            read = stream.read(&mut buf) => {
                if matches!(read, Ok(0) | Err(_)) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

// ------------------------------------------------------------------------- commands

/// `p` (0–100) percentile of sorted samples, nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "commands {what} n {} p50_ms {:.2} p99_ms {:.2} max_ms {:.2}",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(samples.last().copied().unwrap_or_default()),
    );
}

async fn commands(
    count: u32,
    work: &Path,
    mosquitto: SocketAddr,
    mosquitto_tls: Arc<rustls::ClientConfig>,
) -> Result<()> {
    if work.exists() && std::fs::read_dir(work)?.next().is_some() {
        bail!("{} is not empty", work.display());
    }
    let mut config = Config::for_data_dir(&work.join("hub"));
    // Like the script's hub: one device may publish every reply of the run.
    config.limits.mqtt_publishes_per_minute = 1_000_000;
    let hub = palisade_hub::start(config)
        .await
        .context("starting the hub")?;
    let result = hub_commands(&hub, count, work).await;
    hub.shutdown().await;
    let (hub_samples, payload) = result?;
    report("palisade", hub_samples);
    let mosquitto_samples = mosquitto_round_trips(count, mosquitto, mosquitto_tls, &payload)
        .await
        .context("Mosquitto round trips")?;
    report("mosquitto", mosquitto_samples);
    Ok(())
}

/// API send → agent executes → result recorded at the hub, `count` times in sequence.
/// Returns the latencies and the last command's payload (for the Mosquitto run).
async fn hub_commands(
    hub: &palisade_hub::RunningHub,
    count: u32,
    work: &Path,
) -> Result<(Vec<Duration>, Vec<u8>)> {
    let product = ProductId::parse("bench-plug").map_err(|e| anyhow::anyhow!("{e}"))?;
    hub.db
        .create_product(&ProductModel {
            id: product.clone(),
            name: "Bench plug".into(),
            hardware_revision: "r1".into(),
            fields: vec![FieldSpec {
                name: "watts".into(),
                kind: FieldKind::Number,
                unit: "W".into(),
                purpose: "benchmark".into(),
                personal: false,
                retention_days: None,
                optional: false,
            }],
            created_at: 0,
        })
        .await?;
    let code = hub.db.create_claim_codes(&product, 1, 600).await?;
    let claim = code.first().context("no claim code")?.claim.clone();
    let ca_pem = std::fs::read(&hub.ca_cert_path)?;
    let state_dir = work.join("agent");
    let agent_config = enroll(EnrollOptions {
        hub_url: hub.url(),
        ca_pem: ca_pem.clone(),
        claim_code: ClaimCode::new(claim)?,
        state_dir: state_dir.clone(),
        limits: Limits::default(),
    })
    .await?;
    let device = DeviceId::parse(&agent_config.device_id).context("device id")?;
    let operator = hub
        .db
        .insert_user(NewUser {
            username: &Username::parse("bench-operator").map_err(|e| anyhow::anyhow!("{e}"))?,
            email: &Email::parse("bench@example.org").map_err(|e| anyhow::anyhow!("{e}"))?,
            role: Role::Operator,
            status: Status::Active,
            password_hash: None,
        })
        .await?;
    let (_, token) = hub.db.create_api_token(&operator.id, "bench", 3600).await?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls::client_config(&ca_pem, None)?)
        .build()?;

    // The agent allows 10 commands a second by default; the benchmark sends them
    // back to back, so it allows more.
    let limits = Limits {
        commands_per_second: 1_000_000,
        ..Limits::default()
    };
    let (stop, stopped) = watch::channel(false);
    let agent = tokio::spawn(palisade_agent::run::run(
        palisade_agent::run::RunOptions {
            state_dir,
            source: Source::None,
            limits,
        },
        stopped,
    ));
    let measured = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !hub.state.fleet.is_connected(&device) {
            if Instant::now() > deadline {
                bail!("the agent did not connect within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Subscribed: the first command may otherwise wait for the subscription.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let url = format!("{}/api/v1/devices/{}/commands", hub.url(), device);
        let mut samples = Vec::with_capacity(count as usize);
        let mut payload = Vec::new();
        for _ in 0..count {
            let t0 = Instant::now();
            let response = client
                .post(&url)
                .bearer_auth(&token)
                .json(&serde_json::json!({"name": "ping", "args": {}, "ttl_secs": 300}))
                .send()
                .await?;
            if response.status() != reqwest::StatusCode::CREATED {
                bail!("POST command: {}", response.status());
            }
            let created: serde_json::Value = response.json().await?;
            let seq = created["seq"].as_u64().context("seq")?;
            // Poll the hub's record (1 ms timer resolution).
            let give_up = t0 + Duration::from_secs(10);
            loop {
                let command = hub.db.command(&device, seq).await?;
                match command.as_ref().map(|c| c.status) {
                    Some(CommandStatus::Ok) => {
                        samples.push(t0.elapsed());
                        payload = command.map(|c| c.payload()).unwrap_or_default();
                        break;
                    }
                    Some(CommandStatus::Rejected) => bail!("the agent rejected command {seq}"),
                    _ if Instant::now() > give_up => bail!("command {seq}: no result in 10 s"),
                    _ => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        }
        Ok((samples, payload))
    }
    .await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    measured
}

/// The same exchange through Mosquitto: an "operator" client publishes the command
/// payload on `devices/bench-device/commands` (QoS 1); a "device" client subscribed
/// there replies on `devices/bench-device/events`; the operator waits for the reply.
async fn mosquitto_round_trips(
    count: u32,
    server: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    payload: &[u8],
) -> Result<Vec<Duration>> {
    let limits = Limits::default();
    let will = serde_json::json!({"status": "offline"});
    let target = |id: &str| Target {
        host: server.ip().to_string(),
        port: server.port(),
        device_id: id.to_owned(),
        tls: tls.clone(),
    };
    let device_target = target("bench-device");
    let operator_target = target("bench-operator");
    let commands_topic = device_target.topic("commands");
    let events_topic = device_target.topic("events");

    let mut device = Session::establish(&device_target, &limits, &will).await?;
    let mut pending = device.subscribe(&commands_topic).await?;
    wait_subscribed(&mut device, &mut pending).await?;
    let reply = br#"{"command_seq":1,"result":"ok"}"#.to_vec();
    let (stop, mut stopped) = watch::channel(false);
    let device_events = events_topic.clone();
    let responder = tokio::spawn(async move {
        loop {
            let wake = tokio::select! {
                wake = device.wait() => wake,
                _ = stopped.changed() => break,
            };
            for item in device.handle(wake).await? {
                if let Incoming::Message { packet_id, .. } = item {
                    if let Some(id) = packet_id {
                        device.puback(id).await?;
                    }
                    if let Err(reason) = device.publish(&device_events, &reply, &[]).await? {
                        bail!("reply not published: {reason}");
                    }
                }
            }
        }
        device.disconnect().await;
        Ok(())
    });

    let mut operator = Session::establish(&operator_target, &limits, &will).await?;
    let mut pending = operator.subscribe(&events_topic).await?;
    wait_subscribed(&mut operator, &mut pending).await?;
    let mut samples = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let t0 = Instant::now();
        if let Err(reason) = operator.publish(&commands_topic, payload, &[]).await? {
            bail!("command not published: {reason}");
        }
        let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
        'reply: loop {
            let wake = tokio::time::timeout_at(give_up, operator.wait())
                .await
                .context("no reply within 10 s")?;
            for item in operator.handle(wake).await? {
                if let Incoming::Message { packet_id, .. } = item {
                    samples.push(t0.elapsed());
                    if let Some(id) = packet_id {
                        operator.puback(id).await?;
                    }
                    break 'reply;
                }
            }
        }
    }
    operator.disconnect().await;
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), responder)
        .await
        .context("responder did not stop")???;
    Ok(samples)
}

/// Drive a session until its SUBACK arrives (bounded: 10 s).
async fn wait_subscribed(session: &mut Session, pending: &mut Vec<Incoming>) -> Result<()> {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        for item in pending.drain(..) {
            if let Incoming::Subscribed { granted, reason } = item {
                if !granted {
                    bail!("subscription refused: {reason}");
                }
                return Ok(());
            }
        }
        let wake = tokio::time::timeout_at(give_up, session.wait())
            .await
            .context("no SUBACK within 10 s")?;
        pending.extend(session.handle(wake).await?);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn remaining_length_is_a_variable_byte_integer() {
        let encode = |n| {
            let mut v = Vec::new();
            remaining_length(n, &mut v);
            v
        };
        assert_eq!(encode(0), [0]);
        assert_eq!(encode(127), [0x7f]);
        assert_eq!(encode(128), [0x80, 0x01]);
        assert_eq!(encode(16_383), [0xff, 0x7f]);
    }
}
