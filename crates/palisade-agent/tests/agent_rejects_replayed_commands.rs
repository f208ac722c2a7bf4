//! ENC-4: the agent executes a command only if its sequence number is above the highest
//! one it has executed, and it has not expired; replays and stale commands are rejected
//! and reported, and the highest executed seq survives a restart.
//!
//! Real components: Mosquitto with mutual TLS as the broker, `mosquitto_pub` and
//! `mosquitto_sub` (with a second client certificate) as the hub's side, the real
//! `palisade-agent` binary. Also checks, while it is connected, that the agent holds no
//! listening socket (security invariant 1).

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn agent_rejects_replayed_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = palisade_crypto::ca::HubCa::generate().expect("ca");
    let ca_file = write(&dir.path().join("ca.pem"), &ca.material.cert_pem);
    let port = free_port();
    let _broker = Broker::start(
        dir.path(),
        port,
        &ca.material.cert_pem,
        &server_cert(&ca, &["127.0.0.1", "localhost"]),
    );
    let operator = client_files(dir.path(), &ca, "operator-test");
    let state = enrolled_state(dir.path(), &ca, "127.0.0.1", port);
    let state_arg = state.to_str().expect("utf-8 path").to_owned();

    let events = format!("devices/{DEVICE_ID}/events");
    let states = format!("devices/{DEVICE_ID}/state");
    let commands = format!("devices/{DEVICE_ID}/commands");
    let mut sub = Subscriber::start(port, &ca_file, &operator, &[&events, &states]);

    let mut agent = Agent::start(&["run", "--state-dir", &state_arg]);
    agent.wait_for_log("subscribed", WAIT);
    assert_eq!(sub.next_on(&states, WAIT)["status"], "online");
    // Security invariant 1, while connected: the agent listens on nothing.
    assert_eq!(listening_sockets(agent.pid()), Vec::<String>::new());

    let send = |seq: u64, expires_at: i64, name: &str| {
        let cmd = json!({"seq": seq, "expires_at": expires_at, "name": name, "args": {}});
        publish(port, &ca_file, &operator, &commands, &cmd.to_string());
    };
    let later = unix_now() + 300;

    // A fresh command runs.
    send(5, later, "ping");
    let reply = sub.next_on(&events, WAIT);
    assert_eq!(
        reply,
        json!({"command_seq": 5, "result": "ok", "reason": null})
    );

    // The same command again: a replay.
    send(5, later, "ping");
    let reply = sub.next_on(&events, WAIT);
    assert_eq!(reply["command_seq"], 5);
    assert_eq!(reply["result"], "rejected");
    assert!(
        reply["reason"].as_str().unwrap_or("").contains("replayed"),
        "{reply}"
    );

    // An older one.
    send(4, later, "ping");
    let reply = sub.next_on(&events, WAIT);
    assert_eq!(reply["command_seq"], 4);
    assert_eq!(reply["result"], "rejected");

    // A newer one that has expired.
    send(6, unix_now() - 10, "ping");
    let reply = sub.next_on(&events, WAIT);
    assert_eq!(reply["command_seq"], 6);
    assert_eq!(reply["result"], "rejected");
    assert!(
        reply["reason"].as_str().unwrap_or("").contains("expired"),
        "{reply}"
    );

    // An unknown command is rejected; report-state runs and publishes the state.
    send(7, later, "format-disk");
    let reply = sub.next_on(&events, WAIT);
    assert_eq!(
        (reply["command_seq"].clone(), reply["result"].clone()),
        (json!(7), json!("rejected"))
    );
    send(8, later, "report-state");
    let reply = sub.next_on(&events, WAIT);
    assert_eq!(
        reply,
        json!({"command_seq": 8, "result": "ok", "reason": null})
    );
    let doc = sub.next_on(&states, WAIT);
    assert_eq!(doc["last_command_seq"], 8);

    // The highest executed seq survives a restart of the agent.
    assert_eq!(agent.terminate(), Some(0));
    let mut agent = Agent::start(&["run", "--state-dir", &state_arg]);
    agent.wait_for_log("subscribed", WAIT);
    send(8, later, "ping");
    let reply = sub.next_on(&events, WAIT);
    assert_eq!(reply["command_seq"], 8);
    assert_eq!(reply["result"], "rejected");
    send(9, later, "ping");
    let reply = sub.next_on(&events, WAIT);
    assert_eq!(
        reply,
        json!({"command_seq": 9, "result": "ok", "reason": null})
    );
    assert_eq!(agent.terminate(), Some(0));
}
