//! Privacy practices (PRIV-1, PRIV-2): the versioned privacy policy written by the
//! operator in Markdown (required sections checked before publishing, every version
//! kept, substantive changes announced to every owner and accepted again), policy
//! acceptances, and consents such as marketing (opt-in, off by default).

pub mod diff;
pub mod erase;
pub mod export;
pub mod fields;
pub mod inventory;
pub mod markdown;
pub mod zip;

use crate::accounts::{self, Actor};
use crate::audit::Outcome;
use crate::db::users::{Role, Status, User};
use crate::db::{Db, now, optional};
use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::mail::Category;
use sqlx::Row;

/// Largest policy accepted (bytes); keeps rendering and diffing cheap (INPUT-1).
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// Most lines a policy may have (the diff is quadratic in lines).
pub const MAX_POLICY_LINES: usize = 2000;

/// A section every policy must have (PRIV-1), recognised by words in its heading.
pub struct Section {
    pub name: &'static str,
    /// Lower-case fragments; a heading containing any of them is this section.
    pub keywords: &'static [&'static str],
}

/// The required sections, in the order a reader expects them.
pub const REQUIRED_SECTIONS: &[Section] = &[
    Section {
        name: "what data is collected",
        keywords: &[
            "what data",
            "data we collect",
            "information we collect",
            "data collected",
            "what we collect",
        ],
    },
    Section {
        name: "why it is collected (purpose)",
        keywords: &["why", "purpose", "how we use"],
    },
    Section {
        name: "who receives it, including third parties",
        keywords: &[
            "who receives",
            "recipient",
            "third part",
            "share",
            "sharing",
        ],
    },
    Section {
        name: "how long it is kept (retention)",
        keywords: &["how long", "retention", "retain", "keep"],
    },
    Section {
        name: "the owner's rights and how to use them",
        keywords: &["right"],
    },
    Section {
        name: "contact",
        keywords: &["contact"],
    },
];

/// What is wrong with a policy, every problem at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the policy cannot be published: {}", .0.join("; "))]
pub struct PolicyProblems(pub Vec<String>);

/// Check a policy before publishing: size, plain text, and every required section.
pub fn check_policy(text: &str) -> std::result::Result<(), PolicyProblems> {
    let mut problems = Vec::new();
    if text.len() > MAX_POLICY_BYTES {
        problems.push(format!(
            "it is {} bytes; at most {MAX_POLICY_BYTES} are allowed",
            text.len()
        ));
    }
    if text.lines().count() > MAX_POLICY_LINES {
        problems.push(format!("it has more than {MAX_POLICY_LINES} lines"));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        problems.push("it contains control characters".into());
    }
    // Section bodies, keyed by the heading they sit under.
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some((_, heading)) = markdown::heading(line) {
            sections.push((heading.to_lowercase(), String::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push_str(&line.to_lowercase());
            body.push('\n');
        }
    }
    for required in REQUIRED_SECTIONS {
        let found = sections
            .iter()
            .find(|(heading, _)| required.keywords.iter().any(|k| heading.contains(k)));
        match found {
            None => problems.push(format!(
                "missing section: {} (a heading such as \"{}\")",
                required.name,
                title_case(required.keywords[0])
            )),
            Some((heading, body)) => {
                if body.trim().is_empty() {
                    problems.push(format!("the section {heading:?} is empty"));
                }
                // Recipients must say whether third parties receive data, even if none.
                if required.keywords.contains(&"third part")
                    && !heading.contains("third part")
                    && !body.contains("third part")
                {
                    problems.push(
                        "the recipients section must say which third parties receive data (or that none do)"
                            .into(),
                    );
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PolicyProblems(problems))
    }
}

fn title_case(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// One published version of the policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub version: i64,
    pub body: String,
    pub substantive: bool,
    pub summary: String,
    pub published_at: i64,
    pub published_by: String,
}

fn policy_from_row(row: &sqlx::any::AnyRow) -> Result<Policy> {
    Ok(Policy {
        version: row.try_get("version")?,
        body: row.try_get("body")?,
        substantive: row.try_get::<i64, _>("substantive")? != 0,
        summary: row.try_get("summary")?,
        published_at: row.try_get("published_at")?,
        published_by: row.try_get("published_by")?,
    })
}

/// Consent purposes an owner can give or withdraw (PRIV-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// News and offers by e-mail. Never needed for security or account notices.
    Marketing,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Marketing => "marketing",
        }
    }
}

/// A consent as recorded: given or not, and when that was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consent {
    pub granted: bool,
    /// When the owner last changed it; `None` if never (off by default).
    pub changed_at: Option<i64>,
}

impl Db {
    /// The current (newest) policy.
    pub async fn current_policy(&self) -> Result<Option<Policy>> {
        optional(
            sqlx::query(
                "SELECT version, body, substantive, summary, published_at, published_by \
                 FROM privacy_policies ORDER BY version DESC LIMIT 1",
            )
            .fetch_one(self.pool())
            .await,
        )?
        .map(|r| policy_from_row(&r))
        .transpose()
    }

    /// One version.
    pub async fn policy(&self, version: i64) -> Result<Option<Policy>> {
        optional(
            sqlx::query(
                "SELECT version, body, substantive, summary, published_at, published_by \
                 FROM privacy_policies WHERE version = $1",
            )
            .bind(version)
            .fetch_one(self.pool())
            .await,
        )?
        .map(|r| policy_from_row(&r))
        .transpose()
    }

    /// Every version, newest first.
    pub async fn policies(&self) -> Result<Vec<Policy>> {
        sqlx::query(
            "SELECT version, body, substantive, summary, published_at, published_by \
             FROM privacy_policies ORDER BY version DESC",
        )
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(policy_from_row)
        .collect()
    }

    async fn insert_policy(
        &self,
        body: &str,
        substantive: bool,
        summary: &str,
        by: &str,
    ) -> Result<i64> {
        let mut tx = self.pool().begin().await?;
        let version: i64 =
            sqlx::query("SELECT COALESCE(MAX(version), 0) + 1 AS v FROM privacy_policies")
                .fetch_one(&mut *tx)
                .await?
                .try_get("v")?;
        // Two publishers racing get the same number; the primary key refuses the second.
        sqlx::query(
            "INSERT INTO privacy_policies (version, body, substantive, summary, published_at, published_by) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(version)
        .bind(body)
        .bind(i64::from(substantive))
        .bind(summary)
        .bind(now())
        .bind(by)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// The newest version that owners must have accepted (the newest substantive one).
    pub async fn policy_version_to_accept(&self) -> Result<Option<i64>> {
        Ok(sqlx::query(
            "SELECT COALESCE(MAX(version), 0) AS v FROM privacy_policies WHERE substantive = 1",
        )
        .fetch_one(self.pool())
        .await?
        .try_get::<i64, _>("v")
        .map(|v| (v > 0).then_some(v))?)
    }

    /// The newest version the user accepted, with when.
    pub async fn accepted_policy(&self, user: &UserId) -> Result<Option<(i64, i64)>> {
        optional(
            sqlx::query(
                "SELECT version, accepted_at FROM policy_acceptances WHERE user_id = $1 \
                 ORDER BY version DESC LIMIT 1",
            )
            .bind(user.as_str())
            .fetch_one(self.pool())
            .await,
        )?
        .map(|r| Ok((r.try_get("version")?, r.try_get("accepted_at")?)))
        .transpose()
    }

    /// Whether this account must accept the policy before using the console: owners
    /// who have not accepted the newest substantive version.
    pub async fn must_accept_policy(&self, user: &User) -> Result<Option<i64>> {
        if user.role != Role::Owner {
            return Ok(None);
        }
        let Some(required) = self.policy_version_to_accept().await? else {
            return Ok(None);
        };
        let accepted = self.accepted_policy(&user.id).await?.map_or(0, |(v, _)| v);
        Ok((accepted < required).then_some(required))
    }

    async fn record_acceptance(&self, user: &UserId, version: i64) -> Result<()> {
        let done = sqlx::query(
            "UPDATE policy_acceptances SET accepted_at = accepted_at WHERE user_id = $1 AND version = $2",
        )
        .bind(user.as_str())
        .bind(version)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO policy_acceptances (user_id, version, accepted_at) VALUES ($1, $2, $3)",
            )
            .bind(user.as_str())
            .bind(version)
            .bind(now())
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }

    /// How many owners have accepted a version (for the operator).
    pub async fn acceptance_count(&self, version: i64) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM policy_acceptances WHERE version = $1")
                .bind(version)
                .fetch_one(self.pool())
                .await?
                .try_get("n")?,
        )
    }

    /// A consent as recorded; off (never given) by default.
    pub async fn consent(&self, user: &UserId, purpose: Purpose) -> Result<Consent> {
        let row = optional(
            sqlx::query(
                "SELECT granted, changed_at FROM consents WHERE user_id = $1 AND purpose = $2",
            )
            .bind(user.as_str())
            .bind(purpose.as_str())
            .fetch_one(self.pool())
            .await,
        )?;
        Ok(match row {
            Some(r) => Consent {
                granted: r.try_get::<i64, _>("granted")? != 0,
                changed_at: Some(r.try_get("changed_at")?),
            },
            None => Consent {
                granted: false,
                changed_at: None,
            },
        })
    }

    async fn store_consent(&self, user: &UserId, purpose: Purpose, granted: bool) -> Result<()> {
        let at = now();
        let done = sqlx::query(
            "UPDATE consents SET granted = $1, changed_at = $2 WHERE user_id = $3 AND purpose = $4",
        )
        .bind(i64::from(granted))
        .bind(at)
        .bind(user.as_str())
        .bind(purpose.as_str())
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO consents (user_id, purpose, granted, changed_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(user.as_str())
            .bind(purpose.as_str())
            .bind(i64::from(granted))
            .bind(at)
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }

    /// Active owners, for announcements.
    async fn active_owners(&self) -> Result<Vec<User>> {
        Ok(self
            .users()
            .await?
            .into_iter()
            .filter(|u| u.role == Role::Owner && u.status == Status::Active)
            .collect())
    }
}

/// How a new version is classed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Changes what is collected, why, who gets it, how long, or the owner's rights:
    /// every owner is told and must accept again.
    Substantive,
    /// Wording, typos, contact details: published without asking anyone.
    Minor,
}

/// What publishing did.
#[derive(Debug, Clone)]
pub struct Published {
    pub version: i64,
    pub notified: usize,
}

/// Publish a new version: checked first (refused with every problem listed), kept
/// forever, audited; a substantive change e-mails every active owner.
pub async fn publish(
    db: &Db,
    actor: &Actor,
    text: &str,
    change: Change,
    summary: &str,
    public_url: &str,
) -> Result<Published> {
    let text = text.replace("\r\n", "\n");
    if let Err(problems) = check_policy(&text) {
        accounts::audit(
            db,
            actor,
            "privacy.publish",
            "policy",
            Outcome::Failure,
            &problems.to_string(),
        )
        .await?;
        return Err(Error::Conflict(problems.to_string()));
    }
    let summary: String = summary
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    let substantive = change == Change::Substantive;
    let version = db
        .insert_policy(&text, substantive, summary.trim(), &actor.name)
        .await?;
    accounts::audit(
        db,
        actor,
        "privacy.publish",
        &format!("policy v{version}"),
        Outcome::Success,
        if substantive { "substantive" } else { "minor" },
    )
    .await?;
    let mut notified = 0;
    if substantive {
        let note = if summary.trim().is_empty() {
            String::new()
        } else {
            format!("What changed: {}\n\n", summary.trim())
        };
        for owner in db.active_owners().await? {
            let body = format!(
                "Hello {},\n\nWe have changed our privacy policy (version {version}). {note}Please read it and accept it the next time you sign in:\n\n{public_url}/privacy\n\nThe history of every change, with the differences, is at {public_url}/privacy/history.\n",
                owner.username
            );
            db.enqueue_mail(
                owner.email.as_str(),
                "Our privacy policy has changed",
                &body,
                Category::Service,
            )
            .await?;
            notified += 1;
        }
    }
    Ok(Published { version, notified })
}

/// Record that the owner accepted `version` (which must be the one they were shown
/// and must still be the version to accept or newer).
pub async fn accept(db: &Db, actor: &Actor, user: &User, version: i64) -> Result<()> {
    let current = db.current_policy().await?.map_or(0, |p| p.version);
    let required = db.policy_version_to_accept().await?.unwrap_or(0);
    if version < required || version > current {
        return Err(Error::Conflict(
            "The policy changed while you were reading it; please read the current version.".into(),
        ));
    }
    db.record_acceptance(&user.id, version).await?;
    accounts::audit(
        db,
        actor,
        "privacy.accept",
        user.username.as_str(),
        Outcome::Success,
        &format!("policy v{version}"),
    )
    .await
}

/// Give or withdraw a consent; recorded with its time and audited. Takes effect at
/// once: `send_marketing` reads the consent when it queues.
pub async fn set_consent(
    db: &Db,
    actor: &Actor,
    user: &User,
    purpose: Purpose,
    granted: bool,
) -> Result<()> {
    db.store_consent(&user.id, purpose, granted).await?;
    accounts::audit(
        db,
        actor,
        if granted {
            "consent.give"
        } else {
            "consent.withdraw"
        },
        user.username.as_str(),
        Outcome::Success,
        purpose.as_str(),
    )
    .await
}

/// Queue a marketing message to every active owner who opted in, and to no one else.
/// Returns how many were queued.
pub async fn send_marketing(
    db: &Db,
    actor: &Actor,
    subject: &str,
    body: &str,
    public_url: &str,
) -> Result<usize> {
    let mut sent = 0;
    for owner in db.active_owners().await? {
        if !db.consent(&owner.id, Purpose::Marketing).await?.granted {
            continue;
        }
        let text = format!(
            "{body}\n\n--\nYou receive this because you opted in to news by e-mail. Turn it off at any time on {public_url}/account.\n"
        );
        db.enqueue_mail(owner.email.as_str(), subject, &text, Category::Marketing)
            .await?;
        sent += 1;
    }
    accounts::audit(
        db,
        actor,
        "marketing.send",
        subject,
        Outcome::Success,
        &format!("{sent} opted-in recipients"),
    )
    .await?;
    Ok(sent)
}
