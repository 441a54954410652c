//! The last requests through the gateway, with what their receipts said:
//! a bounded ring buffer the cluster page polls (`/v1/recent`).
//!
//! The lock is a plain mutex held only to push or copy out, never across
//! an `.await`.

use std::collections::VecDeque;
use std::sync::Mutex;

use ringkv_client::pb;
use serde::Serialize;

/// One replica's part in a request, from the receipt.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaSeen {
    /// Node id.
    pub node: String,
    /// It answered in time.
    pub answered: bool,
    /// Its answer's latency, µs.
    pub latency_us: u64,
    /// Its version lacked something the merged one had.
    pub stale: bool,
    /// Read repair pushed the merged version to it.
    pub repaired: bool,
    /// What went wrong with it, if anything.
    pub error: String,
}

/// One request, as the page lists it.
#[derive(Clone, Debug, Serialize)]
pub struct Seen {
    /// A sequence number, rising by one per request.
    pub seq: u64,
    /// When it arrived, ms since the Unix epoch.
    pub at_ms: u64,
    /// `get`, `put`, `delete` or `scan`.
    pub op: &'static str,
    /// The key (a scan's prefix), as text.
    pub key: String,
    /// The level asked for (`default` for the node's).
    pub level: String,
    /// The HTTP status answered.
    pub status: u16,
    /// `ok`, `not_found`, or the error kind.
    pub outcome: String,
    /// Time spent in the gateway, request in to answer out, µs.
    pub gateway_us: u64,
    /// The coordinator, when a receipt came back.
    pub coordinator: String,
    /// The coordinator's own time, µs.
    pub coordinator_us: u64,
    /// The replicas, from the receipt.
    pub replicas: Vec<ReplicaSeen>,
    /// Siblings a GET found.
    pub siblings: usize,
}

impl Seen {
    /// A request to `key` (a scan's prefix) at `level`, arriving now;
    /// [`Gateway::finish`](crate::state::Gateway::finish) fills in the rest.
    pub fn new(op: &'static str, key: &str, level: &str) -> Self {
        let at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self {
            seq: 0,
            at_ms,
            op,
            key: key.to_string(),
            level: level.to_string(),
            status: 0,
            outcome: String::new(),
            gateway_us: 0,
            coordinator: String::new(),
            coordinator_us: 0,
            replicas: Vec::new(),
            siblings: 0,
        }
    }

    /// Fills in the receipt's part.
    pub fn with_receipt(mut self, r: Option<&pb::Receipt>) -> Self {
        if let Some(r) = r {
            self.coordinator = r.coordinator.clone();
            self.coordinator_us = r.latency_us;
            self.replicas = r
                .replicas
                .iter()
                .map(|x| ReplicaSeen {
                    node: x.node.clone(),
                    answered: x.answered,
                    latency_us: x.latency_us,
                    stale: x.stale,
                    repaired: x.repaired,
                    error: x.error.clone(),
                })
                .collect();
        }
        self
    }
}

/// The ring buffer.
pub struct Recent {
    capacity: usize,
    inner: Mutex<(u64, VecDeque<Seen>)>,
}

impl Recent {
    /// Keeps the last `capacity` requests (at least one).
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), inner: Mutex::new((0, VecDeque::new())) }
    }

    /// Adds a request, numbering it and dropping the oldest when full.
    pub fn push(&self, mut seen: Seen) {
        let mut guard = self.inner.lock().expect("no code panics while holding this lock");
        let (seq, entries) = &mut *guard;
        *seq += 1;
        seen.seq = *seq;
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(seen);
    }

    /// The requests kept, newest first.
    pub fn newest_first(&self) -> Vec<Seen> {
        self.inner.lock().expect("no code panics while holding this lock").1.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(key: &str) -> Seen {
        Seen::new("put", key, "quorum")
    }

    #[test]
    fn keeps_the_newest_requests_up_to_its_capacity() {
        let r = Recent::new(3);
        for k in ["a", "b", "c", "d"] {
            r.push(seen(k));
        }
        let got: Vec<(u64, String)> = r.newest_first().into_iter().map(|s| (s.seq, s.key)).collect();
        assert_eq!(got, vec![(4, "d".into()), (3, "c".into()), (2, "b".into())]);
    }
}
