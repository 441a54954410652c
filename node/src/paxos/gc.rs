//! The acceptor's garbage-collection loop: every [`GC_INTERVAL`], delete
//! the Paxos records of finished instances older than [`GC_GRACE`]
//! ([`Acceptor::collect`] says why that is safe and what the floor keeps).
//!
//! The grace is far longer than any request deadline, so the floor only
//! ever refuses ballots of proposers whose requests have long timed out.
//! A record that still holds an accepted proposal is never deleted: the
//! next SERIAL request on its key commits or fences it, and a later sweep
//! deletes it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Acceptor;
use crate::clock::Clock;
use crate::version::Hlc;

/// How often the sweep runs.
pub const GC_INTERVAL: Duration = Duration::from_secs(600);
/// How old a finished record's ballots must be before it is deleted.
pub const GC_GRACE: Duration = Duration::from_secs(600);

/// The cutoff ballot for a sweep at wall time `now_ms`: every ballot
/// issued before `now_ms - GC_GRACE`, whichever node issued it.
pub fn cutoff(now_ms: u64) -> Hlc {
    Hlc { wall_ms: now_ms.saturating_sub(GC_GRACE.as_millis() as u64), logical: u32::MAX, node: String::new() }
}

/// Runs the sweep until `shutdown`.
pub async fn run(acceptor: Arc<Acceptor>, clock: Arc<dyn Clock>, blocking: bool, node: String, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(GC_INTERVAL);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (a, cut) = (acceptor.clone(), cutoff(clock.wall_ms()));
        let result = if blocking {
            tokio::task::spawn_blocking(move || a.collect(&cut)).await.unwrap_or_else(|e| Err(crate::Error::Storage(e.to_string())))
        } else {
            a.collect(&cut)
        };
        match result {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(node = %node, deleted, "paxos records collected"),
            Err(e) => tracing::warn!(node = %node, error = %e, "paxos garbage collection failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_above_every_ballot_older_than_the_grace() {
        let now = 10_000_000;
        let old = Hlc { wall_ms: now - GC_GRACE.as_millis() as u64, logical: 7, node: "zz".into() };
        let young = Hlc { wall_ms: now - GC_GRACE.as_millis() as u64 + 1, logical: 0, node: String::new() };
        assert!(old < cutoff(now) && cutoff(now) < young);
    }
}
