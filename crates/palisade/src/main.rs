//! `palisade`: run the hub and administer it from the machine it runs on.
#![forbid(unsafe_code)]

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use palisade_hub::accounts::{self, Actor};
use palisade_hub::config::{Config, Overrides, redact_url};
use palisade_hub::ids::Username;
use std::path::PathBuf;
use std::process::ExitCode;

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
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate the configuration and list every problem (exit 1 if any)
    Check {
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
        Command::Serve { config } => serve(load(&config)?).await,
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
            action: ConfigAction::Check { config },
        } => match load(&config) {
            Ok(c) => {
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
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::User { action } => user(action).await,
    }
}

async fn serve(config: Config) -> Result<ExitCode> {
    let hub = palisade_hub::start(config)
        .await
        .context("the hub could not start")?;
    println!("Palisade hub is running (HTTPS only).");
    println!("  Console         {}/", hub.url());
    println!("  CA certificate  {}", hub.ca_cert_path.display());
    println!("  CA SHA-256      {}", hub.ca_fingerprint);
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
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            eprintln!("stopping");
        }
        _ = terminate() => {
            eprintln!("stopping (SIGTERM)");
        }
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
