//! Staged rollouts that halt themselves (issue 4, UPD-5, UPD-6): the only way a release
//! reaches devices. Admission is deterministic and fair (devices ranked by
//! SHA-256(rollout id, device id)); stage k admits ceil(pct_k × eligible) devices;
//! the progress engine ([`tick`]) halts a rollout whose failure rate passes its
//! threshold, advances it after the soak time once its stage has settled, and
//! completes it after the last stage. The rules are written down in docs/updates.md.

use super::{Offer, is_older, tuf};
use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::Db;
use crate::db::devices::{Device, DeviceStatus};
use crate::db::releases::Release;
use crate::db::rollouts::{
    self as st, COMPLETED, HALTED, NewRollout, PAUSED, ROLLED_BACK, RUNNING, Rollout, StepCount,
};
use crate::error::{Error, Result};
use crate::ids::DeviceId;
use crate::mqtt::Fleet;
use serde::Deserialize;
use std::collections::HashSet;

/// Failure threshold when none is given: a stage halts when more than 5 % of its
/// devices failed — in a stage of fewer than 20 devices, that is the first failure.
pub const DEFAULT_FAILURE_THRESHOLD_PCT: i64 = 5;
/// Stages when none are given.
pub const DEFAULT_STAGES: [u32; 4] = [1, 10, 50, 100];
/// Soak time when none is given.
pub const DEFAULT_SOAK_MINUTES: i64 = 60;
/// The security rollout from an advisory: a canary tenth, then everyone, soon.
pub const SECURITY_STAGES: [u32; 2] = [10, 100];
pub const SECURITY_SOAK_MINUTES: i64 = 15;
/// Bounds on what an operator may ask for.
pub const MAX_STAGES: usize = 10;
pub const MAX_SOAK_MINUTES: i64 = 30 * 24 * 60;
pub const MAX_TARGETS: usize = 10_000;
/// A stage whose devices have not all finished may still advance this long after its
/// soak ended, when at least [`STRAGGLER_COMMITTED_PCT`] of them committed: a device
/// switched off for good does not hold a rollout forever.
pub const STRAGGLER_HOURS: i64 = 24;
pub const STRAGGLER_COMMITTED_PCT: i64 = 90;
/// Devices read per page, and the most pages read (a million devices per model).
const PAGE: i64 = 500;
const MAX_PAGES: usize = 2_000;
/// The engine's period in the running hub.
pub const TICK_SECS: u64 = 15;

/// Steps that count as failures.
const FAILED: [&str; 2] = ["failed", "rolled_back"];

/// What an operator asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub release: String,
    #[serde(default = "default_stages")]
    pub stages: Vec<u32>,
    #[serde(default = "default_soak")]
    pub soak_minutes: i64,
    #[serde(default = "default_threshold")]
    pub failure_threshold_pct: i64,
    /// Optional device list (empty: every device of the release's model).
    #[serde(default)]
    pub devices: Vec<String>,
}

fn default_stages() -> Vec<u32> {
    DEFAULT_STAGES.to_vec()
}
fn default_soak() -> i64 {
    DEFAULT_SOAK_MINUTES
}
fn default_threshold() -> i64 {
    DEFAULT_FAILURE_THRESHOLD_PCT
}

fn refused(why: impl Into<String>) -> Error {
    Error::Conflict(why.into())
}

/// `1,10,50,100` → stages, checked: 1 to [`MAX_STAGES`] percents, strictly
/// increasing, each 1..=100, the last 100.
pub fn parse_stages(text: &str) -> Result<Vec<u32>> {
    let stages = text
        .split(',')
        .map(|s| s.trim().trim_end_matches('%').parse::<u32>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| refused("stages must be percents separated by commas, e.g. 1,10,50,100"))?;
    check_stages(&stages)?;
    Ok(stages)
}

fn check_stages(stages: &[u32]) -> Result<()> {
    if stages.is_empty() || stages.len() > MAX_STAGES {
        return Err(refused(format!("a rollout has 1 to {MAX_STAGES} stages")));
    }
    if stages.windows(2).any(|w| w[0] >= w[1]) || stages[0] == 0 {
        return Err(refused("stage percents must increase, starting above 0"));
    }
    if stages.last() != Some(&100) {
        return Err(refused(
            "the last stage must be 100 (every eligible device)",
        ));
    }
    Ok(())
}

/// The fair, deterministic rank of a device in a rollout: devices are admitted in
/// this order, so no device is always first and the order survives restarts.
pub fn rank(rollout: &str, device: &str) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{rollout}:{device}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// How many of `eligible` devices a stage of `pct` percent admits.
pub fn quota(pct: u32, eligible: usize) -> usize {
    (eligible * pct as usize).div_ceil(100)
}

async fn release_of(db: &Db, rollout: &Rollout) -> Result<Release> {
    db.release(&rollout.release)
        .await?
        .ok_or_else(|| refused("the rollout's release does not exist"))
}

/// Start a rollout (staff; audited). Refusals are `Error::Conflict` with the reason.
pub async fn create(db: &Db, fleet: &Fleet, actor: &Actor, req: &Request) -> Result<Rollout> {
    let outcome = create_inner(db, fleet, actor, req, "").await;
    if let Err(Error::Conflict(why)) = &outcome {
        accounts::audit(
            db,
            actor,
            "rollout.create",
            &req.release,
            Outcome::Denied,
            why,
        )
        .await?;
    }
    outcome
}

async fn create_inner(
    db: &Db,
    fleet: &Fleet,
    actor: &Actor,
    req: &Request,
    replaces: &str,
) -> Result<Rollout> {
    let release = db
        .release(&req.release)
        .await?
        .ok_or_else(|| refused("no such release"))?;
    check_stages(&req.stages)?;
    if !(0..=MAX_SOAK_MINUTES).contains(&req.soak_minutes) {
        return Err(refused(format!(
            "the soak time is 0 to {MAX_SOAK_MINUTES} minutes"
        )));
    }
    if !(0..=100).contains(&req.failure_threshold_pct) {
        return Err(refused(
            "the failure threshold is a percent, 0 to 100 (100 never halts)",
        ));
    }
    if req.devices.len() > MAX_TARGETS {
        return Err(refused(format!("at most {MAX_TARGETS} devices in a list")));
    }
    let mut targets = Vec::with_capacity(req.devices.len());
    for text in &req.devices {
        let device = match DeviceId::parse(text.trim()) {
            Some(id) => db.device(&id).await?,
            None => None,
        };
        match device {
            Some(d) if d.product_id.as_str() == release.product => targets.push(d.id),
            _ => {
                return Err(refused(format!(
                    "{} is not a device of {}",
                    text.chars().take(64).collect::<String>(),
                    release.product
                )));
            }
        }
    }
    // Anti-rollback (UPD-4): devices refuse a lower version, so offering one is refused
    // here too, with the way out.
    if let Some(done) = db.completed_fleet_rollout(&release.product).await?
        && let Some(done_release) = db.release(&done.release).await?
        && is_older(&release.version, &done_release.version)
    {
        return Err(refused(downgrade_message(&release, &done_release)));
    }
    let rollout = db
        .insert_rollout(&NewRollout {
            release: &release.id,
            product: &release.product,
            stages: &req.stages,
            soak_minutes: req.soak_minutes,
            failure_threshold_pct: req.failure_threshold_pct,
            targets: &targets,
            replaces,
            created_by: &actor.name,
        })
        .await?;
    accounts::audit(
        db,
        actor,
        "rollout.create",
        &rollout.id,
        Outcome::Success,
        &format!(
            "{} {} in stages {:?}, soak {} min, halt above {} % failures{}{}",
            release.product,
            release.version,
            rollout.stages,
            rollout.soak_minutes,
            rollout.failure_threshold_pct,
            if targets.is_empty() {
                String::new()
            } else {
                format!(", {} listed devices", targets.len())
            },
            if replaces.is_empty() {
                String::new()
            } else {
                format!(", rolling back {replaces}")
            }
        ),
    )
    .await?;
    admit(db, fleet, &rollout, &release).await?;
    Ok(rollout)
}

fn downgrade_message(lower: &Release, higher: &Release) -> String {
    let next = tuf::Version::parse(&higher.version)
        .map(|v| format!("{}.{}.{}", v.0, v.1, v.2 + 1))
        .unwrap_or_else(|| "a higher version".into());
    format!(
        "refused: devices never install a version lower than the one they run (anti-rollback, UPD-4), so {} {} cannot replace {}. To go back, publish the previous image again under a higher version (for example {next}) with `palisade release publish`, then roll back to that release.",
        lower.product, lower.version, higher.version
    )
}

/// Admit the devices the current stage's share allows (late enrolments included) and
/// offer the release to the connected ones. Returns how many were admitted.
pub async fn admit(db: &Db, fleet: &Fleet, rollout: &Rollout, release: &Release) -> Result<usize> {
    let Some(&pct) = rollout.stages.get(rollout.stage) else {
        return Ok(0);
    };
    let mut admitted = HashSet::new();
    let mut after = String::new();
    for _ in 0..MAX_PAGES {
        let page = db.rollout_admitted(&rollout.id, &after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.clone();
        admitted.extend(page);
    }
    let (mut eligible, mut already) = (0usize, 0usize);
    let mut waiting: Vec<(u64, String)> = Vec::new();
    let mut after = String::new();
    for _ in 0..MAX_PAGES {
        let page = db.rollout_candidates(rollout, &after, PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        after = last.clone();
        for (id, firmware) in page {
            if admitted.contains(&id) {
                eligible += 1;
                already += 1;
            } else if is_older(&firmware, &release.version) {
                eligible += 1;
                waiting.push((rank(&rollout.id, &id), id));
            }
        }
    }
    let need = quota(pct, eligible).saturating_sub(already);
    waiting.sort();
    let offer = Offer::of(release).payload();
    let mut count = 0;
    for (_, id) in waiting.into_iter().take(need) {
        if db.admit_to_rollout(&rollout.id, &id, rollout.stage).await? {
            count += 1;
            if let Some(device) = DeviceId::parse(&id) {
                fleet.send_update(&device, offer.clone());
            }
        }
    }
    Ok(count)
}

/// THE decision of which release a device is offered: the release of the running
/// rollout that admitted it (a device that connects while the current stage is 100 %
/// is admitted now), else the release of the model's newest completed whole-model
/// rollout — always only when the device runs an older version. A paused, halted,
/// aborted or rolled-back rollout offers nothing.
pub async fn offer(db: &Db, device: &Device) -> Result<Option<Offer>> {
    if device.status != DeviceStatus::Active {
        return Ok(None);
    }
    let product = device.product_id.as_str();
    if let Some(r) = db.rollout_of_model(product, &[RUNNING]).await? {
        let release = release_of(db, &r).await?;
        if is_older(&device.firmware_version, &release.version) {
            let mut admitted = db.is_admitted(&r.id, &device.id).await?;
            if !admitted && r.stages.get(r.stage) == Some(&100) {
                let targets = db.rollout_targets(&r.id).await?;
                if targets.is_empty() || targets.iter().any(|t| t == device.id.as_str()) {
                    admitted = db
                        .admit_to_rollout(&r.id, device.id.as_str(), r.stage)
                        .await?
                        || db.is_admitted(&r.id, &device.id).await?;
                }
            }
            if admitted {
                return Ok(Some(Offer::of(&release)));
            }
        }
    }
    if let Some(done) = db.completed_fleet_rollout(product).await?
        && let Some(release) = db.release(&done.release).await?
        && is_older(&device.firmware_version, &release.version)
    {
        return Ok(Some(Offer::of(&release)));
    }
    Ok(None)
}

/// Per-stage progress of a rollout, for the API and the picture.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct StageProgress {
    pub percent: u32,
    pub admitted: i64,
    /// Admitted, no step reported yet.
    pub waiting: i64,
    /// Downloading, verified or installed.
    pub in_progress: i64,
    pub committed: i64,
    /// Failed or rolled back.
    pub failed: i64,
}

/// The progress of each stage from the step counts.
pub fn progress(rollout: &Rollout, counts: &[StepCount]) -> Vec<StageProgress> {
    let mut stages: Vec<StageProgress> = rollout
        .stages
        .iter()
        .map(|&percent| StageProgress {
            percent,
            ..Default::default()
        })
        .collect();
    for c in counts {
        let Some(s) = stages.get_mut(c.stage) else {
            continue;
        };
        s.admitted += c.devices;
        match c.step.as_str() {
            "" => s.waiting += c.devices,
            "committed" => s.committed += c.devices,
            step if FAILED.contains(&step) => s.failed += c.devices,
            _ => s.in_progress += c.devices,
        }
    }
    stages
}

/// What the engine did to one rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    Nothing,
    Admitted(usize),
    Halted(String),
    Advanced(usize),
    Completed,
}

/// One pass of the progress engine over every running rollout (the hub runs it every
/// [`TICK_SECS`]; tests call it directly).
pub async fn tick(db: &Db, fleet: &Fleet, public_url: &str) -> Result<Vec<(String, Moved)>> {
    let mut done = Vec::new();
    for rollout in db.rollouts_in(&[RUNNING]).await? {
        let moved = step(db, fleet, public_url, &rollout).await?;
        done.push((rollout.id, moved));
    }
    Ok(done)
}

fn engine() -> Actor {
    Actor {
        name: "hub".into(),
        source: "rollout-engine".into(),
    }
}

/// Halt, advance, complete or admit late devices, in that order of precedence.
async fn step(db: &Db, fleet: &Fleet, public_url: &str, r: &Rollout) -> Result<Moved> {
    let release = release_of(db, r).await?;
    let counts = db.rollout_step_counts(&r.id).await?;
    let stages = progress(r, &counts);
    let Some(current) = stages.get(r.stage).cloned() else {
        return Ok(Moved::Nothing);
    };
    let all_n: i64 = stages.iter().map(|s| s.admitted).sum();
    let all_f: i64 = stages.iter().map(|s| s.failed).sum();
    let threshold = r.failure_threshold_pct;
    let over = |f: i64, n: i64| n > 0 && f * 100 > threshold * n;
    if all_f > r.accepted_failures && (over(current.failed, current.admitted) || over(all_f, all_n))
    {
        let reason = format!(
            "{} of {} devices failed in stage {} ({} %), {} of {} overall: above the {} % threshold",
            current.failed,
            current.admitted,
            r.stage + 1,
            current.percent,
            all_f,
            all_n,
            threshold
        );
        if db
            .set_rollout_state(&r.id, &[RUNNING], HALTED, &reason)
            .await?
        {
            accounts::audit(
                db,
                &engine(),
                "rollout.halt",
                &r.id,
                Outcome::Success,
                &reason,
            )
            .await?;
            let body = format!(
                "The rollout of {} {} halted itself: {reason}.\n\nNo device is offered the release while it is halted. Look at the failures, then resume (accepting them), abort, or roll back:\n  {}/rollouts/{}\n",
                release.product,
                release.version,
                public_url.trim_end_matches('/'),
                r.id
            );
            for email in db.staff_emails().await? {
                db.enqueue_mail(
                    &email,
                    &format!("Rollout of {} {} halted", release.product, release.version),
                    &body,
                    crate::mail::Category::Security,
                )
                .await?;
            }
            return Ok(Moved::Halted(reason));
        }
        return Ok(Moved::Nothing);
    }
    let now = crate::db::now();
    let soaked = now >= r.stage_started_at + r.soak_minutes * 60;
    let finished = current.committed + current.failed;
    let settled = finished >= current.admitted
        || (now >= r.stage_started_at + r.soak_minutes * 60 + STRAGGLER_HOURS * 3600
            && current.committed * 100 >= STRAGGLER_COMMITTED_PCT * current.admitted);
    if soaked && settled {
        let next = r.stage + 1;
        if next < r.stages.len() {
            if db.advance_rollout(&r.id, next).await? {
                accounts::audit(
                    db,
                    &engine(),
                    "rollout.advance",
                    &r.id,
                    Outcome::Success,
                    &format!(
                        "stage {} ({} %): {} committed, {} failed of {}; now stage {} ({} %)",
                        r.stage + 1,
                        current.percent,
                        current.committed,
                        current.failed,
                        current.admitted,
                        next + 1,
                        r.stages[next]
                    ),
                )
                .await?;
                if let Some(moved) = db.rollout(&r.id).await? {
                    admit(db, fleet, &moved, &release).await?;
                }
                return Ok(Moved::Advanced(next));
            }
            return Ok(Moved::Nothing);
        }
        // The last stage: complete once no eligible device is left waiting outside.
        let late = admit(db, fleet, r, &release).await?;
        if late > 0 {
            return Ok(Moved::Admitted(late));
        }
        if db
            .set_rollout_state(&r.id, &[RUNNING], COMPLETED, "")
            .await?
        {
            accounts::audit(
                db,
                &engine(),
                "rollout.complete",
                &r.id,
                Outcome::Success,
                &format!(
                    "{} {}: {} devices committed, {} failed",
                    release.product,
                    release.version,
                    stages.iter().map(|s| s.committed).sum::<i64>(),
                    all_f
                ),
            )
            .await?;
            return Ok(Moved::Completed);
        }
        return Ok(Moved::Nothing);
    }
    let late = admit(db, fleet, r, &release).await?;
    Ok(if late > 0 {
        Moved::Admitted(late)
    } else {
        Moved::Nothing
    })
}

async fn load(db: &Db, id: &str) -> Result<Rollout> {
    db.rollout(id)
        .await?
        .ok_or_else(|| refused("no such rollout"))
}

/// Pause a running rollout: no device is admitted or offered the release until it
/// is resumed (installs already under way finish).
pub async fn pause(db: &Db, actor: &Actor, id: &str) -> Result<Rollout> {
    let r = load(db, id).await?;
    if !db.set_rollout_state(&r.id, &[RUNNING], PAUSED, "").await? {
        return Err(refused(format!("the rollout is {}, not running", r.state)));
    }
    accounts::audit(
        db,
        actor,
        "rollout.pause",
        &r.id,
        Outcome::Success,
        "paused",
    )
    .await?;
    load(db, id).await
}

/// Resume a paused or halted rollout. Resuming a halted one accepts the failures seen
/// so far: only a new failure (with the rate still above the threshold) halts it again.
pub async fn resume(db: &Db, fleet: &Fleet, actor: &Actor, id: &str) -> Result<Rollout> {
    let r = load(db, id).await?;
    let counts = db.rollout_step_counts(&r.id).await?;
    let failed: i64 = progress(&r, &counts).iter().map(|s| s.failed).sum();
    if !db.resume_rollout(&r.id, failed).await? {
        return Err(refused(format!(
            "the rollout is {}, not paused or halted",
            r.state
        )));
    }
    accounts::audit(
        db,
        actor,
        "rollout.resume",
        &r.id,
        Outcome::Success,
        &format!("resumed from {}; {failed} failures accepted", r.state),
    )
    .await?;
    let r = load(db, id).await?;
    let release = release_of(db, &r).await?;
    admit(db, fleet, &r, &release).await?;
    Ok(r)
}

/// Abort a rollout for good: nothing more is offered from it.
pub async fn abort(db: &Db, actor: &Actor, id: &str) -> Result<Rollout> {
    let r = load(db, id).await?;
    if !db
        .set_rollout_state(&r.id, &[RUNNING, PAUSED, HALTED], st::ABORTED, "")
        .await?
    {
        return Err(refused(format!(
            "the rollout is {}, already finished",
            r.state
        )));
    }
    accounts::audit(
        db,
        actor,
        "rollout.abort",
        &r.id,
        Outcome::Success,
        "aborted",
    )
    .await?;
    load(db, id).await
}

/// Roll back: devices never accept a lower version (UPD-4), so this ends the rollout
/// (state `rolled_back`) and starts one of `to_release` — a NEWER release, typically
/// the previous image re-published under a higher version — to exactly the devices
/// that run the bad release. A lower or equal version is refused, saying why.
/// `Ok(None)` when no device installed the bad release (nothing to replace).
pub async fn roll_back(
    db: &Db,
    fleet: &Fleet,
    actor: &Actor,
    id: &str,
    to_release: &str,
    stages: Option<Vec<u32>>,
) -> Result<Option<Rollout>> {
    let outcome = roll_back_inner(db, fleet, actor, id, to_release, stages).await;
    if let Err(Error::Conflict(why)) = &outcome {
        accounts::audit(db, actor, "rollout.rollback", id, Outcome::Denied, why).await?;
    }
    outcome
}

async fn roll_back_inner(
    db: &Db,
    fleet: &Fleet,
    actor: &Actor,
    id: &str,
    to_release: &str,
    stages: Option<Vec<u32>>,
) -> Result<Option<Rollout>> {
    let r = load(db, id).await?;
    let bad = release_of(db, &r).await?;
    let to = db
        .release(to_release)
        .await?
        .filter(|t| t.product == bad.product)
        .ok_or_else(|| refused(format!("no release of {} with that id", bad.product)))?;
    if !is_older(&bad.version, &to.version) {
        return Err(refused(downgrade_message(&to, &bad)));
    }
    if r.state == COMPLETED
        && db
            .rollout_of_model(&r.product, &[RUNNING, PAUSED, HALTED])
            .await?
            .is_some()
    {
        return Err(refused(format!(
            "another rollout of {} is unfinished; abort it first",
            r.product
        )));
    }
    let devices = db.devices_on_version(&bad.product, &bad.version).await?;
    if !db
        .set_rollout_state(
            &r.id,
            &[RUNNING, PAUSED, HALTED, COMPLETED],
            ROLLED_BACK,
            "",
        )
        .await?
    {
        return Err(refused(format!(
            "the rollout is {}; it cannot be rolled back",
            r.state
        )));
    }
    accounts::audit(
        db,
        actor,
        "rollout.rollback",
        &r.id,
        Outcome::Success,
        &format!(
            "{} {} replaced by {} on {} devices",
            bad.product,
            bad.version,
            to.version,
            devices.len()
        ),
    )
    .await?;
    if devices.is_empty() {
        return Ok(None);
    }
    let request = Request {
        release: to.id.clone(),
        stages: stages.unwrap_or_else(|| vec![100]),
        soak_minutes: 0,
        failure_threshold_pct: DEFAULT_FAILURE_THRESHOLD_PCT,
        devices: devices.iter().map(|d| d.as_str().to_owned()).collect(),
    };
    create_inner(db, fleet, actor, &request, &r.id)
        .await
        .map(Some)
}

/// The one-step security rollout from an advisory (issue 5): the release of the
/// advisory's product whose version is the advisory's fixed version, in
/// [`SECURITY_STAGES`] with a short soak. Refused with a clear message when no
/// such release exists.
pub async fn from_advisory(
    db: &Db,
    fleet: &Fleet,
    actor: &Actor,
    advisory: &crate::db::advisories::Advisory,
) -> Result<Rollout> {
    let mut candidates: Vec<(String, String)> = Vec::new();
    for a in &advisory.affected {
        let fixed = a
            .fixed
            .clone()
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| advisory.fixed_version.clone());
        if !fixed.is_empty()
            && !candidates.contains(&(a.product.as_str().to_owned(), fixed.clone()))
        {
            candidates.push((a.product.as_str().to_owned(), fixed));
        }
    }
    if candidates.is_empty() {
        return Err(refused(
            "the advisory names no fixed version; set it, publish the fixed release, then roll it out",
        ));
    }
    let releases = db.releases().await?;
    for (product, fixed) in &candidates {
        if let Some(release) = releases
            .iter()
            .find(|r| &r.product == product && &r.version == fixed)
        {
            let request = Request {
                release: release.id.clone(),
                stages: SECURITY_STAGES.to_vec(),
                soak_minutes: SECURITY_SOAK_MINUTES,
                failure_threshold_pct: DEFAULT_FAILURE_THRESHOLD_PCT,
                devices: Vec::new(),
            };
            return create(db, fleet, actor, &request).await;
        }
    }
    Err(refused(format!(
        "no published release matches the fixed version ({}); publish it with `palisade release publish` first",
        candidates
            .iter()
            .map(|(p, v)| format!("{p} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}
