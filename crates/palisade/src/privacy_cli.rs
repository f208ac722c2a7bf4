//! `palisade privacy …` (publish the policy) and `palisade secrets …` (rotate the key
//! that seals secrets in the database).

use super::{ConfigArgs, load};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use palisade_hub::accounts::Actor;
use palisade_hub::privacy::{self, Change};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PrivacyAction {
    /// Publish a new version of the privacy policy from a Markdown file. It must have
    /// the required sections (what data, why, who receives it incl. third parties, how
    /// long, the owner's rights and how to use them, contact); every version is kept
    Publish {
        /// The policy in Markdown
        file: PathBuf,
        /// What is collected, why, who receives it, how long, or owners' rights
        /// changed: every owner is e-mailed and must accept it again
        #[arg(long, conflicts_with = "minor", required_unless_present = "minor")]
        substantive: bool,
        /// Wording, typos, contact details: published without asking owners
        #[arg(long)]
        minor: bool,
        /// One line saying what changed, shown to owners
        #[arg(long, default_value = "")]
        summary: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Check a policy file without publishing it; lists every missing section
    Check {
        file: PathBuf,
        /// Accepted like every command's flags; checking reads no configuration
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub enum SecretsAction {
    /// Make a new secrets key, re-encrypt every secret in the database with it, and
    /// remove the old key. Stop the hub first; back up the new key file afterwards
    RotateKey {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

fn read_policy(file: &PathBuf) -> Result<String> {
    let meta =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    if meta.len() > privacy::MAX_POLICY_BYTES as u64 {
        bail!(
            "{} is {} bytes; a policy may have at most {} bytes",
            file.display(),
            meta.len(),
            privacy::MAX_POLICY_BYTES
        );
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

pub async fn privacy(action: PrivacyAction) -> Result<ExitCode> {
    match action {
        PrivacyAction::Check { file, config: _ } => {
            let text = read_policy(&file)?;
            match privacy::check_policy(&text) {
                Ok(()) => {
                    println!("{}: every required section is there", file.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    for p in problems.0 {
                        eprintln!("- {p}");
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        PrivacyAction::Publish {
            file,
            substantive,
            minor: _,
            summary,
            config,
        } => {
            let text = read_policy(&file)?;
            if let Err(problems) = privacy::check_policy(&text) {
                eprintln!("{} was not published:", file.display());
                for p in problems.0 {
                    eprintln!("- {p}");
                }
                return Ok(ExitCode::FAILURE);
            }
            let config = load(&config)?;
            let db = palisade_hub::open_database(&config).await?;
            let change = if substantive {
                Change::Substantive
            } else {
                Change::Minor
            };
            let published = privacy::publish(
                &db,
                &Actor::cli(),
                &text,
                change,
                &summary,
                &config.public_url,
            )
            .await?;
            println!(
                "privacy policy version {} published at {}/privacy",
                published.version, config.public_url
            );
            if substantive {
                println!(
                    "{} owners were e-mailed; each is asked to accept it at their next console visit",
                    published.notified
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn secrets(action: SecretsAction) -> Result<ExitCode> {
    match action {
        SecretsAction::RotateKey { config } => {
            let config = load(&config)?;
            let rotation = palisade_hub::secrets::rotate_key(&config).await?;
            let db = palisade_hub::open_database(&config).await?;
            palisade_hub::accounts::audit(
                &db,
                &Actor::cli(),
                "secrets.rotate",
                "secrets key",
                palisade_hub::audit::Outcome::Success,
                &format!(
                    "key {} replaced by {}; {} values re-encrypted",
                    rotation.old_keys.join(","),
                    rotation.new_key,
                    rotation.resealed
                ),
            )
            .await?;
            println!(
                "secrets key rotated: {} values re-encrypted with key {}; old key {} removed from {}",
                rotation.resealed,
                rotation.new_key,
                rotation.old_keys.join(", "),
                rotation.key_file.display()
            );
            println!(
                "Back up the new key file now: without it the encrypted values cannot be read."
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
