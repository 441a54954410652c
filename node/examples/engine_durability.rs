//! Measures each storage engine's write rate with real syncs, in one run,
//! against the in-memory engine as the baseline, with and without the
//! commit log in front.
//!
//! `cargo run --release -p ringkv-node --example engine_durability [dir]`
//!
//! - fsync: every put followed by its own `sync` (one fdatasync per write).
//! - group: puts synced in groups of 64 (what group commit does under load).

use std::sync::Arc;
use std::time::Instant;

use ringkv_node::storage::{self, Engine, Storage, Tree};

fn rate(engine: &dyn Storage, ops: usize, group: usize, tag: &str) -> f64 {
    let value = vec![7u8; 100];
    let start = Instant::now();
    for i in 0..ops {
        engine.put(Tree::Data, format!("{tag}-{i:08}").as_bytes(), &value).expect("put");
        if (i + 1) % group == 0 {
            engine.sync().expect("sync");
        }
    }
    engine.sync().expect("sync");
    ops as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let base = std::env::args().nth(1).map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    println!("{:<9} {:>14} {:>14} {:>16}", "engine", "fsync ops/s", "group ops/s", "group vs memory");
    let mut memory = 0.0;
    for (kind, log) in [(Engine::Memory, false), (Engine::Redb, false), (Engine::Redb, true), (Engine::Fjall, false)] {
        let engine: Arc<dyn Storage> = storage::open(kind, &dir.path().join(format!("{kind}-{log}")), log).expect("open");
        let name = if log { format!("{kind}+log") } else { kind.to_string() };
        let fsync = rate(&*engine, 1_000, 1, "f");
        let group = rate(&*engine, 20_000, 64, "g");
        if name == "memory" {
            memory = group;
        }
        println!("{name:<9} {fsync:>14.0} {group:>14.0} {:>15.3}x", group / memory);
    }
}
