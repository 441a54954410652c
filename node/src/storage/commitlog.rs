//! A commit log in front of a disk engine (Cassandra's commitlog, etcd's
//! WAL in front of bbolt).
//!
//! Every change (`put`, `delete`, `write_batch`) is appended to the current
//! log segment as one checksummed record and then applied to the engine,
//! whose own commits are not durable. `sync` is an fdatasync of the segment:
//! a few hundred microseconds, where a durable redb commit writes back every
//! copy-on-write page dirtied since the last one. So an acknowledged write
//! costs one append and a share of one fdatasync.
//!
//! **Checkpoints.** Once a segment holds [`CHECKPOINT_BYTES`], a `sync`
//! rotates: it fdatasyncs the segment, starts the next one, makes the engine
//! durable (everything in the old segment was applied before the switch) and
//! deletes the old segment. The directory is fsynced after a segment is
//! created and after one is deleted, so the segments on disk are always a
//! contiguous run ending at the current one.
//!
//! **Recovery.** On open, the engine holds its last durable state, which
//! the segments on disk extend: they hold, in order, every change since some
//! point at or before that state. Replaying them in order therefore ends at
//! the last change that reached the log, whatever the engine had kept; each
//! change sets a whole value, so replaying one twice does no harm. A torn
//! record at the end of the last segment was never synced, so never
//! acknowledged, and replay stops there. A bad record anywhere else is
//! corruption, and opening fails with its place rather than guessing.
//!
//! **Atomicity.** A `write_batch` is one record: replay applies all of it
//! or, if it is the torn tail, none of it, and the engine applies it in one
//! transaction.
//!
//! Record format: `[payload len: u32 LE][crc32 of payload: u32 LE][payload]`,
//! the payload being `[ops: u32]` then per op `[kind: u8 (0 put, 1 delete)]
//! [tree: u8][key len: u32][key]` and, for a put, `[value len: u32][value]`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{KeyValue, Op, Storage, Tree};
use crate::error::{Error, Result};

/// Log bytes after which a `sync` checkpoints the engine and starts a new
/// segment. It bounds replay at start-up (64 MiB replays in well under a
/// second here) and the log's disk use, against the cost of a durable
/// engine commit (milliseconds) every 64 MiB of writes.
pub const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

/// Bytes before each record's payload: length and checksum.
const HEADER: usize = 8;

/// The segment being appended to.
struct Segment {
    seq: u64,
    file: Arc<File>,
    bytes: u64,
}

/// A disk engine behind a commit log.
pub struct CommitLog {
    inner: Arc<dyn Storage>,
    dir: PathBuf,
    checkpoint_bytes: u64,
    /// Held across append and apply, so the log's order is the engine's.
    current: Mutex<Segment>,
    /// One checkpoint at a time.
    checkpointing: Mutex<()>,
}

/// What recovery found, for the start-up log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Segments read.
    pub segments: usize,
    /// Records (writes or batches) applied.
    pub records: u64,
    /// Bytes of log read.
    pub bytes: u64,
    /// Whether the last segment ended in a torn (never synced) record.
    pub torn_tail: bool,
}

impl CommitLog {
    /// Opens the log in `dir` in front of `inner`, replays what it holds,
    /// makes the engine durable, and starts a fresh segment.
    pub fn open(inner: Arc<dyn Storage>, dir: &Path) -> Result<Self> {
        Self::open_with(inner, dir, CHECKPOINT_BYTES)
    }

    /// [`CommitLog::open`] with a chosen checkpoint size (tests use small ones).
    pub fn open_with(inner: Arc<dyn Storage>, dir: &Path, checkpoint_bytes: u64) -> Result<Self> {
        let io = |what: &str, e: std::io::Error| Error::Storage(format!("commit log {}: {what}: {e}", dir.display()));
        fs::create_dir_all(dir).map_err(|e| io("create", e))?;
        let started = Instant::now();
        let segments = segments(dir)?;
        let mut replayed = Replayed { segments: segments.len(), ..Default::default() };
        for (i, (_, path)) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let (records, bytes, torn) = replay(path, inner.as_ref(), last)?;
            replayed.records += records;
            replayed.bytes += bytes;
            replayed.torn_tail |= torn;
        }
        inner.sync()?;
        for (_, path) in &segments {
            fs::remove_file(path).map_err(|e| io("remove a replayed segment", e))?;
        }
        sync_dir(dir)?;
        let seq = segments.last().map_or(1, |(s, _)| s + 1);
        let file = create_segment(dir, seq)?;
        if replayed.records > 0 || replayed.torn_tail {
            tracing::info!(
                dir = %dir.display(), segments = replayed.segments, records = replayed.records, bytes = replayed.bytes,
                torn_tail = replayed.torn_tail, ms = started.elapsed().as_millis() as u64, "commit log replayed"
            );
        }
        Ok(Self {
            inner,
            dir: dir.to_path_buf(),
            checkpoint_bytes,
            current: Mutex::new(Segment { seq, file: Arc::new(file), bytes: 0 }),
            checkpointing: Mutex::new(()),
        })
    }

    /// Appends `ops` as one record, then applies them to the engine.
    fn log_and_apply(&self, ops: &[Op<'_>]) -> Result<()> {
        let record = encode(ops);
        let mut seg = self.current.lock().expect("commit log lock");
        (&*seg.file).write_all(&record).map_err(|e| Error::Storage(format!("commit log append failed: {e}")))?;
        seg.bytes += record.len() as u64;
        self.inner.write_batch(ops)
    }

    /// Rotates to a new segment, makes the engine durable and deletes the
    /// old segment, if the current one has grown past the checkpoint size.
    fn checkpoint(&self) -> Result<()> {
        let _one = self.checkpointing.lock().expect("checkpoint lock");
        let old = {
            let mut seg = self.current.lock().expect("commit log lock");
            if seg.bytes < self.checkpoint_bytes {
                return Ok(());
            }
            // Synced before the engine is, so recovery never replays a
            // shortened old segment over newer durable state.
            seg.file.sync_data()?;
            let next = create_segment(&self.dir, seg.seq + 1)?;
            sync_dir(&self.dir)?;
            let old = seg.seq;
            *seg = Segment { seq: old + 1, file: Arc::new(next), bytes: 0 };
            old
        };
        self.inner.sync()?;
        fs::remove_file(segment_path(&self.dir, old))?;
        sync_dir(&self.dir)?;
        Ok(())
    }
}

impl Storage for CommitLog {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(tree, key)
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<()> {
        self.log_and_apply(&[Op::Put(tree, key, value)])
    }

    fn delete(&self, tree: Tree, key: &[u8]) -> Result<()> {
        self.log_and_apply(&[Op::Delete(tree, key)])
    }

    fn write_batch(&self, ops: &[Op<'_>]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        self.log_and_apply(ops)
    }

    fn scan(&self, tree: Tree, start: &[u8], inclusive: bool, limit: usize) -> Result<Vec<KeyValue>> {
        self.inner.scan(tree, start, inclusive, limit)
    }

    fn len(&self, tree: Tree) -> Result<u64> {
        self.inner.len(tree)
    }

    fn sync(&self) -> Result<()> {
        // fdatasync outside the lock: appends go on, and the sync covers
        // every byte written before it started.
        let (file, due) = {
            let seg = self.current.lock().expect("commit log lock");
            (seg.file.clone(), seg.bytes >= self.checkpoint_bytes)
        };
        file.sync_data()?;
        if due {
            self.checkpoint()?;
        }
        Ok(())
    }

    fn durability_note(&self) -> &'static str {
        "commit log: an acknowledged write is appended to the log and fdatasync'd; the engine is made durable at checkpoints every 64 MiB of log"
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.log"))
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let seq = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

fn create_segment(dir: &Path, seq: u64) -> Result<File> {
    let path = segment_path(dir, seq);
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::Storage(format!("cannot create commit log segment {}: {e}", path.display())))
}

/// Makes the directory's entries (segments created or removed) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn tree_code(tree: Tree) -> u8 {
    Tree::ALL.iter().position(|t| *t == tree).expect("every tree is listed") as u8
}

/// Encodes `ops` as one framed record.
fn encode(ops: &[Op<'_>]) -> Vec<u8> {
    let size: usize = ops
        .iter()
        .map(|op| match op {
            Op::Put(_, k, v) => 10 + k.len() + v.len(),
            Op::Delete(_, k) => 6 + k.len(),
        })
        .sum();
    let mut out = Vec::with_capacity(HEADER + 4 + size);
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        match *op {
            Op::Put(tree, key, value) => {
                out.extend_from_slice(&[0, tree_code(tree)]);
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
            Op::Delete(tree, key) => {
                out.extend_from_slice(&[1, tree_code(tree)]);
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
            }
        }
    }
    let len = (out.len() - HEADER) as u32;
    let crc = crc32fast::hash(&out[HEADER..]);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a record's payload front to back.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize)
    }

    /// A length-prefixed byte string.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.take(n)
    }
}

/// Decodes a record's payload into ops borrowing from it; `None` when it
/// is not a whole, well-formed payload.
fn decode(payload: &[u8]) -> Option<Vec<Op<'_>>> {
    let mut c = Cursor { bytes: payload, at: 0 };
    let count = c.u32()?;
    let mut ops = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let head = c.take(2)?;
        let tree = *Tree::ALL.get(head[1] as usize)?;
        let key = c.bytes()?;
        ops.push(match head[0] {
            0 => Op::Put(tree, key, c.bytes()?),
            1 => Op::Delete(tree, key),
            _ => return None,
        });
    }
    (c.at == payload.len()).then_some(ops)
}

/// Applies every record in the segment at `path` to `engine`. Returns the
/// records applied, the bytes read and whether a torn tail was dropped.
fn replay(path: &Path, engine: &dyn Storage, last: bool) -> Result<(u64, u64, bool)> {
    let bytes = fs::read(path)?;
    let mut at = 0usize;
    let mut records = 0u64;
    while at < bytes.len() {
        let record = bytes.get(at..at + HEADER).and_then(|h| {
            let len = u32::from_le_bytes(h[..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(h[4..].try_into().expect("4 bytes"));
            let payload = bytes.get(at + HEADER..at + HEADER + len)?;
            (crc32fast::hash(payload) == crc).then_some(payload).and_then(|p| decode(p).map(|ops| (ops, HEADER + len)))
        });
        match record {
            Some((ops, size)) => {
                engine.write_batch(&ops)?;
                records += 1;
                at += size;
            }
            None if last => {
                tracing::warn!(segment = %path.display(), offset = at, dropped = bytes.len() - at, "commit log ends in a torn record (never synced, so never acknowledged); dropping it");
                return Ok((records, at as u64, true));
            }
            None => {
                return Err(Error::Storage(format!(
                    "commit log segment {} is corrupt at byte {at} of {}, and it is not the last segment; refusing to guess. Move the data dir aside and let repair refill this node",
                    path.display(),
                    bytes.len()
                )))
            }
        }
    }
    Ok((records, at as u64, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryStorage, RedbStorage};

    fn redb(dir: &Path) -> Arc<dyn Storage> {
        Arc::new(RedbStorage::open(&dir.join("e.redb")).unwrap())
    }

    #[test]
    fn passes_conformance_in_front_of_redb() {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(redb(dir.path()), &dir.path().join("log")).unwrap();
        super::super::conformance::run(&log);
        super::super::conformance::batches(&log);
    }

    #[test]
    fn records_round_trip() {
        let ops = [Op::Put(Tree::Data, b"k", b"v"), Op::Delete(Tree::Tokens, b""), Op::Put(Tree::Meta, b"", &[7; 300])];
        let rec = encode(&ops);
        assert_eq!(decode(&rec[HEADER..]).unwrap(), ops);
        assert_eq!(decode(&rec[HEADER..rec.len() - 1]), None, "short");
    }

    #[test]
    fn unsynced_engine_state_is_rebuilt_from_the_log() {
        // A memory engine that is thrown away stands for an engine that lost
        // everything after its last durable commit (here: everything).
        let dir = tempfile::tempdir().unwrap();
        {
            let log = CommitLog::open(Arc::new(MemoryStorage::default()), dir.path()).unwrap();
            log.put(Tree::Data, b"a", b"1").unwrap();
            log.write_batch(&[Op::Put(Tree::Data, b"b", b"2"), Op::Put(Tree::Tokens, b"b", b"")]).unwrap();
            log.put(Tree::Data, b"a", b"3").unwrap();
            log.delete(Tree::Data, b"gone").unwrap();
            log.sync().unwrap();
        }
        let engine = MemoryStorage::default();
        CommitLog::open(Arc::new(engine.clone()), dir.path()).unwrap();
        assert_eq!(engine.get(Tree::Data, b"a").unwrap().as_deref(), Some(&b"3"[..]), "replayed in order");
        assert_eq!(engine.get(Tree::Tokens, b"b").unwrap().as_deref(), Some(&b""[..]));
    }

    #[test]
    fn a_torn_last_record_is_dropped_whole_and_the_rest_replayed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = CommitLog::open(Arc::new(MemoryStorage::default()), dir.path()).unwrap();
            log.put(Tree::Data, b"a", b"1").unwrap();
            log.write_batch(&[Op::Put(Tree::Data, b"b", b"2"), Op::Put(Tree::Tokens, b"b", b"")]).unwrap();
            log.sync().unwrap();
        }
        // Tear the batch: cut the segment inside its last record.
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
        let engine = MemoryStorage::default();
        CommitLog::open(Arc::new(engine.clone()), dir.path()).unwrap();
        assert_eq!(engine.get(Tree::Data, b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(engine.get(Tree::Data, b"b").unwrap(), None, "the torn batch is dropped whole");
        assert_eq!(engine.get(Tree::Tokens, b"b").unwrap(), None, "its index entry with it");
    }

    #[test]
    fn corruption_before_the_last_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_path(dir.path(), 1), b"\x05\0\0\0garbage").unwrap();
        fs::write(segment_path(dir.path(), 2), b"").unwrap();
        let err = CommitLog::open(Arc::new(MemoryStorage::default()), dir.path()).err().expect("refuses");
        assert!(err.to_string().contains("corrupt at byte 0"), "{err}");
    }

    #[test]
    fn checkpoints_keep_the_log_bounded_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = CommitLog::open_with(redb(dir.path()), &dir.path().join("log"), 4096).unwrap();
            for i in 0..500u32 {
                log.put(Tree::Data, &i.to_be_bytes(), &[i as u8; 100]).unwrap();
                if i % 10 == 0 {
                    log.sync().unwrap();
                }
            }
            log.sync().unwrap();
            let on_disk: u64 = segments(&dir.path().join("log")).unwrap().iter().map(|(_, p)| fs::metadata(p).unwrap().len()).sum();
            assert!(on_disk < 3 * 4096, "log kept {on_disk} bytes");
        }
        let log = CommitLog::open_with(redb(dir.path()), &dir.path().join("log"), 4096).unwrap();
        assert_eq!(log.len(Tree::Data).unwrap(), 500);
        assert_eq!(log.get(Tree::Data, &499u32.to_be_bytes()).unwrap().unwrap(), vec![243u8; 100]);
    }
}
