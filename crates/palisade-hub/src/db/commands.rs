//! Commands from the hub to a device (ENC-4): each has a sequence number per device
//! (1, 2, 3, …, allocated atomically on both engines) and an expiry, so the agent can
//! refuse a replayed or stale command. The hub records when the device acknowledged
//! delivery (its PUBACK) and the result it reported on `devices/{id}/events`.

use super::{Db, now};
use crate::error::{Error, Result};
use crate::ids::DeviceId;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// Largest `args` document of a command (serialised JSON).
pub const MAX_ARGS_BYTES: usize = 4 * 1024;
/// Shortest and longest lifetime of a command.
pub const TTL_SECS: std::ops::RangeInclusive<i64> = 10..=86_400;
/// Longest reason stored with a result (longer ones are cut).
pub const MAX_REASON_CHARS: usize = 256;
/// Commands sent to a device when it (re)subscribes, at most.
pub const MAX_PENDING: i64 = 64;
/// How often a racing sequence allocation is retried (PostgreSQL).
const SEQ_ATTEMPTS: usize = 8;

/// A command name: `[a-z][a-z0-9-]{0,31}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CommandName(String);

impl CommandName {
    pub fn parse(s: &str) -> Option<Self> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let ok = first_ok
            && s.len() <= 32
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        ok.then(|| Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the device reported for a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandResult {
    Ok,
    Rejected,
}

impl CommandResult {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ok" => Some(Self::Ok),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
        }
    }
}

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandStatus {
    /// Not yet acknowledged by the device, and not expired.
    Pending,
    /// Not delivered before it expired.
    Expired,
    /// The device acknowledged it; no result yet.
    Delivered,
    /// The device reported "ok".
    Ok,
    /// The device reported "rejected".
    Rejected,
}

/// A command as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Command {
    pub device_id: DeviceId,
    pub seq: u64,
    pub name: String,
    pub args: serde_json::Value,
    pub created_at: i64,
    pub expires_at: i64,
    pub created_by: String,
    pub delivered_at: Option<i64>,
    pub result: Option<CommandResult>,
    pub reason: Option<String>,
    pub completed_at: Option<i64>,
    pub status: CommandStatus,
}

impl Command {
    /// The message the agent receives on `devices/{id}/commands`.
    pub fn payload(&self) -> Vec<u8> {
        serde_json::json!({
            "seq": self.seq,
            "expires_at": self.expires_at,
            "name": self.name,
            "args": self.args,
        })
        .to_string()
        .into_bytes()
    }
}

/// What became of a reported result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultRecorded {
    /// The first result for this command: stored.
    Recorded,
    /// The command already has a result (a repeated delivery answered again): kept.
    AlreadyRecorded,
    /// This device has no command with that seq.
    Unknown,
}

macro_rules! command_columns {
    () => {
        "device_id, seq, name, args, created_at, expires_at, created_by, \
         delivered_at, result, reason, completed_at"
    };
}

fn command_from_row(row: &AnyRow, at: i64) -> Result<Command> {
    let seq: i64 = row.try_get("seq")?;
    let args: String = row.try_get("args")?;
    let delivered_at: Option<i64> = row.try_get("delivered_at")?;
    let expires_at: i64 = row.try_get("expires_at")?;
    let result = row
        .try_get::<Option<String>, _>("result")?
        .and_then(|r| CommandResult::parse(&r));
    let status = match (result, delivered_at) {
        (Some(CommandResult::Ok), _) => CommandStatus::Ok,
        (Some(CommandResult::Rejected), _) => CommandStatus::Rejected,
        (None, Some(_)) => CommandStatus::Delivered,
        (None, None) if expires_at <= at => CommandStatus::Expired,
        (None, None) => CommandStatus::Pending,
    };
    Ok(Command {
        device_id: DeviceId::from_db(row.try_get("device_id")?),
        seq: u64::try_from(seq).unwrap_or(0),
        name: row.try_get("name")?,
        args: serde_json::from_str(&args).unwrap_or(serde_json::Value::Null),
        created_at: row.try_get("created_at")?,
        expires_at,
        created_by: row.try_get("created_by")?,
        delivered_at,
        result,
        reason: row.try_get("reason")?,
        completed_at: row.try_get("completed_at")?,
        status,
    })
}

fn seq_param(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| Error::Conflict("command seq out of range".into()))
}

impl Db {
    /// Store a new command for `device` with the next sequence number (max + 1). One
    /// statement allocates and inserts, so SQLite (one writer) cannot race; on
    /// PostgreSQL two concurrent inserts may pick the same number, and the loser of
    /// the primary key retries.
    pub async fn create_command(
        &self,
        device: &DeviceId,
        name: &CommandName,
        args: &serde_json::Value,
        ttl_secs: i64,
        created_by: &str,
    ) -> Result<Command> {
        let args = args.to_string();
        if args.len() > MAX_ARGS_BYTES || !TTL_SECS.contains(&ttl_secs) {
            return Err(Error::Conflict(
                "command arguments or lifetime out of range".into(),
            ));
        }
        for _ in 0..SEQ_ATTEMPTS {
            let at = now();
            let mut tx = self.pool().begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO commands (device_id, seq, name, args, created_at, expires_at, created_by) \
                 SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6 FROM commands WHERE device_id = $1 \
                 RETURNING seq",
            )
            .bind(device.as_str())
            .bind(name.as_str())
            .bind(&args)
            .bind(at)
            .bind(at + ttl_secs)
            .bind(created_by)
            .fetch_one(&mut *tx)
            .await;
            match inserted {
                Ok(row) => {
                    let seq: i64 = row.try_get("seq")?;
                    tx.commit().await?;
                    return self
                        .command(device, u64::try_from(seq).unwrap_or(0))
                        .await?
                        .ok_or_else(|| Error::Conflict("command vanished".into()));
                }
                Err(e)
                    if e.as_database_error()
                        .is_some_and(|d| d.is_unique_violation()) =>
                {
                    drop(tx);
                    tokio::task::yield_now().await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(
            "too many concurrent commands for this device; try again".into(),
        ))
    }

    pub async fn command(&self, device: &DeviceId, seq: u64) -> Result<Option<Command>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            command_columns!(),
            " FROM commands WHERE device_id = $1 AND seq = $2"
        ))
        .bind(device.as_str())
        .bind(seq_param(seq)?)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| command_from_row(&r, now())).transpose()
    }

    /// Commands not yet delivered, not answered and not expired, oldest first (at most
    /// [`MAX_PENDING`]).
    pub async fn pending_commands(&self, device: &DeviceId) -> Result<Vec<Command>> {
        let at = now();
        sqlx::query(concat!(
            "SELECT ",
            command_columns!(),
            " FROM commands WHERE device_id = $1 AND delivered_at IS NULL \
             AND result IS NULL AND expires_at > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(device.as_str())
        .bind(at)
        .bind(MAX_PENDING)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| command_from_row(r, at))
        .collect()
    }

    /// Record the device's acknowledgement of delivery (first one only); true if this
    /// call recorded it.
    pub async fn mark_command_delivered(&self, device: &DeviceId, seq: u64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE commands SET delivered_at = $1 WHERE device_id = $2 AND seq = $3 AND delivered_at IS NULL",
        )
        .bind(now())
        .bind(device.as_str())
        .bind(seq_param(seq)?)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Record the result the device reported for its command `seq`: only for a
    /// command of this device, and only the first result.
    pub async fn record_command_result(
        &self,
        device: &DeviceId,
        seq: u64,
        result: CommandResult,
        reason: Option<&str>,
    ) -> Result<ResultRecorded> {
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(ResultRecorded::Unknown);
        };
        let reason: Option<String> = reason.map(|r| r.chars().take(MAX_REASON_CHARS).collect());
        let at = now();
        let done = sqlx::query(
            "UPDATE commands SET result = $1, reason = $2, completed_at = $3, \
             delivered_at = COALESCE(delivered_at, $3) \
             WHERE device_id = $4 AND seq = $5 AND result IS NULL",
        )
        .bind(result.as_str())
        .bind(reason)
        .bind(at)
        .bind(device.as_str())
        .bind(seq)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 1 {
            return Ok(ResultRecorded::Recorded);
        }
        let exists = sqlx::query("SELECT seq FROM commands WHERE device_id = $1 AND seq = $2")
            .bind(device.as_str())
            .bind(seq)
            .fetch_optional(self.pool())
            .await?;
        Ok(if exists.is_some() {
            ResultRecorded::AlreadyRecorded
        } else {
            ResultRecorded::Unknown
        })
    }

    /// The newest commands of a device, newest first.
    pub async fn recent_commands(&self, device: &DeviceId, limit: i64) -> Result<Vec<Command>> {
        let at = now();
        sqlx::query(concat!(
            "SELECT ",
            command_columns!(),
            " FROM commands WHERE device_id = $1 ORDER BY seq DESC LIMIT $2"
        ))
        .bind(device.as_str())
        .bind(limit.clamp(1, 1000))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| command_from_row(r, at))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_bounded_and_plain() {
        for ok in ["ping", "report-state", "a", "x0-9", &"a".repeat(32)] {
            assert!(CommandName::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "Ping",
            "0ping",
            "-ping",
            "ping pong",
            "ping_x",
            "pïng",
            &"a".repeat(33),
        ] {
            assert!(CommandName::parse(bad).is_none(), "{bad}");
        }
    }
}
