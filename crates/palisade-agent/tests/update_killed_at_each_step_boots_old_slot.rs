//! The agent killed (an injected abort) at each step of an install — after the download,
//! after writing the slot, after the switch, during the trial before the commit — boots
//! the previous slot at its next start and reports the failure with its reason; the
//! release that broke a start is not retried automatically (UPD-5).

mod tuf_common;

use tuf_common::{Device, Scenario, Server, python};

#[test]
fn killed_at_each_step_boots_the_old_slot() {
    let Some(python) = python() else { return };
    let scenario = Scenario::build(&python, "firmware");
    let server = Server::start();
    server.serve_step(&scenario.step("v1"));
    for (fault, expected) in [
        ("after_download", "failed"),
        ("after_write", "failed"),
        ("after_switch", "rolled_back"),
        ("before_commit", "rolled_back"),
    ] {
        let device = Device::new(&scenario, "1.0.0");
        let release = format!("r-{fault}");
        let args = ["--release", release.as_str()];
        let run = device.update(
            &server,
            "MODEL-2.0.0.img",
            "2.0.0",
            &args,
            &[("PALISADE_AGENT_FAULT", fault)],
        );
        assert_ne!(run.code, 0, "{fault}: the agent must have died");
        assert!(
            run.stderr.contains("injected fault"),
            "{fault}: {}",
            run.stderr
        );
        let status = device.status();
        assert!(
            status.contains("firmware version: 1.0.0"),
            "{fault}: {status}"
        );

        // The next start: the old slot is active, the failure is reported first.
        let run = device.update(&server, "MODEL-2.0.0.img", "2.0.0", &args, &[]);
        let reports = run.reports();
        assert_eq!(
            reports.first().map(|r| r["step"].clone()),
            Some(expected.into()),
            "{fault}: {}\n{}",
            run.stdout,
            run.stderr
        );
        assert_eq!(reports[0]["release"], release.as_str());
        assert!(
            reports[0]["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{fault}: a reason is given"
        );
        let boot = device.boot();
        if expected == "rolled_back" {
            // The broken release is not retried: the old slot stays.
            assert_eq!(run.code, 1, "{fault}: {}", run.stdout);
            assert_eq!(boot["active"], "a", "{fault}");
            assert!(boot["tentative"].is_null(), "{fault}");
            let status = device.status();
            assert!(
                status.contains("firmware version: 1.0.0"),
                "{fault}: {status}"
            );
            assert!(status.contains("rolled_back"), "{fault}: {status}");
        } else {
            // Interrupted before the switch: the old slot never stopped being active,
            // and the update is retried (resuming the download) and completes.
            assert_eq!(run.code, 0, "{fault}: {}\n{}", run.stdout, run.stderr);
            assert_eq!(boot["active"], "b", "{fault}");
            assert!(run.steps().ends_with(&["committed".to_owned()]), "{fault}");
        }
    }
}
