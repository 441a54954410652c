//! The client's error type, mapped back from the node's `tonic::Status`
//! through the `x-ringkv-*` metadata the node sets (node/src/error.rs).

use tonic::Code;

/// What went wrong with a request, by what the caller should do about it.
///
/// The node tags each error with `x-ringkv-kind` metadata; the client maps
/// it back:
///
/// ```
/// use ringkv_client::Error;
/// let mut status = tonic::Status::unavailable("QUORUM needs 2 replicas but only 1 are alive");
/// status.metadata_mut().insert("x-ringkv-kind", "unavailable".parse().unwrap());
/// status.metadata_mut().insert("x-ringkv-required", "2".parse().unwrap());
/// let e = Error::from(status);
/// assert!(matches!(e, Error::Unavailable { required: 2, .. }));
/// assert_eq!(e.kind(), "unavailable");
/// assert!(e.is_retryable(), "nothing was written; retry later or at a lower level");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Too few replicas alive for the level; nothing was written. Retry
    /// later or at a lower level.
    #[error("{message}")]
    Unavailable {
        /// Replicas the level needs.
        required: u32,
        /// Replicas that were alive.
        alive: u32,
        /// The node's explanation.
        message: String,
    },
    /// The write may or may not have been applied. Read before retrying.
    #[error("{message}")]
    Indeterminate {
        /// The node's explanation.
        message: String,
    },
    /// The request was rejected as malformed or over a limit. Fix it.
    #[error("{message}")]
    InvalidArgument {
        /// The node's explanation.
        message: String,
    },
    /// A read or scan ran out of time.
    #[error("{message}")]
    Timeout {
        /// The node's or transport's explanation.
        message: String,
    },
    /// No endpoint could be reached.
    #[error("cannot reach any endpoint ({endpoints}): {message}")]
    Connect {
        /// The endpoints tried.
        endpoints: String,
        /// The last transport error.
        message: String,
    },
    /// Anything else the node reported.
    #[error("{kind}: {message}")]
    Other {
        /// The node's error kind, or the gRPC code.
        kind: String,
        /// The explanation.
        message: String,
    },
}

impl Error {
    /// The short kind, as printed in `--json` output.
    pub fn kind(&self) -> &str {
        match self {
            Error::Unavailable { .. } => "unavailable",
            Error::Indeterminate { .. } => "indeterminate",
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::Timeout { .. } => "timeout",
            Error::Connect { .. } => "connect",
            Error::Other { kind, .. } => kind,
        }
    }

    /// True when the same request may succeed if retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. } | Error::Connect { .. })
    }

    /// True when the connection was refused or never made: the request
    /// cannot have arrived, so even a non-idempotent one may go elsewhere.
    pub(crate) fn not_delivered(status: &tonic::Status) -> bool {
        let m = status.message().to_ascii_lowercase();
        m.contains("connection refused") || m.contains("tcp connect error") || m.contains("dns error")
    }

    /// True when the status came from the transport, not from a node: the
    /// request may never have arrived, so another endpoint can be tried.
    pub(crate) fn is_transport(status: &tonic::Status) -> bool {
        status.metadata().get("x-ringkv-kind").is_none() && matches!(status.code(), Code::Unavailable | Code::Unknown)
    }
}

fn number(status: &tonic::Status, key: &str) -> u32 {
    status.metadata().get(key).and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let kind = status.metadata().get("x-ringkv-kind").and_then(|v| v.to_str().ok()).map(str::to_string);
        let message = status.message().to_string();
        match (kind.as_deref(), status.code()) {
            (Some("unavailable"), _) => {
                Error::Unavailable { required: number(&status, "x-ringkv-required"), alive: number(&status, "x-ringkv-got"), message }
            }
            (Some("indeterminate"), _) => Error::Indeterminate { message },
            (Some("invalid_argument"), _) | (None, Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted) => {
                Error::InvalidArgument { message }
            }
            (Some("timeout"), _) | (None, Code::DeadlineExceeded | Code::Cancelled) => Error::Timeout { message },
            (Some(k), _) => Error::Other { kind: k.to_string(), message },
            (None, code) => Error::Other { kind: format!("{code:?}").to_lowercase(), message },
        }
    }
}
