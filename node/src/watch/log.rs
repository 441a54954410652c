//! The change log: a bounded, in-memory ring of the records this replica
//! stored, numbered, for `Kv.Watch` to serve and resume from.
//!
//! # Invariants
//!
//! - Sequence numbers are contiguous: the changes kept are `oldest..=last`,
//!   `last` is the number of the newest change (0 before the first), and
//!   the next change gets `last + 1`. A reader's position is the number of
//!   the last change it has accounted for, so "resume after `p`" is valid
//!   exactly when `oldest <= p + 1` and `p <= last`.
//! - Numbers are per incarnation (`epoch`, the node's generation): the log
//!   lives in memory, so a restart starts a new epoch at 0 and every
//!   position from an older epoch answers [`Gap::Epoch`].
//! - Retention is by count and by bytes: appending evicts the oldest
//!   changes until both bounds hold again (the newest change always stays,
//!   even when it alone is over the byte bound). A reader that falls behind
//!   the oldest change kept gets [`Gap::Evicted`]; it is never waited for,
//!   so a slow reader costs writers nothing and memory stays bounded.
//! - Per key, the log's order is the order the store applied the changes
//!   (the store appends under the key's stripe lock), so on one replica a
//!   later change of a key dominates the earlier one. That is what makes
//!   coalescing safe: [`ChangeLog::read`] returns only the last change of a
//!   key within one batch.
//!
//! An append takes one short mutex (a push and some pops) and, only when a
//! watcher waits, a `Notify`; nothing is awaited, so the write path is not
//! slowed by watchers. etcd's watch keeps a revision-ordered history with a
//! compaction floor the same way; here the floor is the ring's tail.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Bytes a kept change costs beyond its key and record: the `Arc`, the
/// struct and the ring slot, roughly. It keeps a log of tiny changes from
/// passing its byte bound in overhead alone.
const CHANGE_OVERHEAD: usize = 64;

/// How much the log keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// At most this many changes (at least 1 is kept).
    pub max_changes: usize,
    /// At most this many bytes of keys and records (the newest change is
    /// kept even when it alone is larger).
    pub max_bytes: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self { max_changes: 100_000, max_bytes: 64 * 1024 * 1024 }
    }
}

/// One stored change: the key and its record as the store framed it.
#[derive(Debug, PartialEq, Eq)]
pub struct Change {
    /// Its sequence number in this incarnation's log.
    pub seq: u64,
    /// The key.
    pub key: Vec<u8>,
    /// The framed record stored (`record.rs`).
    pub record: Vec<u8>,
}

impl Change {
    fn cost(&self) -> usize {
        self.key.len() + self.record.len() + CHANGE_OVERHEAD
    }
}

/// Why a reader cannot continue from its position: it must resync (scan,
/// then watch from now), or its position was never given by this log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gap {
    /// The position is from another incarnation of the node.
    Epoch {
        /// The epoch the position names.
        given: u64,
        /// This incarnation's epoch.
        current: u64,
    },
    /// The changes after the position were evicted.
    Evicted {
        /// The position.
        after: u64,
        /// The oldest change still kept (or the next one, when none is).
        oldest: u64,
    },
    /// The position lies past the newest change: this log never gave it.
    Future {
        /// The position.
        after: u64,
        /// The newest change's number.
        last: u64,
    },
}

impl Gap {
    /// Whether the reader should resync by scanning (the position was real
    /// but is gone), rather than fix its request.
    pub fn needs_resync(&self) -> bool {
        !matches!(self, Gap::Future { .. })
    }
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gap::Epoch { given, current } => write!(
                f,
                "the position is from incarnation {given} of this node, which has restarted since (now incarnation {current}) \
                 and keeps its change log in memory only"
            ),
            Gap::Evicted { after, oldest } => write!(
                f,
                "the position (after change {after}) is older than the change log reaches (oldest kept: {oldest}; \
                 the log keeps watch_log_changes changes and watch_log_bytes bytes)"
            ),
            Gap::Future { after, last } => {
                write!(f, "the position (after change {after}) lies past the newest change ({last}); pass a position this node gave")
            }
        }
    }
}

/// What [`ChangeLog::read`] found.
#[derive(Debug, Default)]
pub struct Batch {
    /// Matching changes, in log order, the last change of each key only.
    pub changes: Vec<Arc<Change>>,
    /// The last change this read accounted for, matching or not: the
    /// reader's next position.
    pub position: u64,
}

/// How much one [`ChangeLog::read`] may take.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimit {
    /// Changes examined (matching or not), to bound the time the lock is held.
    pub scan: usize,
    /// Matching changes returned.
    pub changes: usize,
    /// Bytes of matching keys and records returned (at least one change).
    pub bytes: usize,
}

struct Ring {
    epoch: u64,
    retention: Retention,
    changes: VecDeque<Arc<Change>>,
    last: u64,
    bytes: usize,
}

impl Ring {
    fn oldest(&self) -> u64 {
        self.last + 1 - self.changes.len() as u64
    }

    fn check(&self, epoch: u64, after: u64) -> Result<(), Gap> {
        if epoch != self.epoch {
            return Err(Gap::Epoch { given: epoch, current: self.epoch });
        }
        if after > self.last {
            return Err(Gap::Future { after, last: self.last });
        }
        if after + 1 < self.oldest() {
            return Err(Gap::Evicted { after, oldest: self.oldest() });
        }
        Ok(())
    }

    fn push(&mut self, key: Vec<u8>, record: Vec<u8>) {
        self.last += 1;
        let change = Change { seq: self.last, key, record };
        self.bytes += change.cost();
        self.changes.push_back(Arc::new(change));
        while self.changes.len() > 1 && (self.changes.len() > self.retention.max_changes.max(1) || self.bytes > self.retention.max_bytes) {
            let evicted = self.changes.pop_front().expect("more than one change");
            self.bytes -= evicted.cost();
        }
    }
}

/// A node's change log (see the module docs).
pub struct ChangeLog {
    ring: Mutex<Ring>,
    notify: Notify,
    /// Readers waiting or about to wait; appends notify only when some are.
    watchers: AtomicUsize,
}

impl Default for ChangeLog {
    fn default() -> Self {
        Self::new(0, Retention::default())
    }
}

impl ChangeLog {
    /// An empty log for incarnation `epoch`.
    pub fn new(epoch: u64, retention: Retention) -> Self {
        Self {
            ring: Mutex::new(Ring { epoch, retention, changes: VecDeque::new(), last: 0, bytes: 0 }),
            notify: Notify::new(),
            watchers: AtomicUsize::new(0),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().expect("change log lock poisoned")
    }

    /// Starts the log afresh for incarnation `epoch` with `retention` (the
    /// node calls it once it knows its generation, before it serves).
    pub fn configure(&self, epoch: u64, retention: Retention) {
        let mut ring = self.ring();
        *ring = Ring { epoch, retention, changes: VecDeque::new(), last: 0, bytes: 0 };
    }

    /// Records that the store now holds `record` for `key`.
    pub fn append(&self, key: Vec<u8>, record: Vec<u8>) {
        self.ring().push(key, record);
        self.wake();
    }

    /// Records many changes, in order, under one lock.
    pub fn append_many(&self, changes: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) {
        let mut ring = self.ring();
        let mut any = false;
        for (key, record) in changes {
            ring.push(key, record);
            any = true;
        }
        drop(ring);
        if any {
            self.wake();
        }
    }

    fn wake(&self) {
        if self.watchers.load(Ordering::Relaxed) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// The position "now": this incarnation's epoch and its newest change.
    pub fn head(&self) -> (u64, u64) {
        let ring = self.ring();
        (ring.epoch, ring.last)
    }

    /// The oldest change kept (the next one when the log is empty).
    pub fn oldest(&self) -> u64 {
        self.ring().oldest()
    }

    /// Whether a reader can resume after `after` of incarnation `epoch`.
    pub fn check(&self, epoch: u64, after: u64) -> Result<(), Gap> {
        self.ring().check(epoch, after)
    }

    /// The changes after `after` whose key starts with `prefix`, within
    /// `limit`, coalesced to the last change of each key.
    pub fn read(&self, epoch: u64, after: u64, prefix: &[u8], limit: ReadLimit) -> Result<Batch, Gap> {
        let ring = self.ring();
        ring.check(epoch, after)?;
        let start = (after + 1 - ring.oldest()) as usize;
        let mut batch = Batch { changes: Vec::new(), position: after };
        let mut bytes = 0;
        for change in ring.changes.range(start..).take(limit.scan.max(1)) {
            if change.key.starts_with(prefix) {
                let size = change.key.len() + change.record.len();
                if !batch.changes.is_empty() && (batch.changes.len() >= limit.changes || bytes + size > limit.bytes) {
                    break;
                }
                bytes += size;
                batch.changes.push(change.clone());
            }
            batch.position = change.seq;
        }
        drop(ring);
        coalesce(&mut batch.changes);
        Ok(batch)
    }

    /// Counts a reader in, so appends notify it; dropping the guard counts
    /// it out.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        self.watchers.fetch_add(1, Ordering::SeqCst);
        Subscription { log: self.clone() }
    }

    /// Number of readers subscribed.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }
}

/// Keeps only the last change of each key, in log order.
fn coalesce(changes: &mut Vec<Arc<Change>>) {
    let mut last: HashMap<&[u8], u64> = HashMap::new();
    for c in changes.iter() {
        last.insert(&c.key, c.seq);
    }
    if last.len() == changes.len() {
        return;
    }
    let keep: Vec<u64> = changes.iter().filter(|c| last[c.key.as_slice()] == c.seq).map(|c| c.seq).collect();
    changes.retain(|c| keep.binary_search(&c.seq).is_ok());
}

/// A reader of the log, counted while it lives.
pub struct Subscription {
    log: Arc<ChangeLog>,
}

impl Subscription {
    /// Returns once a change after `after` exists (or at once, if one does).
    pub async fn changed_after(&self, after: u64) {
        loop {
            let notified = self.log.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so an append between the check
            // and the await still wakes it.
            notified.as_mut().enable();
            if self.log.ring().last > after {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.log.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: ReadLimit = ReadLimit { scan: usize::MAX, changes: usize::MAX, bytes: usize::MAX };

    fn log(max_changes: usize, max_bytes: usize) -> ChangeLog {
        ChangeLog::new(7, Retention { max_changes, max_bytes })
    }

    fn keys(b: &Batch) -> Vec<(u64, String)> {
        b.changes.iter().map(|c| (c.seq, String::from_utf8_lossy(&c.key).into_owned())).collect()
    }

    #[test]
    fn positions_are_contiguous_and_a_read_resumes_exactly_after_one() {
        let l = log(100, usize::MAX);
        assert_eq!(l.head(), (7, 0), "an empty log starts at 0");
        for k in ["a/1", "a/2", "a/3"] {
            l.append(k.into(), b"r".to_vec());
        }
        assert_eq!(l.head(), (7, 3));
        let all = l.read(7, 0, b"", ALL).unwrap();
        assert_eq!(keys(&all), [(1, "a/1".into()), (2, "a/2".into()), (3, "a/3".into())]);
        assert_eq!(all.position, 3);
        let rest = l.read(7, 1, b"", ALL).unwrap();
        assert_eq!(keys(&rest), [(2, "a/2".into()), (3, "a/3".into())], "after 1 means from 2");
        let none = l.read(7, 3, b"", ALL).unwrap();
        assert!(none.changes.is_empty() && none.position == 3, "at the head: nothing, same position");
    }

    #[test]
    fn the_prefix_filters_but_the_position_passes_every_change() {
        let l = log(100, usize::MAX);
        for k in ["app/1", "other/1", "app/2", "other/2"] {
            l.append(k.into(), b"r".to_vec());
        }
        let b = l.read(7, 0, b"app/", ALL).unwrap();
        assert_eq!(keys(&b), [(1, "app/1".into()), (3, "app/2".into())]);
        assert_eq!(b.position, 4, "the non-matching tail is accounted for too");
        let none = l.read(7, 0, b"zzz", ALL).unwrap();
        assert!(none.changes.is_empty());
        assert_eq!(none.position, 4);
    }

    #[test]
    fn retention_by_count_evicts_the_oldest_and_an_evicted_position_must_resync() {
        let l = log(3, usize::MAX);
        for i in 1..=5 {
            l.append(format!("k{i}").into_bytes(), b"r".to_vec());
        }
        assert_eq!(l.oldest(), 3, "changes 3..=5 kept");
        assert_eq!(l.read(7, 2, b"", ALL).unwrap().changes.len(), 3, "after 2 still resumes: 3 is kept");
        let gap = l.read(7, 1, b"", ALL).unwrap_err();
        assert_eq!(gap, Gap::Evicted { after: 1, oldest: 3 });
        assert!(gap.needs_resync());
        assert!(gap.to_string().contains("older than the change log reaches"), "{gap}");
    }

    #[test]
    fn retention_by_bytes_keeps_the_newest_change_even_when_it_alone_is_over() {
        let l = log(1000, 3 * (CHANGE_OVERHEAD + 2 + 10));
        for i in 0..5 {
            l.append(format!("k{i}").into_bytes(), vec![0; 10]);
        }
        assert_eq!(l.oldest(), 3, "three changes of 76 bytes fit");
        l.append(b"big".to_vec(), vec![0; 10_000]);
        assert_eq!((l.oldest(), l.head().1), (6, 6), "only the big one is kept");
    }

    #[test]
    fn another_incarnation_and_a_position_never_given_are_refused() {
        let l = log(10, usize::MAX);
        l.append(b"k".to_vec(), b"r".to_vec());
        let old = l.read(6, 1, b"", ALL).unwrap_err();
        assert_eq!(old, Gap::Epoch { given: 6, current: 7 });
        assert!(old.needs_resync() && old.to_string().contains("restarted"), "{old}");
        let future = l.read(7, 2, b"", ALL).unwrap_err();
        assert_eq!(future, Gap::Future { after: 2, last: 1 });
        assert!(!future.needs_resync());
        l.configure(8, Retention { max_changes: 10, max_bytes: usize::MAX });
        assert_eq!(l.head(), (8, 0), "a new incarnation starts empty");
        assert!(matches!(l.check(7, 1), Err(Gap::Epoch { .. })));
    }

    #[test]
    fn a_batch_keeps_the_last_change_of_each_key_and_stops_at_its_limits() {
        let l = log(100, usize::MAX);
        for k in ["a", "b", "a", "c", "a"] {
            l.append(k.into(), b"r".to_vec());
        }
        let b = l.read(7, 0, b"", ALL).unwrap();
        assert_eq!(keys(&b), [(2, "b".into()), (4, "c".into()), (5, "a".into())], "a's versions 1 and 3 coalesce into 5");
        let two = l.read(7, 0, b"", ReadLimit { scan: usize::MAX, changes: 2, bytes: usize::MAX }).unwrap();
        assert_eq!(keys(&two), [(1, "a".into()), (2, "b".into())]);
        assert_eq!(two.position, 2, "the next read starts after the last change taken");
        let scanned = l.read(7, 0, b"c", ReadLimit { scan: 2, changes: 100, bytes: usize::MAX }).unwrap();
        assert!(scanned.changes.is_empty());
        assert_eq!(scanned.position, 2, "a bounded scan still advances");
        let one = l.read(7, 0, b"", ReadLimit { scan: 100, changes: 100, bytes: 1 }).unwrap();
        assert_eq!(one.changes.len(), 1, "at least one change, whatever the byte limit");
    }

    #[tokio::test]
    async fn a_subscriber_wakes_on_an_append_after_its_position() {
        let l = Arc::new(log(10, usize::MAX));
        let sub = l.subscribe();
        assert_eq!(l.watchers(), 1);
        let waiter = tokio::spawn({
            let l = l.clone();
            async move {
                let sub = l.subscribe();
                sub.changed_after(0).await;
            }
        });
        tokio::task::yield_now().await;
        l.append(b"k".to_vec(), b"r".to_vec());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.expect("woken").unwrap();
        sub.changed_after(0).await;
        drop(sub);
        assert_eq!(l.watchers(), 0);
    }
}
