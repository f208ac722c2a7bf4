//! `palisade bench updates` (issue 4 benchmark; UPD-1, RES-1) keeps working: with tiny
//! numbers (3 devices, a 1 MiB image) it prepares a repository with the offline
//! commands, serves the image from `palisade serve` and from the plain TLS reference,
//! and verifies it with the agent's TUF path and sha256sum, printing every figure. A
//! download of the wrong length or a hash that disagrees makes it fail (exit non-zero),
//! so a green run also says the served bytes are the signed ones.

use std::process::Command;

#[test]
fn the_update_benchmark_runs_with_tiny_numbers() {
    let work = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["bench", "updates", "--devices", "3", "--concurrency", "3"])
        .args(["--image-mib", "1", "--work"])
        .arg(work.path().join("bench"))
        .env_remove("PALISADE_CONFIG")
        .env("PALISADE_LOG", "error")
        .output()
        .expect("palisade runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "hub peak RSS",
        "plain TLS:",
        "throughput ratio hub/plain TLS:",
        "sha256sum",
        "verification ratio agent/sha256sum time:",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
}

#[test]
fn a_work_directory_in_use_is_refused() {
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::write(work.path().join("something"), b"x").expect("file");
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args([
            "bench",
            "updates",
            "--devices",
            "1",
            "--image-mib",
            "1",
            "--work",
        ])
        .arg(work.path())
        .env_remove("PALISADE_CONFIG")
        .output()
        .expect("palisade runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
}
