//! RES-1: telemetry produced while the hub is unreachable is kept on disk, survives a
//! restart of the agent, and is delivered (oldest first) once the hub is back; a record
//! leaves the queue only when the server has acknowledged it.
//!
//! Real components: Mosquitto with mutual TLS as the broker, `mosquitto_sub` with its
//! own client certificate as the receiver, the real `palisade-agent` binary.

mod common;

use common::*;
use std::time::Duration;

const N: usize = 7;
/// A distinctive duration, to find the telemetry command's child process.
const QUIET: &str = "3599.25";
const WAIT: Duration = Duration::from_secs(30);

fn queued_lines(state: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join(palisade_agent::state::QUEUE_FILE))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("queue line is JSON"))
        .collect()
}

#[test]
fn agent_queue_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = palisade_crypto::ca::HubCa::generate().expect("ca");
    let ca_file = write(&dir.path().join("ca.pem"), &ca.material.cert_pem);
    let port = free_port();
    let state = enrolled_state(dir.path(), &ca, "127.0.0.1", port);
    let state_arg = state.to_str().expect("utf-8 path").to_owned();

    // 1. The hub is down (nothing listens on the port). A telemetry source prints N
    //    readings and then stays quiet (in a child process of the shell).
    let lines: Vec<String> = (0..N)
        .map(|i| format!("{{\"temperature\":{}.5,\"humidity\":{}}}", 20 + i, 40 + i))
        .collect();
    let script = format!(
        "printf '%s\\n' {}; sleep {QUIET}",
        lines
            .iter()
            .map(|l| format!("'{l}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut agent = Agent::start(&[
        "run",
        "--state-dir",
        &state_arg,
        "--telemetry-command",
        &script,
        "--interval",
        "1s",
    ]);
    wait_until("N records queued on disk", WAIT, || {
        (queued_lines(&state).len() == N).then_some(())
    });
    // The agent keeps trying, with backoff, and says so.
    agent.wait_for_log("reconnecting in", WAIT);
    assert_eq!(
        processes_with_cmdline(&["sleep", QUIET]),
        1,
        "telemetry command running"
    );
    assert_eq!(agent.terminate(), Some(0), "graceful stop on SIGTERM");
    // The telemetry command's whole process group was stopped with the agent.
    wait_until("telemetry command to stop", Duration::from_secs(5), || {
        (processes_with_cmdline(&["sleep", QUIET]) == 0).then_some(())
    });
    let on_disk = queued_lines(&state);
    assert_eq!(on_disk.len(), N, "records kept across the stop");
    for (record, line) in on_disk.iter().zip(&lines) {
        let expected: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(record["payload"], expected);
        assert_eq!(record["kind"], "telemetry");
    }

    // 2. The hub comes back; an independent subscriber listens.
    let _broker = Broker::start(
        dir.path(),
        port,
        &ca.material.cert_pem,
        &server_cert(&ca, &["127.0.0.1", "localhost"]),
    );
    let observer = client_files(dir.path(), &ca, "observer-test");
    let telemetry = format!("devices/{DEVICE_ID}/telemetry");
    let mut sub = Subscriber::start(port, &ca_file, &observer, &[&telemetry]);

    // 3. The agent starts again, with no new telemetry: what arrives is the queue.
    let mut agent = Agent::start(&["run", "--state-dir", &state_arg]);
    let received = sub.wait_messages(N, WAIT);
    let payloads: Vec<serde_json::Value> = received
        .iter()
        .map(|m| {
            let payload = m
                .strip_prefix(&format!("{telemetry} "))
                .expect("telemetry topic");
            serde_json::from_str(payload).expect("JSON payload")
        })
        .collect();
    let expected: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(payloads, expected, "all records, oldest first");

    // 4. Acknowledged records leave the queue: the file ends up empty.
    wait_until("queue file to be empty", WAIT, || {
        let bytes = std::fs::metadata(state.join(palisade_agent::state::QUEUE_FILE))
            .ok()?
            .len();
        (bytes == 0).then_some(())
    });
    assert_eq!(agent.terminate(), Some(0));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sub.messages.len(),
        N,
        "nothing sent twice: {:?}",
        sub.messages
    );
}
