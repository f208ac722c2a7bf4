//! The tamper-evident audit log (MON-1): security events, hash-chained. Each entry's
//! hash covers the previous entry's hash and all of its own fields, and the chain head
//! (last sequence number and hash) is kept in its own row, so an edited, inserted,
//! reordered or deleted entry breaks verification. Entries never contain secrets.
//!
//! Retention (DATA-2) prunes the oldest entries past their period with
//! [`Db::prune_audit`]: in one transaction it deletes a prefix of the chain, records
//! the last deleted entry's sequence number and hash in the `audit_checkpoint` row,
//! and appends an `audit.prune` entry naming that same sequence number and hash.
//! Verification starts from the checkpoint and requires the newest `audit.prune`
//! entry to name it, so moving the checkpoint to hide deleted entries breaks the
//! chain just as deleting them would.

use crate::db::{Db, now};
use crate::error::Result;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// Whether the audited action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// One event to record. `actor` is a user name or `-`; `source` the client address.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub actor: &'a str,
    pub source: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: Outcome,
    pub detail: &'a str,
}

/// A stored entry.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub source: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: String,
    pub hash: String,
}

/// The result of checking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub entries: i64,
    /// The first sequence number whose entry does not verify, if any.
    pub first_broken: Option<i64>,
}

fn entry_hash(prev: &str, seq: i64, at: i64, fields: [&str; 6]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    for field in fields {
        // Length-prefixed, so field boundaries cannot be shifted.
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    data_encoding::HEXLOWER.encode(&h.finalize())
}

fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The action of the entry that records a pruning.
pub const PRUNE_ACTION: &str = "audit.prune";

/// Append an entry inside `tx` (which it locks by updating the head row first).
async fn append(tx: &mut sqlx::Transaction<'_, sqlx::Any>, event: Event<'_>) -> Result<i64> {
    let fields = [
        clip(event.actor, 64),
        clip(event.source, 64),
        clip(event.action, 64),
        clip(event.target, 128),
        event.outcome.as_str().to_owned(),
        clip(event.detail, 512),
    ];
    // Taking the head row first serialises writers (row lock / SQLite write lock).
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut **tx)
        .await?;
    let seq: i64 = head.try_get("seq")?;
    let prev: String = head.try_get("hash")?;
    let at = now();
    let refs = [
        fields[0].as_str(),
        fields[1].as_str(),
        fields[2].as_str(),
        fields[3].as_str(),
        fields[4].as_str(),
        fields[5].as_str(),
    ];
    let hash = entry_hash(&prev, seq, at, refs);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, source, action, target, outcome, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(seq)
    .bind(at)
    .bind(refs[0])
    .bind(refs[1])
    .bind(refs[2])
    .bind(refs[3])
    .bind(refs[4])
    .bind(refs[5])
    .bind(&prev)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
    Ok(seq)
}

impl Db {
    /// Append an event. Returns once it is committed: callers acknowledge the action
    /// only after this (DESIGN.md invariant 9).
    pub async fn audit(&self, event: Event<'_>) -> Result<i64> {
        let mut tx = self.pool().begin().await?;
        let seq = append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Delete the oldest audit entries recorded before `cutoff` (Unix seconds), at most
    /// `limit`, moving the checkpoint to the last one deleted and recording an
    /// `audit.prune` entry, all in one transaction. Returns how many were deleted.
    pub async fn prune_audit(&self, cutoff: i64, limit: i64) -> Result<u64> {
        let mut tx = self.pool().begin().await?;
        // Lock the head first (as `audit` does), so no entry is appended meanwhile.
        sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query("SELECT seq, at, hash FROM audit_log ORDER BY seq LIMIT $1")
            .bind(limit.max(1))
            .fetch_all(&mut *tx)
            .await?;
        // Only a prefix of the chain can go: stop at the first entry still in period.
        let mut last: Option<(i64, String)> = None;
        let mut count = 0u64;
        for r in &rows {
            let at: i64 = r.try_get("at")?;
            if at >= cutoff {
                break;
            }
            last = Some((r.try_get("seq")?, r.try_get("hash")?));
            count += 1;
        }
        let Some((through, hash)) = last else {
            return Ok(0);
        };
        sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
            .bind(through)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE audit_checkpoint SET seq = $1, hash = $2, pruned_at = $3 WHERE id = 1")
            .bind(through)
            .bind(&hash)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        let target = format!("through {through}");
        append(
            &mut tx,
            Event {
                actor: "hub",
                source: "retention",
                action: PRUNE_ACTION,
                target: &target,
                outcome: Outcome::Success,
                detail: &hash,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(count)
    }

    /// The checkpoint: the sequence number and hash of the last pruned entry (0 and
    /// zeros while nothing was pruned).
    pub async fn audit_checkpoint(&self) -> Result<(i64, String)> {
        let row = sqlx::query("SELECT seq, hash FROM audit_checkpoint WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        Ok((row.try_get("seq")?, row.try_get("hash")?))
    }

    /// The newest entries, newest first; `before` pages backwards by sequence number.
    pub async fn audit_entries(&self, limit: i64, before: Option<i64>) -> Result<Vec<Entry>> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, source, action, target, outcome, detail, hash FROM audit_log \
             WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit.clamp(1, 1000))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Entry {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    source: r.try_get("source")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    outcome: r.try_get("outcome")?,
                    detail: r.try_get("detail")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }

    /// Recompute the chain from the first entry to the head, in pages.
    pub async fn verify_audit_chain(&self) -> Result<ChainReport> {
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        let head_seq: i64 = head.try_get("seq")?;
        let head_hash: String = head.try_get("hash")?;
        let (pruned_through, pruned_hash) = self.audit_checkpoint().await?;
        let mut prev = pruned_hash.clone();
        let mut expected_seq = pruned_through + 1;
        let mut entries = 0;
        // The newest `audit.prune` entry seen: (target, detail).
        let mut last_prune: Option<(String, String)> = None;
        loop {
            let rows = sqlx::query(
                "SELECT seq, at, actor, source, action, target, outcome, detail, prev_hash, hash \
                 FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT 1000",
            )
            .bind(expected_seq)
            .fetch_all(self.pool())
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let seq: i64 = r.try_get("seq")?;
                let at: i64 = r.try_get("at")?;
                let fields: [String; 6] = [
                    r.try_get("actor")?,
                    r.try_get("source")?,
                    r.try_get("action")?,
                    r.try_get("target")?,
                    r.try_get("outcome")?,
                    r.try_get("detail")?,
                ];
                let stored_prev: String = r.try_get("prev_hash")?;
                let stored: String = r.try_get("hash")?;
                let computed = entry_hash(
                    &prev,
                    seq,
                    at,
                    [
                        &fields[0], &fields[1], &fields[2], &fields[3], &fields[4], &fields[5],
                    ],
                );
                if seq != expected_seq || stored_prev != prev || stored != computed {
                    return Ok(ChainReport {
                        entries,
                        first_broken: Some(expected_seq),
                    });
                }
                if fields[2] == PRUNE_ACTION {
                    last_prune = Some((fields[3].clone(), fields[5].clone()));
                }
                prev = stored;
                expected_seq += 1;
                entries += 1;
            }
        }
        // A checkpoint must be the one the newest pruning recorded in the chain.
        let checkpoint_recorded = pruned_through == 0
            || last_prune.is_some_and(|(target, detail)| {
                target == format!("through {pruned_through}") && detail == pruned_hash
            });
        if !checkpoint_recorded {
            return Ok(ChainReport {
                entries,
                first_broken: Some(pruned_through + 1),
            });
        }
        let intact = pruned_through + entries == head_seq && prev == head_hash;
        Ok(ChainReport {
            entries,
            first_broken: (!intact).then_some(pruned_through + entries + 1),
        })
    }
}
