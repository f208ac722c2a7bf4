//! The bare TUF client never goes back to older metadata once it trusted newer: a
//! replayed version 1 repository (old timestamp), a new timestamp naming an older
//! snapshot, and a new timestamp and snapshot (the keys a hub holds) naming older
//! targets metadata are all refused with exit 1, and the trusted versions stay at 2.
//! So a compromised hub cannot send a device back to an older signed release (UPD-4).

mod tuf_common;

use tuf_common::{Client, Scenario, Server, python};

#[test]
fn older_metadata_is_refused_after_newer_was_trusted() {
    let Some(python) = python() else { return };
    let scenario = Scenario::build(&python, "attacks");
    let server = Server::start();
    let client = Client::init(&scenario);

    server.serve_step(&scenario.step("good"));
    let run = client.refresh(&server);
    assert_eq!(run.code, 0, "v1: {}", run.stderr);
    server.serve_step(&scenario.step("v2"));
    let run = client.refresh(&server);
    assert_eq!(run.code, 0, "v2: {}", run.stderr);
    for role in ["timestamp", "snapshot", "targets"] {
        assert_eq!(client.version(role), 2, "{role}");
    }
    let run = client.download(&server, &["file.txt"]);
    assert_eq!(run.code, 0, "v2 download: {}", run.stderr);
    let installed = client.target_dir().join("file.txt");
    assert_eq!(std::fs::read(&installed).expect("file"), b"release 2\n");

    for step in [
        "rollback_timestamp",
        "rollback_snapshot",
        "rollback_targets",
    ] {
        server.serve_step(&scenario.step(step));
        let run = client.refresh(&server);
        assert_eq!(run.code, 1, "{step} must be refused: {}", run.stdout);
        eprintln!("{step}: {}", run.stderr.trim());
        let run = client.download(&server, &["file.txt"]);
        assert_eq!(run.code, 1, "{step}: download must be refused");
        assert_eq!(
            std::fs::read(&installed).expect("file"),
            b"release 2\n",
            "{step}: release 1 not written"
        );
        for role in ["snapshot", "targets"] {
            assert_eq!(client.version(role), 2, "{step}: {role}");
        }
        assert!(client.version("timestamp") >= 2, "{step}");
    }
}
