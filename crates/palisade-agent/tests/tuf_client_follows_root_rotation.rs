//! The bare TUF client follows root key rotation one version at a time (1 -> 2 -> 3,
//! each new root signed by the old threshold and its own), trusts the rotated timestamp
//! key, and refuses a new root signed only by new keys, by fewer than the old threshold
//! of old keys, or claiming a version other than N+1; the trusted root stays at 3
//! (UPD-2).

mod tuf_common;

use tuf_common::{Client, Scenario, Server, python};

#[test]
fn rotation_is_followed_and_unauthorised_rotation_refused() {
    let Some(python) = python() else { return };
    let scenario = Scenario::build(&python, "rotation");
    let server = Server::start();
    let client = Client::init(&scenario);

    server.serve_step(&scenario.step("v1"));
    let run = client.refresh(&server);
    assert_eq!(run.code, 0, "v1: {}", run.stderr);
    assert_eq!(client.version("root"), 1);

    server.serve_step(&scenario.step("rotated"));
    let run = client.refresh(&server);
    assert_eq!(run.code, 0, "rotation: {}", run.stderr);
    assert_eq!(client.version("root"), 3);
    assert_eq!(
        client.trusted("root.json"),
        Some(scenario.published("rotated", "3.root.json")),
        "root.json is the signed version 3"
    );
    assert_eq!(
        client.version("timestamp"),
        2,
        "timestamp under the new key"
    );
    let run = client.download(&server, &["file.txt"]);
    assert_eq!(run.code, 0, "download after rotation: {}", run.stderr);

    for step in [
        "rotation_without_old_keys",
        "rotation_below_old_threshold",
        "rotation_skips_a_version",
    ] {
        server.serve_step(&scenario.step(step));
        let run = client.refresh(&server);
        assert_eq!(run.code, 1, "{step} must be refused: {}", run.stdout);
        eprintln!("{step}: {}", run.stderr.trim());
        assert_eq!(
            client.trusted("root.json"),
            Some(scenario.published("rotated", "3.root.json")),
            "{step}: the trusted root is unchanged"
        );
    }

    // A client that starts from version 1 walks the same chain.
    server.serve_step(&scenario.step("rotated"));
    let fresh = Client::init(&scenario);
    let run = fresh.refresh(&server);
    assert_eq!(run.code, 0, "fresh rotation: {}", run.stderr);
    assert_eq!(fresh.version("root"), 3);
}
