//! The owner can postpone automatic install until a time or switch it off, with a clear
//! warning; the offer then stays pending (nothing fetched) and `status` says so and why.
//! Automatic install is on by default and resumes when the postponement ends (UPD-3).

mod tuf_common;

use tuf_common::{Device, Scenario, Server, python};

#[test]
fn auto_update_can_be_postponed_or_switched_off() {
    let Some(python) = python() else { return };
    let scenario = Scenario::build(&python, "firmware");
    let server = Server::start();
    server.serve_step(&scenario.step("v1"));
    let device = Device::new(&scenario, "1.0.0");
    let state = device.state_dir();
    assert!(
        device.status().contains("automatic install: on"),
        "on by default"
    );

    let run = device.agent(
        &[
            "auto-update",
            "--state-dir",
            &state,
            "postpone",
            "--until",
            "2999-01-01T00:00:00Z",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("WARNING"), "{}", run.stdout);
    let run = device.update(
        &server,
        "MODEL-2.0.0.img",
        "2.0.0",
        &["--release", "r2"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("postponed"), "{}", run.stdout);
    assert_eq!(server.hits("/"), 0, "nothing fetched while postponed");
    let status = device.status();
    assert!(
        status.contains("automatic install: OFF: postponed by the owner until 2999-01-01"),
        "{status}"
    );
    assert!(
        status.contains("pending update: MODEL 2.0.0 (release r2)"),
        "{status}"
    );
    assert!(status.contains("firmware version: 1.0.0"), "{status}");

    let run = device.agent(&["auto-update", "--state-dir", &state, "off"], &[]);
    assert!(run.stdout.contains("WARNING"), "{}", run.stdout);
    let run = device.update(
        &server,
        "MODEL-2.0.0.img",
        "2.0.0",
        &["--release", "r2"],
        &[],
    );
    assert!(run.stdout.contains("switched off"), "{}", run.stdout);
    assert!(
        device
            .status()
            .contains("automatic install: OFF: switched off")
    );
    assert_eq!(server.hits("/"), 0);

    // A malformed time changes nothing.
    let run = device.agent(
        &[
            "auto-update",
            "--state-dir",
            &state,
            "postpone",
            "--until",
            "tomorrow",
        ],
        &[],
    );
    assert_ne!(run.code, 0);

    // A postponement that has ended: automatic install is on again.
    let run = device.agent(&["auto-update", "--state-dir", &state, "on"], &[]);
    assert_eq!(run.code, 0);
    let run = device.agent(
        &[
            "auto-update",
            "--state-dir",
            &state,
            "postpone",
            "--until",
            "2000-01-01T00:00:00Z",
        ],
        &[],
    );
    assert_eq!(run.code, 0);
    assert!(device.status().contains("automatic install: on"));
    let run = device.update(
        &server,
        "MODEL-2.0.0.img",
        "2.0.0",
        &["--release", "r2"],
        &[],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let status = device.status();
    assert!(status.contains("firmware version: 2.0.0"), "{status}");
    assert!(status.contains("pending update: none"), "{status}");
}
