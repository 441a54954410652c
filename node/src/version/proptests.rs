//! Property tests over random histories: they mirror
//! `shared/models/dvv_floor.py`, extended with expiring writes and with
//! replicas turning expired values into tombstones at moments of their own.
//!
//! A history is three replicas taking causal writes, blind writes,
//! tombstones and writes with a TTL, syncing pairwise, and converting what
//! has expired by their own (jittered) clocks. The properties:
//!
//! - merge is a join (commutative, associative, idempotent) over every
//!   state seen, converted or not;
//! - replicas converge after pairwise sync;
//! - a write is lost only when a context covered it or a newer blind write
//!   superseded it (an expired write leaves its tombstone: it is expired,
//!   not lost);
//! - conversion commutes with merge, never changes what a read at or after
//!   the conversion instant returns, never changes the GC decision, and the
//!   converged outcome is the same whenever (or whether) each replica
//!   converted.

use proptest::prelude::*;

use super::{Context, DvvSet, Hlc, HlcClock, Sibling};

const NODES: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug)]
enum Op {
    /// Replica `r` coordinates a write. It uses the context of replica
    /// `ctx_from` (None: no context), is blind or not, is a tombstone or
    /// not, and carries a TTL or not. `dt` advances time; `jitter` skews
    /// r's clock.
    Write { r: usize, ctx_from: Option<usize>, blind: bool, tomb: bool, ttl: Option<u64>, dt: u64, jitter: i64 },
    /// Replica `r` merges replica `o`'s state.
    Sync { r: usize, o: usize },
    /// Replica `r` converts what has expired by its clock (now, skewed by
    /// `jitter`).
    Expire { r: usize, jitter: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            0..3usize,
            proptest::option::weighted(0.8, 0..3usize),
            proptest::bool::weighted(0.35),
            proptest::bool::weighted(0.15),
            proptest::option::weighted(0.4, 1..8u64),
            0..4u64,
            -2..3i64
        )
            .prop_map(|(r, ctx_from, blind, tomb, ttl, dt, jitter)| Op::Write {
                r,
                ctx_from,
                blind,
                tomb,
                ttl: ttl.filter(|_| !tomb),
                dt,
                jitter
            }),
        3 => (0..3usize, 0..3usize).prop_map(|(r, o)| Op::Sync { r, o }),
        1 => (0..3usize, -3..4i64).prop_map(|(r, jitter)| Op::Expire { r, jitter }),
    ]
}

/// One acknowledged write, for the loss check.
struct Written {
    node: String,
    dot: u64,
    hlc: Hlc,
    value: Vec<u8>,
}

/// What a history left behind.
struct History {
    /// Every state a replica passed through.
    seen: Vec<DvvSet>,
    /// The replicas at the end.
    reps: Vec<DvvSet>,
    writes: Vec<Written>,
    /// The contexts writes carried, and the blind writes' timestamps: what
    /// may supersede a write.
    ctxs: Vec<Context>,
    blinds: Vec<Hlc>,
    /// The time at the end.
    end: u64,
}

/// Runs a history.
fn run(ops: &[Op]) -> History {
    run_with(ops, true)
}

/// Runs a history; with `convert` false, its `Expire` steps do nothing.
fn run_with(ops: &[Op], convert: bool) -> History {
    let mut reps = vec![DvvSet::default(); 3];
    let clocks: Vec<HlcClock> = NODES.iter().map(|n| HlcClock::new(*n, u64::MAX / 2)).collect();
    let (mut seen, mut writes, mut ctxs, mut blinds) = (vec![], vec![], vec![], vec![]);
    let mut t: u64 = 10;
    for (i, op) in ops.iter().enumerate() {
        let r = match *op {
            Op::Write { r, ctx_from, blind, tomb, ttl, dt, jitter } => {
                t += dt;
                // The coordinator observes what it stores before stamping.
                if let Some(h) = reps[r].max_hlc() {
                    clocks[r].observe(h);
                }
                let hlc = clocks[r].now(t.saturating_add_signed(jitter));
                let value = format!("w{i}").into_bytes();
                let s = Sibling {
                    hlc: hlc.clone(),
                    value: if tomb { vec![] } else { value.clone() },
                    tombstone: tomb,
                    expires_at_ms: ttl.map(|ttl| hlc.wall_ms + ttl),
                };
                // A blind write carries no context, as in the API.
                let ctx = match (blind, ctx_from) {
                    (false, Some(src)) => reps[src].context(),
                    _ => Context::new(),
                };
                reps[r].update(&ctx, NODES[r], s, blind).unwrap();
                ctxs.push(ctx);
                if blind {
                    blinds.push(hlc.clone());
                }
                if !tomb {
                    writes.push(Written { node: NODES[r].into(), dot: reps[r].entries[NODES[r]].counter, hlc, value });
                }
                r
            }
            Op::Sync { r, o } => {
                let other = reps[o].clone();
                reps[r].merge(&other);
                r
            }
            Op::Expire { r, jitter } => {
                if convert {
                    reps[r].expire(t.saturating_add_signed(jitter));
                }
                r
            }
        };
        seen.push(reps[r].clone());
    }
    History { seen, reps, writes, ctxs, blinds, end: t }
}

fn converge(reps: &mut [DvvSet]) {
    for _ in 0..2 {
        for p in 0..reps.len() {
            for q in 0..reps.len() {
                let other = reps[q].clone();
                reps[p].merge(&other);
            }
        }
    }
}

fn history() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..40)
}

fn picks() -> impl Strategy<Value = Vec<proptest::sample::Index>> {
    proptest::collection::vec(any::<proptest::sample::Index>(), 3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn merge_is_a_join(ops in history(), picks in picks()) {
        let h = run(&ops);
        let x = &h.seen[picks[0].index(h.seen.len())];
        let y = &h.seen[picks[1].index(h.seen.len())];
        let z = &h.seen[picks[2].index(h.seen.len())];
        prop_assert_eq!(x.merged(y), y.merged(x), "commutative");
        prop_assert_eq!(&x.merged(x), x, "idempotent");
        prop_assert_eq!(x.merged(y).merged(z), x.merged(&y.merged(z)), "associative");
    }

    #[test]
    fn replicas_converge_after_pairwise_sync(ops in history()) {
        let mut h = run(&ops);
        converge(&mut h.reps);
        prop_assert_eq!(&h.reps[0], &h.reps[1]);
        prop_assert_eq!(&h.reps[1], &h.reps[2]);
    }

    #[test]
    fn acknowledged_write_lost_only_when_superseded(ops in history()) {
        let mut h = run(&ops);
        converge(&mut h.reps);
        let all = h.reps[0].siblings();
        for w in &h.writes {
            // A value, or the tombstone its expiry turned it into.
            let present = all.iter().any(|s| s.hlc == w.hlc && (s.value == w.value || (s.tombstone && s.expires_at_ms.is_some())));
            let covered = h.ctxs.iter().any(|c| c.get(&w.node).is_some_and(|&n| n >= w.dot));
            let outvoted = h.blinds.iter().any(|b| b > &w.hlc);
            prop_assert!(present || covered || outvoted,
                "write {:?} vanished without a covering context or a newer blind write", String::from_utf8_lossy(&w.value));
            // Conversely, a surviving write is never one a context covered.
            if present {
                prop_assert!(!h.blinds.iter().any(|b| b > &w.hlc), "a sibling below the floor survived");
            }
        }
    }

    #[test]
    fn expiry_commutes_with_merge(ops in history(), picks in picks(), at in 0..60u64) {
        let h = run(&ops);
        let x = &h.seen[picks[0].index(h.seen.len())];
        let y = &h.seen[picks[1].index(h.seen.len())];
        prop_assert_eq!(x.merged(y).expired_at(at), x.expired_at(at).merged(&y.expired_at(at)));
        // Converting later converts a superset, and twice is once.
        prop_assert_eq!(x.expired_at(at).expired_at(at + 5), x.expired_at(at + 5));
    }

    #[test]
    fn conversion_never_changes_a_read_or_a_purge(ops in history(), pick in any::<proptest::sample::Index>(), at in 0..60u64, later in 0..20u64, cutoff in 0..80u64) {
        let h = run(&ops);
        let x = &h.seen[pick.index(h.seen.len())];
        let c = x.expired_at(at);
        prop_assert_eq!(x.live(at + later), c.live(at + later), "reads at or after the conversion see the same");
        prop_assert_eq!(x.purgeable(cutoff), c.purgeable(cutoff), "GC decides alike for both forms");
        prop_assert_eq!(x.context(), c.context(), "no dot moves");
        prop_assert_eq!(&x.floor, &c.floor);
    }

    #[test]
    fn the_outcome_is_the_same_whenever_each_replica_converts(ops in history()) {
        // The same history with no conversion at all.
        let mut with = run(&ops);
        let mut without = run_with(&ops, false);
        converge(&mut with.reps);
        converge(&mut without.reps);
        let end = with.end + 100;
        for r in 0..3 {
            prop_assert_eq!(with.reps[r].expired_at(end), without.reps[r].expired_at(end));
            prop_assert_eq!(with.reps[r].live(end), without.reps[r].live(end));
        }
    }
}
