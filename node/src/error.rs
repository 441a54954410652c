//! The node's one error type.
//!
//! Variants are chosen by what the caller should do about them, not by where
//! they came from: retry elsewhere (`Unavailable`), find out what happened
//! (`Indeterminate`), fix the request (`InvalidArgument`), or call an
//! operator (`Storage`, `Corrupt`). The mapping to gRPC status codes lives in
//! one place, `impl From<Error> for tonic::Status`, and the client maps back
//! from the `x-ringkv-*` metadata it sets (names and kinds in
//! `ringkv_proto::wire`).
//!
//! Whether a failed peer call can have reached the peer is a variant, not a
//! message: [`Error::NotSent`] is built where the failure happens (the
//! fault layer's admission, an unknown member, a connection never made), and
//! [`Error::delivery`] reads it.

use ringkv_proto::delivery::Delivery;
pub use ringkv_proto::wire::{ErrorKind, KIND_HEADER};
use ringkv_proto::wire::{GOT_HEADER, REQUIRED_HEADER, RETRY_AFTER_HEADER};
use tonic::metadata::MetadataValue;

/// Everything that can go wrong inside a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Too few replicas are alive to meet the requested level; nothing was sent.
    #[error("unavailable: {level} needs {required} replicas but only {alive} are alive{hint}")]
    Unavailable {
        /// The consistency level, for the message.
        level: String,
        /// Replicas the level needs.
        required: u32,
        /// Replicas believed alive.
        alive: u32,
        /// Extra advice for the user, starting with "; " or empty.
        hint: String,
    },
    /// The request stopped after some replicas stored the write: it may or may
    /// not become visible. Never report this as a plain failure.
    #[error("indeterminate: the write reached {acked} of {required} required replicas before {reason}; it may or may not become visible")]
    Indeterminate {
        /// Replicas that acknowledged.
        acked: u32,
        /// Replicas the level needs.
        required: u32,
        /// Why it stopped (deadline, replica errors).
        reason: String,
    },
    /// A read or scan could not gather enough answers before its deadline.
    #[error("timeout: {what} got {answered} of {required} required answers before the {timeout_ms} ms deadline")]
    Timeout {
        /// What was waiting.
        what: String,
        /// Answers gathered.
        answered: u32,
        /// Answers the level needs.
        required: u32,
        /// The deadline.
        timeout_ms: u64,
    },
    /// The request is malformed or over a limit.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A remote timestamp is further ahead of the local clock than allowed.
    #[error("clock skew: timestamp from {node} is {ahead_ms} ms ahead of the local clock (max_clock_skew is {max_ms} ms); check NTP on that node")]
    ClockSkew {
        /// The node whose timestamp it is.
        node: String,
        /// How far ahead it is.
        ahead_ms: u64,
        /// The configured limit.
        max_ms: u64,
    },
    /// This node's own clock disagrees with most of its peers; it refuses
    /// to stamp writes until that is fixed.
    #[error("clock skew: this node's clock is {offset_ms} ms off most of its peers (max_clock_skew is {max_ms} ms); fix NTP on this node, or send the write through another node")]
    OwnClockSkew {
        /// How far off, in ms.
        offset_ms: u64,
        /// The configured limit.
        max_ms: u64,
    },
    /// This node's wall clock just stepped; it refuses to stamp writes
    /// until gossip has compared it with the peers again.
    #[error("clock skew: this node's wall clock just stepped by {step_ms} ms (more than max_clock_skew, {max_ms} ms); it stamps no writes for a few gossip rounds; send the write through another node, or retry")]
    ClockStepped {
        /// The step, in ms (negative: backwards).
        step_ms: i64,
        /// The configured limit.
        max_ms: u64,
    },
    /// A stored record failed its checksum or could not be decoded.
    #[error("corrupt record for key {key:?}: {reason}")]
    Corrupt {
        /// The key, lossily printed.
        key: String,
        /// What failed.
        reason: String,
    },
    /// The storage engine failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A peer could not be reached or answered with an error.
    #[error("peer {peer}: {reason}")]
    Peer {
        /// The peer's node id.
        peer: String,
        /// What happened.
        reason: String,
    },
    /// A peer call that cannot have reached the peer: the fault layer
    /// stopped it, the peer is unknown, or no connection was made.
    #[error("peer {peer}: {reason}")]
    NotSent {
        /// The peer's node id (or address, for a seed).
        peer: String,
        /// What stopped it.
        reason: String,
    },
    /// A Merkle tree (this node's or the peer's) is missing or still
    /// building; the sync can be retried shortly.
    #[error("peer {side}: no built Merkle tree for range ({start}, {end}] yet")]
    TreeNotReady {
        /// Whose tree: `local` or `peer`.
        side: String,
        /// The range's start token (exclusive).
        start: u64,
        /// The range's end token (inclusive).
        end: u64,
    },
    /// A peer did not answer in time; a write sent to it may have landed.
    #[error("peer {peer}: no answer within {ms} ms")]
    PeerTimeout {
        /// The peer's node id.
        peer: String,
        /// The deadline that passed.
        ms: u64,
    },
    /// An error a peer's node raised, passed through to the client unchanged.
    #[error("{}", .0.message())]
    Forwarded(tonic::Status),
    /// Configuration is invalid.
    #[error("config: {0}")]
    Config(String),
    /// The caller did not prove who it is (no token, an unknown token, no
    /// client certificate where one is needed).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this; the message names the
    /// missing permission.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The caller is over its rate limit on this node; nothing was done.
    #[error("rate limited: more than {per_sec} requests/s (burst {burst}) from this client to this node; retry after {retry_after_ms} ms")]
    RateLimited {
        /// The sustained limit.
        per_sec: u32,
        /// The burst allowed above it.
        burst: u32,
        /// When the next request would be admitted.
        retry_after_ms: u64,
    },
    /// A watch cannot resume from the position it gave: the position was
    /// evicted from this node's change log, or is from a previous
    /// incarnation of the node. The caller must resync by scanning.
    #[error("resync required: {0}; scan the prefix, then watch again from now")]
    ResyncRequired(String),
    /// This node already serves as many watches as it allows.
    #[error(
        "unavailable: this node serves at most {max} watches at once (max_watches) and has no slot free; close a watch, or raise max_watches"
    )]
    TooManyWatches {
        /// The configured limit.
        max: usize,
    },
}

impl Error {
    /// True when the same request may succeed if retried, possibly elsewhere.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. }
                | Error::Timeout { .. }
                | Error::Peer { .. }
                | Error::NotSent { .. }
                | Error::TreeNotReady { .. }
                | Error::PeerTimeout { .. }
                | Error::RateLimited { .. }
                | Error::TooManyWatches { .. }
        )
    }

    /// Whether the failed call may have reached its target: only
    /// [`Error::NotSent`] proves it did not.
    pub fn delivery(&self) -> Delivery {
        match self {
            Error::NotSent { .. } => Delivery::NotSent,
            _ => Delivery::MaybeDelivered,
        }
    }

    /// The kind carried in `x-ringkv-kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Indeterminate { .. } => ErrorKind::Indeterminate,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::ClockSkew { .. } | Error::OwnClockSkew { .. } | Error::ClockStepped { .. } => ErrorKind::ClockSkew,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Storage(_) => ErrorKind::Storage,
            Error::Peer { .. } | Error::PeerTimeout { .. } | Error::TreeNotReady { .. } => ErrorKind::Peer,
            Error::NotSent { .. } => ErrorKind::NotSent,
            Error::Config(_) => ErrorKind::Config,
            Error::RateLimited { .. } => ErrorKind::RateLimited,
            Error::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Error::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Error::ResyncRequired(_) => ErrorKind::ResyncRequired,
            Error::TooManyWatches { .. } => ErrorKind::Unavailable,
            Error::Forwarded(s) => ErrorKind::of(s).unwrap_or(ErrorKind::Peer),
        }
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        if let Error::Forwarded(status) = e {
            return status;
        }
        let code = match &e {
            Error::Unavailable { .. } | Error::Peer { .. } | Error::NotSent { .. } | Error::TreeNotReady { .. } => Code::Unavailable,
            Error::Indeterminate { .. } | Error::Timeout { .. } => Code::DeadlineExceeded,
            Error::InvalidArgument(_) | Error::Config(_) => Code::InvalidArgument,
            Error::ClockSkew { .. } | Error::OwnClockSkew { .. } | Error::ClockStepped { .. } => Code::FailedPrecondition,
            Error::Corrupt { .. } => Code::DataLoss,
            Error::Storage(_) => Code::Internal,
            Error::PeerTimeout { .. } => Code::DeadlineExceeded,
            Error::RateLimited { .. } => Code::ResourceExhausted,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::ResyncRequired(_) => Code::OutOfRange,
            Error::TooManyWatches { .. } => Code::ResourceExhausted,
            Error::Forwarded(_) => unreachable!("returned above"),
        };
        let mut status = tonic::Status::new(code, e.to_string());
        let md = status.metadata_mut();
        md.insert(KIND_HEADER, MetadataValue::from_static(e.kind().as_str()));
        let counts = match &e {
            Error::Unavailable { required, alive, .. } => Some((*required, *alive)),
            Error::Indeterminate { acked, required, .. } => Some((*required, *acked)),
            _ => None,
        };
        if let Error::RateLimited { retry_after_ms, .. } = &e {
            md.insert(RETRY_AFTER_HEADER, (*retry_after_ms).into());
        }
        if let Some((required, got)) = counts {
            md.insert(REQUIRED_HEADER, required.into());
            md.insert(GOT_HEADER, got.into());
        }
        status
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(format!("redb: {e}"))
            }
        }
    )*};
}
redb_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(format!("io: {e}"))
    }
}
