//! `--install-command` hands exactly the verified image to a system installer (RAUC,
//! SWUpdate) instead of the slot installer; its exit status decides, and the result is
//! confirmed when the device next starts with the new version, or reported as rolled
//! back when it still runs the old one (UPD-2, UPD-5).

mod tuf_common;

use tuf_common::{Device, Scenario, Server, python};

#[test]
fn install_command_gets_the_verified_image() {
    let Some(python) = python() else { return };
    let scenario = Scenario::build(&python, "firmware");
    let server = Server::start();
    server.serve_step(&scenario.step("v1"));
    let (_, image2) = scenario.served_target("v1", "MODEL-2.0.0.img");

    // A failing installer: the update fails, nothing else is touched.
    let device = Device::new(&scenario, "1.0.0");
    let run = device.update(
        &server,
        "MODEL-2.0.0.img",
        "2.0.0",
        &["--release", "r1", "--install-command", "exit 7"],
        &[],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.steps(), ["downloading", "verified", "failed"]);
    let reason = run.reports()[2]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("install command failed"), "{reason}");
    assert!(device.boot().is_null(), "the slot installer was not used");

    // A working installer receives the verified bytes and the version.
    let out = device.dir.path().join("installed.img");
    let version = device.dir.path().join("installed.version");
    let cmd = format!(
        "cp \"$1\" '{}' && printf %s \"$PALISADE_UPDATE_VERSION\" > '{}'",
        out.display(),
        version.display()
    );
    let run = device.update(
        &server,
        "MODEL-2.0.0.img",
        "2.0.0",
        &["--release", "r2", "--install-command", &cmd],
        &[],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.steps(), ["downloading", "verified", "installed"]);
    assert_eq!(std::fs::read(&out).expect("installed image"), image2);
    assert_eq!(std::fs::read_to_string(&version).expect("version"), "2.0.0");
    assert!(device.boot().is_null(), "the slot installer was not used");

    // The system installer rebooted into 2.0.0: the next start confirms the commit.
    std::fs::write(device.dir.path().join("state/firmware_version"), "2.0.0").expect("write");
    let run = device.update(
        &server,
        "MODEL-2.0.0.img",
        "2.0.0",
        &["--release", "r2"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.steps(), ["committed"]);

    // The installer accepted the image but the device came back on 1.0.0 (its
    // bootloader fell back): the next start reports the roll-back.
    let fell_back = Device::new(&scenario, "1.0.0");
    let run = fell_back.update(
        &server,
        "MODEL-2.0.0.img",
        "2.0.0",
        &["--release", "r3", "--install-command", "true"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = fell_back.update(
        &server,
        "MODEL-3.0.0.img",
        "3.0.0",
        &["--release", "r4"],
        &[],
    );
    assert_eq!(
        run.steps().first().map(String::as_str),
        Some("rolled_back"),
        "{}",
        run.stdout
    );
    let reason = run.reports()[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("bootloader fell back"), "{reason}");
}
