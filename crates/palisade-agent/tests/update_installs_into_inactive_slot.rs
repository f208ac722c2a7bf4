//! An update offer is downloaded (resumably: an interrupted download continues with a
//! `Range` request), verified by TUF from the maker's root, written into the inactive
//! slot, switched to, tried after a restart of the real agent and committed; the
//! reported firmware version is then the new slot's, with the downtime measured. The
//! same version is not installed twice, and the next update goes to the other slot
//! (UPD-2, UPD-5, SUP-3).

mod tuf_common;

use tuf_common::{Device, Scenario, Server, python};

#[test]
fn update_installs_into_inactive_slot() {
    let Some(python) = python() else { return };
    let scenario = Scenario::build(&python, "firmware");
    let server = Server::start();
    server.serve_step(&scenario.step("v1"));
    let device = Device::new(&scenario, "1.0.0");
    let (path2, image2) = scenario.served_target("v1", "MODEL-2.0.0.img");

    // The connection breaks after 100 000 bytes: the step fails, the bytes are kept.
    server.cut_once(&path2, 100_000);
    let run = device.update(
        &server,
        "MODEL-2.0.0.img",
        "2.0.0",
        &["--release", "r2"],
        &[],
    );
    assert_eq!(run.code, 1, "an interrupted download fails: {}", run.stdout);
    assert_eq!(run.steps(), ["downloading", "failed"]);
    assert_eq!(device.downloads().len(), 1, "the partial file is kept");
    assert!(device.slot_image("b").is_none(), "nothing installed");

    // The next attempt resumes where it stopped, verifies, installs, restarts, commits.
    let run = device.update(
        &server,
        "MODEL-2.0.0.img",
        "2.0.0",
        &["--release", "r2"],
        &[],
    );
    assert_eq!(run.code, 0, "update: {}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.steps(),
        ["downloading", "verified", "installed", "committed"]
    );
    assert!(
        server
            .ranges()
            .iter()
            .any(|(p, r)| p == &path2 && r == "bytes=100000-"),
        "resumed with a Range request: {:?}",
        server.ranges()
    );
    let committed = &run.reports()[3];
    assert_eq!(committed["release"], "r2");
    assert_eq!(committed["version"], "2.0.0");
    assert!(
        committed["downtime_ms"].as_u64().is_some(),
        "downtime measured"
    );
    assert_eq!(
        device.slot_image("b"),
        Some(image2),
        "exactly the verified bytes"
    );
    let boot = device.boot();
    assert_eq!(boot["active"], "b");
    assert!(boot["tentative"].is_null());
    assert!(
        device.downloads().is_empty(),
        "download removed after install"
    );
    let status = device.status();
    assert!(status.contains("firmware version: 2.0.0"), "{status}");
    assert!(status.contains("active slot: b"), "{status}");
    assert!(
        status.contains("last update: r2 2.0.0 committed"),
        "{status}"
    );

    // The same version again: nothing fetched, nothing written.
    let hits = server.hits("/targets/");
    let run = device.update(
        &server,
        "MODEL-2.0.0.img",
        "2.0.0",
        &["--release", "r2"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("up to date"), "{}", run.stdout);
    assert_eq!(server.hits("/targets/"), hits);

    // The next release goes to the other slot; its signed support end date is shown.
    let (_, image3) = scenario.served_target("v1", "MODEL-3.0.0.img");
    let run = device.update(
        &server,
        "MODEL-3.0.0.img",
        "3.0.0",
        &["--release", "r3"],
        &[],
    );
    assert_eq!(run.code, 0, "update 3: {}\n{}", run.stdout, run.stderr);
    assert_eq!(device.boot()["active"], "a");
    assert_eq!(device.slot_image("a"), Some(image3));
    let status = device.status();
    assert!(status.contains("firmware version: 3.0.0"), "{status}");
    assert!(
        status.contains("security updates until: 2031-12-31"),
        "{status}"
    );
}
