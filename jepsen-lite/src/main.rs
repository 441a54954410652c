//! `jepsen-lite`: placeholder while the harness is built.
fn main() {}
