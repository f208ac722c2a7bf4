//! Staged rollouts (issue 4, UPD-5, UPD-6): the rollout rows, their optional device
//! lists, and the devices each one admitted with the last step they reported. The
//! rules (admission, halting, advancing) live in `crate::updates::rollouts`.

use super::{Db, now, optional};
use crate::error::{Error, Result};
use crate::ids::DeviceId;
use serde::Serialize;
use sqlx::Row;

/// Rollout states. `running`, `paused` and `halted` are unfinished: at most one per
/// model (a unique partial index).
pub const RUNNING: &str = "running";
pub const PAUSED: &str = "paused";
pub const HALTED: &str = "halted";
pub const COMPLETED: &str = "completed";
pub const ABORTED: &str = "aborted";
pub const ROLLED_BACK: &str = "rolled_back";

/// A rollout as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    pub id: String,
    pub release: String,
    pub product: String,
    pub state: String,
    /// Percent of the eligible devices admitted by each stage, increasing, ending at 100.
    pub stages: Vec<u32>,
    /// Index into `stages` of the current stage.
    pub stage: usize,
    pub stage_started_at: i64,
    pub soak_minutes: i64,
    pub failure_threshold_pct: i64,
    /// Failures an operator accepted when resuming a halted rollout (not counted again).
    pub accepted_failures: i64,
    pub halted_reason: String,
    /// For a roll-back rollout: the rollout it replaces ("" otherwise).
    pub replaces: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What to store for a new rollout.
pub struct NewRollout<'a> {
    pub release: &'a str,
    pub product: &'a str,
    pub stages: &'a [u32],
    pub soak_minutes: i64,
    pub failure_threshold_pct: i64,
    pub targets: &'a [DeviceId],
    pub replaces: &'a str,
    pub created_by: &'a str,
}

/// How many admitted devices of one stage last reported one step ("" = none yet).
#[derive(Debug, Clone, Serialize)]
pub struct StepCount {
    pub stage: usize,
    pub step: String,
    pub devices: i64,
}

const COLUMNS: &str = "id, release_id, product_id, state, stages, stage, stage_started_at, soak_minutes, \
     failure_threshold_pct, accepted_failures, halted_reason, replaces, created_by, created_at, updated_at";

fn from_row(row: &sqlx::any::AnyRow) -> Result<Rollout> {
    let stages: String = row.try_get("stages")?;
    Ok(Rollout {
        id: row.try_get("id")?,
        release: row.try_get("release_id")?,
        product: row.try_get("product_id")?,
        state: row.try_get("state")?,
        stages: stages
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
        stage: usize::try_from(row.try_get::<i64, _>("stage")?).unwrap_or(0),
        stage_started_at: row.try_get("stage_started_at")?,
        soak_minutes: row.try_get("soak_minutes")?,
        failure_threshold_pct: row.try_get("failure_threshold_pct")?,
        accepted_failures: row.try_get("accepted_failures")?,
        halted_reason: row.try_get("halted_reason")?,
        replaces: row.try_get("replaces")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The `state IN (...)` list for a set of states (only the constants above).
fn state_list(states: &[&'static str]) -> String {
    states
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Db {
    /// Store a rollout and its device list. A second unfinished rollout of the same
    /// model is refused with `Error::Conflict`.
    pub async fn insert_rollout(&self, new: &NewRollout<'_>) -> Result<Rollout> {
        let id = data_encoding::HEXLOWER.encode(&palisade_crypto::token::random_bytes::<16>());
        let at = now();
        let stages = new
            .stages
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(
            "INSERT INTO rollouts (id, release_id, product_id, state, stages, stage, stage_started_at, soak_minutes, \
             failure_threshold_pct, accepted_failures, halted_reason, replaces, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, 'running', $4, 0, $5, $6, $7, 0, '', $8, $9, $10, $11)",
        )
        .bind(&id)
        .bind(new.release)
        .bind(new.product)
        .bind(&stages)
        .bind(at)
        .bind(new.soak_minutes)
        .bind(new.failure_threshold_pct)
        .bind(new.replaces)
        .bind(new.created_by)
        .bind(at)
        .bind(at)
        .execute(&mut *tx)
        .await;
        match done {
            Ok(_) => {}
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                return Err(Error::Conflict(format!(
                    "a rollout of {} is already running, paused or halted; resume, finish or abort it first (one rollout per model at a time)",
                    new.product
                )));
            }
            Err(e) => return Err(e.into()),
        }
        for device in new.targets {
            sqlx::query(
                "INSERT INTO rollout_targets (rollout_id, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&id)
            .bind(device.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.rollout(&id)
            .await?
            .ok_or_else(|| Error::Conflict("the rollout vanished".into()))
    }

    pub async fn rollout(&self, id: &str) -> Result<Option<Rollout>> {
        let sql = format!("SELECT {COLUMNS} FROM rollouts WHERE id = $1");
        optional(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_one(self.pool())
                .await,
        )?
        .map(|r| from_row(&r))
        .transpose()
    }

    /// The newest rollouts first (at most `limit`).
    pub async fn rollouts(&self, limit: i64) -> Result<Vec<Rollout>> {
        let sql = format!("SELECT {COLUMNS} FROM rollouts ORDER BY created_at DESC, id LIMIT $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(from_row)
            .collect()
    }

    /// Rollouts in one of `states` (few: at most one unfinished per model).
    pub async fn rollouts_in(&self, states: &[&'static str]) -> Result<Vec<Rollout>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM rollouts WHERE state IN ({}) ORDER BY created_at, id",
            state_list(states)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(from_row)
            .collect()
    }

    /// The model's rollout in one of `states`, the newest if several.
    pub async fn rollout_of_model(
        &self,
        product: &str,
        states: &[&'static str],
    ) -> Result<Option<Rollout>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM rollouts WHERE product_id = $1 AND state IN ({}) ORDER BY created_at DESC, id LIMIT 1",
            state_list(states)
        );
        optional(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(product)
                .fetch_one(self.pool())
                .await,
        )?
        .map(|r| from_row(&r))
        .transpose()
    }

    /// The newest completed rollout of a model to the whole model (no device list):
    /// its release is what the model's devices are generally offered.
    pub async fn completed_fleet_rollout(&self, product: &str) -> Result<Option<Rollout>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM rollouts WHERE product_id = $1 AND state = 'completed' \
             AND NOT EXISTS (SELECT 1 FROM rollout_targets t WHERE t.rollout_id = rollouts.id) \
             ORDER BY updated_at DESC, created_at DESC LIMIT 1"
        );
        optional(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(product)
                .fetch_one(self.pool())
                .await,
        )?
        .map(|r| from_row(&r))
        .transpose()
    }

    /// Move a rollout from one of `from` to `to` (with a reason for `halted`). False
    /// when it was not in one of `from` (someone else moved it first).
    pub async fn set_rollout_state(
        &self,
        id: &str,
        from: &[&'static str],
        to: &'static str,
        reason: &str,
    ) -> Result<bool> {
        let sql = format!(
            "UPDATE rollouts SET state = $1, halted_reason = $2, updated_at = $3 WHERE id = $4 AND state IN ({})",
            state_list(from)
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to)
            .bind(reason)
            .bind(now())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Resume a paused or halted rollout, accepting `accepted_failures` failures seen
    /// so far (they do not halt it again).
    pub async fn resume_rollout(&self, id: &str, accepted_failures: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE rollouts SET state = 'running', halted_reason = '', accepted_failures = $1, updated_at = $2 \
             WHERE id = $3 AND state IN ('paused', 'halted')",
        )
        .bind(accepted_failures)
        .bind(now())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Start stage `stage` of a running rollout (only from `stage - 1`).
    pub async fn advance_rollout(&self, id: &str, stage: usize) -> Result<bool> {
        let stage = i64::try_from(stage).unwrap_or(i64::MAX);
        let at = now();
        let done = sqlx::query(
            "UPDATE rollouts SET stage = $1, stage_started_at = $2, updated_at = $3 WHERE id = $4 AND state = 'running' AND stage = $5",
        )
        .bind(stage)
        .bind(at)
        .bind(at)
        .bind(id)
        .bind(stage - 1)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Move the current stage's start (tests and the demo shorten a soak this way).
    pub async fn set_rollout_stage_started(&self, id: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE rollouts SET stage_started_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The rollout's device list (empty: the whole model).
    pub async fn rollout_targets(&self, id: &str) -> Result<Vec<String>> {
        sqlx::query(
            "SELECT device_id FROM rollout_targets WHERE rollout_id = $1 ORDER BY device_id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| Ok(r.try_get::<String, _>("device_id")?))
        .collect()
    }

    /// One page of the active devices a rollout may admit (its model, or its device
    /// list), by id after `after`: `(device id, reported firmware)`.
    pub async fn rollout_candidates(
        &self,
        rollout: &Rollout,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>> {
        sqlx::query(
            "SELECT id, firmware_version FROM devices WHERE product_id = $1 AND status = 'active' AND id > $2 \
             AND (NOT EXISTS (SELECT 1 FROM rollout_targets t WHERE t.rollout_id = $3) \
                  OR id IN (SELECT device_id FROM rollout_targets WHERE rollout_id = $4)) \
             ORDER BY id LIMIT $5",
        )
        .bind(&rollout.product)
        .bind(after)
        .bind(&rollout.id)
        .bind(&rollout.id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("firmware_version")?)))
        .collect()
    }

    /// One page of the devices a rollout admitted, by id after `after`.
    pub async fn rollout_admitted(&self, id: &str, after: &str, limit: i64) -> Result<Vec<String>> {
        sqlx::query(
            "SELECT device_id FROM rollout_devices WHERE rollout_id = $1 AND device_id > $2 ORDER BY device_id LIMIT $3",
        )
        .bind(id)
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| Ok(r.try_get::<String, _>("device_id")?))
        .collect()
    }

    /// Admit a device at `stage`. False when it was admitted already.
    pub async fn admit_to_rollout(&self, id: &str, device: &str, stage: usize) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO rollout_devices (rollout_id, device_id, stage, step, reason, updated_at) \
             VALUES ($1, $2, $3, '', '', $4) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(device)
        .bind(i64::try_from(stage).unwrap_or(i64::MAX))
        .bind(now())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn is_admitted(&self, id: &str, device: &DeviceId) -> Result<bool> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM rollout_devices WHERE rollout_id = $1 AND device_id = $2",
        )
        .bind(id)
        .bind(device.as_str())
        .fetch_one(self.pool())
        .await?
        .try_get("n")?;
        Ok(n > 0)
    }

    /// Record the step a device reported for `release` in every rollout of that
    /// release that admitted it.
    pub async fn record_rollout_step(
        &self,
        device: &DeviceId,
        release: &str,
        step: &str,
        reason: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE rollout_devices SET step = $1, reason = $2, updated_at = $3 WHERE device_id = $4 \
             AND rollout_id IN (SELECT id FROM rollouts WHERE release_id = $5)",
        )
        .bind(step)
        .bind(reason)
        .bind(now())
        .bind(device.as_str())
        .bind(release)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Admitted devices per stage and last step.
    pub async fn rollout_step_counts(&self, id: &str) -> Result<Vec<StepCount>> {
        sqlx::query(
            "SELECT stage, step, COUNT(*) AS n FROM rollout_devices WHERE rollout_id = $1 GROUP BY stage, step ORDER BY stage, step",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(StepCount {
                stage: usize::try_from(r.try_get::<i64, _>("stage")?).unwrap_or(0),
                step: r.try_get("step")?,
                devices: r.try_get("n")?,
            })
        })
        .collect()
    }

    /// The devices of a model reporting firmware `version` (those that installed it).
    pub async fn devices_on_version(&self, product: &str, version: &str) -> Result<Vec<DeviceId>> {
        Ok(sqlx::query(
            "SELECT id FROM devices WHERE product_id = $1 AND firmware_version = $2 AND status = 'active' ORDER BY id",
        )
        .bind(product)
        .bind(version)
        .fetch_all(self.pool())
        .await?
        .iter()
        .filter_map(|r| r.try_get::<String, _>("id").ok())
        .filter_map(|id| DeviceId::parse(&id))
        .collect())
    }
}
