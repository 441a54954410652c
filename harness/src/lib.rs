//! ringkv-harness: the local cluster launcher and the charts, shared by the
//! `ringkv` binary and jepsen-lite, with no fault injection in it.
//!
//! - [`cluster`]: start `ringkv serve` children on loopback addresses, each
//!   joined before the next starts; restart, kill -9, pause and resume one;
//!   stop them all, also on drop;
//! - [`chart`]: small self-contained SVG charts (grouped bars, and lines
//!   over shaded windows);
//! - [`secure`]: the CA, node certificates and admin token of a secured
//!   local cluster.
//!
//! `ringkv cluster` and `ringkv demo` use both, and so does jepsen-lite. The
//! line between this crate and jepsen-lite: here are the mechanics a
//! supervisor needs (spawn, signal, reap); jepsen-lite's nemesis decides
//! which fault to inject and when, and owns partitions, latency, clock
//! skew and iptables, and so do its workloads, histories and checkers.
//!
//! It is a crate of its own, not a module of `cli` or of jepsen-lite, so
//! that both can depend on it and the `ringkv` binary links no jepsen-lite
//! code (`cargo tree -p ringkv | grep jepsen` prints nothing; see
//! ARCHITECTURE.md, Deviations).
//!
//! Errors are `anyhow`, as in `cli` and jepsen-lite: every caller reports
//! them to a person and stops, and none branches on their kind.

pub mod chart;
pub mod cluster;
pub mod secure;
