//! Commands from the hub (`devices/{id}/commands`) and their replay protection (ENC-4).
//!
//! A command is `{"seq": u64, "expires_at": unix_seconds, "name": "...", "args": {...}}`.
//! The agent keeps the highest `seq` it has executed in `commands.json` (written
//! atomically *before* the command runs, so a crash can never make it run twice) and
//! rejects any command whose `seq` is not higher, or whose `expires_at` has passed. The
//! result goes to `devices/{id}/events` as
//! `{"command_seq": n, "result": "ok"|"rejected", "reason": null|"..."}`.
//!
//! Built-in commands: `ping` (replies ok) and `report-state` (publishes the agent's
//! state on `devices/{id}/state` and replies ok). Anything else is rejected.

use crate::state::COMMANDS_FILE;
use crate::{Error, Result, fsutil};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A command as sent by the hub.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Command {
    pub seq: u64,
    pub expires_at: i64,
    pub name: String,
    #[serde(default)]
    pub args: serde_json::Value,
}

/// The reply published on `devices/{id}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub command_seq: Option<u64>,
    pub result: String,
    pub reason: Option<String>,
}

impl Reply {
    pub fn ok(seq: u64) -> Self {
        Self {
            command_seq: Some(seq),
            result: "ok".into(),
            reason: None,
        }
    }

    pub fn rejected(seq: Option<u64>, reason: impl Into<String>) -> Self {
        Self {
            command_seq: seq,
            result: "rejected".into(),
            reason: Some(reason.into()),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "command_seq": self.command_seq,
            "result": self.result,
            "reason": self.reason,
        })
    }
}

/// What the agent does with an admitted command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Ping,
    ReportState,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    last_seq: u64,
}

/// The replay guard: the highest executed seq, persisted in the state directory.
#[derive(Debug)]
pub struct CommandGuard {
    path: PathBuf,
    last_seq: u64,
}

impl CommandGuard {
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(COMMANDS_FILE);
        let last_seq = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<Persisted>(&bytes)
                    .map_err(|e| Error::json(format!("parse {}", path.display()), e))?
                    .last_seq
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        Ok(Self { path, last_seq })
    }

    /// The highest seq executed so far (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Decide on a raw command payload. On `Ok`, the command's seq has been recorded
    /// durably and the action must now be carried out; on `Err`, the reply to publish.
    pub fn admit(
        &mut self,
        payload: &[u8],
        max_bytes: usize,
        now: i64,
    ) -> Result<(u64, Action), Reply> {
        if payload.len() > max_bytes {
            return Err(Reply::rejected(
                None,
                format!("command larger than {max_bytes} bytes"),
            ));
        }
        let command: Command = match serde_json::from_slice(payload) {
            Ok(c) => c,
            Err(_) => {
                // Report the seq if there is one, so the hub can match the reply.
                let seq = serde_json::from_slice::<serde_json::Value>(payload)
                    .ok()
                    .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64));
                return Err(Reply::rejected(seq, "malformed command"));
            }
        };
        let seq = command.seq;
        if seq <= self.last_seq {
            return Err(Reply::rejected(
                Some(seq),
                format!(
                    "replayed: seq {seq} is not above the last executed seq {}",
                    self.last_seq
                ),
            ));
        }
        if command.expires_at <= now {
            return Err(Reply::rejected(
                Some(seq),
                format!("expired at {} (device time {now})", command.expires_at),
            ));
        }
        let action = match command.name.as_str() {
            "ping" => Action::Ping,
            "report-state" => Action::ReportState,
            _ => {
                let name: String = command
                    .name
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(64)
                    .collect();
                return Err(Reply::rejected(
                    Some(seq),
                    format!("unknown command {name:?}"),
                ));
            }
        };
        if let Err(e) = self.record(seq) {
            tracing::error!("cannot record command seq {seq}: {e}");
            return Err(Reply::rejected(
                Some(seq),
                "the device could not record the command",
            ));
        }
        Ok((seq, action))
    }

    fn record(&mut self, seq: u64) -> Result<()> {
        let json = serde_json::to_vec(&Persisted { last_seq: seq })
            .map_err(|e| Error::json("commands.json", e))?;
        fsutil::write_private(&self.path, &json)?;
        self.last_seq = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn cmd(seq: u64, expires_at: i64, name: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "seq": seq, "expires_at": expires_at, "name": name, "args": {}
        }))
        .expect("json")
    }

    #[test]
    fn enc4_replayed_stale_and_expired_commands_are_rejected_and_seq_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut guard = CommandGuard::open(dir.path()).expect("open");
        assert_eq!(
            guard.admit(&cmd(5, NOW + 60, "ping"), 1024, NOW),
            Ok((5, Action::Ping))
        );
        let replay = guard
            .admit(&cmd(5, NOW + 60, "ping"), 1024, NOW)
            .expect_err("replay");
        assert_eq!(replay.result, "rejected");
        assert_eq!(replay.command_seq, Some(5));
        assert!(guard.admit(&cmd(4, NOW + 60, "ping"), 1024, NOW).is_err());
        let expired = guard
            .admit(&cmd(6, NOW, "ping"), 1024, NOW)
            .expect_err("expired");
        assert!(expired.reason.as_deref().unwrap_or("").contains("expired"));
        let unknown = guard
            .admit(&cmd(7, NOW + 60, "rm -rf"), 1024, NOW)
            .expect_err("unknown");
        assert!(unknown.reason.as_deref().unwrap_or("").contains("unknown"));
        assert!(guard.admit(b"{not json", 1024, NOW).is_err());
        assert!(guard.admit(&cmd(8, NOW + 60, "ping"), 10, NOW).is_err());
        // Rejections do not advance the seq; the executed one survives a restart.
        let mut reopened = CommandGuard::open(dir.path()).expect("reopen");
        assert_eq!(reopened.last_seq(), 5);
        assert!(
            reopened
                .admit(&cmd(5, NOW + 60, "ping"), 1024, NOW)
                .is_err()
        );
        assert_eq!(
            reopened.admit(&cmd(6, NOW + 60, "report-state"), 1024, NOW),
            Ok((6, Action::ReportState))
        );
    }
}
