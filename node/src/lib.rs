//! The ringkv node: a leaderless, Dynamo-style replica.
//!
//! Bottom-up: `storage` engines hold bytes; `record` frames them; `version`
//! is the DVVSet + HLC merge; `admit` is the check every version from
//! another node passes; `store` is the replica's versioned store with
//! durability waits; `ring` places keys; `membership` gossips the member
//! list; `peer_client` and `fault` carry node-to-node traffic, in `paging`'s
//! byte-bounded pages; `quorum` and
//! `coordinator` run requests (`paxos` holds SERIAL's acceptor and rules); `service` exposes gRPC (`watch` serves the change log); `metrics` serves Prometheus metrics and HTTP probes; `node` wires it all
//! and [`run`]s it. `ARCHITECTURE.md` tells the same story with links.
#![warn(missing_docs)]

pub mod admit;
pub mod antientropy;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod fault;
pub mod handles;
pub mod hints;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod paging;
pub mod paxos;
pub mod peer_client;
pub mod quorum;
pub mod rate_limit;
pub mod record;
pub mod replicate_queue;
pub mod ring;
pub mod security;
pub mod service;
pub mod shared;
pub mod storage;
pub mod store;
pub mod transport;
pub mod version;
pub mod watch;

pub use clock::{Clock, SystemClock};
pub use config::{Config, Durability};
pub use error::{Error, Result};
pub use node::{run, Env};
pub use storage::{Engine, Storage};
pub use transport::{Conn, Transport};
