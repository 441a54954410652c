//! Storage engines behind one small synchronous trait.
//!
//! An engine stores opaque bytes in five trees: `Data` (key to framed
//! DVVSet), `Tokens` (a token-ordered index of `Data`), `Hints` (target
//! and key to mutation), `Meta` (node id, tokens) and `Paxos` (per-key
//! acceptor state for SERIAL). Framing, merging and durability waits live above, in
//! `store/`, so every engine gets them the same way.
//!
//! Engines (DESIGN §8; README "Storage" has the measurements behind the
//! default):
//! - [`fjall`](FjallStorage), the default: an LSM tree whose own journal
//!   group commit fdatasyncs; atomic batches across keyspaces.
//! - [`redb`](RedbStorage): an ACID B-tree whose durable commit fdatasyncs
//!   (and holds its single writer meanwhile, hence the commit log).
//! - [`memory`](MemoryStorage): for simulations; cloning shares the data,
//!   so a simulated crash keeps it.
//!
//! sled 0.34 was an engine until the write-path work: slower than both on
//! every measured row, pinned to an old release, and its `flush` needed an
//! extra fdatasync to be durable; a data directory it wrote is refused
//! with instructions.
//!
//! redb sits behind a [`CommitLog`] (`commitlog.rs`, on by
//! default; fjall never does): writes are appended to a log that group
//! commit fdatasyncs, and the engine itself is made durable only at
//! checkpoints.
//!
//! One conformance suite (`conformance` below) runs against every engine,
//! with and without the log.

mod commitlog;
mod fjall;
mod memory;
mod redb;

pub use self::commitlog::{CommitLog, CHECKPOINT_BYTES};
pub use self::fjall::FjallStorage;
pub use self::memory::MemoryStorage;
pub use self::redb::RedbStorage;

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

/// The logical trees every engine provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    /// Key to framed DVVSet.
    Data,
    /// Hinted-handoff mutations.
    Hints,
    /// Node identity, tokens and ring state.
    Meta,
    /// Token-ordered index of the data tree: token (big-endian) ++ key.
    Tokens,
    /// Per-key Paxos acceptor state (SERIAL, `paxos/acceptor.rs`).
    Paxos,
}

impl Tree {
    /// Every tree, for engines that create them up front.
    /// New trees go last: the commit log names a tree by its position here.
    pub const ALL: [Tree; 5] = [Tree::Data, Tree::Hints, Tree::Meta, Tree::Tokens, Tree::Paxos];

    /// The tree's name inside an engine.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Data => "data",
            Tree::Hints => "hints",
            Tree::Meta => "meta",
            Tree::Tokens => "tokens",
            Tree::Paxos => "paxos",
        }
    }
}

/// A key and its stored bytes.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One change in an atomic batch ([`Storage::write_batch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// Sets `key` in a tree to `value`.
    Put(Tree, &'a [u8], &'a [u8]),
    /// Removes `key` from a tree (absent is not an error).
    Delete(Tree, &'a [u8]),
}

/// A synchronous key-value engine. Calls may block on disk I/O; async callers
/// check [`Storage::blocking`] and move long work off the runtime.
pub trait Storage: Send + Sync + 'static {
    /// The engine's name, as accepted by `--storage`.
    fn name(&self) -> &'static str;
    /// Reads one key.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Writes one key. Visible to readers at once; durable only after `sync`.
    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<()>;
    /// Removes one key; removing an absent key is not an error.
    fn delete(&self, tree: Tree, key: &[u8]) -> Result<()>;
    /// Applies every op in order, across trees, as one atomic change: after
    /// a crash either all of them are there or none. A key's record and its
    /// token-index entry go together this way, so no crash can leave a key
    /// out of the index (where anti-entropy, streaming and GC never see it).
    /// Visible at once; durable only after `sync`, like `put`.
    fn write_batch(&self, ops: &[Op<'_>]) -> Result<()>;
    /// Up to `limit` entries in key order, starting at `start` (included
    /// when `inclusive`).
    fn scan(&self, tree: Tree, start: &[u8], inclusive: bool, limit: usize) -> Result<Vec<KeyValue>>;
    /// Number of keys in a tree.
    fn len(&self, tree: Tree) -> Result<u64>;
    /// Makes every earlier `put` and `delete` durable: fdatasync'd, so it
    /// survives power loss, not only a process crash.
    fn sync(&self) -> Result<()>;
    /// What `sync` really guarantees on this engine, printed at start-up.
    fn durability_note(&self) -> &'static str;
    /// True when calls do disk I/O.
    fn blocking(&self) -> bool {
        true
    }
}

/// The engines `storage` (and `--storage`) names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// An LSM tree with its own journal (the default).
    #[default]
    Fjall,
    /// A copy-on-write B-tree, behind the commit log by default.
    Redb,
    /// Nothing on disk: tests and simulations.
    Memory,
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Fjall => "fjall",
            Engine::Redb => "redb",
            Engine::Memory => "memory",
        })
    }
}

/// Opens `engine` in `dir`, behind a commit log in `dir/commitlog` when
/// `commit_log` is set (the memory engine has no disk and takes none).
pub fn open(engine: Engine, dir: &Path, commit_log: bool) -> Result<Arc<dyn Storage>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Storage(format!("cannot create data dir {}: {e}", dir.display())))?;
    if dir.join("sled").is_dir() {
        return Err(Error::Config(format!(
            "{} holds data of the sled engine, which this version no longer has; start an empty node on this version and let it stream the data from its replicas (or move the sled directory aside)",
            dir.display()
        )));
    }
    let engine: Arc<dyn Storage> = match engine {
        Engine::Redb => Arc::new(RedbStorage::open(&dir.join("ringkv.redb"))?),
        // fjall has a journal of its own: no commit log in front.
        Engine::Fjall => return Ok(Arc::new(FjallStorage::open(&dir.join("fjall"))?)),
        Engine::Memory => return Ok(Arc::new(MemoryStorage::default())),
    };
    if commit_log {
        return Ok(Arc::new(CommitLog::open(engine, &dir.join("commitlog"))?));
    }
    // Without the log, a log left from an earlier run would be skipped
    // silently, with acknowledged writes in it.
    let log = dir.join("commitlog");
    if std::fs::read_dir(&log).is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.metadata().is_ok_and(|m| m.len() > 0)))) {
        return Err(Error::Config(format!(
            "{} holds commit log segments with writes not yet in the engine; start once with --commit-log on to replay them",
            log.display()
        )));
    }
    Ok(engine)
}

#[cfg(test)]
pub(crate) mod conformance {
    //! The suite every engine must pass.
    use super::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    pub fn run(s: &dyn Storage) {
        assert_eq!(s.get(Tree::Data, b"a").unwrap(), None);
        s.put(Tree::Data, b"b", b"2").unwrap();
        s.put(Tree::Data, b"a", b"1").unwrap();
        s.put(Tree::Data, b"c", b"3").unwrap();
        s.put(Tree::Meta, b"a", b"meta").unwrap();
        assert_eq!(s.get(Tree::Data, b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(s.get(Tree::Meta, b"a").unwrap().as_deref(), Some(&b"meta"[..]), "trees are separate");
        s.put(Tree::Data, b"a", b"1'").unwrap();
        assert_eq!(s.get(Tree::Data, b"a").unwrap().as_deref(), Some(&b"1'"[..]), "overwrite");
        assert_eq!(s.scan(Tree::Data, b"", true, 10).unwrap(), vec![kv("a", "1'"), kv("b", "2"), kv("c", "3")]);
        assert_eq!(s.scan(Tree::Data, b"a", false, 10).unwrap(), vec![kv("b", "2"), kv("c", "3")], "exclusive start");
        assert_eq!(s.scan(Tree::Data, b"b", true, 1).unwrap(), vec![kv("b", "2")], "limit");
        assert_eq!(s.len(Tree::Data).unwrap(), 3);
        s.delete(Tree::Data, b"b").unwrap();
        s.delete(Tree::Data, b"zz").unwrap();
        assert_eq!(s.get(Tree::Data, b"b").unwrap(), None);
        assert_eq!(s.len(Tree::Data).unwrap(), 2);
        let big = vec![7u8; 300 * 1024];
        s.put(Tree::Data, b"big", &big).unwrap();
        assert_eq!(s.get(Tree::Data, b"big").unwrap().unwrap(), big);
        s.sync().unwrap();
        assert!(!s.durability_note().is_empty());
    }

    /// A batch spans trees, applies in order, and mixes puts and deletes.
    pub fn batches(s: &dyn Storage) {
        s.put(Tree::Hints, b"h", b"old").unwrap();
        s.write_batch(&[
            Op::Put(Tree::Data, b"k", b"v1"),
            Op::Put(Tree::Tokens, b"t|k", b""),
            Op::Delete(Tree::Hints, b"h"),
            Op::Put(Tree::Data, b"k", b"v2"),
            Op::Delete(Tree::Data, b"absent"),
        ])
        .unwrap();
        assert_eq!(s.get(Tree::Data, b"k").unwrap().as_deref(), Some(&b"v2"[..]), "later ops win");
        assert_eq!(s.get(Tree::Tokens, b"t|k").unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(s.get(Tree::Hints, b"h").unwrap(), None);
        s.write_batch(&[]).unwrap();
        s.sync().unwrap();
    }

    #[test]
    fn a_data_dir_of_the_removed_sled_engine_is_refused_with_instructions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sled")).unwrap();
        let err = open(Engine::Fjall, dir.path(), true).err().expect("refused").to_string();
        assert!(err.contains("sled") && err.contains("stream the data"), "{err}");
    }

    /// Data written and synced is there after the engine is dropped and reopened.
    pub fn survives_reopen(engine: Engine) {
        for commit_log in [false, true] {
            survives_reopen_with(engine, commit_log);
        }
    }

    fn survives_reopen_with(engine: Engine, commit_log: bool) {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(engine, dir.path(), commit_log).unwrap();
            s.put(Tree::Data, b"k", b"v").unwrap();
            s.write_batch(&[Op::Put(Tree::Data, b"b", b"1"), Op::Put(Tree::Tokens, b"b", b"2")]).unwrap();
            s.sync().unwrap();
        }
        let s = open(engine, dir.path(), commit_log).unwrap_or_else(|e| panic!("reopen {engine}: {e}"));
        assert_eq!(s.get(Tree::Data, b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(s.get(Tree::Data, b"b").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(s.get(Tree::Tokens, b"b").unwrap().as_deref(), Some(&b"2"[..]));
    }
}
