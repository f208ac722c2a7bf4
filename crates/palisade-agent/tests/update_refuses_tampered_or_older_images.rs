//! The updater installs nothing that TUF and the rollback check refuse: tampered bytes,
//! an endless body (longer than the signed length), a version not newer than the
//! running one, an offer whose version the signed metadata contradicts, a target no
//! signed metadata lists, and anything at all without the maker's trusted root
//! (UPD-2, UPD-4).

mod tuf_common;

use tuf_common::{Device, Scenario, Server, python};

fn assert_refused(device: &Device, run: &tuf_common::Run, needle: &str) {
    assert_eq!(run.code, 1, "must fail: {}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(needle) || run.stdout.contains(needle),
        "expected {needle:?} in:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(device.slot_image("a").is_none() && device.slot_image("b").is_none());
    assert!(device.boot()["tentative"].is_null());
}

#[test]
fn tampered_endless_older_and_lying_offers_are_refused() {
    let Some(python) = python() else { return };
    let scenario = Scenario::build(&python, "firmware");
    let server = Server::start();

    // One byte changed on the server.
    server.serve_step(&scenario.step("tampered"));
    let device = Device::new(&scenario, "1.0.0");
    let run = device.update(&server, "MODEL-2.0.0.img", "2.0.0", &[], &[]);
    assert_refused(&device, &run, "SHA-256");
    assert_eq!(run.steps(), ["downloading", "failed"]);
    assert!(device.downloads().is_empty(), "tampered bytes are deleted");

    // Endless data: cut off just past the signed length and refused.
    server.serve_step(&scenario.step("v1"));
    let (path2, _) = scenario.served_target("v1", "MODEL-2.0.0.img");
    server.endless(&path2);
    let run = device.update(&server, "MODEL-2.0.0.img", "2.0.0", &[], &[]);
    assert_refused(&device, &run, "more than the");
    assert!(device.downloads().is_empty());

    // Older and equal versions: not fetched at all.
    let newer = Device::new(&scenario, "2.0.0");
    let hits = server.hits("/targets/");
    let run = newer.update(&server, "MODEL-1.0.0.img", "1.0.0", &[], &[]);
    assert_refused(&newer, &run, "not newer");
    assert_eq!(
        server.hits("/targets/"),
        hits,
        "an older image is not downloaded"
    );

    // The offer lies about the version: the signed custom.version says 1.5.0.
    let run = device.update(&server, "MODEL-9.0.0.img", "9.0.0", &[], &[]);
    assert_refused(&device, &run, "version 1.5.0");
    // An old image offered as a new version: its signed name binds it to 1.0.0.
    let run = device.update(&server, "MODEL-1.0.0.img", "3.0.0", &[], &[]);
    assert_refused(&device, &run, "does not name version");
    // A target no signed metadata lists.
    let run = device.update(&server, "MODEL-5.0.0.img", "5.0.0", &[], &[]);
    assert_refused(&device, &run, "no trusted metadata");
    assert_eq!(
        server.hits("/targets/"),
        hits,
        "nothing fetched for lying offers"
    );

    // No trusted root: nothing is fetched, and status says why updates are off.
    let rootless = Device::without_root("1.0.0");
    let metadata_hits = server.hits("/metadata/");
    let run = rootless.update(&server, "MODEL-2.0.0.img", "2.0.0", &[], &[]);
    assert_refused(&rootless, &run, "no trusted update root");
    assert_eq!(server.hits("/metadata/"), metadata_hits);
    let status = rootless.status();
    assert!(
        status.contains("automatic install: OFF: no trusted update root"),
        "{status}"
    );

    // A root that is not signed by its own threshold is not accepted as the update root.
    let bad_root = rootless.dir.path().join("bad-root.json");
    let mut root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scenario.trusted_root()).expect("root"))
            .expect("json");
    root["signed"]["version"] = 7.into();
    std::fs::write(&bad_root, serde_json::to_vec(&root).expect("json")).expect("write");
    let run = rootless.agent(
        &[
            "update-root",
            "--state-dir",
            &rootless.state_dir(),
            &bad_root.to_string_lossy(),
        ],
        &[],
    );
    assert_eq!(run.code, 1, "an unsigned root is refused");
}
