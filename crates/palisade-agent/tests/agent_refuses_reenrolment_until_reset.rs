//! DATA-3 (basics) and enrolment safety: an enrolled device refuses to enrol again
//! (its identity is never silently replaced), a factory reset overwrites and deletes the
//! private key and removes certificate, configuration, command state and queued
//! telemetry, says what it wiped, and cannot run while the agent is using the
//! directory. After a reset the device can be enrolled again.
//!
//! Real components: the real `palisade-agent` binary; the refusals happen before any
//! network traffic, so no hub is needed.

mod common;

use common::*;
use palisade_agent::state::{CA_FILE, CERT_FILE, COMMANDS_FILE, CONFIG_FILE, KEY_FILE, QUEUE_FILE};
use std::time::Duration;

#[test]
fn agent_refuses_reenrolment_until_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = palisade_crypto::ca::HubCa::generate().expect("ca");
    let ca_file = write(&dir.path().join("hub-ca.pem"), &ca.material.cert_pem);
    let port = free_port();
    let state = enrolled_state(dir.path(), &ca, "127.0.0.1", port);
    let state_arg = state.to_str().expect("utf-8").to_owned();
    let key_before = std::fs::read(state.join(KEY_FILE)).expect("key");
    let enroll_args = [
        "enroll",
        "--hub",
        "https://127.0.0.1:9",
        "--ca",
        ca_file.to_str().expect("utf-8"),
        "--claim",
        "SECOND-CLAIM-CODE",
        "--state-dir",
        &state_arg,
    ];

    // Already enrolled: refused with a clear message, nothing changed.
    let mut agent = Agent::start(&enroll_args);
    let (code, _) = agent.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(1));
    let log = agent.drain_log();
    assert!(
        log.contains("already enrolled") && log.contains(DEVICE_ID),
        "{log}"
    );
    assert!(log.contains("palisade-agent reset"), "{log}");
    assert_eq!(
        std::fs::read(state.join(KEY_FILE)).expect("key"),
        key_before
    );

    // Give the agent some state: queued telemetry and a command seq.
    let mut agent = Agent::start(&[
        "run",
        "--state-dir",
        &state_arg,
        "--simulate",
        "--interval",
        "100ms",
    ]);
    wait_until("telemetry queued", Duration::from_secs(30), || {
        let len = std::fs::metadata(state.join(QUEUE_FILE)).ok()?.len();
        (len > 0).then_some(())
    });
    std::fs::write(state.join(COMMANDS_FILE), br#"{"last_seq":41}"#).expect("seq");

    // Not while the agent runs.
    let mut reset = Agent::start(&["reset", "--state-dir", &state_arg]);
    let (code, _) = reset.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(1));
    assert!(reset.drain_log().contains("another palisade-agent process"));
    assert!(state.join(KEY_FILE).exists());
    assert_eq!(agent.terminate(), Some(0));

    // Reset: everything that identifies the device or holds its data is gone.
    let mut reset = Agent::start(&["reset", "--state-dir", &state_arg]);
    let (code, out) = reset.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", reset.drain_log());
    assert!(
        out.contains(&format!(
            "{}: overwritten and deleted",
            state.join(KEY_FILE).display()
        )),
        "{out}"
    );
    for name in [
        KEY_FILE,
        CERT_FILE,
        CA_FILE,
        CONFIG_FILE,
        COMMANDS_FILE,
        QUEUE_FILE,
    ] {
        assert!(!state.join(name).exists(), "{name} survived the reset");
        assert!(out.contains(name), "{name} not reported: {out}");
    }

    // The agent no longer has an identity; enrolment is allowed again (it gets as far
    // as the network: nothing listens on port 9).
    let mut agent = Agent::start(&["run", "--state-dir", &state_arg]);
    let (code, _) = agent.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(1));
    assert!(agent.drain_log().contains("not enrolled"));
    let mut agent = Agent::start(&enroll_args);
    let (code, _) = agent.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(1));
    let log = agent.drain_log();
    assert!(
        log.contains("127.0.0.1:9") || log.contains("HTTP request"),
        "{log}"
    );
    assert!(!log.contains("already enrolled"), "{log}");
    assert!(
        !state.join(KEY_FILE).exists(),
        "a failed enrolment leaves no key"
    );
}
