//! Vulnerability reports and their messages. A report's status-link secret is stored
//! only as a digest; internal notes and reporter-visible messages share one table and
//! are told apart by `internal`, so every query that serves the reporter filters on it.

use super::{Db, now, optional};
use crate::error::{Error, Result};
use crate::ids::{Email, UserId};
use crate::vuln::cvss::{Cvss, Severity};
use crate::vuln::triage::{CraStage, CraTimeline, State, Timeline};
use palisade_crypto::token;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// A report's tracking id, such as `VR-K7QW2M4XPA` (not a secret: the status link is).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ReportId(String);

impl ReportId {
    pub fn generate() -> Self {
        Self(format!(
            "VR-{}",
            data_encoding::BASE32_NOPAD.encode(&token::random_bytes::<6>())
        ))
    }
    /// Accept a tracking id from a URL.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("VR-")?;
        (rest.len() == 10
            && rest
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)))
        .then(|| Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ReportId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

/// A report as staff see it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub id: ReportId,
    pub title: String,
    pub description: String,
    pub reporter_name: String,
    pub reporter_email: Option<Email>,
    /// What the reporter said is affected (free text).
    pub product: String,
    pub state: State,
    pub cvss: Option<Cvss>,
    /// Affected product models and version ranges, as staff assessed them (text).
    pub affected: String,
    pub assignee: Option<UserId>,
    pub received_at: i64,
    pub last_update_at: i64,
    pub updated_at: i64,
    /// Active exploitation and the reports to the authorities (VULN-7).
    pub cra: CraTimeline,
}

impl Report {
    pub fn timeline(&self) -> Timeline {
        Timeline {
            state: self.state,
            received_at: self.received_at,
            last_update_at: self.last_update_at,
            severity: self.cvss.as_ref().map(|c| c.severity),
            cra: self.cra,
        }
    }
}

/// One message on a report.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub seq: i64,
    pub at: i64,
    /// `reporter`, `hub` (automatic notices) or a staff user name.
    pub author: String,
    /// Internal notes are for staff only and never shown to the reporter.
    pub internal: bool,
    pub body: String,
}

/// A report as submitted (already bounded and validated by the caller).
pub struct NewReport<'a> {
    pub title: &'a str,
    pub description: &'a str,
    pub reporter_name: &'a str,
    pub reporter_email: Option<&'a Email>,
    pub product: &'a str,
    /// A digest of the submitting network (IPv4 address or IPv6 /64), for rate limits.
    pub source_key: &'a str,
}

const COLUMNS: &str = "id, title, description, reporter_name, reporter_email, product, state, \
     cvss_vector, cvss_score, affected, assignee_id, received_at, last_update_at, updated_at, \
     exploited_at, fixed_at, cra_early_warning_at, cra_notification_at, cra_final_report_at";

fn from_row(r: &AnyRow) -> Result<Report> {
    let state: String = r.try_get("state")?;
    let vector: String = r.try_get("cvss_vector")?;
    let score: i64 = r.try_get("cvss_score")?;
    let email: String = r.try_get("reporter_email")?;
    let assignee: String = r.try_get("assignee_id")?;
    Ok(Report {
        id: ReportId(r.try_get("id")?),
        title: r.try_get("title")?,
        description: r.try_get("description")?,
        reporter_name: r.try_get("reporter_name")?,
        reporter_email: (!email.is_empty()).then(|| Email::from_db(email)),
        product: r.try_get("product")?,
        state: State::parse(&state)
            .ok_or_else(|| Error::Conflict(format!("unknown report state {state:?}")))?,
        cvss: (!vector.is_empty()).then(|| Cvss {
            vector,
            score_tenths: score,
            severity: Severity::from_tenths(score),
        }),
        affected: r.try_get("affected")?,
        assignee: UserId::parse(&assignee),
        received_at: r.try_get("received_at")?,
        last_update_at: r.try_get("last_update_at")?,
        updated_at: r.try_get("updated_at")?,
        cra: CraTimeline {
            exploited_at: set(r.try_get("exploited_at")?),
            fixed_at: set(r.try_get("fixed_at")?),
            early_warning_at: set(r.try_get("cra_early_warning_at")?),
            notification_at: set(r.try_get("cra_notification_at")?),
            final_report_at: set(r.try_get("cra_final_report_at")?),
        },
    })
}

/// A time column where 0 means "not yet".
fn set(at: i64) -> Option<i64> {
    (at > 0).then_some(at)
}

impl Db {
    /// Reports received since `since`, from one source or (with `None`) from all.
    pub async fn reports_received_since(
        &self,
        source_key: Option<&str>,
        since: i64,
    ) -> Result<i64> {
        let row = match source_key {
            Some(key) => sqlx::query(
                "SELECT COUNT(*) AS n FROM vuln_reports WHERE source_key = $1 AND received_at > $2",
            )
            .bind(key)
            .bind(since)
            .fetch_one(self.pool())
            .await?,
            None => {
                sqlx::query("SELECT COUNT(*) AS n FROM vuln_reports WHERE received_at > $1")
                    .bind(since)
                    .fetch_one(self.pool())
                    .await?
            }
        };
        Ok(row.try_get("n")?)
    }

    /// Store a new report; returns it and the raw status-link secret (shown once, kept
    /// only as a digest).
    pub async fn insert_report(&self, new: NewReport<'_>) -> Result<(Report, String)> {
        let id = ReportId::generate();
        let secret = token::random_token();
        let at = now();
        sqlx::query(
            "INSERT INTO vuln_reports (id, status_hash, title, description, reporter_name, reporter_email, \
             product, source_key, state, cvss_vector, cvss_score, affected, assignee_id, received_at, \
             last_update_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'new', '', -1, '', '', $9, $9, $9)",
        )
        .bind(id.as_str())
        .bind(token::digest(&secret))
        .bind(new.title)
        .bind(new.description)
        .bind(new.reporter_name)
        .bind(new.reporter_email.map_or("", |e| e.as_str()))
        .bind(new.product)
        .bind(new.source_key)
        .bind(at)
        .execute(self.pool())
        .await?;
        let report = self
            .report(&id)
            .await?
            .ok_or_else(|| Error::Conflict("report vanished".into()))?;
        Ok((report, secret))
    }

    pub async fn report(&self, id: &ReportId) -> Result<Option<Report>> {
        let q = format!("SELECT {COLUMNS} FROM vuln_reports WHERE id = $1");
        optional(
            sqlx::query(sqlx::AssertSqlSafe(q))
                .bind(id.as_str())
                .fetch_one(self.pool())
                .await,
        )?
        .map(|r| from_row(&r))
        .transpose()
    }

    /// The report a status-link secret opens, if any.
    pub async fn report_by_secret(&self, secret: &str) -> Result<Option<Report>> {
        if secret.is_empty() || secret.len() > 128 {
            return Ok(None);
        }
        let q = format!("SELECT {COLUMNS} FROM vuln_reports WHERE status_hash = $1");
        optional(
            sqlx::query(sqlx::AssertSqlSafe(q))
                .bind(token::digest(secret))
                .fetch_one(self.pool())
                .await,
        )?
        .map(|r| from_row(&r))
        .transpose()
    }

    /// The newest reports (at most `limit`).
    pub async fn reports(&self, limit: i64) -> Result<Vec<Report>> {
        let q =
            format!("SELECT {COLUMNS} FROM vuln_reports ORDER BY received_at DESC, id LIMIT $1");
        sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(limit)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(from_row)
            .collect()
    }

    /// A report's messages, oldest first; internal notes only when asked for (staff).
    pub async fn report_messages(
        &self,
        id: &ReportId,
        with_internal: bool,
    ) -> Result<Vec<Message>> {
        let rows = sqlx::query(
            "SELECT seq, at, author, internal, body FROM report_messages \
             WHERE report_id = $1 AND (internal = 0 OR $2 = 1) ORDER BY seq",
        )
        .bind(id.as_str())
        .bind(i64::from(with_internal))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Message {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    author: r.try_get("author")?,
                    internal: r.try_get::<i64, _>("internal")? != 0,
                    body: r.try_get("body")?,
                })
            })
            .collect()
    }

    /// Messages the reporter added to a report since `since`.
    pub async fn reporter_messages_since(&self, id: &ReportId, since: i64) -> Result<i64> {
        Ok(sqlx::query(
            "SELECT COUNT(*) AS n FROM report_messages WHERE report_id = $1 AND author = 'reporter' AND at > $2",
        )
        .bind(id.as_str())
        .bind(since)
        .fetch_one(self.pool())
        .await?
        .try_get("n")?)
    }

    /// Add a message. One the reporter can read counts as a status update to them
    /// (it restarts the update clock), unless the reporter wrote it.
    pub async fn add_report_message(
        &self,
        id: &ReportId,
        author: &str,
        internal: bool,
        body: &str,
    ) -> Result<()> {
        let at = now();
        let mut tx = self.pool().begin().await?;
        let seq: i64 = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM report_messages WHERE report_id = $1",
        )
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await?
        .try_get("next")?;
        sqlx::query(
            "INSERT INTO report_messages (report_id, seq, at, author, internal, body) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.as_str())
        .bind(seq)
        .bind(at)
        .bind(author)
        .bind(i64::from(internal))
        .bind(body)
        .execute(&mut *tx)
        .await?;
        let update = if !internal && author != "reporter" {
            "UPDATE vuln_reports SET updated_at = $1, last_update_at = $1 WHERE id = $2"
        } else {
            "UPDATE vuln_reports SET updated_at = $1 WHERE id = $2"
        };
        sqlx::query(update)
            .bind(at)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Move a report from `from` to `to`; false if it was no longer in `from` (someone
    /// else changed it first). The change counts as a status update to the reporter.
    pub async fn set_report_state(&self, id: &ReportId, from: State, to: State) -> Result<bool> {
        let at = now();
        // `fixed_at` keeps the first time a fix was available (the CRA final report's
        // clock starts there).
        let done = sqlx::query(
            "UPDATE vuln_reports SET state = $1, updated_at = $2, last_update_at = $2, \
             fixed_at = CASE WHEN $1 = 'fixed' AND fixed_at = 0 THEN $2 ELSE fixed_at END \
             WHERE id = $3 AND state = $4",
        )
        .bind(to.as_str())
        .bind(at)
        .bind(id.as_str())
        .bind(from.as_str())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Record the assessment: CVSS, affected models and versions, assignee.
    pub async fn set_report_assessment(
        &self,
        id: &ReportId,
        cvss: Option<&Cvss>,
        affected: &str,
        assignee: Option<&UserId>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE vuln_reports SET cvss_vector = $1, cvss_score = $2, affected = $3, assignee_id = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(cvss.map_or("", |c| c.vector.as_str()))
        .bind(cvss.map_or(-1, |c| c.score_tenths))
        .bind(affected)
        .bind(assignee.map_or("", |u| u.as_str()))
        .bind(now())
        .bind(id.as_str())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Record that staff learnt at `at` that the vulnerability is actively exploited
    /// (starts the CRA clock); false if it was already recorded (the first time stays).
    pub async fn mark_report_exploited(&self, id: &ReportId, at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE vuln_reports SET exploited_at = $1, updated_at = $2 WHERE id = $3 AND exploited_at = 0",
        )
        .bind(at)
        .bind(now())
        .bind(id.as_str())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Record that a CRA report was sent at `at`; false if it already was.
    pub async fn record_cra_report(&self, id: &ReportId, stage: CraStage, at: i64) -> Result<bool> {
        let sql = match stage {
            CraStage::EarlyWarning => {
                "UPDATE vuln_reports SET cra_early_warning_at = $1, updated_at = $2 WHERE id = $3 AND cra_early_warning_at = 0"
            }
            CraStage::Notification => {
                "UPDATE vuln_reports SET cra_notification_at = $1, updated_at = $2 WHERE id = $3 AND cra_notification_at = 0"
            }
            CraStage::FinalReport => {
                "UPDATE vuln_reports SET cra_final_report_at = $1, updated_at = $2 WHERE id = $3 AND cra_final_report_at = 0"
            }
        };
        let done = sqlx::query(sql)
            .bind(at)
            .bind(now())
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
