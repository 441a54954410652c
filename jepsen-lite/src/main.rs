//! jepsen-lite: a fault-injection harness over real `ringkv serve` processes.
//!
//! Not built yet: the harness (nemeses, recorded history, checkers, report)
//! is its own issue. This binary says so instead of pretending to run.

fn main() {
    eprintln!("error: jepsen-lite is not implemented yet; see the jepsen-lite issue");
    std::process::exit(2);
}
