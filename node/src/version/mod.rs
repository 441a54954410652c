//! Versions: dotted version vector sets (DVVSet) with HLC-stamped siblings and
//! a per-key last-writer-wins floor.
//!
//! This is DESIGN §3, and it follows Riak's `dvvset` (Almeida et al.,
//! "Scalable and Accurate Causality Tracking for Eventually Consistent
//! Stores", 2014). A stored value is a map from node id to an entry
//! `(counter, siblings newest-first)`. The entry says that node coordinated
//! writes `1..=counter`, and that the last `siblings.len()` of them are still
//! live values. Older dots are *covered*: seen, superseded, never coming back.
//!
//! Three operations, all pure:
//!
//! - [`DvvSet::context`]: the causal context a client gets with a read.
//! - [`DvvSet::update`]: a write coordinated by `node`. It drops what the
//!   context has seen, then adds the new sibling as dot `counter + 1`.
//! - [`DvvSet::merge`]: the join used by replication, read repair, hint
//!   replay and anti-entropy alike.
//!
//! # Blind writes and the floor
//!
//! A write without a context is *blind* and resolved last-writer-wins by HLC.
//! Each key keeps a floor: the highest HLC of any blind write it has seen,
//! merged by max. Every sibling older than the floor is dropped, but its dot
//! stays covered. The floor is a max-register, so the merge stays a join.
//! `shared/models/dvv_floor.py` shows that the two simpler rules are not a
//! join, or are not LWW; the proptests in `proptests.rs` mirror that model.
//!
//! Dropping by floor keeps the dot alignment of an entry intact. HLC is
//! monotonic per node, because a coordinator observes the key's stored
//! timestamps before stamping. So within an entry the siblings below the
//! floor are always a suffix, and entry `(n, l)` still means `l[i]` is dot
//! `n - i`.
//!
//! # Expiring values (TTL)
//!
//! A sibling may carry an absolute expiry, stamped by its coordinator as
//! HLC wall time plus the put's TTL. Whether it has expired is a pure
//! function of `(expires_at_ms, now_ms)`; an expired value reads as
//! deleted, and is turned into a tombstone by a pure function of the
//! sibling alone. Two copies of one dot (a value and its tombstone) merge
//! to the tombstone, so converting is a join like any write and replicas
//! converge whenever each one converts. `sibling.rs` explains it;
//! `expiry.rs` lifts it to a whole set (reads, conversion, the GC rule).
//!
//! # Files
//!
//! - `sibling.rs`: [`Sibling`], its expiry rules, and its encoding (old
//!   records, without expiry, stay byte-identical).
//! - `dvv.rs`: [`DvvSet`], its entries and contexts, and the merge.
//! - `expiry.rs`: expiry over a [`DvvSet`]: conversion and the GC rule.
//! - `hlc.rs`: the [`Hlc`] timestamp and the per-node [`HlcClock`].
//! - `proptests.rs`: the join laws, convergence and write loss over random
//!   histories with expiring writes.

mod dvv;
mod expiry;
mod hlc;
#[cfg(test)]
mod proptests;
mod sibling;

pub use dvv::{check_context, Context, DvvSet, Entry, MAX_CONTEXT_ENTRIES};
pub use hlc::{Hlc, HlcClock};
pub use sibling::{check_ttl, expiry_for, Sibling, MAX_TTL_MS};
