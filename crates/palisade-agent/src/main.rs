//! `palisade-agent`: the Palisade device agent command line (enroll, run, reset, tuf).
#![forbid(unsafe_code)]

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use palisade_agent::enroll::{ClaimCode, EnrollOptions};
use palisade_agent::limits::Limits;
use palisade_agent::run::RunOptions;
use palisade_agent::telemetry::{self, Source};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The Palisade device agent. It only makes outgoing TLS connections to your hub,
/// with the hub CA pinned; it never listens on a port.
#[derive(Parser)]
#[command(name = "palisade-agent", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enrol this device with a hub: make a key pair here, send a certificate request
    /// with the claim code, save the certificate.
    Enroll {
        /// The hub's HTTPS address, e.g. https://hub.example.com:8443
        #[arg(long)]
        hub: String,
        /// The hub CA certificate (PEM) to trust; nothing else is trusted.
        #[arg(long, value_name = "PEM_FILE")]
        ca: PathBuf,
        /// The device's claim code (single use). Also read from PALISADE_CLAIM_CODE, which
        /// keeps it out of the process list.
        #[arg(long, env = "PALISADE_CLAIM_CODE", hide_env_values = true)]
        claim: String,
        /// Where the agent keeps its key, certificate and state (created with mode 0700).
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// The maker's trusted TUF root for updates (root.json, shipped with the device).
        /// Without it automatic updates stay off: a first root is never taken from the hub.
        #[arg(long, value_name = "ROOT_JSON")]
        update_root: Option<PathBuf>,
    },
    /// Install the maker's trusted TUF root for updates (checked: signed by its own
    /// threshold). Automatic updates stay off until one is installed.
    UpdateRoot {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        #[arg(value_name = "ROOT_JSON")]
        root: PathBuf,
    },
    /// Install an update now, as if the hub had offered it: check it is newer than the
    /// running version, download (resumably) and verify it with TUF, write the inactive
    /// slot, switch, restart (this command runs again in the new slot), health-check,
    /// commit or roll back. Prints each step as a JSON status report.
    Update {
        #[command(flatten)]
        updater: UpdaterArgs,
        /// The repository's metadata base URL (http:// or https://).
        #[arg(long, value_name = "URL")]
        metadata_url: String,
        /// The repository's target base URL (http:// or https://).
        #[arg(long, value_name = "URL")]
        target_base_url: String,
        /// The TUF target name of the image, e.g. MODEL-2.0.0.img.
        #[arg(long, value_name = "NAME")]
        target: String,
        /// The product model.
        #[arg(long, value_name = "MODEL")]
        product: String,
        /// The version the target is (must match what the targets key signed).
        #[arg(long, value_name = "VERSION")]
        version: String,
        /// The release id reported with each step.
        #[arg(long, value_name = "ID", default_value = "manual")]
        release: String,
        /// Install even if the owner postponed or switched off automatic install.
        #[arg(long)]
        now: bool,
    },
    /// Switch automatic install on or off, or postpone it (UPD-3).
    AutoUpdate {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        #[command(subcommand)]
        action: AutoAction,
    },
    /// Show firmware version, active slot, pending update, last result, automatic
    /// install on/off and why, and the support end date if known.
    Status {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// The A/B slot directory (default: STATE_DIR/slots).
        #[arg(long, value_name = "DIR")]
        slots_dir: Option<PathBuf>,
    },
    /// Connect to the hub and stay connected: publish telemetry, handle commands,
    /// install update offers (automatic install unless the owner postponed it).
    Run {
        /// Run this shell command for telemetry: each line it prints is one JSON object.
        /// It is started again one interval after it exits.
        #[arg(long, value_name = "CMD", conflicts_with = "simulate")]
        telemetry_command: Option<String>,
        /// Produce simulated telemetry (see --simulate-fields).
        #[arg(long)]
        simulate: bool,
        /// Fields to simulate, as name:type (number, integer, boolean), comma-separated.
        #[arg(
            long,
            value_name = "FIELDS",
            default_value = "temperature:number,humidity:number",
            requires = "simulate"
        )]
        simulate_fields: String,
        /// Time between telemetry samples: 10, 10s, 500ms, 5m.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
        interval: Duration,
        /// Most records kept in the on-disk queue while the hub is unreachable (the
        /// oldest are dropped, and counted, beyond that).
        #[arg(long, value_name = "N")]
        queue_max_records: Option<usize>,
        /// Renew the device certificate when less than this percentage of its lifetime
        /// is left (1-50; the hub accepts a renewal once half the lifetime has passed).
        #[arg(long, value_name = "PERCENT", default_value_t = 33)]
        renew_remaining_percent: u8,
        /// The maker's firmware version this device runs, reported to the hub next to
        /// the agent's own version (kept in the state directory for later runs).
        #[arg(long, value_name = "VERSION", conflicts_with = "firmware_version_file")]
        firmware_version: Option<String>,
        /// Read the maker's firmware version from this file (e.g. /etc/os-release's
        /// VERSION_ID written by the build) at every start.
        #[arg(long, value_name = "PATH")]
        firmware_version_file: Option<PathBuf>,
        #[command(flatten)]
        updater: UpdaterArgs,
        /// How often a pending update offer is tried again (it is also tried at start).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
        update_check_interval: Duration,
    },
    /// Factory reset: tell the hub (it decommissions the device; at most 10 s), then
    /// overwrite and delete the device key and delete the certificate, configuration,
    /// firmware version, command state and queued telemetry, whatever the hub answered.
    Reset {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// A bare TUF 1.0 client, to check an update repository independently. Exit 0 on
    /// success, 1 on failure; trusted metadata is kept in --metadata-dir under plain
    /// names (root.json, timestamp.json, ...).
    Tuf {
        /// Where the trusted metadata is kept.
        #[arg(long, value_name = "DIR")]
        metadata_dir: PathBuf,
        /// The repository's metadata base URL (http:// or https://).
        #[arg(long, value_name = "URL")]
        metadata_url: Option<String>,
        /// A target to download (repeatable: processed in order, stops at the first
        /// failure).
        #[arg(long = "target-name", value_name = "NAME")]
        target_names: Vec<String>,
        /// The repository's target base URL (http:// or https://).
        #[arg(long, value_name = "URL")]
        target_base_url: Option<String>,
        /// Where verified targets are written.
        #[arg(long, value_name = "DIR")]
        target_dir: Option<PathBuf>,
        #[command(subcommand)]
        action: TufAction,
    },
}

/// The updater's options, shared by `run` and `update`.
#[derive(clap::Args)]
struct UpdaterArgs {
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,
    /// The A/B slot directory (default: STATE_DIR/slots).
    #[arg(long, value_name = "DIR")]
    slots_dir: Option<PathBuf>,
    /// Hand the verified image to this shell command (its path is $1 and
    /// PALISADE_UPDATE_IMAGE), e.g. `rauc install "$1"`, instead of the slot installer;
    /// its exit status decides.
    #[arg(long, value_name = "CMD")]
    install_command: Option<String>,
    /// After the restart into a new slot, this shell command must succeed (exit 0)
    /// within --health-timeout, or the previous slot is booted again.
    #[arg(long, value_name = "CMD")]
    health_command: Option<String>,
    /// Deadline of the health check (and, for `run`, of the reconnection to the hub).
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    health_timeout: Duration,
}

impl UpdaterArgs {
    fn options(&self, source: palisade_agent::update::Source) -> palisade_agent::update::Options {
        palisade_agent::update::Options {
            state_dir: self.state_dir.clone(),
            slots_dir: self.slots_dir.clone().unwrap_or_else(|| {
                palisade_agent::update::Options::default_slots_dir(&self.state_dir)
            }),
            install_command: self.install_command.clone(),
            health_command: self.health_command.clone(),
            health_timeout: self.health_timeout,
            source,
        }
    }
}

#[derive(Subcommand)]
enum AutoAction {
    /// Install updates automatically (the default).
    On,
    /// Never install automatically (not recommended: security fixes wait for you).
    Off,
    /// No automatic install before this time (RFC 3339, e.g. 2026-12-24T06:00:00Z).
    Postpone {
        #[arg(long, value_name = "TIME")]
        until: String,
    },
}

#[derive(Subcommand)]
enum TufAction {
    /// Trust this root metadata file (no network).
    Init {
        #[arg(value_name = "TRUSTED_ROOT_FILE")]
        trusted_root: PathBuf,
    },
    /// Run the full client workflow: root chain, timestamp, snapshot, targets, delegations.
    Refresh,
    /// Refresh, then download and verify each --target-name into --target-dir (not again
    /// when a verified copy is already there).
    Download,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 10s, 500ms, 5m)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} (ms, s, m, h)")),
    };
    if !(0.05..=86_400.0).contains(&seconds) {
        return Err("must be between 50ms and 24h".into());
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // The bare TUF client's interface says exit 1 on any failure, usage errors
            // included; the other commands keep clap's usual 2.
            let tuf = std::env::args().nth(1).as_deref() == Some("tuf");
            if tuf && e.use_stderr() {
                let _ = e.print();
                return ExitCode::FAILURE;
            }
            e.exit();
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PALISADE_AGENT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // One TLS provider for the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn tempfile_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::tempdir().context("cannot create a temporary directory")
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Enroll {
            hub,
            ca,
            claim,
            state_dir,
            update_root,
        } => {
            if let Some(root) = &update_root {
                // Checked before enrolment, so a bad file does not leave a half setup.
                let check = tempfile_dir()?;
                palisade_agent::tuf::init(check.path(), root)
                    .with_context(|| format!("--update-root {}", root.display()))?;
            }
            let ca_pem = std::fs::read(&ca)
                .with_context(|| format!("cannot read the hub CA file {}", ca.display()))?;
            let opts = EnrollOptions {
                hub_url: hub,
                ca_pem,
                claim_code: ClaimCode::new(claim)?,
                state_dir: state_dir.clone(),
                limits: Limits::default(),
            };
            let config = runtime.block_on(palisade_agent::enroll::enroll(opts))?;
            println!(
                "enrolled as device {} (certificate valid until {}); state in {}",
                config.device_id,
                config.not_after,
                state_dir.display()
            );
            if let Some(root) = &update_root {
                palisade_agent::update::save_update_root(&state_dir, root)?;
                println!("trusted update root installed: automatic updates are on");
            } else {
                println!(
                    "no --update-root: automatic updates stay OFF until `palisade-agent update-root` installs the maker's root"
                );
            }
            println!(
                "next: palisade-agent run --state-dir {}",
                state_dir.display()
            );
            Ok(())
        }
        Command::UpdateRoot { state_dir, root } => {
            palisade_agent::update::save_update_root(&state_dir, &root)?;
            println!("trusted update root installed in {}", state_dir.display());
            Ok(())
        }
        Command::Update {
            updater,
            metadata_url,
            target_base_url,
            target,
            product,
            version,
            release,
            now,
        } => {
            use palisade_agent::update::{Applied, Offer, Source, Updater};
            let opts = updater.options(Source::Urls {
                metadata_url,
                target_base_url,
            });
            let state = palisade_agent::state::StateDir::new(&opts.state_dir);
            palisade_agent::fsutil::ensure_private_dir(state.root())?;
            let lock = state.lock()?;
            let mut updater = Updater::open(opts)?;
            let offer = Offer {
                release,
                product,
                version,
                target,
                security: false,
                notes: String::new(),
            };
            let result = runtime.block_on(async {
                updater.startup(false).await?;
                updater.apply(offer, now).await
            });
            for report in &updater.reports {
                println!("{}", serde_json::to_string(report)?);
            }
            match result? {
                Applied::Deferred(why) => println!("not installed: automatic install {why}"),
                Applied::UpToDate => println!("up to date"),
                Applied::HandedOver => println!("handed to the install command"),
                Applied::Restart(token) => {
                    drop(lock);
                    drop(runtime);
                    return Err(palisade_agent::update::restart(&token).into());
                }
            }
            Ok(())
        }
        Command::AutoUpdate { state_dir, action } => {
            use palisade_agent::update::{Policy, format_time, load_policy, save_policy};
            let state = palisade_agent::state::StateDir::new(&state_dir);
            let mut policy = load_policy(&state)?;
            match action {
                AutoAction::On => {
                    policy = Policy::default();
                    println!("automatic install: on");
                }
                AutoAction::Off => {
                    policy.off = true;
                    println!(
                        "WARNING: automatic install is OFF: security updates will not be installed until you turn it on again"
                    );
                }
                AutoAction::Postpone { until } => {
                    let t = time::OffsetDateTime::parse(
                        &until,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .with_context(|| format!("--until {until:?} is not an RFC 3339 time"))?
                    .unix_timestamp();
                    policy.postpone_until = Some(t);
                    println!(
                        "WARNING: automatic install is postponed until {}: security updates wait until then",
                        format_time(t)
                    );
                }
            }
            save_policy(&state, &policy)?;
            Ok(())
        }
        Command::Status {
            state_dir,
            slots_dir,
        } => {
            use palisade_agent::update::{Options, Source, status_text};
            let opts = Options {
                slots_dir: slots_dir.unwrap_or_else(|| Options::default_slots_dir(&state_dir)),
                state_dir,
                install_command: None,
                health_command: None,
                health_timeout: Duration::from_secs(60),
                source: Source::Hub,
            };
            print!("{}", status_text(&opts)?);
            Ok(())
        }
        Command::Run {
            updater,
            update_check_interval,
            telemetry_command,
            simulate,
            simulate_fields,
            interval,
            queue_max_records,
            renew_remaining_percent,
            firmware_version,
            firmware_version_file,
        } => {
            let state_dir = updater.state_dir.clone();
            let update = updater.options(palisade_agent::update::Source::Hub);
            let firmware = match (firmware_version, firmware_version_file) {
                (Some(v), _) => Some(v),
                (None, Some(path)) => {
                    let bytes = palisade_agent::fsutil::read_bounded(&path, 1024)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                (None, None) => None,
            };
            if let Some(v) = firmware {
                palisade_agent::run::set_firmware_version(&state_dir, &v)
                    .context("--firmware-version")?;
            }
            let mut limits = Limits::default();
            if !(1..=50).contains(&renew_remaining_percent) {
                bail!("--renew-remaining-percent must be between 1 and 50");
            }
            limits.renew_remaining_percent = renew_remaining_percent;
            if let Some(n) = queue_max_records {
                if n == 0 {
                    bail!("--queue-max-records must be at least 1");
                }
                limits.queue_max_records = n;
            }
            let source = match (telemetry_command, simulate) {
                (Some(command), _) => Source::Command {
                    command,
                    interval,
                    max_line: limits.telemetry_line_bytes,
                },
                (None, true) => Source::Simulate {
                    fields: telemetry::parse_fields(&simulate_fields)?,
                    interval,
                },
                (None, false) => Source::None,
            };
            let opts = RunOptions {
                state_dir,
                source,
                limits,
            };
            runtime.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                // Registered before anything else runs, so an early SIGTERM is graceful too.
                let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
                let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    tracing::info!("shutting down");
                    let _ = stop_tx.send(true);
                    // A second signal ends the process at once.
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    std::process::exit(130);
                });
                palisade_agent::run::run_with_updates(
                    opts,
                    Some((update, update_check_interval)),
                    stop_rx,
                )
                .await
                .map_err(anyhow::Error::from)
            })?;
            Ok(())
        }
        Command::Tuf {
            metadata_dir,
            metadata_url,
            target_names,
            target_base_url,
            target_dir,
            action,
        } => {
            use palisade_agent::tuf::{self, Downloaded, TufClient};
            let need_url = || {
                metadata_url
                    .as_deref()
                    .context("--metadata-url is required")
            };
            match action {
                TufAction::Init { trusted_root } => tuf::init(&metadata_dir, &trusted_root)?,
                TufAction::Refresh => {
                    let client = TufClient::new(&metadata_dir, need_url()?, None)?;
                    runtime.block_on(client.refresh())?;
                }
                TufAction::Download => {
                    let base = target_base_url
                        .as_deref()
                        .context("--target-base-url is required")?;
                    let out = target_dir.context("--target-dir is required")?;
                    if target_names.is_empty() {
                        bail!("--target-name is required");
                    }
                    let client = TufClient::new(&metadata_dir, need_url()?, Some(base))?;
                    runtime.block_on(async {
                        let repo = client.refresh().await?;
                        for name in &target_names {
                            match client.download(&repo, name, &out).await? {
                                Downloaded::Fetched(p) => println!("{}: verified", p.display()),
                                Downloaded::AlreadyPresent(p) => {
                                    println!("{}: already present and verified", p.display());
                                }
                            }
                        }
                        anyhow::Ok(())
                    })?;
                }
            }
            Ok(())
        }
        Command::Reset { state_dir } => {
            use palisade_agent::reset::HubNotice;
            let report = runtime.block_on(palisade_agent::reset::factory_reset(
                &state_dir,
                &Limits::default(),
            ))?;
            match &report.hub {
                HubNotice::Acknowledged => {
                    println!("the hub was told: it has decommissioned this device");
                }
                HubNotice::Failed(why) => println!(
                    "the hub could not be told ({why}); wiping anyway. The owner can release the device in the hub's console."
                ),
                HubNotice::NotEnrolled => {}
            }
            let wiped = report.wiped;
            if wiped.is_empty() {
                println!("nothing to wipe in {}", state_dir.display());
            } else {
                for w in &wiped {
                    println!("{}: {}", w.path.display(), w.how);
                }
                println!(
                    "factory reset done: this device has no identity until it is enrolled again"
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("3d").is_err());
    }
}
