//! jepsen-lite: fault injection over real `ringkv serve` processes.
//!
//! The pure parts judge a recorded [`history::History`]:
//! - [`checkers`]: safety (lost acknowledged writes, phantom reads,
//!   read-your-writes, monotonic reads);
//! - [`staleness`]: how stale each read was (k-staleness and the PBS
//!   t-visibility curve);
//! - [`linearizability`]: a per-key WGL search, diagnostic only for the
//!   blind-write levels;
//! - [`cas_check`]: the same search over a compare-and-set register, a
//!   hard check for SERIAL operations (the `cas` workload).
//!
//! The shells around them drive real processes:
//! - [`nemesis`]: the seeded fault schedule and each fault's start and heal;
//! - [`workload`]: clients that record every operation ([`cas_workload`]
//!   for SERIAL compare-and-set);
//! - [`run`]: one whole run, from start to report;
//! - [`report`]: the text, `report.json` and `report.html`.
//!
//! Starting, killing, pausing and stopping the `ringkv serve` children
//! ([`ringkv_harness::cluster`]) and drawing the report's SVG
//! ([`ringkv_harness::chart`]) come from the harness crate, which the
//! `ringkv` binary shares without linking this one.

pub mod cas_check;
pub mod cas_workload;
pub mod checkers;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod report;
pub mod run;
pub mod staleness;
pub mod workload;
