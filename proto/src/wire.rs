//! Wire constants the node and the client must agree on, written once:
//! the metadata keys that carry an error's kind and counts, the error kinds
//! themselves, and the largest message either side decodes.
//!
//! The node sets these in `impl From<Error> for tonic::Status`
//! (`node/src/error.rs`); the client reads them back in
//! `client/src/error.rs`. A kind travels as its [`ErrorKind::as_str`] name,
//! never as a message to be matched.

use std::fmt;
use std::str::FromStr;

/// The metadata key that carries an error's [`ErrorKind`]. Its presence also
/// says a node, not the transport, produced the status.
pub const KIND_HEADER: &str = "x-ringkv-kind";
/// The metadata key carrying the replicas a level needed.
pub const REQUIRED_HEADER: &str = "x-ringkv-required";
/// The metadata key carrying the replicas alive (`unavailable`) or that
/// acknowledged (`indeterminate`).
pub const GOT_HEADER: &str = "x-ringkv-got";

/// The metadata key carrying how long a rate-limited client should wait
/// before its next request, in milliseconds.
pub const RETRY_AFTER_HEADER: &str = "x-ringkv-retry-after-ms";

/// Largest message a node or client decodes. Siblings of a maximal value can
/// make a read response several times the value limit.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// What went wrong, as the caller should act on it; one per node error
/// family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Too few replicas alive; nothing was written.
    Unavailable,
    /// The write may or may not become visible.
    Indeterminate,
    /// A read or scan ran out of time.
    Timeout,
    /// The request is malformed or over a limit.
    InvalidArgument,
    /// A clock is too far off to stamp or accept a write.
    ClockSkew,
    /// A stored record failed its checksum.
    Corrupt,
    /// The storage engine failed.
    Storage,
    /// Configuration is invalid.
    Config,
    /// A peer failed after the request may have reached it.
    Peer,
    /// A peer call that cannot have reached the peer: nothing was sent.
    NotSent,
    /// The caller sent more than its rate limit allows; nothing was done.
    RateLimited,
    /// The caller did not prove who it is.
    Unauthenticated,
    /// The caller may not do this.
    PermissionDenied,
    /// A watch cannot resume from the position given (too old for the
    /// node's change log, or from a previous incarnation of the node):
    /// scan the prefix, then watch from now.
    ResyncRequired,
}

impl ErrorKind {
    /// Every kind, for parsing and tests.
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::Unavailable,
        ErrorKind::Indeterminate,
        ErrorKind::Timeout,
        ErrorKind::InvalidArgument,
        ErrorKind::ClockSkew,
        ErrorKind::Corrupt,
        ErrorKind::Storage,
        ErrorKind::Config,
        ErrorKind::Peer,
        ErrorKind::NotSent,
        ErrorKind::RateLimited,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::ResyncRequired,
    ];

    /// The name carried in [`KIND_HEADER`] and printed by `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Indeterminate => "indeterminate",
            ErrorKind::Timeout => "timeout",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::ClockSkew => "clock_skew",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Storage => "storage",
            ErrorKind::Config => "config",
            ErrorKind::Peer => "peer",
            ErrorKind::NotSent => "not_sent",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::ResyncRequired => "resync_required",
        }
    }

    /// The kind a status carries in its metadata, if a node set one.
    pub fn of(status: &tonic::Status) -> Option<ErrorKind> {
        status.metadata().get(KIND_HEADER)?.to_str().ok()?.parse().ok()
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no [`ErrorKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind(pub String);

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown error kind {:?}", self.0)
    }
}

impl std::error::Error for UnknownKind {}

impl FromStr for ErrorKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownKind(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for k in ErrorKind::ALL {
            assert_eq!(k.as_str().parse::<ErrorKind>(), Ok(k));
        }
        assert_eq!("nonsense".parse::<ErrorKind>(), Err(UnknownKind("nonsense".into())));
    }

    #[test]
    fn a_status_carries_its_kind_in_metadata() {
        let mut s = tonic::Status::unavailable("x");
        assert_eq!(ErrorKind::of(&s), None);
        s.metadata_mut().insert(KIND_HEADER, ErrorKind::NotSent.as_str().parse().unwrap());
        assert_eq!(ErrorKind::of(&s), Some(ErrorKind::NotSent));
    }
}
