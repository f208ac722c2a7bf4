//! `palisade-agent run`: stay connected to the hub, publish queued telemetry, handle
//! commands, and come back after outages.
//!
//! - Telemetry samples are appended to the durable [`DiskQueue`] as they are produced,
//!   connected or not; they leave it only on the hub's PUBACK (RES-1). On every
//!   (re)connection the pending records are sent first, oldest first.
//! - A lost or refused connection is retried after a [`Backoff`] delay (base 1 s, cap
//!   5 min, full jitter from the OS CSPRNG); every attempt is logged. The backoff is
//!   reset only after a connection that stayed up for [`STABLE_CONNECTION`].
//! - Commands are checked by the [`CommandGuard`] (ENC-4); results are queued like
//!   telemetry and published on `devices/{id}/events`.
//! - The certificate is renewed over the connection before it expires ([`renew`]);
//!   the agent then reconnects at once with the new one.
//! - Shutdown (the `shutdown` watch turning true) ends the session cleanly.
//!
//! The queue's small appends and fsyncs are done inline on the (single-threaded)
//! runtime: one device, a few records a second at most, and it keeps the order of
//! "stored on disk, then sent" obvious.

use crate::backoff::Backoff;
use crate::commands::{Action, CommandGuard, Reply};
use crate::fields::DisabledFields;
use crate::limits::Limits;
use crate::mqtt::{Incoming, PubOutcome, Session, Target};
use crate::queue::{DiskQueue, Record, RecordKind};
use crate::renew;
use crate::slots::Slots;
use crate::state::{AgentConfig, StateDir};
use crate::telemetry::{self, Source};
use crate::{Error, Result, integrity, tls, update};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// A connection that lasted this long resets the backoff.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(60);

/// What `palisade-agent run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub state_dir: PathBuf,
    pub source: Source,
    pub limits: Limits,
}

enum InFlight {
    Record(u64),
    /// An update status report (the oldest in the updater's outbox).
    UpdateReport,
    Direct,
    /// A certificate renewal request.
    Csr,
}

/// How a connected session ended without an error.
enum Served {
    /// Shutdown was requested.
    Stopped,
    /// A renewed certificate is stored: reconnect with it now.
    Renewed,
    /// A new slot is tentative: restart into it.
    Restart,
}

/// A renewal request sent, waiting for the certificate.
struct PendingRenewal {
    /// The new key, made on the device for this request (never sent).
    key_pem: String,
    asked: Instant,
}

struct Agent {
    target: Target,
    limits: Limits,
    queue: DiskQueue,
    guard: CommandGuard,
    not_after: i64,
    /// The maker's firmware version, reported beside the agent's own (SUP-3).
    firmware_version: Option<String>,
    started: Instant,
    commands_window: (Instant, u32),
    state: StateDir,
    config: AgentConfig,
    ca_pem: Vec<u8>,
    renewal: Option<PendingRenewal>,
    /// No renewal request before this (after a refusal or no answer).
    renew_not_before: Instant,
    /// Set when a renewed certificate has been stored during this session.
    renewed: bool,
    updates: Option<Updates>,
    /// Telemetry fields the owner switched off (PRIV-3): never queued nor sent.
    disabled: DisabledFields,
}

/// The updater inside `run` (UPD-2, UPD-5): offers from `devices/{id}/update` are kept
/// and applied by a background task; the session publishes its reports.
struct Updates {
    updater: Arc<tokio::sync::Mutex<update::Updater>>,
    /// The planned start of a new slot: commit after the reconnection and the health
    /// check, roll back if the hub is not reached before the deadline.
    trial: Option<(u64, Instant)>,
    interval: Duration,
    next_check: Instant,
    task: Option<tokio::task::JoinHandle<Result<update::Applied>>>,
    reports_in_flight: usize,
    /// The newest offer received, not yet stored.
    incoming: Option<update::Offer>,
    /// A verified slot is tentative: restart with this token once the session is closed.
    restart: Option<String>,
}

/// Save the maker's firmware version in the state directory (SUP-3), to be reported
/// next to the agent's own version from the next connection on. Takes the directory's
/// lock, so it refuses while another agent runs there.
pub fn set_firmware_version(state_dir: &std::path::Path, version: &str) -> Result<()> {
    let state = StateDir::new(state_dir);
    let _lock = state.lock()?;
    state.save_firmware_version(version)
}

/// Run until `shutdown` becomes true.
pub async fn run(opts: RunOptions, shutdown: watch::Receiver<bool>) -> Result<()> {
    run_with_updates(opts, None, shutdown).await
}

/// [`run`] with the updater: update offers are installed as the owner's policy allows;
/// after a restart into a new slot the reconnection and health check decide commit or
/// roll back. When a new slot is switched, the agent closes its session and re-executes
/// itself ([`update::restart`]); this returns only if that fails.
pub async fn run_with_updates(
    opts: RunOptions,
    update_opts: Option<(update::Options, Duration)>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let state = StateDir::new(&opts.state_dir);
    let lock = state.lock()?;
    renew::recover(&state)?;
    // Software integrity first (INT-1): on any finding, or local data that cannot be
    // read back, only the integrity alert leaves the device.
    let slots_dir = update_opts.as_ref().map_or_else(
        || update::Options::default_slots_dir(&opts.state_dir),
        |(u, _)| u.slots_dir.clone(),
    );
    let mut findings = integrity::check(&state, &Slots::new(slots_dir))?;
    let agent = if findings.is_empty() {
        match Agent::open(&opts, update_opts, state.clone()).await {
            Ok(agent) => Some(agent),
            Err(e @ Error::Json { .. }) => {
                findings.push(format!("local data is corrupt: {e}"));
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    integrity::record_alert(&state, &findings)?;
    let Some(mut agent) = agent else {
        return alert_only(&state, &findings, &opts.limits, &mut shutdown).await;
    };

    let (tx, mut rx) = mpsc::channel::<Map<String, Value>>(64);
    let producer = tokio::spawn(telemetry::produce(opts.source, tx, shutdown.clone()));
    let result = agent.connect_loop(&mut rx, &mut shutdown).await;
    drop(rx);
    let _ = tokio::time::timeout(Duration::from_secs(5), producer).await;
    tracing::info!(pending = agent.queue.len(), "agent stopped");
    if let (Ok(()), Some(u)) = (&result, agent.updates)
        && let Some(token) = u.restart
    {
        u.updater.lock().await.mark_stopped()?;
        drop(lock);
        tracing::info!("restarting into the new slot");
        return Err(update::restart(&token));
    }
    result
}

/// Longest wait for the hub's acknowledgement of the integrity alert.
const ALERT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// The integrity check failed (INT-1): connect with the device certificate, publish
/// ONLY the integrity alert on `devices/{id}/events` (retried with backoff until the hub
/// acknowledges it), then stay quiet until stopped. No subscription, no telemetry, no
/// command, no update: the way out is a repaired device (see docs/security-model.md).
async fn alert_only(
    state: &StateDir,
    findings: &[String],
    limits: &Limits,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    for f in findings {
        tracing::error!("integrity: {f}");
    }
    tracing::error!(
        "software integrity check failed: only the integrity alert is sent to the hub; no telemetry, commands or updates until the device is repaired"
    );
    // Without a readable identity the hub cannot be reached: the reason stays in
    // `palisade-agent status`.
    let identity = state.load_identity()?;
    let target = Target {
        host: identity.config.mqtt_host.clone(),
        port: identity.config.mqtt_port,
        device_id: identity.config.device_id.clone(),
        tls: Arc::new(tls::client_config(
            &identity.ca_pem,
            Some((identity.cert_chain, identity.key)),
        )?),
    };
    let doc = json!({
        "event": "integrity",
        "what": integrity::bounded(findings),
        "agent_version": env!("CARGO_PKG_VERSION"),
    });
    let payload = serde_json::to_vec(&doc).map_err(|e| Error::json("integrity alert", e))?;
    let will = json!({"status": "offline", "reason": "connection lost"});
    let topic = target.topic("events");
    let mut backoff = Backoff::new(limits.backoff_base, limits.backoff_cap);
    let mut attempt: u64 = 0;
    loop {
        if attempt > 0 {
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = crate::stopped(shutdown) => return Ok(()),
            }
        }
        attempt += 1;
        let session = tokio::select! {
            r = Session::establish(&target, limits, &will) => r,
            () = crate::stopped(shutdown) => return Ok(()),
        };
        let mut session = match session {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(attempt, "integrity alert: connection failed: {e}");
                continue;
            }
        };
        let sent = tokio::select! {
            r = tokio::time::timeout(ALERT_ACK_TIMEOUT, send_alert(&mut session, &topic, &payload)) => r,
            () = crate::stopped(shutdown) => return Ok(()),
        };
        match sent {
            Ok(Ok(PubOutcome::Retry(why))) => tracing::warn!("integrity alert deferred: {why}"),
            Ok(Ok(outcome)) => {
                session.disconnect().await;
                match outcome {
                    PubOutcome::Accepted => tracing::error!("integrity alert delivered to the hub"),
                    _ => tracing::error!("the hub refused the integrity alert: {outcome:?}"),
                }
                break;
            }
            Ok(Err(e)) => tracing::warn!("integrity alert not delivered: {e}"),
            Err(_) => tracing::warn!("integrity alert: no acknowledgement"),
        }
    }
    crate::stopped(shutdown).await;
    Ok(())
}

/// Publish the alert and wait for its PUBACK. Messages from the hub (commands left in a
/// persistent session) are neither executed nor acknowledged.
async fn send_alert(session: &mut Session, topic: &str, payload: &[u8]) -> Result<PubOutcome> {
    let id = match session.publish(topic, payload, &[]).await? {
        Ok(id) => id,
        Err(why) => return Ok(PubOutcome::Refused(why)),
    };
    loop {
        let wake = session.wait().await;
        for item in session.handle(wake).await? {
            if let Incoming::Acked { packet_id, outcome } = item
                && packet_id == id
            {
                return Ok(outcome);
            }
        }
    }
}

impl Agent {
    /// Open everything a normal run needs (after the integrity check passed). A JSON
    /// error here is local data that cannot be read back: reported like tampering.
    async fn open(
        opts: &RunOptions,
        update_opts: Option<(update::Options, Duration)>,
        state: StateDir,
    ) -> Result<Self> {
        let mut updates = None;
        if let Some((uopts, interval)) = update_opts {
            let deadline = update::trial_deadline(&uopts);
            let mut updater = update::Updater::open(uopts)?;
            let startup = updater.startup(true).await?;
            let trial = match startup {
                update::Startup::Trial { stopped_at_ms } => Some((stopped_at_ms, deadline)),
                update::Startup::Normal => None,
            };
            updates = Some(Updates {
                updater: Arc::new(tokio::sync::Mutex::new(updater)),
                trial,
                interval,
                next_check: Instant::now(),
                task: None,
                reports_in_flight: 0,
                incoming: None,
                restart: None,
            });
        }
        let identity = state.load_identity()?;
        let config = identity.config.clone();
        let ca_pem = identity.ca_pem.clone();
        let tls_config =
            tls::client_config(&identity.ca_pem, Some((identity.cert_chain, identity.key)))?;
        if config.not_after <= crate::unix_now() {
            tracing::error!(
                not_after = config.not_after,
                "the device certificate has expired: the hub will refuse it (re-enrol the device)"
            );
        }
        let target = Target {
            host: config.mqtt_host.clone(),
            port: config.mqtt_port,
            device_id: config.device_id.clone(),
            tls: Arc::new(tls_config),
        };
        let queue = DiskQueue::open(
            state.root(),
            opts.limits.queue_max_records,
            opts.limits.queue_max_bytes,
        )?;
        let guard = CommandGuard::open(state.root())?;
        let firmware_version = match &updates {
            Some(u) => u.updater.lock().await.running_version()?,
            None => state.firmware_version()?,
        };
        let disabled = DisabledFields::load(&state)?;
        tracing::info!(
            device_id = %config.device_id,
            hub = %target.peer(),
            pending = queue.len(),
            last_command_seq = guard.last_seq(),
            "agent starting"
        );
        Ok(Agent {
            target,
            limits: opts.limits.clone(),
            queue,
            guard,
            not_after: config.not_after,
            firmware_version,
            started: Instant::now(),
            commands_window: (Instant::now(), 0),
            state,
            config,
            ca_pem,
            renewal: None,
            renew_not_before: Instant::now(),
            renewed: false,
            updates,
            disabled,
        })
    }

    async fn connect_loop(
        &mut self,
        rx: &mut mpsc::Receiver<Map<String, Value>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<()> {
        let mut backoff = Backoff::new(self.limits.backoff_base, self.limits.backoff_cap);
        let mut attempt: u64 = 0;
        loop {
            if attempt > 0 {
                let delay = backoff.next_delay();
                tracing::info!(
                    "reconnecting in {:.1} s (attempt {})",
                    delay.as_secs_f64(),
                    attempt + 1
                );
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        Some(sample) = rx.recv() => self.enqueue_telemetry(sample)?,
                        () = crate::stopped(shutdown) => return Ok(()),
                    }
                }
            }
            self.check_trial_deadline().await?;
            attempt += 1;
            tracing::info!(attempt, peer = %self.target.peer(), "connecting to the hub");
            let will = json!({"status": "offline", "reason": "connection lost"});
            let (target, limits) = (self.target.clone(), self.limits.clone());
            let connect = Session::establish(&target, &limits, &will);
            tokio::pin!(connect);
            let outcome = loop {
                tokio::select! {
                    r = &mut connect => break r,
                    Some(sample) = rx.recv() => self.enqueue_telemetry(sample)?,
                    () = crate::stopped(shutdown) => return Ok(()),
                }
            };
            match outcome {
                Ok(session) => {
                    tracing::info!(
                        attempt,
                        session_present = session.session_present(),
                        pending = self.queue.len(),
                        "connected"
                    );
                    let since = Instant::now();
                    let served = self.serve(session, rx, shutdown).await;
                    if since.elapsed() >= STABLE_CONNECTION {
                        backoff.reset();
                    }
                    match served {
                        Ok(Served::Stopped | Served::Restart) => return Ok(()),
                        Ok(Served::Renewed) => {
                            // Reconnect at once, with the new certificate.
                            self.reload_identity()?;
                            attempt = 0;
                            backoff.reset();
                            continue;
                        }
                        Err(e @ (Error::Io { .. } | Error::Json { .. })) => {
                            // Local storage failed: the queue can no longer be trusted.
                            return Err(e);
                        }
                        Err(e) => tracing::warn!("connection lost: {e}"),
                    }
                }
                Err(e) => match e.certificate_problem() {
                    Some(_) => tracing::error!(attempt, "connection attempt refused: {e}"),
                    None => tracing::warn!(attempt, "connection attempt failed: {e}"),
                },
            }
        }
    }

    /// One connected session, until shutdown or a renewed certificate.
    async fn serve(
        &mut self,
        mut session: Session,
        rx: &mut mpsc::Receiver<Map<String, Value>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Served> {
        let mut inflight: HashMap<u16, InFlight> = HashMap::new();
        let mut sent: HashSet<u64> = HashSet::new();
        // A renewal asked on an earlier connection is answered on that one only.
        self.renewal = None;
        self.renewed = false;
        let commands = self.target.topic("commands");
        let mut work = session.subscribe(&commands).await?;
        work.extend(session.subscribe(&self.target.topic("certificate")).await?);
        if self.updates.is_some() {
            work.extend(session.subscribe(&self.target.topic("update")).await?);
            self.finish_trial().await?;
        }
        work.extend(session.subscribe(&self.target.topic("config")).await?);
        self.publish_state(&mut session, &mut inflight, "online")
            .await?;
        loop {
            while let Some(item) = work.pop() {
                let more = self
                    .on_incoming(&mut session, item, &mut inflight, &mut sent)
                    .await?;
                work.extend(more);
            }
            if self.renewed {
                session.disconnect().await;
                return Ok(Served::Renewed);
            }
            self.pump(&mut session, &mut inflight, &mut sent).await?;
            self.maybe_renew(&mut session, &mut inflight).await?;
            if self.update_step(&mut session, &mut inflight).await? {
                session.disconnect().await;
                return Ok(Served::Restart);
            }
            let renewal_wake = self.renewal_wake();
            let update_tick = if self.updates.is_some() {
                Instant::now() + Duration::from_secs(1)
            } else {
                renewal_wake
            };
            tokio::select! {
                wake = session.wait() => work = session.handle(wake).await?,
                () = tokio::time::sleep_until(update_tick.into()) => {}
                Some(sample) = rx.recv() => self.enqueue_telemetry(sample)?,
                () = tokio::time::sleep_until(renewal_wake.into()) => {}
                () = crate::stopped(shutdown) => {
                    let _ = self.publish_state(&mut session, &mut inflight, "offline").await;
                    session.disconnect().await;
                    return Ok(Served::Stopped);
                }
            }
        }
    }

    /// The hub was not reached within the trial's deadline: roll back.
    async fn check_trial_deadline(&mut self) -> Result<()> {
        let Some(u) = self.updates.as_mut() else {
            return Ok(());
        };
        if let Some((_, deadline)) = u.trial
            && Instant::now() > deadline
        {
            u.trial = None;
            let mut updater = u.updater.lock().await;
            updater.finish_trial(
                Err("no reconnection to the hub before the health deadline".into()),
                0,
            )?;
            self.firmware_version = updater.running_version()?;
        }
        Ok(())
    }

    /// Connected after a restart into a new slot: run the health command, then commit
    /// (downtime: from the stop before the restart to this reconnection) or roll back.
    async fn finish_trial(&mut self) -> Result<()> {
        self.check_trial_deadline().await?;
        let Some(u) = self.updates.as_mut() else {
            return Ok(());
        };
        let Some((stopped_at_ms, _)) = u.trial.take() else {
            return Ok(());
        };
        let reconnected_ms = crate::unix_now_ms();
        let mut updater = u.updater.lock().await;
        let health = updater.health_check().await;
        // The downtime ends at the reconnection, not after the health command.
        let stopped = stopped_at_ms.saturating_add(crate::unix_now_ms() - reconnected_ms);
        updater.finish_trial(health, stopped)?;
        self.firmware_version = updater.running_version()?;
        Ok(())
    }

    /// An offer on `devices/{id}/update`: remember it and try it now.
    async fn on_offer(&mut self, payload: &[u8]) -> Result<()> {
        let Some(u) = self.updates.as_mut() else {
            return Ok(());
        };
        match update::Offer::parse(payload) {
            Ok(offer) => {
                tracing::info!(release = %offer.release, version = %offer.version, security = offer.security, "update offered");
                if offer.security && !offer.notes.is_empty() {
                    tracing::warn!(
                        "security update {}: {}",
                        offer.version,
                        update::printable(&offer.notes, 2000)
                    );
                }
                // Remembered (in update.json) as soon as the updater is free: an
                // update in progress holds it.
                u.incoming = Some(offer);
                u.next_check = Instant::now();
            }
            Err(e) => tracing::warn!("ignored an invalid update offer: {e}"),
        }
        Ok(())
    }

    /// Publish update reports, start a pending update in the background, and notice
    /// when it is done. Returns true when the agent must restart into a new slot.
    async fn update_step(
        &mut self,
        session: &mut Session,
        inflight: &mut HashMap<u16, InFlight>,
    ) -> Result<bool> {
        let Some(u) = self.updates.as_mut() else {
            return Ok(false);
        };
        if u.task.as_ref().is_some_and(|t| t.is_finished())
            && let Some(task) = u.task.take()
        {
            match task.await {
                Ok(Ok(update::Applied::Restart(token))) => u.restart = Some(token),
                Ok(Ok(update::Applied::Deferred(_) | update::Applied::UpToDate)) => {
                    u.next_check = Instant::now() + u.interval;
                }
                Ok(Ok(update::Applied::HandedOver)) => u.next_check = Instant::now() + u.interval,
                Ok(Err(e)) => {
                    tracing::warn!("update not installed: {e}");
                    u.next_check = Instant::now() + u.interval;
                }
                Err(e) => {
                    tracing::error!("update task failed: {e}");
                    u.next_check = Instant::now() + u.interval;
                }
            }
        }
        if u.incoming.is_some()
            && let Ok(mut updater) = u.updater.try_lock()
            && let Some(offer) = u.incoming.take()
        {
            updater.remember(offer)?;
        }
        let topic = self.target.topic("update/status");
        if u.reports_in_flight == 0
            && let Ok(updater) = u.updater.try_lock()
        {
            let reports: Vec<update::Report> = updater.outbox().to_vec();
            drop(updater);
            for report in reports {
                let payload =
                    serde_json::to_vec(&report).map_err(|e| Error::json("update report", e))?;
                match session.publish(&topic, &payload, &[]).await? {
                    Ok(packet_id) => {
                        inflight.insert(packet_id, InFlight::UpdateReport);
                        u.reports_in_flight += 1;
                    }
                    Err(reason) => {
                        tracing::warn!("update report not published: {reason}");
                        break;
                    }
                }
            }
        }
        if u.restart.is_some() {
            // Let the reports reach the hub first (bounded by the in-flight window).
            return Ok(u.reports_in_flight == 0);
        }
        if u.task.is_none() && u.trial.is_none() && Instant::now() >= u.next_check {
            u.next_check = Instant::now() + u.interval;
            let updater = Arc::clone(&u.updater);
            u.task = Some(tokio::spawn(async move {
                let mut updater = updater.lock().await;
                match updater.record().pending.clone() {
                    Some(offer) => updater.apply(offer, false).await,
                    None => Ok(update::Applied::UpToDate),
                }
            }));
        }
        Ok(false)
    }

    /// Load the (renewed) identity and use it for the next connections.
    fn reload_identity(&mut self) -> Result<()> {
        let identity = self.state.load_identity()?;
        let tls_config =
            tls::client_config(&identity.ca_pem, Some((identity.cert_chain, identity.key)))?;
        self.target.tls = Arc::new(tls_config);
        self.ca_pem = identity.ca_pem;
        self.not_after = identity.config.not_after;
        self.config = identity.config;
        Ok(())
    }

    /// When the loop must wake up for renewal: the answer's deadline, or when the
    /// certificate is due (checked at least hourly, so a changed clock is noticed).
    fn renewal_wake(&self) -> Instant {
        let now = Instant::now();
        if let Some(pending) = &self.renewal {
            return pending.asked + self.limits.renew_answer_timeout;
        }
        let due_in =
            renew::due_at(&self.config, self.limits.renew_remaining_percent) - crate::unix_now();
        let due = now
            + Duration::from_secs(u64::try_from(due_in).unwrap_or(0))
                .min(Duration::from_secs(3600));
        due.max(self.renew_not_before)
    }

    /// Ask for a new certificate if it is due: a new key pair made here, its CSR
    /// published on `devices/{id}/certificate/csr`.
    async fn maybe_renew(
        &mut self,
        session: &mut Session,
        inflight: &mut HashMap<u16, InFlight>,
    ) -> Result<()> {
        let now = Instant::now();
        if let Some(pending) = &self.renewal {
            if now.duration_since(pending.asked) >= self.limits.renew_answer_timeout {
                tracing::warn!("the hub did not answer the certificate renewal request");
                self.renewal = None;
                self.renew_not_before = now + self.limits.renew_retry;
            }
            return Ok(());
        }
        if now < self.renew_not_before
            || crate::unix_now() < renew::due_at(&self.config, self.limits.renew_remaining_percent)
        {
            return Ok(());
        }
        let (key_pem, csr_pem) = crate::enroll::generate_key_and_csr()?;
        match session
            .publish(
                &self.target.topic("certificate/csr"),
                csr_pem.as_bytes(),
                &[],
            )
            .await?
        {
            Ok(packet_id) => {
                inflight.insert(packet_id, InFlight::Csr);
                self.renewal = Some(PendingRenewal {
                    key_pem,
                    asked: now,
                });
                tracing::info!(
                    not_after = self.config.not_after,
                    "certificate renewal requested"
                );
            }
            Err(reason) => {
                tracing::warn!("certificate renewal request not sent: {reason}");
                self.renew_not_before = now + self.limits.renew_retry;
            }
        }
        Ok(())
    }

    /// The hub's answer to a renewal request: check it against the new key, store it
    /// (the commit point), and reconnect with it.
    fn on_certificate(&mut self, payload: &[u8]) -> Result<()> {
        let Some(pending) = self.renewal.take() else {
            tracing::warn!("a certificate arrived that was not asked for: ignored");
            return Ok(());
        };
        match renew::accept(payload, &pending.key_pem, &self.ca_pem, crate::unix_now()) {
            Ok(renewal) => {
                self.config = renew::commit(&self.state, &renewal)?;
                self.not_after = self.config.not_after;
                self.renewed = true;
                tracing::info!(
                    not_after = self.config.not_after,
                    "certificate renewed; reconnecting with it"
                );
            }
            Err(e) => {
                tracing::warn!("renewed certificate not usable: {e}");
                self.renew_not_before = Instant::now() + self.limits.renew_retry;
            }
        }
        Ok(())
    }

    /// The hub sent the switched-off fields (PRIV-3): keep them, apply from now on.
    fn on_config(&mut self, payload: &[u8]) -> Result<()> {
        match DisabledFields::parse(payload) {
            Ok(disabled) => {
                if disabled != self.disabled {
                    disabled.save(&self.state)?;
                    tracing::info!("telemetry settings from the hub applied");
                    self.disabled = disabled;
                }
            }
            Err(e) => tracing::warn!("ignored telemetry settings from the hub: {e}"),
        }
        // UPD-3: the owner's automatic-install switch from the console, kept exactly as
        // `palisade-agent auto-update` keeps it (the updater reads it before installing).
        match crate::update::Policy::from_config(payload) {
            Ok(Some(policy)) => {
                if crate::update::load_policy(&self.state).ok().as_ref() != Some(&policy) {
                    crate::update::save_policy(&self.state, &policy)?;
                    match policy.allows(crate::unix_now()) {
                        Ok(()) => tracing::info!("automatic install switched on by the owner"),
                        Err(why) => tracing::warn!("automatic install {why}"),
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("ignored the update setting from the hub: {e}"),
        }
        Ok(())
    }

    fn enqueue_telemetry(&mut self, sample: Map<String, Value>) -> Result<()> {
        let Some(sample) = self.disabled.apply(sample) else {
            return Ok(()); // only switched-off fields: nothing leaves the device
        };
        match self
            .queue
            .push(RecordKind::Telemetry, Value::Object(sample))
        {
            Ok(seq) => {
                tracing::debug!(seq, pending = self.queue.len(), "telemetry queued");
                Ok(())
            }
            Err(e @ Error::Invalid { .. }) => {
                tracing::warn!("telemetry sample not queued: {e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Send pending records, oldest first, as far as the in-flight window allows.
    async fn pump(
        &mut self,
        session: &mut Session,
        inflight: &mut HashMap<u16, InFlight>,
        sent: &mut HashSet<u64>,
    ) -> Result<()> {
        let records_in_flight = inflight
            .values()
            .filter(|f| matches!(f, InFlight::Record(_)))
            .count();
        let mut room = self.limits.mqtt_inflight.saturating_sub(records_in_flight);
        if let Some(vacancy) = session.send_vacancy() {
            room = room.min(usize::from(vacancy));
        }
        if room == 0 {
            return Ok(());
        }
        let batch: Vec<Record> = self
            .queue
            .pending()
            .filter(|r| !sent.contains(&r.seq))
            .take(room)
            .cloned()
            .collect();
        for record in batch {
            let topic = match record.kind {
                RecordKind::Telemetry => self.target.topic("telemetry"),
                RecordKind::Event => self.target.topic("events"),
            };
            // Queued before a field was switched off: it goes without that field.
            let body = match (&record.kind, &record.payload) {
                (RecordKind::Telemetry, Value::Object(sample)) if !self.disabled.is_empty() => {
                    match self.disabled.apply(sample.clone()) {
                        Some(left) => Value::Object(left),
                        None => {
                            self.queue.ack(record.seq)?;
                            continue;
                        }
                    }
                }
                _ => record.payload.clone(),
            };
            let payload =
                serde_json::to_vec(&body).map_err(|e| Error::json("record payload", e))?;
            let props = [("recorded_at", record.at.to_string())];
            match session.publish(&topic, &payload, &props).await? {
                Ok(packet_id) => {
                    inflight.insert(packet_id, InFlight::Record(record.seq));
                    sent.insert(record.seq);
                }
                Err(reason) => {
                    tracing::warn!(
                        seq = record.seq,
                        "record cannot be sent ({reason}): removed"
                    );
                    self.queue.refuse(record.seq)?;
                }
            }
        }
        Ok(())
    }

    async fn on_incoming(
        &mut self,
        session: &mut Session,
        item: Incoming,
        inflight: &mut HashMap<u16, InFlight>,
        sent: &mut HashSet<u64>,
    ) -> Result<Vec<Incoming>> {
        match item {
            Incoming::Acked { packet_id, outcome } => {
                let flight = inflight.remove(&packet_id);
                if matches!(flight, Some(InFlight::Csr)) && outcome != PubOutcome::Accepted {
                    tracing::warn!("the hub refused the certificate renewal request: {outcome:?}");
                    self.renewal = None;
                    self.renew_not_before = Instant::now() + self.limits.renew_retry;
                }
                if let (Some(InFlight::UpdateReport), Some(u)) = (&flight, self.updates.as_mut()) {
                    u.reports_in_flight = u.reports_in_flight.saturating_sub(1);
                    // Refused reports are dropped too (never resent in a loop).
                    if !matches!(outcome, PubOutcome::Retry(_)) {
                        u.updater.lock().await.acknowledge(1)?;
                    }
                }
                if let Some(InFlight::Record(seq)) = flight {
                    match outcome {
                        PubOutcome::Accepted => {
                            sent.remove(&seq);
                            self.queue.ack(seq)?;
                        }
                        PubOutcome::Refused(reason) => {
                            sent.remove(&seq);
                            tracing::warn!(seq, "the hub refused a record ({reason}): removed");
                            self.queue.refuse(seq)?;
                        }
                        PubOutcome::Retry(reason) => {
                            // Stays queued (and in `sent`): resent on the next connection.
                            tracing::warn!(seq, "the hub deferred a record ({reason})");
                        }
                    }
                }
                Ok(Vec::new())
            }
            Incoming::Subscribed { granted, reason } => {
                if granted {
                    tracing::info!("subscribed");
                } else {
                    tracing::error!("the hub refused a subscription ({reason})");
                }
                Ok(Vec::new())
            }
            Incoming::Message {
                packet_id,
                topic,
                payload,
            } => {
                if topic == self.target.topic("commands") {
                    self.on_command(session, inflight, &payload).await?;
                } else if topic == self.target.topic("certificate") {
                    self.on_certificate(&payload)?;
                } else if topic == self.target.topic("update") {
                    self.on_offer(&payload).await?;
                } else if topic == self.target.topic("config") {
                    self.on_config(&payload)?;
                } else {
                    tracing::warn!("ignored a message on unexpected topic {topic:?}");
                }
                match packet_id {
                    Some(id) => session.puback(id).await,
                    None => Ok(Vec::new()),
                }
            }
        }
    }

    async fn on_command(
        &mut self,
        session: &mut Session,
        inflight: &mut HashMap<u16, InFlight>,
        payload: &[u8],
    ) -> Result<()> {
        let now = Instant::now();
        if now.duration_since(self.commands_window.0) >= Duration::from_secs(1) {
            self.commands_window = (now, 0);
        }
        self.commands_window.1 += 1;
        let reply = if self.commands_window.1 > self.limits.commands_per_second {
            let seq = serde_json::from_slice::<Value>(payload)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64));
            Reply::rejected(seq, "too many commands: rate limited")
        } else {
            match self
                .guard
                .admit(payload, self.limits.command_bytes, crate::unix_now())
            {
                Ok((seq, Action::Ping)) => Reply::ok(seq),
                Ok((seq, Action::ReportState)) => {
                    self.publish_state(session, inflight, "online").await?;
                    Reply::ok(seq)
                }
                Err(reply) => reply,
            }
        };
        match &reply.reason {
            None => tracing::info!(seq = ?reply.command_seq, "command executed"),
            Some(reason) => tracing::warn!(seq = ?reply.command_seq, "command rejected: {reason}"),
        }
        self.queue.push(RecordKind::Event, reply.to_json())?;
        Ok(())
    }

    fn state_document(&self, status: &str) -> Value {
        let counters = self.queue.counters();
        let mut doc = json!({
            "status": status,
            "agent_version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": self.started.elapsed().as_secs(),
            "queue_pending": self.queue.len(),
            "queue_dropped": counters.dropped,
            "queue_refused": counters.refused,
            "last_command_seq": self.guard.last_seq(),
            "certificate_not_after": self.not_after,
        });
        if let (Some(v), Some(map)) = (&self.firmware_version, doc.as_object_mut()) {
            map.insert("firmware_version".into(), Value::String(v.clone()));
        }
        doc
    }

    /// Publish the agent's state on `devices/{id}/state` (QoS 1, not queued: it is a
    /// snapshot, and a newer one follows every connection).
    async fn publish_state(
        &mut self,
        session: &mut Session,
        inflight: &mut HashMap<u16, InFlight>,
        status: &str,
    ) -> Result<()> {
        let doc = self.state_document(status);
        let payload = serde_json::to_vec(&doc).map_err(|e| Error::json("state", e))?;
        match session
            .publish(&self.target.topic("state"), &payload, &[])
            .await?
        {
            Ok(packet_id) => {
                inflight.insert(packet_id, InFlight::Direct);
            }
            Err(reason) => tracing::warn!("state not published: {reason}"),
        }
        Ok(())
    }
}
