//! The bare TUF client (`palisade-agent tuf`) runs the full TUF 1.0 workflow against a
//! repository made by the reference implementation (python-tuf 7.0), keeps the trusted
//! metadata under plain names byte for byte as signed, downloads targets (top-level and
//! delegated, nested paths, with and without consistent snapshots) and does not fetch a
//! target again when a verified copy is already there; a copy that no longer verifies is
//! replaced (UPD-1, UPD-2).

mod tuf_common;

use tuf_common::{Client, Scenario, Server, python};

fn honest_repository(scenario_name: &str, consistent: bool) {
    let Some(python) = python() else { return };
    let scenario = Scenario::build(&python, scenario_name);
    let server = Server::start();
    server.serve_step(&scenario.step("v1"));
    let client = Client::init(&scenario);
    assert_eq!(
        client.trusted("root.json"),
        std::fs::read(scenario.trusted_root()).ok(),
        "init stores the trusted root as given"
    );

    let run = client.refresh(&server);
    assert_eq!(run.code, 0, "honest refresh: {}", run.stderr);
    // Exactly the bytes the repository signed, under plain names.
    let v = |role: &str| {
        if consistent && role != "timestamp" {
            format!("1.{role}.json")
        } else {
            format!("{role}.json")
        }
    };
    for role in ["root", "timestamp", "snapshot", "targets", "role1"] {
        assert_eq!(
            client.trusted(&format!("{role}.json")),
            Some(scenario.published("v1", &v(role))),
            "{role}.json is the signed file"
        );
    }
    // Nothing else: no versioned copies, no persisted clock.
    let mut files: Vec<String> = std::fs::read_dir(client.metadata_dir())
        .expect("metadata dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "role1.json",
            "root.json",
            "snapshot.json",
            "targets.json",
            "timestamp.json"
        ]
    );

    // Top-level and delegated (nested path) targets, one client instance.
    let run = client.download(&server, &["file.txt", "deleg/a.txt"]);
    assert_eq!(run.code, 0, "honest download: {}", run.stderr);
    assert_eq!(client.downloaded(), ["deleg%2Fa.txt", "file.txt"]);
    let out = client.target_dir();
    assert_eq!(
        std::fs::read(out.join("file.txt")).expect("file"),
        b"release 1\n"
    );
    assert_eq!(
        std::fs::read(out.join("deleg%2Fa.txt")).expect("file"),
        b"delegated release 1\n"
    );
    assert_eq!(server.hits("/targets/"), 2);

    // Idempotent: a verified copy is not fetched again.
    let run = client.download(&server, &["file.txt", "deleg/a.txt"]);
    assert_eq!(run.code, 0, "second download: {}", run.stderr);
    assert_eq!(server.hits("/targets/"), 2, "no second fetch");

    // A copy that no longer matches the trusted hash is fetched and verified again.
    std::fs::write(out.join("file.txt"), b"release X\n").expect("tamper local copy");
    let run = client.download(&server, &["file.txt"]);
    assert_eq!(run.code, 0, "repair download: {}", run.stderr);
    assert_eq!(server.hits("/targets/"), 3);
    assert_eq!(
        std::fs::read(out.join("file.txt")).expect("file"),
        b"release 1\n"
    );

    // A name outside the delegation's paths is not found through it: exit 1.
    let run = client.download(&server, &["other/a.txt"]);
    assert_eq!(run.code, 1, "unknown target must fail");
}

#[test]
fn consistent_snapshot_repository() {
    honest_repository("honest", true);
}

#[test]
fn plain_name_repository() {
    honest_repository("honest-plain", false);
}
