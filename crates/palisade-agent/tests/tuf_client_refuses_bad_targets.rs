//! The bare TUF client installs only the bytes the targets metadata signed: a file no
//! targets metadata lists, a tampered file of the right length, and a file longer than
//! its declared length (the server sends endless data) are refused with exit 1 and
//! nothing is left in the output directory; the honest file passes (UPD-2).

mod tuf_common;

use tuf_common::{Client, Scenario, Server, python};

#[test]
fn unsigned_tampered_and_endless_targets_are_refused() {
    let Some(python) = python() else { return };
    let scenario = Scenario::build(&python, "attacks");
    let server = Server::start();

    // A file on the server that no targets metadata lists.
    server.serve_step(&scenario.step("unlisted_target"));
    let client = Client::init(&scenario);
    let run = client.download(&server, &["evil.txt"]);
    assert_eq!(run.code, 1, "unlisted target must be refused");
    eprintln!("unlisted: {}", run.stderr.trim());
    assert_eq!(server.hits("/targets/"), 0, "not even fetched");

    // Same length, one byte changed.
    server.serve_step(&scenario.step("tampered_target"));
    let run = client.download(&server, &["file.txt"]);
    assert_eq!(run.code, 1, "tampered target must be refused");
    eprintln!("tampered: {}", run.stderr.trim());
    assert!(client.downloaded().is_empty(), "nothing written");

    // Endless data: the client stops at the declared length and refuses.
    server.serve_step(&scenario.step("good"));
    let digest_path = std::fs::read_dir(scenario.step("good").join("targets"))
        .expect("targets")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".file.txt"))
        .expect("served target");
    server.endless(&format!("/targets/{digest_path}"));
    let run = client.download(&server, &["file.txt"]);
    assert_eq!(run.code, 1, "endless target must be refused");
    eprintln!("endless: {}", run.stderr.trim());
    assert!(client.downloaded().is_empty(), "nothing written");

    // Several targets: processing stops at the first failure.
    let run = client.download(&server, &["evil.txt", "file.txt"]);
    assert_eq!(run.code, 1);

    // The honest file from an honest server passes.
    let server = Server::start();
    server.serve_step(&scenario.step("good"));
    let run = client.download(&server, &["file.txt"]);
    assert_eq!(run.code, 0, "honest download: {}", run.stderr);
    assert_eq!(client.downloaded(), ["file.txt"]);
}
