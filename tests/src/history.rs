//! A recorded history of client operations, as Jepsen keeps one: each
//! operation with its invocation and completion time, its consistency level
//! and its outcome. Checkers (`checkers.rs`) judge it; its digest shows that
//! a seed replays exactly.

use std::fmt::Write as _;

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Definitely not applied (refused before anything was sent).
    Fail,
    /// Unknown: timed out or indeterminate; it may have been applied.
    Info,
}

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// Which client issued it.
    pub client: usize,
    /// The key.
    pub key: String,
    /// Put or get, with its values.
    pub kind: Kind,
    /// Replicas required: 1 (ONE), 2 (QUORUM of 3), 3 (ALL).
    pub level: usize,
    /// Simulated ms when it was invoked.
    pub invoke_ms: u64,
    /// Simulated ms when it completed.
    pub complete_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
}

impl Op {
    /// True for a put that may have been applied (ok or info).
    pub fn may_have_written(&self) -> bool {
        matches!(self.kind, Kind::Put { .. }) && self.outcome != Outcome::Fail
    }

    /// The value written, for a put.
    pub fn written(&self) -> Option<&str> {
        match &self.kind {
            Kind::Put { value } => Some(value),
            Kind::Get { .. } => None,
        }
    }
}

/// Every operation, in completion order.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The operations.
    pub ops: Vec<Op>,
}

impl History {
    /// A digest of the whole history: equal digests mean identical runs.
    pub fn digest(&self) -> String {
        let mut text = String::new();
        for op in &self.ops {
            let _ = writeln!(text, "{op:?}");
        }
        blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
    }

    /// The put that wrote `value`, if any.
    pub fn writer_of(&self, value: &str) -> Option<&Op> {
        self.ops.iter().find(|o| o.written() == Some(value))
    }
}
