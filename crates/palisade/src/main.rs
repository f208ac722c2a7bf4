//! `palisade`: run the hub and administer it from the machine it runs on.
#![forbid(unsafe_code)]

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use palisade_hub::accounts::{self, Actor};
use palisade_hub::audit::Outcome;
use palisade_hub::config::{Config, Overrides, redact_url};
use palisade_hub::db::device_admin::{self, MAX_FIELDS};
use palisade_hub::db::devices::{DeviceStatus, ProductModel};
use palisade_hub::ids::{DeviceId, ProductId, Username};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod bench;
mod bench_privacy;
mod bench_updates;
mod demo;
mod privacy_cli;
mod release_cli;
mod vulndb_cli;

#[derive(Parser)]
#[command(name = "palisade", version, about = "Palisade: a secure-by-default IoT hub", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the configuration comes from. Each flag overrides `PALISADE_*` environment
/// variables, which override the configuration file.
#[derive(Args, Clone, Default)]
struct ConfigArgs {
    /// TOML configuration file [env: PALISADE_CONFIG]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (database, keys, mail) [default: ./palisade-data] [env: PALISADE_DATA_DIR]
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// HTTPS address [default: 127.0.0.1:8443] [env: PALISADE_LISTEN]
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Device (MQTT over mutual TLS) address [default: 127.0.0.1:8883] [env: PALISADE_MQTT_LISTEN]
    #[arg(long, global = true)]
    mqtt_listen: Option<String>,
    /// postgres://… or sqlite:… instead of the embedded SQLite file [env: PALISADE_DATABASE_URL]
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Base URL for links in e-mails [env: PALISADE_PUBLIC_URL]
    #[arg(long, global = true)]
    public_url: Option<String>,
    /// Your own certificate chain (PEM) instead of the hub CA's [env: PALISADE_TLS_CERT]
    #[arg(long, global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key for --tls-cert (PEM, mode 0600) [env: PALISADE_TLS_KEY]
    #[arg(long, global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (HTTPS only)
    Serve {
        /// Also run this many simulated devices (real agents, enrolled through the real
        /// API, sending telemetry), so a newcomer sees a living fleet at /devices (0–50)
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=50))]
        demo: u16,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// First-run setup
    Setup {
        /// Issue a fresh one-time setup code (replaces any earlier one)
        #[arg(long)]
        new_code: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Inspect the configuration
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Manage accounts
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Product models: what a kind of device is and which telemetry it may send
    Product {
        #[command(subcommand)]
        action: ProductAction,
    },
    /// Devices: claim codes for the factory, the fleet, revocation
    Device {
        #[command(subcommand)]
        action: DeviceAction,
    },
    /// The privacy policy: publish a new version, check a draft
    Privacy {
        #[command(subcommand)]
        action: privacy_cli::PrivacyAction,
    },
    /// The key that encrypts secrets in the database: rotate it
    Secrets {
        #[command(subcommand)]
        action: privacy_cli::SecretsAction,
    },
    /// Offline TUF keys for signing releases (root and targets; never on the hub)
    Keys {
        #[command(subcommand)]
        action: release_cli::KeysAction,
    },
    /// Releases: create a model's TUF repository on the hub, sign and publish a release
    Release {
        #[command(subcommand)]
        action: release_cli::ReleaseAction,
    },
    /// The retention job (DATA-2): delete what is past its period
    Retention {
        #[command(subcommand)]
        action: RetentionAction,
    },
    /// The offline vulnerability database (OSV records) that SBOMs are matched against
    Vulndb {
        #[command(subcommand)]
        action: vulndb_cli::VulndbAction,
    },
    /// Print Palisade's own components (hub and agent) as a CycloneDX 1.5 JSON SBOM,
    /// generated at build time from Cargo.lock
    Sbom,
    /// Load clients for `scripts/bench-fleet.sh` (benchmarks only)
    Bench {
        #[command(subcommand)]
        action: bench::BenchAction,
    },
}

#[derive(Subcommand)]
enum RetentionAction {
    /// Run the retention job once now (the hub also runs it every
    /// `[retention] interval_minutes`) and print how many rows of each kind it deleted
    Run {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum ProductAction {
    /// Define a product model and the telemetry fields its devices may send (DATA-1:
    /// each field says what it is and why it is collected; undeclared fields are refused)
    Add {
        /// Model id, e.g. cam-v2 (2-40 characters: a-z, 0-9, '-')
        id: String,
        /// Name shown to owners, e.g. "Garden camera"
        #[arg(long)]
        name: String,
        /// Hardware revision, e.g. B2
        #[arg(long)]
        hardware: String,
        /// A telemetry field as name:type:unit:purpose (type number|integer|boolean|string;
        /// the unit may be empty), e.g. temperature:number:celsius:room temperature shown to
        /// the owner. Repeat for each field.
        #[arg(long = "field", value_name = "SPEC")]
        fields: Vec<String>,
        /// The declaration as a JSON file: [{"name", "type", "unit", "purpose",
        /// "personal", "retention_days", "optional"}, ...], or {"fields": [...],
        /// "sensing": [{"capability", "purpose"}, ...]}
        #[arg(long = "fields", value_name = "FILE.json", conflicts_with = "fields")]
        fields_file: Option<PathBuf>,
        /// A sensing capability as capability:purpose (camera, microphone, location,
        /// motion, presence, biometric), e.g. "motion:turns the light on when someone
        /// enters". Repeat for each (PRIV-4).
        #[arg(long = "sensing", value_name = "SPEC")]
        sensing: Vec<String>,
        /// The date (YYYY-MM-DD) until which the model receives security updates,
        /// published at /support (SUP-1)
        #[arg(long, value_name = "DATE")]
        security_updates_until: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Publish or extend a model's end of security updates (never shortened, SUP-1)
    Support {
        /// Model id
        id: String,
        /// YYYY-MM-DD
        #[arg(long, value_name = "DATE")]
        security_updates_until: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List product models
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Most claim codes made in one batch.
const MAX_CODES: u32 = 100_000;

#[derive(Subcommand)]
enum DeviceAction {
    /// Make single-use claim codes (and pairing codes for the labels) for a product.
    /// Writes a CSV (mode 0600) of claim_code,pairing_code,expires_at; the hub keeps
    /// only their digests, so this file is the only copy: keep it secret.
    Codes {
        /// Product model id
        #[arg(long)]
        product: String,
        /// How many codes (1-100000)
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_CODES as i64))]
        count: u32,
        /// CSV file to create (refused if it exists)
        #[arg(long)]
        out: PathBuf,
        /// Days until unused codes expire (1-3650)
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
        valid_days: u32,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List devices
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Revoke a device: its certificate is refused from its next connection on (revoke
    /// through the console or API to also drop a live connection at once)
    Revoke {
        device_id: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Decommission a device that was factory-reset without reaching the hub (or came
    /// back to the maker): owner cleared, its telemetry deleted, certificate refused,
    /// and its claim code re-armed so the device can enrol again as a new device
    Decommission {
        device_id: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate the configuration and list every problem (exit 1 if any)
    Check {
        /// Also check a product declaration file (as `product add --fields` takes):
        /// fields, and sensing capabilities from the known list only
        #[arg(long, value_name = "FILE.json")]
        product: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Clone, Copy, ValueEnum, Default)]
enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Subcommand)]
enum UserAction {
    /// List accounts
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Clear failed sign-in attempts and locks
    Unlock {
        username: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Disable an account (ends its sessions and API tokens)
    Disable {
        username: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Enable a disabled account
    Enable {
        username: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Remove an account's second factor (lost authenticator and recovery codes); check
    /// the person's identity first. Ends their sessions.
    ResetMfa {
        username: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

fn load(args: &ConfigArgs) -> Result<Config> {
    let overrides = Overrides {
        config_file: args.config.clone(),
        data_dir: args.data_dir.clone(),
        listen: args.listen.clone(),
        mqtt_listen: args.mqtt_listen.clone(),
        database_url: args.database_url.clone(),
        public_url: args.public_url.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
    };
    Config::load(&overrides, &|k| std::env::var(k).ok()).map_err(|problems| {
        let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        anyhow::anyhow!(
            "the configuration has {} problem(s); the hub will not start until they are fixed:\n{}",
            problems.len(),
            list.join("\n")
        )
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve { demo, config } => serve(load(&config)?, demo).await,
        Command::Setup { new_code, config } => {
            if !new_code {
                bail!("nothing to do: use `palisade setup --new-code` to issue a fresh setup code");
            }
            let config = load(&config)?;
            let db = palisade_hub::open_database(&config).await?;
            let code = accounts::issue_setup_code(&db, &Actor::cli()).await?;
            println!("New one-time setup code (valid 30 minutes, single use): {code}");
            println!(
                "Open {}/setup and enter it to create the first administrator.",
                config.public_url
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            action: ConfigAction::Check { product, config },
        } => match load(&config) {
            Ok(c) => {
                if let Some(path) = product {
                    match check_declaration(&path) {
                        Ok(summary) => println!("product declaration OK: {summary}"),
                        Err(e) => {
                            eprintln!("{e:#}");
                            return Ok(ExitCode::FAILURE);
                        }
                    }
                }
                println!("configuration OK");
                println!("  data_dir     {}", c.data_dir.display());
                println!("  listen       https://{}", c.listen);
                println!("  public_url   {}", c.public_url);
                match &c.database {
                    palisade_hub::config::DatabaseLocation::Embedded => {
                        println!(
                            "  database     embedded SQLite at {}",
                            c.embedded_database_path().display()
                        )
                    }
                    palisade_hub::config::DatabaseLocation::Url(url) => {
                        println!("  database     {}", redact_url(url))
                    }
                }
                match (&c.tls_cert, &c.tls_key) {
                    (Some(cert), Some(_)) => {
                        println!("  tls          operator certificate {}", cert.display())
                    }
                    _ => println!(
                        "  tls          hub CA under {}",
                        c.data_dir.join("pki").display()
                    ),
                }
                match &c.security_txt_key {
                    Some(key) => println!(
                        "  security.txt OpenPGP-signed by {} ({})",
                        key.fingerprint,
                        key.expires_at.map_or_else(
                            || "does not expire".to_owned(),
                            |at| format!("expires {}", palisade_hub::vuln::openpgp::utc(at))
                        )
                    ),
                    None => println!("  security.txt unsigned (no security_txt_openpgp_key)"),
                }
                if let Some(warning) =
                    palisade_hub::vuln::security_txt::key_warning(&c, palisade_hub::db::now())
                {
                    println!("warning: {warning}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::User { action } => user(action).await,
        Command::Product { action } => product(action).await,
        Command::Device { action } => device(action).await,
        Command::Privacy { action } => privacy_cli::privacy(action).await,
        Command::Secrets { action } => privacy_cli::secrets(action).await,
        Command::Retention { action } => retention(action).await,
        Command::Vulndb { action } => vulndb_cli::vulndb(action).await,
        Command::Sbom => vulndb_cli::print_own_sbom(),
        Command::Bench { action } => bench::run(action).await,
        Command::Keys { action } => release_cli::keys(action),
        Command::Release { action } => release_cli::release(action).await,
    }
}

async fn serve(config: Config, demo_devices: u16) -> Result<ExitCode> {
    let data_dir = config.data_dir.clone();
    let hub = palisade_hub::start(config)
        .await
        .context("the hub could not start")?;
    println!("Palisade hub is running (HTTPS only).");
    println!("  Console         {}/", hub.url());
    println!(
        "  Devices (MQTT)  mqtts://{} (mutual TLS, hub CA)",
        hub.mqtt_addr
    );
    println!("  CA certificate  {}", hub.ca_cert_path.display());
    println!("  CA SHA-256      {}", hub.ca_fingerprint);
    if palisade_hub::privileges::runs_as_root() {
        println!(
            "  Warning         {}",
            palisade_hub::privileges::ROOT_WARNING
        );
    }
    if let Some(code) = &hub.setup_code {
        println!("  Setup code      {code}");
        println!(
            "                  (one-time, valid 30 minutes; `palisade setup --new-code` issues another)"
        );
        println!(
            "Open {}/setup and enter the code to create the first administrator.",
            hub.url()
        );
    }
    let (demo_stop, demo_stopped) = tokio::sync::watch::channel(false);
    let demo_tasks = if demo_devices > 0 {
        let tasks = demo::start(&hub, &data_dir.join("demo"), demo_devices, demo_stopped).await?;
        println!(
            "Demo: {demo_devices} simulated devices are sending telemetry; sign in and open {}/devices",
            hub.url()
        );
        tasks
    } else {
        Vec::new()
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            eprintln!("stopping");
        }
        _ = terminate() => {
            eprintln!("stopping (SIGTERM)");
        }
    }
    let _ = demo_stop.send(true);
    for task in demo_tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    hub.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

async fn user(action: UserAction) -> Result<ExitCode> {
    let (config, name) = match &action {
        UserAction::List { config, .. } => (config, None),
        UserAction::Unlock { config, username }
        | UserAction::Disable { config, username }
        | UserAction::Enable { config, username }
        | UserAction::ResetMfa { config, username } => (config, Some(username.clone())),
    };
    let config = load(config)?;
    let db = palisade_hub::open_database(&config).await?;
    let target = match name {
        Some(name) => {
            let username = Username::parse(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(
                db.user_by_username(&username)
                    .await?
                    .with_context(|| format!("no user named {username}"))?,
            )
        }
        None => None,
    };
    let actor = Actor::cli();
    match (action, target) {
        (UserAction::List { output, .. }, _) => {
            let users = db.users().await?;
            let now = palisade_hub::db::now();
            match output {
                Output::Json => {
                    let rows: Vec<_> = users
                        .iter()
                        .map(|u| {
                            serde_json::json!({
                                "username": u.username, "email": u.email, "role": u.role.as_str(),
                                "status": u.status.as_str(), "mfa": u.has_mfa(), "locked": u.is_locked(now),
                                "failed_logins": u.failed_logins,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                }
                Output::Text => {
                    println!(
                        "{:<24} {:<32} {:<9} {:<9} {:<4} LOCK",
                        "USER", "E-MAIL", "ROLE", "STATUS", "MFA"
                    );
                    for u in users {
                        println!(
                            "{:<24} {:<32} {:<9} {:<9} {:<4} {}",
                            u.username,
                            u.email,
                            u.role.as_str(),
                            u.status.as_str(),
                            if u.has_mfa() { "yes" } else { "no" },
                            if u.is_locked(now) { "locked" } else { "-" }
                        );
                    }
                }
            }
        }
        (UserAction::Unlock { .. }, Some(u)) => {
            accounts::unlock(&db, &actor, &u).await?;
            println!("{} unlocked", u.username);
        }
        (UserAction::Disable { .. }, Some(u)) => {
            accounts::disable(&db, &actor, &u).await?;
            println!("{} disabled; sessions and API tokens ended", u.username);
        }
        (UserAction::Enable { .. }, Some(u)) => {
            accounts::enable(&db, &actor, &u).await?;
            println!("{} enabled", u.username);
        }
        (UserAction::ResetMfa { .. }, Some(u)) => {
            accounts::reset_mfa(&db, &actor, &u, &config.public_url).await?;
            println!(
                "{}: second factor and password removed, sessions and API tokens ended; a link to choose a new password was e-mailed",
                u.username
            );
        }
        _ => bail!("no such user"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Largest `--fields` file read.
const MAX_FIELDS_FILE_BYTES: u64 = 1024 * 1024;

fn read_fields_file(path: &Path) -> Result<device_admin::ProductDeclaration> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(file, MAX_FIELDS_FILE_BYTES + 1),
        &mut text,
    )
    .with_context(|| format!("cannot read {}", path.display()))?;
    if text.len() as u64 > MAX_FIELDS_FILE_BYTES {
        bail!("{} is larger than 1 MiB", path.display());
    }
    device_admin::parse_declaration(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; expected a JSON array of {{\"name\", \"type\", \"unit\", \"purpose\"}} objects (type number|integer|boolean|string), or {{\"fields\": [...], \"sensing\": [{{\"capability\", \"purpose\"}}]}}",
            path.display()
        )
    })
}

/// Publish a support end date; a shorter one than published is refused (SUP-1).
async fn set_support_end(db: &palisade_hub::db::Db, id: &ProductId, date: &str) -> Result<()> {
    match db.set_support_end(id, date).await {
        Ok(()) => {
            accounts::audit(
                db,
                &Actor::cli(),
                "product.support",
                id.as_str(),
                Outcome::Success,
                &format!("security updates until {date}"),
            )
            .await?;
            println!("{id} receives security updates until {date} (published at /support)");
            Ok(())
        }
        Err(palisade_hub::error::Error::Conflict(why)) => {
            accounts::audit(
                db,
                &Actor::cli(),
                "product.support",
                id.as_str(),
                Outcome::Denied,
                &why,
            )
            .await?;
            bail!("{why}")
        }
        Err(e) => Err(e.into()),
    }
}

/// `config check --product FILE`: the declaration parses (known sensing capabilities
/// only, PRIV-4) and passes the same checks as `product add`.
fn check_declaration(path: &Path) -> Result<String> {
    let declaration = read_fields_file(path)?;
    let model = ProductModel {
        id: ProductId::parse("declaration-check").map_err(|e| anyhow::anyhow!("{e}"))?,
        name: "check".into(),
        hardware_revision: "check".into(),
        fields: declaration.fields,
        created_at: 0,
    };
    device_admin::validate_product(&model)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    device_admin::validate_sensing(&declaration.sensing)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(format!(
        "{} field(s) ({} optional), {} sensing capability(ies)",
        model.fields.len(),
        model.fields.iter().filter(|f| f.optional).count(),
        declaration.sensing.len()
    ))
}

async fn retention(action: RetentionAction) -> Result<ExitCode> {
    match action {
        RetentionAction::Run { output, config } => {
            let config = load(&config)?;
            let db = palisade_hub::open_database(&config).await?;
            let report = palisade_hub::retention::run_and_record(&db, &config.retention).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Text => {
                    println!("retention run: {} row(s) deleted", report.total());
                    for c in &report.counts {
                        println!("  {:<20} {}", c.key, c.deleted);
                    }
                    println!(
                        "  {:<20} {}",
                        "telemetry_fields_removed", report.telemetry_fields_removed
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn product(action: ProductAction) -> Result<ExitCode> {
    match action {
        ProductAction::Add {
            id,
            name,
            hardware,
            fields,
            fields_file,
            sensing,
            security_updates_until,
            config,
        } => {
            let id = ProductId::parse(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(date) = &security_updates_until
                && !palisade_hub::db::releases::valid_date(date)
            {
                bail!("--security-updates-until {date:?} is not a date (YYYY-MM-DD)");
            }
            let mut declared_sensing = Vec::new();
            let fields = match fields_file {
                Some(path) => {
                    let declaration = read_fields_file(&path)?;
                    declared_sensing = declaration.sensing;
                    declaration.fields
                }
                None => {
                    if fields.len() > MAX_FIELDS {
                        bail!(
                            "{} fields given; at most {MAX_FIELDS} are allowed",
                            fields.len()
                        );
                    }
                    fields
                        .iter()
                        .map(|spec| device_admin::parse_field_spec(spec))
                        .collect::<Result<Vec<_>, String>>()
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                }
            };
            let model = ProductModel {
                id,
                name: name.trim().to_owned(),
                hardware_revision: hardware.trim().to_owned(),
                fields,
                created_at: 0,
            };
            for spec in &sensing {
                declared_sensing.push(
                    device_admin::parse_sensing_spec(spec).map_err(|e| anyhow::anyhow!("{e}"))?,
                );
            }
            device_admin::validate_product(&model)
                .map_err(|e| anyhow::anyhow!("the product model was not saved: {e}"))?;
            device_admin::validate_sensing(&declared_sensing)
                .map_err(|e| anyhow::anyhow!("the product model was not saved: {e}"))?;
            let db = palisade_hub::open_database(&load(&config)?).await?;
            db.create_product(&model).await?;
            db.set_product_sensing(&model.id, &declared_sensing).await?;
            accounts::audit(
                &db,
                &Actor::cli(),
                "product.create",
                model.id.as_str(),
                Outcome::Success,
                &format!("{} fields declared", model.fields.len()),
            )
            .await?;
            println!(
                "product model {} ({}, hardware {}) saved with {} telemetry field(s)",
                model.id,
                model.name,
                model.hardware_revision,
                model.fields.len()
            );
            if model.fields.is_empty() {
                println!("note: devices of this model may send no telemetry fields at all");
            }
            if let Some(date) = security_updates_until {
                set_support_end(&db, &model.id, &date).await?;
            }
        }
        ProductAction::Support {
            id,
            security_updates_until,
            config,
        } => {
            let id = ProductId::parse(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
            let db = palisade_hub::open_database(&load(&config)?).await?;
            if db.product(&id).await?.is_none() {
                bail!("no product model {id}");
            }
            set_support_end(&db, &id, &security_updates_until).await?;
        }
        ProductAction::List { output, config } => {
            let db = palisade_hub::open_database(&load(&config)?).await?;
            let products = db.products().await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&products)?),
                Output::Text => {
                    println!("{:<24} {:<32} {:<10} FIELDS", "ID", "NAME", "HARDWARE");
                    for p in products {
                        let names: Vec<&str> = p.fields.iter().map(|f| f.name.as_str()).collect();
                        println!(
                            "{:<24} {:<32} {:<10} {}",
                            p.id,
                            p.name,
                            p.hardware_revision,
                            names.join(",")
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Create `path` for secrets: new file only (never overwrite or follow an existing
/// link), mode 0600 from the start.
fn create_secret_file(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "{} already exists; choose another --out (existing codes are never overwritten)",
                path.display()
            ),
            _ => anyhow::anyhow!("cannot create {}: {e}", path.display()),
        })
}

async fn device(action: DeviceAction) -> Result<ExitCode> {
    match action {
        DeviceAction::Codes {
            product,
            count,
            out,
            valid_days,
            config,
        } => {
            let product = ProductId::parse(&product).map_err(|e| anyhow::anyhow!("{e}"))?;
            let db = palisade_hub::open_database(&load(&config)?).await?;
            if db.product(&product).await?.is_none() {
                bail!("no product model {product}; define it first with `palisade product add`");
            }
            // The file first: if it cannot be created, no codes are made.
            let mut file = create_secret_file(&out)?;
            let codes = db
                .create_claim_codes(&product, count as usize, i64::from(valid_days) * 86_400)
                .await?;
            let written = file
                .write_all(device_admin::claim_codes_csv(&codes).as_bytes())
                .and_then(|()| file.sync_all());
            if let Err(e) = written {
                // The codes exist only as digests; nobody knows them, so they are harmless.
                let _ = std::fs::remove_file(&out);
                bail!(
                    "cannot write {}: {e}; no usable codes were issued",
                    out.display()
                );
            }
            accounts::audit(
                &db,
                &Actor::cli(),
                "device.codes",
                product.as_str(),
                Outcome::Success,
                &format!("{count} claim codes, valid {valid_days} days"),
            )
            .await?;
            let until = codes.first().map_or_else(
                || "-".into(),
                |c| palisade_hub::web::pages::fmt_time(c.expires_at),
            );
            println!(
                "{count} claim codes for {product} written to {} (mode 0600), valid until {until}.",
                out.display()
            );
            println!(
                "Load each claim_code onto one device; print its pairing_code on that device's label."
            );
            println!(
                "The hub stores only digests: this file is the only copy. Keep it secret and delete it once the devices are made."
            );
        }
        DeviceAction::List { output, config } => {
            let db = palisade_hub::open_database(&load(&config)?).await?;
            let devices = db.devices().await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&devices)?),
                Output::Text => {
                    println!(
                        "{:<32} {:<16} {:<9} {:<32} {:<20} LAST SEEN",
                        "DEVICE", "PRODUCT", "STATUS", "OWNER", "CERT EXPIRES"
                    );
                    for d in devices {
                        println!(
                            "{:<32} {:<16} {:<9} {:<32} {:<20} {}",
                            d.id,
                            d.product_id,
                            d.status.as_str(),
                            d.owner_id.as_ref().map_or("-", |o| o.as_str()),
                            palisade_hub::web::pages::fmt_time(d.cert_not_after),
                            d.last_seen_at
                                .map_or_else(|| "never".into(), palisade_hub::web::pages::fmt_time)
                        );
                    }
                }
            }
        }
        DeviceAction::Revoke { device_id, config } => {
            let id = DeviceId::parse(&device_id)
                .with_context(|| format!("{device_id:?} is not a device id (32 hex digits)"))?;
            let db = palisade_hub::open_database(&load(&config)?).await?;
            let device = db
                .device(&id)
                .await?
                .with_context(|| format!("no device {id}"))?;
            if device.status == DeviceStatus::Revoked {
                println!("{id} is already revoked");
                return Ok(ExitCode::SUCCESS);
            }
            db.set_device_status(&id, DeviceStatus::Revoked).await?;
            accounts::audit(
                &db,
                &Actor::cli(),
                "device.revoke",
                id.as_str(),
                Outcome::Success,
                "revoked from the command line",
            )
            .await?;
            println!(
                "{id} revoked: a running hub refuses it at its next connection. To drop a live connection at once, revoke through the console or API."
            );
        }
        DeviceAction::Decommission { device_id, config } => {
            let id = DeviceId::parse(&device_id)
                .with_context(|| format!("{device_id:?} is not a device id (32 hex digits)"))?;
            let db = palisade_hub::open_database(&load(&config)?).await?;
            let device = db
                .device(&id)
                .await?
                .with_context(|| format!("no device {id}"))?;
            if device.status != DeviceStatus::Active {
                bail!(
                    "{id} is {}: only an active device can be decommissioned",
                    device.status.as_str()
                );
            }
            palisade_hub::devices_lifecycle::decommission(
                &db,
                &Actor::cli(),
                &id,
                "decommissioned from the command line",
            )
            .await?;
            println!(
                "{id} decommissioned: owner cleared, its data deleted, its certificate refused at its next connection; the device can enrol again with its claim code (as a new device)"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
