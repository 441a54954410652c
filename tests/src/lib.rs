//! Shared support for ringkv's integration tests.
//!
//! - [`sim`]: a turmoil world. It provides a `Transport` over turmoil's
//!   sockets, a deterministic clock, and helpers that start nodes as hosts
//!   with memory storage that survives a crash.
//! - [`process`]: real `ringkv serve` processes on 127.0.0.1, driven
//!   through the CLI binary.
//! - [`scrape`]: a node's `--http-listen` endpoints over plain HTTP, and
//!   the metrics exposition parsed into series.
//! - [`sweep`]: the randomized nemesis sweep, judged by jepsen-lite's
//!   checkers ([`jepsen_lite::checkers`]) over a [`jepsen_lite::history`].

pub mod process;
pub mod scrape;
pub mod sim;
pub mod sweep;
