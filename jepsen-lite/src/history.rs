//! A recorded history of client operations, as Jepsen keeps one: each
//! operation with its invocation and completion time, its consistency level
//! and its outcome, plus the nemesis events (faults and heals) with their
//! times. Checkers (`checkers.rs`, `staleness.rs`, `linearizability.rs`)
//! judge it; its digest shows that a simulation seed replays exactly.
//!
//! Every write is a blind write of a unique value, so a value names its
//! write. On disk a history is JSON lines (`history.jsonl`), one
//! [`Record`] per line.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::BufRead;

use serde::{Deserialize, Serialize};

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Definitely not applied (refused before anything was written).
    Fail,
    /// Unknown: timed out or indeterminate; it may have been applied.
    Info,
}

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum Kind {
    /// A blind write of a unique value.
    Put {
        /// The value written.
        value: String,
    },
    /// A read and the values it returned (when it succeeded).
    Get {
        /// The live siblings read.
        values: Vec<String>,
    },
    /// A compare-and-set at SERIAL of a unique value.
    Cas {
        /// The value the key had to hold; `None`: absent.
        expect: Option<String>,
        /// The value it would write.
        value: String,
        /// The node answered that it applied (ok ops only).
        applied: bool,
        /// When not applied: the live values the condition saw.
        current: Vec<String>,
    },
}

/// The `level` recorded for SERIAL operations (cas and SERIAL reads).
pub const SERIAL_LEVEL: usize = 4;

/// What the cluster said about an operation, beyond its outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// The node that coordinated it (from the receipt).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub coordinator: String,
    /// Replicas that acknowledged it.
    #[serde(default)]
    pub acked: u32,
    /// Replicas a read found stale.
    #[serde(default)]
    pub stale: u32,
    /// A read's newest sibling HLC (`wall_ms.logical@node`), or a put's
    /// returned causal context (base64).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The error, for a failed or indeterminate operation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Which client issued it.
    pub client: usize,
    /// The key.
    pub key: String,
    /// Put or get, with its values.
    #[serde(flatten)]
    pub kind: Kind,
    /// Replicas required out of 3: 1 (ONE), 2 (QUORUM), 3 (ALL).
    pub level: usize,
    /// ms since the run started when it was invoked.
    pub invoke_ms: u64,
    /// ms since the run started when it completed.
    pub complete_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// What the receipt or error said.
    #[serde(default)]
    pub detail: Detail,
}

impl Op {
    /// True for a put or cas that may have been applied (ok or info; an
    /// ok cas only when it applied).
    pub fn may_have_written(&self) -> bool {
        self.written().is_some() && self.outcome != Outcome::Fail
    }

    /// The value written: a put's, or a cas's unless it was answered "not
    /// applied".
    pub fn written(&self) -> Option<&str> {
        match &self.kind {
            Kind::Put { value } => Some(value),
            Kind::Cas { value, applied, .. } if *applied || self.outcome != Outcome::Ok => Some(value),
            Kind::Get { .. } | Kind::Cas { .. } => None,
        }
    }

    /// The values read, for a successful get, or what an unapplied cas saw.
    pub fn read(&self) -> Option<&[String]> {
        match &self.kind {
            Kind::Get { values } if self.outcome == Outcome::Ok => Some(values),
            Kind::Cas { applied: false, current, .. } if self.outcome == Outcome::Ok => Some(current),
            _ => None,
        }
    }
}

/// The name of a level given as replicas required out of 3.
pub fn level_name(level: usize) -> &'static str {
    match level {
        1 => "ONE",
        2 => "QUORUM",
        3 => "ALL",
        SERIAL_LEVEL => "SERIAL",
        _ => "OTHER",
    }
}

/// A fault starting or healing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisEvent {
    /// ms since the run started.
    pub time_ms: u64,
    /// `start` or `heal`.
    pub phase: String,
    /// The fault's kind: kill, pause, partition, latency, clock.
    pub fault: String,
    /// What exactly, e.g. "isolate n3" or "n2 +3000 ms".
    pub description: String,
}

/// One line of `history.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    /// A client operation.
    Op(Op),
    /// A nemesis event.
    Nemesis(NemesisEvent),
}

/// Every operation, in completion order, and the nemesis timeline.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The operations.
    pub ops: Vec<Op>,
    /// Faults and heals, in time order.
    pub nemesis: Vec<NemesisEvent>,
}

impl History {
    /// A history of just these operations.
    pub fn of(ops: Vec<Op>) -> Self {
        Self { ops, nemesis: Vec::new() }
    }

    /// A digest of the whole history: equal digests mean identical runs.
    pub fn digest(&self) -> String {
        let mut text = String::new();
        for op in &self.ops {
            let _ = writeln!(text, "{op:?}");
        }
        blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
    }

    /// Index of the put that wrote each value.
    pub fn writers(&self) -> HashMap<&str, &Op> {
        self.ops.iter().filter_map(|o| o.written().map(|v| (v, o))).collect()
    }

    /// The put that wrote `value`, if any (a linear scan; use
    /// [`History::writers`] for many lookups).
    pub fn writer_of(&self, value: &str) -> Option<&Op> {
        self.ops.iter().find(|o| o.written() == Some(value))
    }

    /// The history as JSON lines: nemesis events first, then operations.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        let records = self.nemesis.iter().cloned().map(Record::Nemesis).chain(self.ops.iter().cloned().map(Record::Op));
        for r in records {
            out.push_str(&serde_json::to_string(&r).expect("a record serializes"));
            out.push('\n');
        }
        out
    }

    /// Parses JSON lines written by [`History::to_jsonl`]; names the line
    /// that does not parse.
    pub fn from_jsonl(reader: impl BufRead) -> anyhow::Result<Self> {
        let mut h = History::default();
        for (n, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("history line {}: {e}", n + 1))? {
                Record::Op(op) => h.ops.push(op),
                Record::Nemesis(e) => h.nemesis.push(e),
            }
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_round_trips() {
        let op = Op {
            client: 2,
            key: "r1".into(),
            kind: Kind::Get { values: vec!["c1-5".into()] },
            level: 2,
            invoke_ms: 10,
            complete_ms: 12,
            outcome: Outcome::Ok,
            detail: Detail { coordinator: "n2".into(), acked: 2, ..Default::default() },
        };
        let event = NemesisEvent { time_ms: 5, phase: "start".into(), fault: "kill".into(), description: "kill -9 n3".into() };
        let h = History { ops: vec![op.clone()], nemesis: vec![event.clone()] };
        let text = h.to_jsonl();
        assert!(text.lines().nth(1).unwrap().contains(r#""f":"get""#), "{text}");
        let back = History::from_jsonl(text.as_bytes()).unwrap();
        assert_eq!(back.ops, vec![op]);
        assert_eq!(back.nemesis, vec![event]);
        let err = History::from_jsonl("{\"type\":\"op\"}\n".as_bytes()).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
