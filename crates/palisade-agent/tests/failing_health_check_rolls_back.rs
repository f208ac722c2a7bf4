//! After the restart into the new slot, a failing health command rolls back to the
//! previous slot and reports `rolled_back` with the reason; a passing one commits
//! (UPD-5).

mod tuf_common;

use tuf_common::{Device, Scenario, Server, python};

#[test]
fn failing_health_check_rolls_back() {
    let Some(python) = python() else { return };
    let scenario = Scenario::build(&python, "firmware");
    let server = Server::start();
    server.serve_step(&scenario.step("v1"));

    let device = Device::new(&scenario, "1.0.0");
    let run = device.update(
        &server,
        "MODEL-2.0.0.img",
        "2.0.0",
        &["--release", "bad", "--health-command", "exit 3"],
        &[],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.steps(),
        ["downloading", "verified", "installed", "rolled_back"]
    );
    let reason = run.reports()[3]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("health check failed"), "{reason}");
    let boot = device.boot();
    assert_eq!(boot["active"], "a");
    assert!(boot["tentative"].is_null());
    let status = device.status();
    assert!(status.contains("firmware version: 1.0.0"), "{status}");
    assert!(status.contains("rolled_back"), "{status}");

    // Not retried automatically.
    let run = device.update(
        &server,
        "MODEL-2.0.0.img",
        "2.0.0",
        &["--release", "bad"],
        &[],
    );
    assert_eq!(run.code, 1);
    assert_eq!(device.boot()["active"], "a");

    // A health command that passes commits.
    let ok = Device::new(&scenario, "1.0.0");
    let marker = ok.dir.path().join("healthy");
    std::fs::write(&marker, b"").expect("marker");
    let check = format!("test -f '{}'", marker.display());
    let run = ok.update(
        &server,
        "MODEL-2.0.0.img",
        "2.0.0",
        &["--release", "good", "--health-command", &check],
        &[],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.steps().last().map(String::as_str), Some("committed"));
    assert_eq!(ok.boot()["active"], "b");
}
