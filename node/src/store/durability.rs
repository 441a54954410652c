//! Durability (DESIGN §8): the [`Ticket`] every write returns, the wait
//! for it ([`Store::durable`]), and the group-commit task.
//!
//! Invariants: tickets are issued in write order, starting at 1 (the
//! default ticket, 0, stands for "nothing written" and is durable at once);
//! `synced` only grows, and a ticket at or below it is covered by a sync
//! that ran after its write. Under `fsync` and `group`, a waiter is
//! released only by such a sync, never by its own write alone.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Store;
use crate::config::Durability;
use crate::error::{Error, Result};

/// Proof that a write happened; await [`Store::durable`] with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

impl Store {
    /// The ticket of a write just made: the next in write order.
    pub(super) fn issue(&self) -> Ticket {
        Ticket(self.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// The group-commit series: writes per sync and sync time.
    pub fn commit_metrics(&self) -> &crate::metrics::CommitMetrics {
        &self.commits
    }

    /// Waits until the write behind `ticket` is durable under this store's mode.
    pub async fn durable(&self, ticket: Ticket) -> Result<()> {
        if ticket == Ticket::default() {
            return Ok(());
        }
        match self.mode {
            Durability::None => Ok(()),
            // A ticket an earlier sync covered (an unchanged merge of a
            // synced version) costs nothing; otherwise sync, and record
            // what the sync covered for the next caller.
            Durability::Fsync => {
                if *self.synced.borrow() >= ticket.0 {
                    return Ok(());
                }
                let covered = self.written.load(Ordering::SeqCst);
                let (from, started) = (*self.synced.borrow(), tokio::time::Instant::now());
                self.sync_now().await?;
                self.commits.synced(covered.saturating_sub(from), started.elapsed());
                self.synced.send_if_modified(|s| std::mem::replace(s, covered.max(*s)) < covered);
                Ok(())
            }
            Durability::Group => {
                let mut rx = self.synced.subscribe();
                self.kick.notify_one();
                rx.wait_for(|&s| s >= ticket.0)
                    .await
                    .map(|_| ())
                    .map_err(|_| Error::Storage("group commit stopped; the node is shutting down".into()))
            }
        }
    }

    async fn sync_now(&self) -> Result<()> {
        if !self.engine.blocking() {
            return self.engine.sync();
        }
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.sync()).await.map_err(|e| Error::Storage(format!("sync task failed: {e}")))?
    }

    /// The group-commit loop: after a kick, wait one window so more writes
    /// join (unless only one write is waiting), sync once, and release every
    /// write the sync covered.
    pub async fn run_group_commit(self: Arc<Self>, shutdown: CancellationToken) {
        if self.mode != Durability::Group {
            return;
        }
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.kick.notified() => {}
            }
            // A lone waiter is synced at once; with company, wait one window
            // so more writes join the same sync.
            if !self.window.is_zero() && self.synced.receiver_count() > 1 {
                tokio::time::sleep(self.window).await;
            }
            let covered = self.written.load(Ordering::SeqCst);
            if covered <= *self.synced.borrow() {
                continue;
            }
            let (from, started) = (*self.synced.borrow(), tokio::time::Instant::now());
            match self.sync_now().await {
                Ok(()) => {
                    self.commits.synced(covered.saturating_sub(from), started.elapsed());
                    self.synced.send_replace(covered);
                }
                Err(e) => tracing::error!(error = %e, "group commit sync failed; writes stay unacknowledged"),
            }
        }
        // A last sync so nothing acknowledged-in-flight is left behind.
        let covered = self.written.load(Ordering::SeqCst);
        if self.sync_now().await.is_ok() {
            self.synced.send_replace(covered);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::MemoryStorage;
    use crate::store::tests::sib;
    use crate::version::Context;

    #[tokio::test]
    async fn group_commit_releases_waiters() {
        let store = Arc::new(Store::new(Arc::new(MemoryStorage::default()), Durability::Group, Duration::from_millis(1)));
        let stop = CancellationToken::new();
        let task = tokio::spawn(store.clone().run_group_commit(stop.clone()));
        let (_, t1, _) = store.update(b"a", |d| d.update(&Context::new(), "n1", sib("x"), false)).unwrap();
        let (_, t2, _) = store.update(b"b", |d| d.update(&Context::new(), "n1", sib("y"), false)).unwrap();
        store.durable(t1).await.unwrap();
        store.durable(t2).await.unwrap();
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn unchanged_merge_is_not_durable_before_a_sync_covers_the_stored_version() {
        use futures::FutureExt;
        let store = Arc::new(Store::new(Arc::new(MemoryStorage::default()), Durability::Group, Duration::from_millis(1)));
        // Read repair writes a version; before any sync, a replica of the
        // same version arrives and changes nothing.
        let (v, written, _) = store.update(b"k", |d| d.update(&Context::new(), "n1", sib("x"), false)).unwrap();
        let unchanged = store.merge(b"k", &v).unwrap().ticket;
        assert!(store.durable(unchanged).now_or_never().is_none(), "acknowledged before the stored version was synced");
        let stop = CancellationToken::new();
        let task = tokio::spawn(store.clone().run_group_commit(stop.clone()));
        store.durable(written).await.unwrap();
        assert_eq!(store.durable(unchanged).now_or_never().map(|r| r.is_ok()), Some(true), "released by the sync that covered the write");
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn under_fsync_an_unchanged_merge_of_a_synced_version_needs_no_sync() {
        use futures::FutureExt;
        let store = Store::new(Arc::new(MemoryStorage::default()), Durability::Fsync, Duration::from_millis(1));
        let (v, written, _) = store.update(b"k", |d| d.update(&Context::new(), "n1", sib("x"), false)).unwrap();
        let unchanged = store.merge(b"k", &v).unwrap().ticket;
        assert_eq!(unchanged, written, "before the sync, the unchanged merge waits for the write's own sync");
        store.durable(written).await.unwrap();
        assert_eq!(*store.synced.borrow(), written.0, "the sync is recorded");
        assert!(store.durable(unchanged).now_or_never().is_some_and(|r| r.is_ok()), "covered already");
    }
}
