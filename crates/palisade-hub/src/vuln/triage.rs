//! The life of a vulnerability report as pure functions: its states and the allowed
//! transitions between them (ISO/IEC 30111), and the deadlines the disclosure policy
//! derives from its timeline (VULN-1, VULN-3). No I/O, so every rule is unit-tested.

use super::cvss::Severity;
use crate::config::Disclosure;
use serde::Serialize;

const DAY: i64 = 24 * 3600;

/// Where a report stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    New,
    Acknowledged,
    Triaged,
    Fixing,
    Fixed,
    Disclosed,
    Duplicate,
    NotAVulnerability,
}

pub const ALL_STATES: [State; 8] = [
    State::New,
    State::Acknowledged,
    State::Triaged,
    State::Fixing,
    State::Fixed,
    State::Disclosed,
    State::Duplicate,
    State::NotAVulnerability,
];

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::New => "new",
            State::Acknowledged => "acknowledged",
            State::Triaged => "triaged",
            State::Fixing => "fixing",
            State::Fixed => "fixed",
            State::Disclosed => "disclosed",
            State::Duplicate => "duplicate",
            State::NotAVulnerability => "not-a-vulnerability",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        ALL_STATES.into_iter().find(|v| v.as_str() == s)
    }

    /// What the reporter reads on the status page.
    pub fn reporter_text(self) -> &'static str {
        match self {
            State::New => "Received; waiting for acknowledgement.",
            State::Acknowledged => "Acknowledged; we are assessing the report.",
            State::Triaged => "Confirmed and assessed; a fix is being planned.",
            State::Fixing => "A fix is being developed.",
            State::Fixed => "Fixed; the fix is being released.",
            State::Disclosed => "Fixed and publicly disclosed.",
            State::Duplicate => "Closed: already reported by someone else.",
            State::NotAVulnerability => "Closed: assessed as not a vulnerability.",
        }
    }

    /// The states this one may move to. A report is acknowledged before anything
    /// else happens to it; closed reports may be reopened for triage; a disclosure
    /// is final.
    pub fn next(self) -> &'static [State] {
        use State::*;
        match self {
            New => &[Acknowledged, Duplicate, NotAVulnerability],
            Acknowledged => &[Triaged, Duplicate, NotAVulnerability],
            Triaged => &[Fixing, Fixed, Duplicate, NotAVulnerability],
            Fixing => &[Fixed, Triaged],
            Fixed => &[Disclosed, Fixing],
            Disclosed => &[],
            Duplicate | NotAVulnerability => &[Triaged],
        }
    }

    pub fn may_become(self, to: State) -> bool {
        self.next().contains(&to)
    }

    /// Still being worked on (the reporter is owed status updates).
    pub fn is_open(self) -> bool {
        !matches!(
            self,
            State::Disclosed | State::Duplicate | State::NotAVulnerability
        )
    }
}

/// The dates of a report that deadlines are computed from.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub state: State,
    pub received_at: i64,
    /// When the reporter was last told anything (acknowledgement, state change, reply).
    pub last_update_at: i64,
    /// `None` until a CVSS vector is recorded.
    pub severity: Option<Severity>,
}

/// Which deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Acknowledge,
    Update,
    Fix,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Acknowledge => "acknowledge",
            Kind::Update => "status update",
            Kind::Fix => "fix",
        }
    }
}

/// The deadlines that apply now (`None`: does not apply in this state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Deadlines {
    pub acknowledge_by: Option<i64>,
    pub next_update_by: Option<i64>,
    pub fix_by: Option<i64>,
}

impl Deadlines {
    fn all(&self) -> impl Iterator<Item = (Kind, i64)> {
        [
            (Kind::Acknowledge, self.acknowledge_by),
            (Kind::Update, self.next_update_by),
            (Kind::Fix, self.fix_by),
        ]
        .into_iter()
        .filter_map(|(k, at)| at.map(|at| (k, at)))
    }
    /// The deadlines already passed at `now`.
    pub fn overdue(&self, now: i64) -> Vec<Kind> {
        self.all()
            .filter(|(_, at)| *at < now)
            .map(|(k, _)| k)
            .collect()
    }
    /// The earliest deadline, if any applies.
    pub fn next(&self) -> Option<(Kind, i64)> {
        self.all().min_by_key(|(_, at)| *at)
    }
}

/// Days to a fix for a severity. An unscored report counts as critical: until
/// someone has assessed it, the shortest clock runs (fail safe).
pub fn fix_days(policy: &Disclosure, severity: Option<Severity>) -> i64 {
    match severity {
        None | Some(Severity::Critical) => policy.fix_days_critical,
        Some(Severity::High) => policy.fix_days_high,
        Some(Severity::Medium) => policy.fix_days_medium,
        Some(Severity::Low | Severity::None) => policy.fix_days_low,
    }
}

/// The deadlines of a report under the policy:
/// - acknowledge within `acknowledge_days` of receipt, while it is new;
/// - once acknowledged and until closed or disclosed, tell the reporter something at
///   least every `update_days`;
/// - fix within the severity's days of receipt, until it is fixed or closed.
pub fn deadlines(policy: &Disclosure, t: &Timeline) -> Deadlines {
    use State::*;
    Deadlines {
        acknowledge_by: (t.state == New).then(|| t.received_at + policy.acknowledge_days * DAY),
        next_update_by: matches!(t.state, Acknowledged | Triaged | Fixing | Fixed)
            .then(|| t.last_update_at + policy.update_days * DAY),
        fix_by: matches!(t.state, New | Acknowledged | Triaged | Fixing)
            .then(|| t.received_at + fix_days(policy, t.severity) * DAY),
    }
}
