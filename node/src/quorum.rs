//! Consistency levels and the quorum tracker: pure arithmetic, no I/O.
//!
//! A level turns the replication factor N into the number of replicas that
//! must answer. The tracker counts answers and says when the outcome is
//! decided: met, or impossible because too many replicas failed. With
//! R + W > N (QUORUM reads after QUORUM writes, or ONE after ALL) a read
//! overlaps the last acknowledged write on at least one replica.

use ringkv_proto::v1::Consistency;

use crate::error::{Error, Result};

/// A per-request consistency level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// One replica.
    One,
    /// Two replicas.
    Two,
    /// A majority: N / 2 + 1.
    Quorum,
    /// Every replica.
    All,
    /// A majority of the replicas in the coordinator's zone.
    LocalQuorum,
    /// Writes only: any node durably holding the write, a hint included.
    Any,
    /// Linearizable (Paxos) over a majority of the key's replicas: `Cas`
    /// and reads only.
    Serial,
    /// [`Level::Serial`] over the replicas in the coordinator's zone.
    LocalSerial,
}

impl Level {
    /// Replicas that must answer when the replication factor is `n`.
    pub fn required(self, n: usize) -> usize {
        match self {
            Level::One => 1,
            Level::Two => 2,
            Level::Quorum => n / 2 + 1,
            Level::All => n,
            Level::LocalQuorum => n / 2 + 1,
            Level::Any => 1,
            Level::Serial | Level::LocalSerial => n / 2 + 1,
        }
    }

    /// The name users type.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::One => "ONE",
            Level::Two => "TWO",
            Level::Quorum => "QUORUM",
            Level::All => "ALL",
            Level::LocalQuorum => "LOCAL_QUORUM",
            Level::Any => "ANY",
            Level::Serial => "SERIAL",
            Level::LocalSerial => "LOCAL_SERIAL",
        }
    }

    /// The wire form.
    pub fn to_proto(self) -> Consistency {
        match self {
            Level::One => Consistency::One,
            Level::Two => Consistency::Two,
            Level::Quorum => Consistency::Quorum,
            Level::All => Consistency::All,
            Level::LocalQuorum => Consistency::LocalQuorum,
            Level::Any => Consistency::Any,
            Level::Serial => Consistency::Serial,
            Level::LocalSerial => Consistency::LocalSerial,
        }
    }

    /// Whether this is a Paxos level (SERIAL or LOCAL_SERIAL).
    pub fn is_serial(self) -> bool {
        matches!(self, Level::Serial | Level::LocalSerial)
    }

    /// Reads the wire form; unspecified means QUORUM.
    pub fn from_proto(raw: i32) -> Result<Self> {
        match Consistency::try_from(raw) {
            Ok(Consistency::Unspecified | Consistency::Quorum) => Ok(Level::Quorum),
            Ok(Consistency::One) => Ok(Level::One),
            Ok(Consistency::Two) => Ok(Level::Two),
            Ok(Consistency::All) => Ok(Level::All),
            Ok(Consistency::LocalQuorum) => Ok(Level::LocalQuorum),
            Ok(Consistency::Any) => Ok(Level::Any),
            Ok(Consistency::Serial) => Ok(Level::Serial),
            Ok(Consistency::LocalSerial) => Ok(Level::LocalSerial),
            Err(_) => Err(Error::InvalidArgument(format!(
                "unknown consistency level {raw}; expected ONE, TWO, QUORUM, ALL, LOCAL_QUORUM, ANY, SERIAL or LOCAL_SERIAL"
            ))),
        }
    }
}

/// Where a tracked request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still waiting.
    Pending,
    /// Enough replicas answered.
    Met,
    /// Too many failed for the level ever to be met.
    Impossible,
}

/// Counts acknowledgements and failures against a requirement.
#[derive(Clone, Debug)]
pub struct QuorumTracker {
    required: usize,
    asked: usize,
    acks: usize,
    failures: usize,
}

impl QuorumTracker {
    /// Tracks `asked` replicas of which `required` must acknowledge.
    pub fn new(required: usize, asked: usize) -> Self {
        Self { required, asked, acks: 0, failures: 0 }
    }

    /// One replica acknowledged.
    pub fn ack(&mut self) -> Outcome {
        self.acks += 1;
        self.outcome()
    }

    /// One replica failed.
    pub fn fail(&mut self) -> Outcome {
        self.failures += 1;
        self.outcome()
    }

    /// One more replica was asked (a sloppy-quorum stand-in recruited late).
    pub fn add_asked(&mut self) {
        self.asked += 1;
    }

    /// Acknowledgements so far.
    pub fn acks(&self) -> usize {
        self.acks
    }

    /// The current outcome.
    pub fn outcome(&self) -> Outcome {
        if self.acks >= self.required {
            Outcome::Met
        } else if self.asked - self.failures < self.required {
            Outcome::Impossible
        } else {
            Outcome::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_per_level() {
        let table = [(Level::One, [1, 1, 1]), (Level::Two, [2, 2, 2]), (Level::Quorum, [1, 2, 3]), (Level::All, [1, 3, 5])];
        for (level, want) in table {
            let got: Vec<usize> = [1, 3, 5].iter().map(|&n| level.required(n)).collect();
            assert_eq!(got, want, "{level:?}");
        }
    }

    #[test]
    fn quorum_reads_and_writes_overlap() {
        for n in 1..=7 {
            let (r, w) = (Level::Quorum.required(n), Level::Quorum.required(n));
            assert!(r + w > n, "n={n}");
        }
    }

    #[test]
    fn tracker_decides_met_and_impossible() {
        let mut t = QuorumTracker::new(2, 3);
        assert_eq!(t.ack(), Outcome::Pending);
        assert_eq!(t.fail(), Outcome::Pending);
        assert_eq!(t.ack(), Outcome::Met);
        let mut t = QuorumTracker::new(2, 3);
        assert_eq!(t.fail(), Outcome::Pending);
        assert_eq!(t.fail(), Outcome::Impossible);
    }

    #[test]
    fn unknown_and_unsupported_levels_are_rejected_clearly() {
        assert_eq!(Level::from_proto(0).unwrap(), Level::Quorum);
        let e = Level::from_proto(99).unwrap_err().to_string();
        assert!(e.contains("unknown consistency level 99"), "{e}");
        assert_eq!(Level::from_proto(Consistency::Any as i32).unwrap(), Level::Any);
    }
}
