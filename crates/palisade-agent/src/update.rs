//! Automatic verified updates (UPD-2, UPD-3, UPD-5): an offer from the hub is checked
//! against the running version, its target fetched (resumably) and verified by TUF from
//! the maker's root, installed into the inactive [`slots`](crate::slots) slot (or handed to
//! an `--install-command`), tried after a restart, health-checked and committed — or
//! rolled back. Every step is reported (`devices/{id}/update/status`) and kept in
//! `update.json` so a report survives a crash and the owner's `status` can show it.
//!
//! Rollback protection on top of TUF's: the version is taken from what the offline
//! targets key signed (the target's `custom.version`, or the target name
//! `PRODUCT-VERSION...`), must equal the offer's, and must be newer than the running one.
//! Without a trusted root (`update-root.json`, shipped by the maker) nothing is fetched.

use crate::slots::{SlotInfo, Slots};
use crate::state::StateDir;
use crate::tuf::{TrustedTarget, TufClient};
use crate::{Error, Result, fsutil};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const UPDATE_ROOT_FILE: &str = "update-root.json";
pub const UPDATE_FILE: &str = "update.json";
pub const POLICY_FILE: &str = "update-policy.json";
pub const METADATA_DIR: &str = "update-metadata";
pub const DOWNLOAD_DIR: &str = "update-downloads";
/// The environment variable that carries the restart token into the restarted process.
pub const RESTART_TOKEN_ENV: &str = "PALISADE_AGENT_RESTART_TOKEN";
/// Fault injection for the crash tests: abort the process at this step.
pub const FAULT_ENV: &str = "PALISADE_AGENT_FAULT";
const MAX_STATE: u64 = 1024 * 1024;
const MAX_OUTBOX: usize = 64;
const MAX_FAILED: usize = 32;

/// An update offer, as the hub publishes it on `devices/{id}/update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub release: String,
    pub product: String,
    pub version: String,
    pub target: String,
    #[serde(default)]
    pub security: bool,
    #[serde(default)]
    pub notes: String,
}

impl Offer {
    /// Parse and bound an offer from the hub.
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let offer: Self =
            serde_json::from_slice(payload).map_err(|e| Error::json("update offer", e))?;
        offer.validate()?;
        Ok(offer)
    }

    pub fn validate(&self) -> Result<()> {
        let segment = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && s != "."
                && s != ".."
        };
        if !segment(&self.release) || !segment(&self.product) {
            return Err(Error::invalid(
                "update offer",
                "release or product is not a plain name",
            ));
        }
        if self.target.is_empty()
            || self.target.len() > 512
            || self.target.contains("..")
            || self.target.starts_with('/')
            || self.target.contains("//")
            || self.target.chars().any(|c| c.is_control() || c == '\\')
        {
            return Err(Error::invalid("update offer", "target name"));
        }
        crate::state::valid_firmware_version(&self.version)?;
        if self.notes.len() > 64 * 1024 {
            return Err(Error::invalid("update offer", "notes are too long"));
        }
        Ok(())
    }
}

/// The steps reported on `devices/{id}/update/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Downloading,
    Verified,
    Installed,
    Committed,
    RolledBack,
    Failed,
}

impl Step {
    fn is_final(self) -> bool {
        matches!(self, Self::Committed | Self::RolledBack | Self::Failed)
    }
}

/// One status report (the wire format of `devices/{id}/update/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub release: String,
    pub version: String,
    pub step: Step,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
}

/// `update.json`: what the updater must remember across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// The newest offer not installed yet.
    pub pending: Option<Offer>,
    /// An update between its first step and the switch (a start that finds one here
    /// was interrupted).
    pub in_progress: Option<(Offer, Step)>,
    /// Handed to `--install-command`: confirmed when the device runs this version.
    pub awaiting: Option<Offer>,
    /// The last final report, with its time (Unix seconds).
    pub last_result: Option<(Report, i64)>,
    /// Reports not yet acknowledged by the hub (oldest first, bounded).
    pub outbox: Vec<Report>,
    /// Releases that failed here: not tried again automatically.
    pub failed_releases: Vec<String>,
    /// The offer being tried in the tentative slot.
    pub trial: Option<Offer>,
    /// The support end date the signed target declared (`custom.support_until`).
    pub support_until: Option<String>,
}

/// The owner's choice (UPD-3), `update-policy.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Automatic install switched off by the owner.
    #[serde(default)]
    pub off: bool,
    /// No automatic install before this time (Unix seconds).
    #[serde(default)]
    pub postpone_until: Option<i64>,
}

impl Policy {
    /// The owner's switch in the hub's config message (`devices/{id}/config`):
    /// `"auto_update": "on" | "off" | {"postpone_until": UNIX_SECONDS}`. `Ok(None)` when
    /// the message has none (the owner never set it in the console: the local choice
    /// stands); an unknown form is an error, and the local choice stands too.
    pub fn from_config(payload: &[u8]) -> Result<Option<Policy>> {
        let doc: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| Error::json("device config", e))?;
        let Some(value) = doc.get("auto_update") else {
            return Ok(None);
        };
        let bad = || {
            Error::invalid(
                "device config",
                "auto_update is not on, off or {\"postpone_until\": N}",
            )
        };
        match value {
            serde_json::Value::String(s) if s == "on" => Ok(Some(Policy::default())),
            serde_json::Value::String(s) if s == "off" => Ok(Some(Policy {
                off: true,
                postpone_until: None,
            })),
            serde_json::Value::Object(map) if map.len() == 1 => {
                let until = map
                    .get("postpone_until")
                    .and_then(|v| v.as_i64())
                    .ok_or_else(bad)?;
                Ok(Some(Policy {
                    off: false,
                    postpone_until: Some(until),
                }))
            }
            _ => Err(bad()),
        }
    }

    /// Whether automatic install is on now, and why not.
    pub fn allows(&self, now: i64) -> std::result::Result<(), String> {
        if self.off {
            return Err("switched off by the owner (`palisade-agent auto-update on` turns it back on): security updates are NOT installed".into());
        }
        match self.postpone_until {
            Some(t) if t > now => Err(format!(
                "postponed by the owner until {}: security updates wait until then",
                format_time(t)
            )),
            _ => Ok(()),
        }
    }
}

/// At most `max` characters of `text` with control characters (terminal escapes from
/// the network) replaced, for logs and `status`.
pub fn printable(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Format Unix seconds as RFC 3339 (UTC).
pub fn format_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Where the update repository is.
#[derive(Debug, Clone)]
pub enum Source {
    /// The hub: `{hub}/tuf/{product}/metadata/` and `.../targets/` over the hub's HTTPS,
    /// with the pinned hub CA and the device certificate as client identity.
    Hub,
    /// Explicit URLs (`palisade-agent update`; http:// or https://: TUF metadata
    /// carries its own integrity).
    Urls {
        metadata_url: String,
        target_base_url: String,
    },
}

/// Everything the updater needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub state_dir: PathBuf,
    pub slots_dir: PathBuf,
    /// Hand the verified image to this command instead of the slot installer.
    pub install_command: Option<String>,
    /// Must succeed (exit 0) within `health_timeout` after the restart.
    pub health_command: Option<String>,
    pub health_timeout: Duration,
    pub source: Source,
}

impl Options {
    /// The default slot directory: `STATE/slots`.
    pub fn default_slots_dir(state_dir: &Path) -> PathBuf {
        state_dir.join("slots")
    }

    fn slots(&self) -> Slots {
        Slots::new(&self.slots_dir)
    }
}

/// The persistent files, opened once per operation.
pub struct Updater {
    opts: Options,
    state: StateDir,
    record: Record,
    /// Reports made by this process, in order (the CLI prints them).
    pub reports: Vec<Report>,
}

/// What [`Updater::apply`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The owner postponed or switched off automatic install; the offer is pending.
    Deferred(String),
    /// The running version is the offered one already.
    UpToDate,
    /// The install command accepted the image.
    HandedOver,
    /// The new slot is tentative: restart (with this token) to try it.
    Restart(String),
}

/// What [`Updater::startup`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Startup {
    Normal,
    /// The planned start of a tentative slot: the health check must pass (for `run`,
    /// including a reconnection to the hub) before [`Updater::finish_trial`].
    Trial {
        stopped_at_ms: u64,
    },
}

fn fault(point: &str) {
    if std::env::var(FAULT_ENV).is_ok_and(|v| v == point) {
        eprintln!("palisade-agent: injected fault at {point}");
        std::process::abort();
    }
}

impl Updater {
    pub fn open(opts: Options) -> Result<Self> {
        let state = StateDir::new(&opts.state_dir);
        let path = state.root().join(UPDATE_FILE);
        let record = if path.exists() {
            let bytes = fsutil::read_bounded(&path, MAX_STATE)?;
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::json(format!("parse {}", path.display()), e))?
        } else {
            Record::default()
        };
        Ok(Self {
            opts,
            state,
            record,
            reports: Vec::new(),
        })
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    fn save(&self) -> Result<()> {
        fsutil::ensure_private_dir(self.state.root())?;
        let json =
            serde_json::to_vec_pretty(&self.record).map_err(|e| Error::json("update.json", e))?;
        fsutil::write_private(&self.state.root().join(UPDATE_FILE), &json)
    }

    fn report(
        &mut self,
        offer: &Offer,
        step: Step,
        reason: Option<String>,
        downtime_ms: Option<u64>,
    ) -> Result<()> {
        let report = Report {
            release: offer.release.clone(),
            version: offer.version.clone(),
            step,
            reason,
            downtime_ms,
        };
        match &report.reason {
            Some(r) if matches!(step, Step::Failed | Step::RolledBack) => {
                tracing::warn!(release = %offer.release, version = %offer.version, step = ?step, "update: {r}");
            }
            _ => {
                tracing::info!(release = %offer.release, version = %offer.version, step = ?step, downtime_ms, "update")
            }
        }
        if step.is_final() {
            self.record.last_result = Some((report.clone(), crate::unix_now()));
            self.record.in_progress = None;
            // A release that broke a start is not tried again automatically; a failed
            // download or check may be (resumed, or refused again).
            if step == Step::RolledBack {
                self.record.failed_releases.retain(|r| r != &offer.release);
                self.record.failed_releases.push(offer.release.clone());
                if self.record.failed_releases.len() > MAX_FAILED {
                    self.record.failed_releases.remove(0);
                }
            }
        } else {
            self.record.in_progress = Some((offer.clone(), step));
        }
        self.record.outbox.push(report.clone());
        if self.record.outbox.len() > MAX_OUTBOX {
            self.record.outbox.remove(0);
        }
        self.reports.push(report);
        self.save()
    }

    /// The agent is about to stop for the restart into the tentative slot: the downtime
    /// counts from now.
    pub fn mark_stopped(&self) -> Result<()> {
        let slots = self.opts.slots();
        let mut boot = slots.load()?;
        if boot.tentative.is_some() {
            boot.stopped_at_ms = Some(crate::unix_now_ms());
            slots.store(&boot)?;
        }
        Ok(())
    }

    /// Reports the hub has not acknowledged yet.
    pub fn outbox(&self) -> &[Report] {
        &self.record.outbox
    }

    /// The hub acknowledged the oldest `n` reports.
    pub fn acknowledge(&mut self, n: usize) -> Result<()> {
        let n = n.min(self.record.outbox.len());
        self.record.outbox.drain(..n);
        self.save()
    }

    /// The firmware version running now: the active slot's, or the maker's factory
    /// version (`firmware_version`) while the factory image is active.
    pub fn running_version(&self) -> Result<Option<String>> {
        running_version(&self.state, &self.opts.slots())
    }

    /// Remember an offer (the newest wins). A release that failed here before is not
    /// offered again until the hub sends a different release.
    pub fn remember(&mut self, offer: Offer) -> Result<()> {
        self.record.pending = Some(offer);
        self.save()
    }

    /// At every start, before anything else: finish or undo what an earlier process
    /// left. A tentative slot is tried only by the planned restart (the token in
    /// [`RESTART_TOKEN_ENV`]); any other start rolls it back. `hub_check`: the caller
    /// (`run`) checks the reconnection and then calls [`Updater::finish_trial`];
    /// otherwise the health command alone decides here.
    pub async fn startup(&mut self, hub_check: bool) -> Result<Startup> {
        if let Some((offer, step)) = self.record.in_progress.clone() {
            let reason = format!(
                "interrupted after step {} (the agent stopped, crashed or lost power before the switch); the previous slot stays active",
                step_name(step)
            );
            self.report(&offer, Step::Failed, Some(reason), None)?;
        }
        if let Some(offer) = self.record.awaiting.take() {
            let running = self.running_version()?;
            if running.as_deref() == Some(offer.version.as_str()) {
                self.report(&offer, Step::Committed, None, None)?;
            } else {
                let why = format!(
                    "the system installer accepted the image, but the device runs {} (its bootloader fell back)",
                    running.unwrap_or_else(|| "an unknown version".into())
                );
                self.report(&offer, Step::RolledBack, Some(why), None)?;
            }
        }
        let slots = self.opts.slots();
        let boot = slots.load()?;
        let Some(_tentative) = boot.tentative else {
            return Ok(Startup::Normal);
        };
        let offer = self.record.trial.clone().unwrap_or_else(|| Offer {
            release: "unknown".into(),
            product: "unknown".into(),
            version: boot
                .info(boot.tentative.unwrap_or(boot.active))
                .version
                .clone()
                .unwrap_or_default(),
            target: String::new(),
            security: false,
            notes: String::new(),
        });
        let planned = boot.tries == 0
            && boot.restart_token.is_some()
            && std::env::var(RESTART_TOKEN_ENV).ok() == boot.restart_token;
        if !planned {
            slots.roll_back()?;
            self.record.trial = None;
            let why = if boot.tries > 0 {
                "the new slot stopped before its health check passed (crash, kill or power loss); booted the previous slot"
            } else {
                "the agent stopped between the slot switch and the restart; booted the previous slot"
            };
            self.report(&offer, Step::RolledBack, Some(why.into()), None)?;
            return Ok(Startup::Normal);
        }
        slots.mark_trial()?;
        let stopped_at_ms = boot.stopped_at_ms.unwrap_or_else(crate::unix_now_ms);
        fault("before_commit");
        if hub_check {
            return Ok(Startup::Trial { stopped_at_ms });
        }
        let health = self.health_check().await;
        self.finish_trial(health, stopped_at_ms)?;
        Ok(Startup::Normal)
    }

    /// Run the health command (if any) within the health timeout.
    pub async fn health_check(&self) -> std::result::Result<(), String> {
        let Some(cmd) = &self.opts.health_command else {
            return Ok(());
        };
        let status = tokio::time::timeout(
            self.opts.health_timeout,
            tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(cmd)
                .kill_on_drop(true)
                .stdin(std::process::Stdio::null())
                .status(),
        )
        .await;
        match status {
            Err(_) => Err(format!(
                "health command did not finish within {} s",
                self.opts.health_timeout.as_secs()
            )),
            Ok(Err(e)) => Err(format!("health command could not start: {e}")),
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => Err(format!("health command failed ({s})")),
        }
    }

    /// Commit the tentative slot after a passed health check, or roll back.
    pub fn finish_trial(
        &mut self,
        health: std::result::Result<(), String>,
        stopped_at_ms: u64,
    ) -> Result<()> {
        let slots = self.opts.slots();
        let offer = self.record.trial.take().unwrap_or_else(|| Offer {
            release: "unknown".into(),
            product: "unknown".into(),
            version: String::new(),
            target: String::new(),
            security: false,
            notes: String::new(),
        });
        match health {
            Ok(()) => {
                let boot = slots.commit()?;
                // The digest TUF verified for the now active image is sealed (INT-1).
                if let Some(sha) = &boot.info(boot.active).sha256
                    && let Err(e) =
                        crate::integrity::seal_image(&self.state, boot.active.name(), sha)
                {
                    tracing::warn!("the new image's digest is not sealed: {e}");
                }
                let downtime = crate::unix_now_ms().saturating_sub(stopped_at_ms);
                if self
                    .record
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.release == offer.release)
                {
                    self.record.pending = None;
                }
                self.report(&offer, Step::Committed, None, Some(downtime))?;
            }
            Err(why) => {
                slots.roll_back()?;
                self.report(
                    &offer,
                    Step::RolledBack,
                    Some(format!(
                        "health check failed: {why}; booted the previous slot"
                    )),
                    None,
                )?;
            }
        }
        Ok(())
    }

    /// Install `offer` if the owner's policy allows it (or `now`, the owner's explicit
    /// request), it is newer than the running version and verifies.
    pub async fn apply(&mut self, offer: Offer, now: bool) -> Result<Applied> {
        offer.validate()?;
        self.record.pending = Some(offer.clone());
        self.save()?;
        if !now {
            let policy = load_policy(&self.state)?;
            if let Err(why) = policy.allows(crate::unix_now()) {
                tracing::warn!(
                    "update {} {} is pending: automatic install {why}",
                    offer.product,
                    offer.version
                );
                return Ok(Applied::Deferred(why));
            }
        }
        let running = self.running_version()?;
        if running.as_deref() == Some(offer.version.as_str()) {
            self.record.pending = None;
            self.save()?;
            return Ok(Applied::UpToDate);
        }
        if self.record.failed_releases.contains(&offer.release) {
            self.record.pending = None;
            self.save()?;
            return Err(Error::TufRefused(format!(
                "release {} failed on this device before; not tried again automatically",
                offer.release
            )));
        }
        match self.install(&offer, running).await {
            Ok(applied) => Ok(applied),
            Err(e) => {
                if matches!(e, Error::TufRefused(_)) {
                    // Refused for what it is (older, contradicted, tampered): not tried
                    // again until the hub offers something else. Network and metadata
                    // errors keep it pending, to be retried (and resumed).
                    self.record.pending = None;
                }
                self.report(&offer, Step::Failed, Some(e.to_string()), None)?;
                Err(e)
            }
        }
    }

    async fn install(&mut self, offer: &Offer, running: Option<String>) -> Result<Applied> {
        let Some(running) = running else {
            return Err(Error::TufRefused(
                "the running firmware version is unknown (start the agent with --firmware-version): cannot check that the offer is newer".into(),
            ));
        };
        if compare_versions(&offer.version, &running) != Some(Ordering::Greater) {
            return Err(Error::TufRefused(format!(
                "version {} is not newer than the running {running}: refused (rollback protection)",
                offer.version
            )));
        }
        let root = self.state.root().join(UPDATE_ROOT_FILE);
        if !root.exists() {
            return Err(Error::TufRefused(format!(
                "no trusted update root ({}); the maker ships it: `palisade-agent update-root --state-dir DIR ROOT.json`",
                root.display()
            )));
        }
        self.report(offer, Step::Downloading, None, None)?;
        let client = self.tuf_client(offer)?;
        let repo = client.refresh().await?;
        let target = client.trusted_target(&repo, &offer.target)?;
        check_trusted_version(offer, &target)?;
        if let Some(s) = target.custom.get("support_until").and_then(|v| v.as_str()) {
            self.record.support_until = Some(printable(s, 64));
        }
        let downloads = self.state.root().join(DOWNLOAD_DIR);
        fsutil::ensure_private_dir(&downloads)?;
        let hex: String = target.sha256.iter().map(|b| format!("{b:02x}")).collect();
        let part = downloads.join(format!("{hex}.part"));
        client.fetch_resumable(&target, &part).await?;
        self.report(offer, Step::Verified, None, None)?;
        fault("after_download");
        if let Some(cmd) = self.opts.install_command.clone() {
            return self.hand_over(offer, &cmd, &target, &part).await;
        }
        let slots = self.opts.slots();
        let slot = slots.write_inactive(&part, target.length, &target.sha256)?;
        fault("after_write");
        self.report(offer, Step::Installed, None, None)?;
        let mut token = [0u8; 16];
        getrandom::fill(&mut token)
            .map_err(|e| Error::io("random bytes", std::io::Error::other(e.to_string())))?;
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        self.record.trial = Some(offer.clone());
        self.record.in_progress = None;
        self.save()?;
        let info = SlotInfo {
            version: Some(offer.version.clone()),
            release: Some(offer.release.clone()),
            sha256: Some(hex),
        };
        slots.switch(slot, info, &token, crate::unix_now_ms())?;
        fsutil::remove_file(&part)?;
        fault("after_switch");
        Ok(Applied::Restart(token))
    }

    async fn hand_over(
        &mut self,
        offer: &Offer,
        cmd: &str,
        target: &TrustedTarget,
        image: &Path,
    ) -> Result<Applied> {
        // The system installer gets a private copy made from the verified bytes (hashed
        // again while copied), so what it installs is what TUF verified.
        let staging = Slots::new(self.state.root().join("update-handover"));
        let slot = staging.write_inactive(image, target.length, &target.sha256)?;
        let path = staging.image_path(slot);
        let status = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .arg("palisade-install")
            .arg(&path)
            .env("PALISADE_UPDATE_IMAGE", &path)
            .env("PALISADE_UPDATE_VERSION", &offer.version)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| Error::io("start the install command", e))?;
        let _ = std::fs::remove_dir_all(staging.dir());
        if !status.success() {
            return Err(Error::TufRefused(format!(
                "the install command failed ({status})"
            )));
        }
        fsutil::remove_file(image)?;
        self.record.awaiting = Some(offer.clone());
        self.report(offer, Step::Installed, None, None)?;
        // Not interrupted from here on: the next start confirms or reports the fall-back.
        self.record.in_progress = None;
        self.save()?;
        Ok(Applied::HandedOver)
    }

    fn tuf_client(&self, offer: &Offer) -> Result<TufClient> {
        let metadata_dir = self.state.root().join(METADATA_DIR);
        fsutil::ensure_private_dir(&metadata_dir)?;
        if !metadata_dir.join("root.json").exists() {
            crate::tuf::init(&metadata_dir, &self.state.root().join(UPDATE_ROOT_FILE))?;
        }
        match &self.opts.source {
            Source::Urls {
                metadata_url,
                target_base_url,
            } => TufClient::new(&metadata_dir, metadata_url, Some(target_base_url)),
            Source::Hub => {
                let identity = self.state.load_identity()?;
                let base = identity.config.hub_url.trim_end_matches('/').to_owned();
                if !base.starts_with("https://") {
                    return Err(Error::HubUrl(format!("{base} is not https://")));
                }
                let tls = crate::tls::client_config(
                    &identity.ca_pem,
                    Some((identity.cert_chain, identity.key)),
                )?;
                TufClient::with_tls(
                    &metadata_dir,
                    &format!("{base}/tuf/{}/metadata/", offer.product),
                    Some(&format!("{base}/tuf/{}/targets/", offer.product)),
                    Some(tls),
                )
            }
        }
    }
}

/// Re-execute this program with the same arguments and the restart token: the agent's
/// "restart into the new slot". Returns only on failure.
pub fn restart(token: &str) -> Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Error::io("find the agent's own executable", e),
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(RESTART_TOKEN_ENV, token)
        .exec();
    Error::io("restart the agent", err)
}

/// The running firmware version (see [`Updater::running_version`]).
pub fn running_version(state: &StateDir, slots: &Slots) -> Result<Option<String>> {
    let boot = slots.load()?;
    match &boot.info(boot.active).version {
        Some(v) => Ok(Some(v.clone())),
        None => state.firmware_version(),
    }
}

/// The version the offline targets key bound to the target: `custom.version`, else the
/// target name must read `PRODUCT-VERSION` followed by `.` (or nothing). It must be the
/// offer's version; a signed `custom.product` must be the offer's product.
fn check_trusted_version(offer: &Offer, target: &TrustedTarget) -> Result<()> {
    if let Some(p) = target.custom.get("product")
        && p.as_str() != Some(offer.product.as_str())
    {
        return Err(Error::TufRefused(format!(
            "target {} is signed for product {p}, not {}",
            target.name, offer.product
        )));
    }
    let signed = match target.custom.get("version") {
        Some(v) => v.as_str().map(str::to_owned),
        None => {
            let file = target.name.rsplit('/').next().unwrap_or(&target.name);
            let prefix = format!("{}-{}", offer.product, offer.version);
            file.strip_prefix(&prefix)
                .filter(|rest| rest.is_empty() || rest.starts_with('.'))
                .map(|_| offer.version.clone())
        }
    };
    match signed {
        Some(v) if v == offer.version => Ok(()),
        Some(v) => Err(Error::TufRefused(format!(
            "the offer says version {} but the signed target {} is version {v}",
            offer.version, target.name
        ))),
        None => Err(Error::TufRefused(format!(
            "the signed target {} does not name version {} (custom.version or PRODUCT-VERSION name)",
            target.name, offer.version
        ))),
    }
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::Downloading => "downloading",
        Step::Verified => "verified",
        Step::Installed => "installed",
        Step::Committed => "committed",
        Step::RolledBack => "rolled_back",
        Step::Failed => "failed",
    }
}

/// Compare dotted numeric versions (`2.10.0` > `2.9.1`); a pre-release (`-rc1`) is
/// older than its release; build metadata (`+…`) is ignored. `None` if either is not
/// such a version (then nothing is installed).
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    fn parse(v: &str) -> Option<(Vec<u64>, Option<&str>)> {
        let v = v.split('+').next()?;
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (v, None),
        };
        let nums = core
            .split('.')
            .map(|p| p.parse::<u64>().ok())
            .collect::<Option<Vec<_>>>()?;
        Some((nums, pre))
    }
    let (an, ap) = parse(a.trim())?;
    let (bn, bp) = parse(b.trim())?;
    let len = an.len().max(bn.len());
    for i in 0..len {
        let (x, y) = (
            an.get(i).copied().unwrap_or(0),
            bn.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return Some(x.cmp(&y));
        }
    }
    Some(match (ap, bp) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.cmp(y),
    })
}

/// The owner's policy (`update-policy.json`; absent: automatic install on).
pub fn load_policy(state: &StateDir) -> Result<Policy> {
    let path = state.root().join(POLICY_FILE);
    if !path.exists() {
        return Ok(Policy::default());
    }
    let bytes = fsutil::read_bounded(&path, MAX_STATE)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(format!("parse {}", path.display()), e))
}

pub fn save_policy(state: &StateDir, policy: &Policy) -> Result<()> {
    fsutil::ensure_private_dir(state.root())?;
    let json =
        serde_json::to_vec_pretty(policy).map_err(|e| Error::json("update-policy.json", e))?;
    fsutil::write_private(&state.root().join(POLICY_FILE), &json)
}

/// Store the maker's trusted update root (`update-root.json`) after checking that it is
/// a root metadata signed by its own threshold. It is never fetched from the hub.
pub fn save_update_root(state_dir: &Path, root_file: &Path) -> Result<()> {
    let check = tempfile::tempdir().map_err(|e| Error::io("temporary directory", e))?;
    crate::tuf::init(check.path(), root_file)?;
    let bytes = fsutil::read_bounded(&check.path().join("root.json"), MAX_STATE)?;
    fsutil::ensure_private_dir(state_dir)?;
    fsutil::write_private(&state_dir.join(UPDATE_ROOT_FILE), &bytes)?;
    // A legitimate change: sealed (INT-1; nothing to seal with before enrolment).
    crate::integrity::seal(&StateDir::new(state_dir))
}

/// `palisade-agent status`: the owner's view (UPD-3, SUP-3).
pub fn status_text(opts: &Options) -> Result<String> {
    use std::fmt::Write as _;
    let updater = Updater::open(opts.clone())?;
    let state = &updater.state;
    let boot = opts.slots().load()?;
    let mut out = String::new();
    let running = updater.running_version()?;
    let _ = writeln!(
        out,
        "firmware version: {}",
        running.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(out, "agent version: {}", env!("CARGO_PKG_VERSION"));
    match crate::integrity::last_alert(state) {
        Some(alert) => {
            let _ = writeln!(
                out,
                "integrity: ALERT at {}: only the integrity alert is sent to the hub (no telemetry, commands or updates) until the device is repaired",
                format_time(alert.at)
            );
            for what in &alert.what {
                let _ = writeln!(out, "  - {}", printable(what, 200));
            }
        }
        None => {
            let _ = writeln!(out, "integrity: no problem found at the last start");
        }
    }
    let _ = writeln!(
        out,
        "active slot: {}{}",
        boot.active.name(),
        boot.tentative
            .map(|t| format!(" (slot {} on trial)", t.name()))
            .unwrap_or_default()
    );
    let policy = load_policy(state)?;
    let auto = if !state.root().join(UPDATE_ROOT_FILE).exists() {
        "OFF: no trusted update root is installed (the maker ships it: `palisade-agent update-root`)".to_owned()
    } else {
        match policy.allows(crate::unix_now()) {
            Ok(()) => "on".to_owned(),
            Err(why) => {
                format!("OFF: {why}. WARNING: this device does not install updates by itself")
            }
        }
    };
    let _ = writeln!(out, "automatic install: {auto}");
    let record = updater.record();
    match &record.pending {
        Some(p) => {
            let _ = writeln!(
                out,
                "pending update: {} {} (release {}){}",
                p.product,
                p.version,
                p.release,
                if p.security { ", SECURITY update" } else { "" }
            );
            if !p.notes.is_empty() {
                let _ = writeln!(
                    out,
                    "  notes: {}",
                    printable(p.notes.lines().next().unwrap_or_default(), 200)
                );
            }
        }
        None => {
            let _ = writeln!(out, "pending update: none");
        }
    }
    match &record.last_result {
        Some((r, at)) => {
            let _ = writeln!(
                out,
                "last update: {} {} {} at {}{}",
                r.release,
                r.version,
                step_name(r.step),
                format_time(*at),
                r.reason
                    .as_ref()
                    .map(|x| format!(": {x}"))
                    .unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(out, "last update: none");
        }
    }
    let _ = writeln!(
        out,
        "security updates until: {}",
        record.support_until.as_deref().unwrap_or("unknown")
    );
    Ok(out)
}

/// How long `run` waits for the reconnection after a restart into a new slot.
pub fn trial_deadline(opts: &Options) -> Instant {
    Instant::now() + opts.health_timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare() {
        assert_eq!(compare_versions("2.0.0", "1.9.9"), Some(Ordering::Greater));
        assert_eq!(compare_versions("2.10.0", "2.9.1"), Some(Ordering::Greater));
        assert_eq!(compare_versions("2.0", "2.0.0"), Some(Ordering::Equal));
        assert_eq!(compare_versions("2.0.0-rc1", "2.0.0"), Some(Ordering::Less));
        assert_eq!(compare_versions("1.0.0", "1.0.0+b7"), Some(Ordering::Equal));
        assert_eq!(compare_versions("v2", "1"), None);
    }

    #[test]
    fn the_hubs_config_carries_the_owners_switch() {
        let off =
            Policy::from_config(br#"{"disabled_fields":[],"auto_update":"off"}"#).expect("parse");
        assert_eq!(off.map(|p| p.off), Some(true));
        let on =
            Policy::from_config(br#"{"disabled_fields":[],"auto_update":"on"}"#).expect("parse");
        assert_eq!(on, Some(Policy::default()));
        let later = Policy::from_config(
            br#"{"disabled_fields":[],"auto_update":{"postpone_until":1900000000}}"#,
        )
        .expect("parse");
        assert_eq!(later.and_then(|p| p.postpone_until), Some(1_900_000_000));
        // No choice in the console: the local one stands.
        assert_eq!(
            Policy::from_config(br#"{"disabled_fields":[]}"#).expect("parse"),
            None
        );
        for bad in [
            &br#"{"auto_update":"sometimes"}"#[..],
            br#"{"auto_update":{"postpone_until":"soon"}}"#,
            br#"{"auto_update":{"postpone_until":1,"x":2}}"#,
            br#"{"auto_update":7}"#,
        ] {
            assert!(Policy::from_config(bad).is_err());
        }
    }

    #[test]
    fn policy_postpones_and_switches_off() {
        let p = Policy {
            off: false,
            postpone_until: Some(100),
        };
        assert!(p.allows(99).is_err());
        assert!(p.allows(100).is_ok());
        assert!(
            Policy {
                off: true,
                postpone_until: None
            }
            .allows(0)
            .is_err()
        );
    }

    #[test]
    fn offers_are_bounded() {
        let ok = br#"{"release":"r1","product":"M","version":"2.0.0","target":"M-2.0.0.img","security":true,"notes":"x"}"#;
        assert!(Offer::parse(ok).is_ok());
        let bad = br#"{"release":"../x","product":"M","version":"2.0.0","target":"M-2.0.0.img"}"#;
        assert!(Offer::parse(bad).is_err());
    }
}
