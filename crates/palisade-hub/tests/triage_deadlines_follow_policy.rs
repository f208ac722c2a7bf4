//! VULN-1, VULN-3 (ETSI 5.2-1, 5.2-2; ISO/IEC 30111): triage deadlines come from the
//! configured policy — acknowledge within N days, a status update at least every M
//! days until resolved, a fix target by CVSS severity — and the states move only along
//! the allowed transitions. Negative cases: an unscored report is held to the shortest
//! (critical) fix target, not to none; a closed report has no deadlines to miss;
//! skipping acknowledgement or leaving a disclosure is refused; and in the console an
//! overdue report is listed first and marked.

mod common;

use common::TestHub;
use palisade_hub::config::Disclosure;
use palisade_hub::vuln::cvss::{self, Severity};
use palisade_hub::vuln::triage::{ALL_STATES, Kind, State, Timeline, deadlines, fix_days};

const DAY: i64 = 86_400;
const T: i64 = 1_800_000_000;

fn timeline(state: State, last_update_at: i64, severity: Option<Severity>) -> Timeline {
    Timeline {
        state,
        received_at: T,
        last_update_at,
        severity,
        cra: Default::default(),
    }
}

#[test]
fn a_new_report_must_be_acknowledged_and_fixed_in_time() {
    let p = Disclosure::default();
    let d = deadlines(&p, &timeline(State::New, T, None));
    assert_eq!(d.acknowledge_by, Some(T + 3 * DAY));
    assert_eq!(
        d.next_update_by, None,
        "the acknowledgement is the first update"
    );
    assert_eq!(d.fix_by, Some(T + 14 * DAY), "unscored counts as critical");
    assert!(d.overdue(T + 3 * DAY).is_empty(), "due at, not before");
    assert_eq!(d.overdue(T + 3 * DAY + 1), vec![Kind::Acknowledge]);
    assert_eq!(d.next(), Some((Kind::Acknowledge, T + 3 * DAY)));
}

#[test]
fn updates_are_due_every_m_days_from_the_last_one_until_resolved() {
    let p = Disclosure {
        update_days: 7,
        ..Disclosure::default()
    };
    for state in [
        State::Acknowledged,
        State::Triaged,
        State::Fixing,
        State::Fixed,
    ] {
        let d = deadlines(&p, &timeline(state, T + 2 * DAY, Some(Severity::High)));
        assert_eq!(d.acknowledge_by, None, "{state:?}");
        assert_eq!(d.next_update_by, Some(T + 9 * DAY), "{state:?}");
    }
    for state in [State::Disclosed, State::Duplicate, State::NotAVulnerability] {
        let d = deadlines(&p, &timeline(state, T, None));
        assert_eq!(d, Default::default(), "closed: {state:?}");
        assert!(d.overdue(T + 1000 * DAY).is_empty());
    }
    // Once fixed, the fix deadline no longer applies; updates still do until disclosed.
    let d = deadlines(&p, &timeline(State::Fixed, T, None));
    assert_eq!(d.fix_by, None);
}

#[test]
fn the_fix_target_follows_severity_from_the_cvss_vector() {
    let p = Disclosure {
        fix_days_critical: 7,
        fix_days_high: 30,
        fix_days_medium: 60,
        fix_days_low: 120,
        ..Disclosure::default()
    };
    for (vector, days) in [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 7), // 9.8 critical
        ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 30), // 7.8 high
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 60), // 6.1 medium
        ("CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:L/I:N/A:N", 120), // 2.7 low
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 120), // 0.0 none
    ] {
        let severity = cvss::parse(vector).expect(vector).severity;
        let d = deadlines(&p, &timeline(State::Triaged, T, Some(severity)));
        assert_eq!(d.fix_by, Some(T + days * DAY), "{vector}");
    }
    assert_eq!(fix_days(&p, None), 7, "unscored: the shortest target");
}

#[test]
fn states_move_only_along_allowed_transitions() {
    use State::*;
    assert!(!New.may_become(Triaged), "acknowledge first");
    assert!(!New.may_become(Fixed));
    assert!(!New.may_become(Disclosed));
    assert!(
        !Acknowledged.may_become(Disclosed),
        "disclose only after a fix"
    );
    assert!(!Triaged.may_become(Disclosed));
    assert!(Disclosed.next().is_empty(), "a disclosure is final");
    assert!(
        Duplicate.may_become(Triaged),
        "a closed report can be reopened"
    );
    assert!(!New.may_become(New));
    // Every state is reachable from New.
    let mut seen = vec![New];
    let mut i = 0;
    while i < seen.len() {
        for next in seen[i].next() {
            if !seen.contains(next) {
                seen.push(*next);
            }
        }
        i += 1;
    }
    for s in ALL_STATES {
        assert!(seen.contains(&s), "{s:?} unreachable");
        assert_eq!(State::parse(s.as_str()), Some(s));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_reports_stand_out_in_the_console() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.setup_admin().await;
    let db = &hub.hub.db;
    for title in ["Fresh report", "Old unacknowledged report"] {
        let mut b = hub.browser();
        b.get("/security").await;
        let page = b
            .post_form(
                "/security/reports",
                &[("title", title), ("description", "x")],
            )
            .await;
        assert_eq!(page.status, 200);
    }
    // Make the second one four days old: past the three-day acknowledgement.
    sqlx::query("UPDATE vuln_reports SET received_at = received_at - $1, last_update_at = last_update_at - $1 WHERE title = $2")
        .bind(4 * DAY)
        .bind("Old unacknowledged report")
        .execute(db.pool())
        .await
        .expect("age");
    let page = admin.get("/reports").await;
    assert_eq!(page.status, 200);
    let old = page.body.find("Old unacknowledged report").expect("old");
    let fresh = page.body.find("Fresh report").expect("fresh");
    assert!(old < fresh, "overdue first");
    assert_eq!(
        page.body.matches("OVERDUE: acknowledge").count(),
        1,
        "{}",
        page.body
    );
    assert_eq!(page.body.matches(" overdue\"").count(), 1, "one row marked");
    hub.hub.shutdown().await;
}
