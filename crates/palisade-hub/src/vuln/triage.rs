//! The life of a vulnerability report as pure functions: its states and the allowed
//! transitions between them (ISO/IEC 30111), and the deadlines the disclosure policy
//! derives from its timeline (VULN-1, VULN-3), including the EU Cyber Resilience Act's
//! reporting clock for actively exploited vulnerabilities (VULN-7, CRA Art. 14). No
//! I/O, so every rule is unit-tested.

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
    /// The authority reporting of an actively exploited vulnerability (VULN-7).
    pub cra: CraTimeline,
}

/// When the maker learnt that a vulnerability is actively exploited, and what it has
/// reported to the authorities since (CRA Art. 14: the CSIRT coordinator and ENISA,
/// through the single reporting platform). `None` = not yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CraTimeline {
    pub exploited_at: Option<i64>,
    /// When the report first reached `fixed` (a corrective measure is available).
    pub fixed_at: Option<i64>,
    pub early_warning_at: Option<i64>,
    pub notification_at: Option<i64>,
    pub final_report_at: Option<i64>,
}

/// The three reports CRA Art. 14(2) asks for, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CraStage {
    EarlyWarning,
    Notification,
    FinalReport,
}

pub const CRA_STAGES: [CraStage; 3] = [
    CraStage::EarlyWarning,
    CraStage::Notification,
    CraStage::FinalReport,
];

/// Hours from awareness of active exploitation to the early warning (CRA Art. 14(2)(a)).
pub const CRA_EARLY_WARNING_HOURS: i64 = 24;
/// Hours from awareness to the vulnerability notification (Art. 14(2)(b)).
pub const CRA_NOTIFICATION_HOURS: i64 = 72;
/// Days from the corrective measure being available to the final report (Art. 14(2)(c)).
pub const CRA_FINAL_REPORT_DAYS: i64 = 14;

impl CraStage {
    pub fn as_str(self) -> &'static str {
        match self {
            CraStage::EarlyWarning => "early-warning",
            CraStage::Notification => "notification",
            CraStage::FinalReport => "final-report",
        }
    }
    pub fn parse(s: &str) -> Option<CraStage> {
        CRA_STAGES.into_iter().find(|v| v.as_str() == s)
    }
    pub fn title(self) -> &'static str {
        match self {
            CraStage::EarlyWarning => "CRA early warning (24 h)",
            CraStage::Notification => "CRA vulnerability notification (72 h)",
            CraStage::FinalReport => "CRA final report (14 days after the fix)",
        }
    }
    /// The stage that must have been sent before this one.
    pub fn previous(self) -> Option<CraStage> {
        match self {
            CraStage::EarlyWarning => None,
            CraStage::Notification => Some(CraStage::EarlyWarning),
            CraStage::FinalReport => Some(CraStage::Notification),
        }
    }
}

impl CraTimeline {
    pub fn sent_at(&self, stage: CraStage) -> Option<i64> {
        match stage {
            CraStage::EarlyWarning => self.early_warning_at,
            CraStage::Notification => self.notification_at,
            CraStage::FinalReport => self.final_report_at,
        }
    }

    /// Why `stage` may not be recorded as sent now, if it may not: only for an
    /// exploited vulnerability, once, in order, and the final report only after a fix.
    pub fn refuse_recording(&self, stage: CraStage) -> Option<&'static str> {
        if self.exploited_at.is_none() {
            return Some(
                "Mark the vulnerability as actively exploited first: the CRA reports are for exploited vulnerabilities.",
            );
        }
        if self.sent_at(stage).is_some() {
            return Some("That report is already recorded as sent.");
        }
        if let Some(previous) = stage.previous()
            && self.sent_at(previous).is_none()
        {
            return Some(
                "Record the earlier CRA report first (early warning, then notification, then final report).",
            );
        }
        if stage == CraStage::FinalReport && self.fixed_at.is_none() {
            return Some(
                "The final report is due once a fix is available: move the report to fixed first.",
            );
        }
        None
    }
}

/// Which deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Acknowledge,
    Update,
    Fix,
    CraEarlyWarning,
    CraNotification,
    CraFinalReport,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Acknowledge => "acknowledge",
            Kind::Update => "status update",
            Kind::Fix => "fix",
            Kind::CraEarlyWarning => "CRA early warning",
            Kind::CraNotification => "CRA notification",
            Kind::CraFinalReport => "CRA final report",
        }
    }
}

/// The deadlines that apply now (`None`: does not apply in this state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Deadlines {
    pub acknowledge_by: Option<i64>,
    pub next_update_by: Option<i64>,
    pub fix_by: Option<i64>,
    pub cra_early_warning_by: Option<i64>,
    pub cra_notification_by: Option<i64>,
    pub cra_final_report_by: Option<i64>,
}

impl Deadlines {
    /// Every deadline that applies, in a fixed order.
    pub fn all(&self) -> impl Iterator<Item = (Kind, i64)> {
        [
            (Kind::Acknowledge, self.acknowledge_by),
            (Kind::Update, self.next_update_by),
            (Kind::Fix, self.fix_by),
            (Kind::CraEarlyWarning, self.cra_early_warning_by),
            (Kind::CraNotification, self.cra_notification_by),
            (Kind::CraFinalReport, self.cra_final_report_by),
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
/// - fix within the severity's days of receipt, until it is fixed or closed;
/// - once marked actively exploited: the CRA early warning within 24 hours and the
///   notification within 72 hours of awareness, and the final report within 14 days
///   of the fix, each until it is recorded as sent. These run whatever the report's
///   state: a closed or disclosed report does not end a legal duty.
pub fn deadlines(policy: &Disclosure, t: &Timeline) -> Deadlines {
    use State::*;
    let cra = &t.cra;
    let unsent = |stage: CraStage, due: Option<i64>| due.filter(|_| cra.sent_at(stage).is_none());
    let hours = |h: i64| move |at: i64| at + h * 3600;
    Deadlines {
        cra_early_warning_by: unsent(
            CraStage::EarlyWarning,
            cra.exploited_at.map(hours(CRA_EARLY_WARNING_HOURS)),
        ),
        cra_notification_by: unsent(
            CraStage::Notification,
            cra.exploited_at.map(hours(CRA_NOTIFICATION_HOURS)),
        ),
        cra_final_report_by: unsent(
            CraStage::FinalReport,
            cra.exploited_at
                .and(cra.fixed_at)
                .map(|fixed| fixed + CRA_FINAL_REPORT_DAYS * DAY),
        ),
        acknowledge_by: (t.state == New).then(|| t.received_at + policy.acknowledge_days * DAY),
        next_update_by: matches!(t.state, Acknowledged | Triaged | Fixing | Fixed)
            .then(|| t.last_update_at + policy.update_days * DAY),
        fix_by: matches!(t.state, New | Acknowledged | Triaged | Fixing)
            .then(|| t.received_at + fix_days(policy, t.severity) * DAY),
    }
}

#[cfg(test)]
mod cra_tests {
    use super::*;

    const H: i64 = 3600;

    fn timeline(cra: CraTimeline) -> Timeline {
        Timeline {
            state: State::Fixing,
            received_at: 1_000_000,
            last_update_at: 1_000_000,
            severity: Some(Severity::High),
            cra,
        }
    }

    #[test]
    fn vuln7_no_authority_clock_without_active_exploitation() {
        let d = deadlines(&Disclosure::default(), &timeline(CraTimeline::default()));
        assert_eq!(
            (
                d.cra_early_warning_by,
                d.cra_notification_by,
                d.cra_final_report_by
            ),
            (None, None, None)
        );
    }

    #[test]
    fn vuln7_awareness_starts_the_24_and_72_hour_clocks() {
        let aware = 2_000_000;
        let cra = CraTimeline {
            exploited_at: Some(aware),
            ..CraTimeline::default()
        };
        let d = deadlines(&Disclosure::default(), &timeline(cra));
        assert_eq!(d.cra_early_warning_by, Some(aware + 24 * H));
        assert_eq!(d.cra_notification_by, Some(aware + 72 * H));
        assert_eq!(d.cra_final_report_by, None, "no fix yet");
        // One second past 24 hours the early warning is overdue, the notification not.
        assert_eq!(d.overdue(aware + 24 * H + 1), vec![Kind::CraEarlyWarning]);
        assert!(d.overdue(aware + 24 * H).is_empty());
    }

    #[test]
    fn vuln7_final_report_is_due_14_days_after_the_fix_and_sent_reports_stop_their_clock() {
        let aware = 2_000_000;
        let fixed = aware + 5 * DAY;
        let cra = CraTimeline {
            exploited_at: Some(aware),
            fixed_at: Some(fixed),
            early_warning_at: Some(aware + H),
            notification_at: Some(aware + 2 * H),
            final_report_at: None,
        };
        let mut t = timeline(cra);
        t.state = State::Disclosed;
        let d = deadlines(&Disclosure::default(), &t);
        assert_eq!(d.cra_early_warning_by, None);
        assert_eq!(d.cra_notification_by, None);
        assert_eq!(
            d.cra_final_report_by,
            Some(fixed + 14 * DAY),
            "a disclosed report still owes the final report"
        );
    }

    #[test]
    fn vuln7_reports_are_recorded_only_in_order_and_only_when_due() {
        let none = CraTimeline::default();
        assert!(none.refuse_recording(CraStage::EarlyWarning).is_some());
        let aware = CraTimeline {
            exploited_at: Some(1),
            ..CraTimeline::default()
        };
        assert_eq!(aware.refuse_recording(CraStage::EarlyWarning), None);
        assert!(aware.refuse_recording(CraStage::Notification).is_some());
        let warned = CraTimeline {
            early_warning_at: Some(2),
            ..aware
        };
        assert!(
            warned.refuse_recording(CraStage::EarlyWarning).is_some(),
            "once"
        );
        assert_eq!(warned.refuse_recording(CraStage::Notification), None);
        let notified = CraTimeline {
            notification_at: Some(3),
            ..warned
        };
        assert!(
            notified.refuse_recording(CraStage::FinalReport).is_some(),
            "no final report before a fix"
        );
        let fixed = CraTimeline {
            fixed_at: Some(4),
            ..notified
        };
        assert_eq!(fixed.refuse_recording(CraStage::FinalReport), None);
    }
}
