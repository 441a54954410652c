//! jepsen-lite: fault injection over real `ringkv serve` processes.
//!
//! The pure parts judge a recorded [`history::History`]:
//! - [`checkers`]: safety (lost acknowledged writes, phantom reads,
//!   read-your-writes, monotonic reads);
//! - [`staleness`]: how stale each read was (k-staleness and the PBS
//!   t-visibility curve);
//! - [`linearizability`]: a per-key WGL search, diagnostic only.
//!
//! The shells around them drive real processes:
//! - [`nemesis`]: the seeded fault schedule and each fault's start and heal;
//! - [`workload`]: clients that record every operation;
//! - [`run`]: one whole run, from start to report;
//! - [`report`]: the text, `report.json` and `report.html`.
//!
//! Starting, killing, pausing and stopping the `ringkv serve` children
//! ([`ringkv_harness::cluster`]) and drawing the report's SVG
//! ([`ringkv_harness::chart`]) come from the harness crate, which the
//! `ringkv` binary shares without linking this one.

pub mod checkers;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod report;
pub mod run;
pub mod staleness;
pub mod workload;
