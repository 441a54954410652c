//! Pages bounded in bytes as well as in keys.
//!
//! Every bulk transfer between nodes sends items (a key and its stored
//! record) in pages: join streaming (`FetchRange`), anti-entropy fetches
//! and pushes, decommission pushes, hint replay, and the per-peer replicate
//! batches. A page counted only in keys outgrows the gRPC message cap
//! ([`MAX_MESSAGE_BYTES`]) once values are large: 1000 keys of 4 MiB
//! values are 4 GiB, and the call fails on every retry. So every page is
//! also cut at [`PAGE_BYTES`], and always takes at least one item, so a
//! single value of any accepted size (`max_value_bytes`) still moves, alone.
//!
//! One rule, three shapes:
//! - [`Page`] admits items one at a time, for a producer that can stop
//!   early (a storage scan, a queue);
//! - [`Pager`] collects items and hands back each page as it fills;
//! - [`chunks`] splits a slice already in memory.
//!
//! [`MAX_MESSAGE_BYTES`]: crate::peer_client::MAX_MESSAGE_BYTES

/// Bytes of items per page (keys plus stored records; the protobuf framing
/// adds a few bytes per item).
///
/// 4 MiB is far under the 256 MiB message cap, so a page never nears it,
/// and a page of one oversized item is bounded by what a write could store,
/// as a read response is. It bounds what each side holds per page (the
/// encoded message, the decoded items and their merges), and it keeps one
/// page to about 35 ms at 1 Gb/s, well inside the peer deadline
/// (`peer_timeout`), so a page is never timed out for its size. It is
/// still large enough that pages of small values stay cut by their key
/// count, as before: 1000 keys of 4 KiB fill it.
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// One page being filled: admits items while there is room in keys and in
/// bytes, and always admits the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    max_keys: usize,
    max_bytes: usize,
    keys: usize,
    bytes: usize,
}

impl Page {
    /// An empty page of at most `max_keys` items and `max_bytes` bytes
    /// (unless its first item alone is larger).
    pub fn new(max_keys: usize, max_bytes: usize) -> Self {
        Self { max_keys, max_bytes, keys: 0, bytes: 0 }
    }

    /// A page with no bound, for readers that want everything.
    pub fn unbounded() -> Self {
        Self::new(usize::MAX, usize::MAX)
    }

    /// Takes an item of `size` bytes if it fits, or if the page is empty.
    /// Returns false, taking nothing, when the page is full.
    pub fn admit(&mut self, size: usize) -> bool {
        let fits = self.keys == 0 || (self.keys < self.max_keys && self.bytes.saturating_add(size) <= self.max_bytes);
        if fits {
            self.keys += 1;
            self.bytes = self.bytes.saturating_add(size);
        }
        fits
    }

    /// Items taken.
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// Bytes taken.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The same bounds, empty.
    fn next(&self) -> Self {
        Self::new(self.max_keys, self.max_bytes)
    }
}

/// Collects items into pages: [`Pager::push`] hands back the full page
/// when an item does not fit (that item starts the next one), and
/// [`Pager::finish`] hands back the last.
#[derive(Debug)]
pub struct Pager<T> {
    page: Page,
    items: Vec<T>,
}

impl<T> Pager<T> {
    /// Pages of at most `max_keys` items and `max_bytes` bytes.
    pub fn new(max_keys: usize, max_bytes: usize) -> Self {
        Self { page: Page::new(max_keys, max_bytes), items: Vec::new() }
    }

    /// Adds `item` of `size` bytes. Returns the page it closed, if any.
    pub fn push(&mut self, item: T, size: usize) -> Option<Vec<T>> {
        let closed = if self.page.admit(size) {
            None
        } else {
            self.page = self.page.next();
            self.page.admit(size);
            Some(std::mem::take(&mut self.items))
        };
        self.items.push(item);
        closed
    }

    /// The last page, unless it is empty.
    pub fn finish(self) -> Option<Vec<T>> {
        (!self.items.is_empty()).then_some(self.items)
    }
}

/// Splits `items` into consecutive pages of at most `max_keys` items and
/// `max_bytes` bytes (as `size` counts them), each with at least one item.
pub fn chunks<'a, T>(
    items: &'a [T],
    max_keys: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize + 'a,
) -> impl Iterator<Item = &'a [T]> + 'a {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut page = Page::new(max_keys, max_bytes);
        let n = rest.iter().take_while(|item| page.admit(size(item))).count();
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sizes_of<'a>(pages: impl Iterator<Item = &'a [usize]>) -> Vec<Vec<usize>> {
        pages.map(|p| p.to_vec()).collect()
    }

    #[test]
    fn pages_are_cut_at_the_byte_budget_before_the_key_cap() {
        let items = [3, 3, 3, 3, 3];
        assert_eq!(sizes_of(chunks(&items, 100, 7, |s| *s)), vec![vec![3, 3], vec![3, 3], vec![3]]);
    }

    #[test]
    fn pages_are_cut_at_the_key_cap_when_items_are_small() {
        let items = [1; 5];
        assert_eq!(sizes_of(chunks(&items, 2, 1000, |s| *s)), vec![vec![1, 1], vec![1, 1], vec![1]]);
    }

    #[test]
    fn an_item_larger_than_the_budget_travels_alone() {
        let items = [1, 50, 1, 1];
        assert_eq!(sizes_of(chunks(&items, 100, 10, |s| *s)), vec![vec![1], vec![50], vec![1, 1]]);
    }

    #[test]
    fn nothing_gives_no_pages() {
        assert_eq!(chunks(&[] as &[usize], 10, 10, |s| *s).count(), 0);
        assert_eq!(Pager::<u8>::new(10, 10).finish(), None);
    }

    #[test]
    fn a_full_page_refuses_and_takes_nothing() {
        let mut page = Page::new(10, 10);
        assert!(page.admit(8));
        assert!(!page.admit(3));
        assert_eq!((page.keys(), page.bytes()), (1, 8));
        assert!(page.admit(2), "an item that still fits is taken");
    }

    #[test]
    fn the_pager_closes_a_page_when_the_next_item_does_not_fit() {
        let mut pager = Pager::new(100, 10);
        assert_eq!(pager.push('a', 6), None);
        assert_eq!(pager.push('b', 6), Some(vec!['a']));
        assert_eq!(pager.push('c', 20), Some(vec!['b']));
        assert_eq!(pager.push('d', 1), Some(vec!['c']), "the oversized item travelled alone");
        assert_eq!(pager.finish(), Some(vec!['d']));
    }

    proptest! {
        /// Pages keep every item once, in order; each is within both bounds
        /// or is a single item.
        #[test]
        fn chunks_keep_every_item_within_the_bounds(sizes in prop::collection::vec(0usize..50, 0..60), keys in 1usize..8, bytes in 1usize..80) {
            let pages: Vec<&[usize]> = chunks(&sizes, keys, bytes, |s| *s).collect();
            prop_assert_eq!(pages.concat(), sizes.clone());
            for p in &pages {
                prop_assert!(!p.is_empty());
                prop_assert!(p.len() == 1 || (p.len() <= keys && p.iter().sum::<usize>() <= bytes), "{:?}", p);
            }
            let mut pager = Pager::new(keys, bytes);
            let mut paged: Vec<Vec<usize>> = sizes.iter().filter_map(|s| pager.push(*s, *s)).collect();
            paged.extend(pager.finish());
            prop_assert_eq!(paged, pages.iter().map(|p| p.to_vec()).collect::<Vec<_>>(), "the pager cuts where chunks does");
        }
    }
}
