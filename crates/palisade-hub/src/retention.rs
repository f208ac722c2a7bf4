//! The retention job (DATA-2): deletes each kind of data when its period in
//! `privacy::inventory::RETENTION` ends — the same table `/privacy/data` publishes.
//!
//! Every deletion runs in bounded batches (`[retention] batch_rows` rows per
//! statement, `pause_ms` between two), so a run never holds the write lock long
//! enough to stall telemetry ingest; a batch cap per rule bounds a run, and what is
//! left waits for the next one. Telemetry has no row key, so it is deleted per device
//! up to the timestamp of the batch's last row (index `telemetry_device_time`). Audit
//! entries are pruned as a prefix of the hash chain with a checkpoint (`audit.rs`).
//! Policy acceptances and consents are never deleted here: they are the evidence of
//! what was agreed. Each run records its counts (never contents) in
//! `retention_runs` and the audit log.

use crate::audit::{Event, Outcome};
use crate::config;
use crate::db::{Db, now};
use crate::error::Result;
use crate::ids::DeviceId;
use crate::privacy::inventory;
use serde::Serialize;
use sqlx::Row;
use std::time::Duration;

/// Most batches one rule runs per run (with the default 1,000 rows: ten million rows).
const MAX_BATCHES: u64 = 10_000;
/// Devices read per page when walking a product's devices.
const DEVICE_PAGE: i64 = 500;
/// Runs kept in `retention_runs` beyond their period are removed like any other rule;
/// the console shows at most this many.
pub const RUNS_SHOWN: i64 = 20;

/// How many rows one rule deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    pub key: &'static str,
    pub deleted: u64,
}

/// What one run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub started_at: i64,
    pub finished_at: i64,
    pub counts: Vec<Count>,
    /// Telemetry readings from which a field with a shorter period was removed.
    pub telemetry_fields_removed: u64,
}

impl Report {
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.deleted).sum()
    }

    /// `key=n` pairs, for the audit log and the CLI.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .counts
            .iter()
            .map(|c| format!("{}={}", c.key, c.deleted))
            .collect();
        parts.push(format!(
            "telemetry_fields_removed={}",
            self.telemetry_fields_removed
        ));
        parts.join(" ")
    }
}

/// A stored run, as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub started_at: i64,
    pub finished_at: i64,
    pub counts: Vec<(String, u64)>,
    pub error: String,
}

struct Batches<'a> {
    db: &'a Db,
    batch: i64,
    pause: Duration,
}

impl Batches<'_> {
    /// Run a `DELETE … WHERE key IN (SELECT key … LIMIT $2)` with `$1 = cutoff` until a
    /// batch deletes fewer than a full batch.
    async fn delete(&self, sql: &'static str, cutoff: i64) -> Result<u64> {
        let mut total = 0;
        for _ in 0..MAX_BATCHES {
            let done = sqlx::query(sql)
                .bind(cutoff)
                .bind(self.batch)
                .execute(self.db.pool())
                .await?
                .rows_affected();
            total += done;
            if done < self.batch as u64 {
                break;
            }
            tokio::time::sleep(self.pause).await;
        }
        Ok(total)
    }

    /// Delete one device's telemetry received before `cutoff_ms`, a batch at a time.
    async fn telemetry(&self, device: &DeviceId, cutoff_ms: i64) -> Result<u64> {
        let mut total = 0;
        for _ in 0..MAX_BATCHES {
            // The received time of the batch's last row: delete up to it. Rows sharing
            // that millisecond go together, so a batch may be slightly larger.
            let boundary = sqlx::query(
                "SELECT received_at_ms FROM telemetry WHERE device_id = $1 AND received_at_ms < $2 \
                 ORDER BY received_at_ms LIMIT 1 OFFSET $3",
            )
            .bind(device.as_str())
            .bind(cutoff_ms)
            .bind(self.batch - 1)
            .fetch_optional(self.db.pool())
            .await?;
            let (sql, bound, last) = match boundary {
                Some(row) => (
                    "DELETE FROM telemetry WHERE device_id = $1 AND received_at_ms <= $2",
                    row.try_get::<i64, _>("received_at_ms")?,
                    false,
                ),
                None => (
                    "DELETE FROM telemetry WHERE device_id = $1 AND received_at_ms < $2",
                    cutoff_ms,
                    true,
                ),
            };
            total += sqlx::query(sql)
                .bind(device.as_str())
                .bind(bound)
                .execute(self.db.pool())
                .await?
                .rows_affected();
            if last {
                break;
            }
            tokio::time::sleep(self.pause).await;
        }
        Ok(total)
    }

    /// Remove `field` from one device's readings received before `cutoff_ms` (a field
    /// whose period is shorter than the others'); a reading left empty is deleted.
    async fn strip_field(&self, device: &DeviceId, field: &str, cutoff_ms: i64) -> Result<u64> {
        // Field names are [a-z][a-z0-9_]*: no quote or '%' to escape; '_' matching any
        // character only widens the candidates, each checked as JSON below.
        let pattern = format!("%\"{field}\":%");
        let mut total = 0;
        for _ in 0..MAX_BATCHES {
            let rows = sqlx::query(
                "SELECT received_at_ms, payload FROM telemetry WHERE device_id = $1 \
                 AND received_at_ms < $2 AND payload LIKE $3 ORDER BY received_at_ms LIMIT $4",
            )
            .bind(device.as_str())
            .bind(cutoff_ms)
            .bind(&pattern)
            .bind(self.batch)
            .fetch_all(self.db.pool())
            .await?;
            let mut changed = 0;
            let mut tx = self.db.pool().begin().await?;
            for r in &rows {
                let at: i64 = r.try_get("received_at_ms")?;
                let payload: String = r.try_get("payload")?;
                let Ok(serde_json::Value::Object(mut map)) =
                    serde_json::from_str::<serde_json::Value>(&payload)
                else {
                    continue;
                };
                if map.remove(field).is_none() {
                    continue;
                }
                // Identical rows (same device, time and payload) change together.
                if map.is_empty() {
                    sqlx::query(
                        "DELETE FROM telemetry WHERE device_id = $1 AND received_at_ms = $2 AND payload = $3",
                    )
                    .bind(device.as_str())
                    .bind(at)
                    .bind(&payload)
                    .execute(&mut *tx)
                    .await?;
                } else {
                    sqlx::query(
                        "UPDATE telemetry SET payload = $1 WHERE device_id = $2 AND received_at_ms = $3 AND payload = $4",
                    )
                    .bind(serde_json::Value::Object(map).to_string())
                    .bind(device.as_str())
                    .bind(at)
                    .bind(&payload)
                    .execute(&mut *tx)
                    .await?;
                }
                changed += 1;
            }
            tx.commit().await?;
            total += changed;
            // A batch where nothing matched as JSON (only LIKE false positives) ends
            // the walk, so it cannot spin on the same rows.
            if rows.len() < self.batch as usize || changed == 0 {
                break;
            }
            tokio::time::sleep(self.pause).await;
        }
        Ok(total)
    }
}

/// Delete what is past its period at `now` (Unix seconds). Safe to run on several
/// hub nodes at once: every step is idempotent, audit pruning is serialised.
pub async fn run_once(db: &Db, retention: &config::Retention, now: i64) -> Result<Report> {
    let started_at = crate::db::now();
    let b = Batches {
        db,
        batch: i64::from(retention.batch_rows.max(1)),
        pause: Duration::from_millis(retention.pause_ms),
    };
    let day = 86_400i64;
    let mut counts = Vec::new();
    let mut telemetry_fields_removed = 0;
    for period in inventory::periods(retention) {
        let Some(days) = period.days else {
            continue; // kept: evidence (policy acceptances, consents)
        };
        let cutoff = now - i64::from(days) * day;
        let deleted = match period.key {
            "telemetry" => {
                let (deleted, stripped) = telemetry(&b, retention, now).await?;
                telemetry_fields_removed = stripped;
                deleted
            }
            "device_events" => {
                b.delete(
                    "DELETE FROM device_events WHERE id IN \
                     (SELECT id FROM device_events WHERE received_at_ms < $1 LIMIT $2)",
                    cutoff * 1000,
                )
                .await?
            }
            "mqtt_sessions" => {
                b.delete(
                    "DELETE FROM mqtt_sessions WHERE device_id IN \
                     (SELECT device_id FROM mqtt_sessions WHERE expires_at < $1 LIMIT $2)",
                    cutoff,
                )
                .await?
            }
            "sessions" => {
                b.delete(
                    "DELETE FROM sessions WHERE token_hash IN \
                     (SELECT token_hash FROM sessions WHERE expires_at < $1 LIMIT $2)",
                    cutoff,
                )
                .await?
            }
            "api_tokens" => {
                b.delete(
                    "DELETE FROM api_tokens WHERE id IN (SELECT id FROM api_tokens \
                     WHERE expires_at < $1 OR (revoked_at IS NOT NULL AND revoked_at < $1) LIMIT $2)",
                    cutoff,
                )
                .await?
            }
            "one_time_tokens" => {
                b.delete(
                    "DELETE FROM one_time_tokens WHERE token_hash IN \
                     (SELECT token_hash FROM one_time_tokens WHERE expires_at < $1 LIMIT $2)",
                    cutoff,
                )
                .await?
                    + b.delete(
                        "DELETE FROM setup_codes WHERE code_hash IN \
                         (SELECT code_hash FROM setup_codes WHERE expires_at < $1 LIMIT $2)",
                        cutoff,
                    )
                    .await?
            }
            "outbox" => {
                b.delete(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
                     WHERE sent_at IS NOT NULL AND sent_at < $1 LIMIT $2)",
                    cutoff,
                )
                .await?
            }
            "reports" => {
                b.delete(
                    "DELETE FROM vuln_reports WHERE id IN (SELECT id FROM vuln_reports \
                     WHERE state IN ('disclosed', 'duplicate', 'not-a-vulnerability') \
                     AND updated_at < $1 LIMIT $2)",
                    cutoff,
                )
                .await?
            }
            "retention_runs" => {
                b.delete(
                    "DELETE FROM retention_runs WHERE id IN \
                     (SELECT id FROM retention_runs WHERE started_at < $1 LIMIT $2)",
                    cutoff,
                )
                .await?
            }
            "audit" => {
                let mut total = 0;
                for _ in 0..MAX_BATCHES {
                    let done = db.prune_audit(cutoff, b.batch).await?;
                    total += done;
                    if done < b.batch as u64 {
                        break;
                    }
                    tokio::time::sleep(b.pause).await;
                }
                total
            }
            other => {
                // A rule in the table the job does not know: fail loudly, not silently
                // keep data the page says is deleted.
                return Err(crate::error::Error::Config(format!(
                    "retention rule {other:?} has no deletion"
                )));
            }
        };
        counts.push(Count {
            key: period.key,
            deleted,
        });
    }
    Ok(Report {
        started_at,
        finished_at: crate::db::now(),
        counts,
        telemetry_fields_removed,
    })
}

/// Telemetry: per product model, readings past the longest field period go; fields
/// with a shorter period are removed from readings past theirs.
async fn telemetry(b: &Batches<'_>, retention: &config::Retention, now: i64) -> Result<(u64, u64)> {
    let now_ms = now * 1000;
    let day_ms = 86_400_000i64;
    let (mut deleted, mut stripped) = (0, 0);
    for model in b.db.products().await? {
        let field_days: Vec<(String, u32)> = model
            .fields
            .iter()
            .map(|f| {
                (
                    f.name.clone(),
                    f.retention_days.unwrap_or(retention.telemetry_days),
                )
            })
            .collect();
        let longest = field_days
            .iter()
            .map(|(_, d)| *d)
            .max()
            .unwrap_or(retention.telemetry_days);
        let row_cutoff = now_ms - i64::from(longest) * day_ms;
        let mut after = String::new();
        loop {
            let rows = sqlx::query(
                "SELECT id FROM devices WHERE product_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(model.id.as_str())
            .bind(&after)
            .bind(DEVICE_PAGE)
            .fetch_all(b.db.pool())
            .await?;
            for r in &rows {
                let device = DeviceId::from_db(r.try_get("id")?);
                deleted += b.telemetry(&device, row_cutoff).await?;
                for (field, days) in &field_days {
                    if *days < longest {
                        let cutoff = now_ms - i64::from(*days) * day_ms;
                        stripped += b.strip_field(&device, field, cutoff).await?;
                    }
                }
            }
            match rows.last() {
                Some(r) if rows.len() as i64 == DEVICE_PAGE => after = r.try_get("id")?,
                _ => break,
            }
        }
    }
    Ok((deleted, stripped))
}

/// Run once and record it: counts in `retention_runs` and one audit entry.
pub async fn run_and_record(db: &Db, retention: &config::Retention) -> Result<Report> {
    let started = now();
    match run_once(db, retention, started).await {
        Ok(report) => {
            let counts: serde_json::Map<String, serde_json::Value> = report
                .counts
                .iter()
                .map(|c| (c.key.to_owned(), c.deleted.into()))
                .chain(std::iter::once((
                    "telemetry_fields_removed".to_owned(),
                    report.telemetry_fields_removed.into(),
                )))
                .collect();
            record(
                db,
                started,
                &serde_json::Value::Object(counts).to_string(),
                "",
            )
            .await?;
            db.audit(Event {
                actor: "hub",
                source: "retention",
                action: "retention.run",
                target: "-",
                outcome: Outcome::Success,
                detail: &report.summary(),
            })
            .await?;
            Ok(report)
        }
        Err(e) => {
            let message = e.to_string();
            let _ = record(db, started, "{}", &message).await;
            let _ = db
                .audit(Event {
                    actor: "hub",
                    source: "retention",
                    action: "retention.run",
                    target: "-",
                    outcome: Outcome::Failure,
                    detail: &message,
                })
                .await;
            Err(e)
        }
    }
}

async fn record(db: &Db, started: i64, counts: &str, error: &str) -> Result<()> {
    let id = palisade_crypto::token::random_token();
    sqlx::query(
        "INSERT INTO retention_runs (id, started_at, finished_at, counts, error) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(started)
    .bind(now())
    .bind(counts)
    .bind(error)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The newest runs, newest first.
pub async fn recent_runs(db: &Db, limit: i64) -> Result<Vec<Run>> {
    let rows = sqlx::query(
        "SELECT started_at, finished_at, counts, error FROM retention_runs ORDER BY started_at DESC LIMIT $1",
    )
    .bind(limit.clamp(1, 1000))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let counts: String = r.try_get("counts")?;
            let counts =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&counts)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.as_u64().unwrap_or(0)))
                    .collect();
            Ok(Run {
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
                counts,
                error: r.try_get("error")?,
            })
        })
        .collect()
}

/// Run the job every `[retention] interval_minutes` until `stop`; the first run comes
/// one minute after start, so a restarting hub does not delete before serving.
pub async fn run_periodically(
    db: Db,
    retention: config::Retention,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wait = FIRST_RUN_DELAY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        match run_and_record(&db, &retention).await {
            Ok(report) => tracing::info!(
                deleted = report.total(),
                "retention run: {}",
                report.summary()
            ),
            Err(e) => tracing::error!("retention run failed: {e}"),
        }
        wait = Duration::from_secs(retention.interval_minutes.max(1) * 60);
    }
}

/// Delay between hub start and the first retention run.
pub const FIRST_RUN_DELAY: Duration = Duration::from_secs(60);

/// Keys the job handles, for the unit test that no rule in the table is left out.
#[cfg(test)]
const HANDLED: &[&str] = &[
    "telemetry",
    "device_events",
    "mqtt_sessions",
    "sessions",
    "api_tokens",
    "one_time_tokens",
    "outbox",
    "reports",
    "retention_runs",
    "audit",
    "policy_acceptances",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::inventory::Days;

    #[test]
    fn data2_every_rule_in_the_table_is_handled() {
        for rule in inventory::RETENTION {
            assert!(HANDLED.contains(&rule.key), "{} has no deletion", rule.key);
            if rule.key == "policy_acceptances" {
                assert_eq!(rule.days, Days::Never, "acceptances are evidence");
            }
        }
    }
}
