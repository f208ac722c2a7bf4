//! `palisade-agent tuf` exits 1 on every failure, usage errors included, as its
//! interface requires (UPD-4); other commands keep the usual exit 2 for usage errors.

use std::process::Command;

fn code(args: &[&str]) -> i32 {
    Command::new(env!("CARGO_BIN_EXE_palisade-agent"))
        .args(args)
        .output()
        .expect("run palisade-agent")
        .status
        .code()
        .unwrap_or(-1)
}

#[test]
fn tuf_usage_errors_exit_1() {
    assert_eq!(code(&["tuf", "refresh"]), 1, "missing --metadata-dir");
    assert_eq!(code(&["tuf", "--metadata-dir", "/tmp/x", "bogus"]), 1);
    assert_eq!(code(&["tuf", "--no-such-flag"]), 1);
    assert_eq!(code(&["tuf", "--help"]), 0, "help is not a failure");
    assert_eq!(code(&["status"]), 2, "other commands: clap's usage exit");
}
