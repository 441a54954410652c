//! The binary refuses bad input with a clear message and exit code 2,
//! before it starts anything.

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jepsen-lite")).args(args).output().expect("run jepsen-lite");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_flags_exit_2_with_what_to_do() {
    let (code, err) = run(&["--nemesis", "kil"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown nemesis \"kil\"") && err.contains("kill, pause, partition"), "{err}");

    let (code, err) = run(&["--duration", "soon"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not a duration"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let (code, err) = run(&["--nodes", "0", "--out", out]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--nodes must be between 1 and 200"), "{err}");

    let (code, err) = run(&["--ringkv", "/nonexistent/ringkv", "--nodes", "1", "--out", out]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no ringkv executable at /nonexistent/ringkv") && err.contains("cargo build"), "{err}");
}
