//! Anti-entropy: Merkle trees per token range, kept up to date on every
//! write, and a sync that repairs divergence between replicas (DESIGN §6).
//!
//! - `merkle.rs`: the pure tree (XOR of blake3 item hashes, fan-out 8,
//!   depth 2).
//! - `trees.rs`: one tree per range this node replicates; `Store` updates
//!   them under a per-range lock.
//! - `sync.rs`: the range sync protocol. Compare roots, descend into the
//!   differing children, compare leaf digests, then fetch, merge and push
//!   only the differing keys. Bytes exchanged therefore grow with the
//!   divergence, not with the data.
//! - `pass.rs`: a full pass over every range (`ringkv repair`, and the
//!   schedule), tombstone GC, counters, and rebuilding the trees when the
//!   ring changes.
//! - `cleanup.rs`: dropping the data of ranges this node no longer
//!   replicates, once the ring has settled after a join or leave, so an old
//!   copy cannot bring a purged delete back.

pub mod cleanup;
pub mod merkle;
mod pass;
pub mod sync;
mod trees;

pub use pass::{purge_tombstones, run_pass, run_worker, Repair, Stats};
pub use trees::{Slot, SlotState, Trees};
