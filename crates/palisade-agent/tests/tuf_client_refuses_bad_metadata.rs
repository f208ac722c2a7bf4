//! The bare TUF client refuses metadata an attacker made without the offline keys:
//! targets signed by only one of two required keys, by unknown keys, or not at all;
//! expired timestamp, snapshot or targets (freeze); a snapshot naming targets metadata
//! the server does not have (mix-and-match). Each refresh exits 1 and a download
//! writes nothing; the honest repository passes (UPD-2).

mod tuf_common;

use tuf_common::{Client, Scenario, Server, python};

#[test]
fn forged_or_frozen_metadata_is_refused() {
    let Some(python) = python() else { return };
    let scenario = Scenario::build(&python, "attacks");
    let server = Server::start();

    // The honest case: targets signed by both required keys.
    server.serve_step(&scenario.step("good"));
    let client = Client::init(&scenario);
    let run = client.refresh(&server);
    assert_eq!(run.code, 0, "honest refresh: {}", run.stderr);

    for step in [
        "targets_one_signature",
        "targets_unknown_key",
        "targets_unsigned",
        "timestamp_expired",
        "snapshot_expired",
        "targets_expired",
        "mix_and_match",
    ] {
        server.serve_step(&scenario.step(step));
        // A fresh client and one that trusts the honest version 1.
        let fresh = Client::init(&scenario);
        for (who, c) in [("fresh", &fresh), ("updated", &client)] {
            let run = c.refresh(&server);
            assert_eq!(
                run.code, 1,
                "{step} ({who}) must be refused: {}",
                run.stdout
            );
            eprintln!("{step} ({who}): {}", run.stderr.trim());
            let run = c.download(&server, &["file.txt"]);
            assert_eq!(run.code, 1, "{step} ({who}) download must be refused");
            assert!(c.downloaded().is_empty(), "{step} ({who}) wrote a target");
        }
        // The updated client still trusts version 1 of targets.
        assert_eq!(client.version("targets"), 1, "{step}");
    }
}
