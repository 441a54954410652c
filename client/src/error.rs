//! The client's error type, mapped back from the node's `tonic::Status`
//! through the `x-ringkv-*` metadata the node sets (node/src/error.rs; the
//! names and kinds are in `ringkv_proto::wire`).

use ringkv_proto::wire::{ErrorKind, GOT_HEADER, KIND_HEADER, REQUIRED_HEADER, RETRY_AFTER_HEADER};
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
    /// Over the node's rate limit for this client; nothing was done. Wait
    /// `retry_after`, then retry.
    #[error("{message}")]
    RateLimited {
        /// How long the node said to wait.
        retry_after: std::time::Duration,
        /// The node's explanation.
        message: String,
    },
    /// The node does not know who the client is: no token, an unknown
    /// token, or no client certificate where one is needed. Pass
    /// `--token`/`RINGKV_TOKEN` (or `--cert`/`--key`).
    #[error("{message}")]
    Unauthenticated {
        /// The node's explanation.
        message: String,
    },
    /// The client is known but lacks a permission; the message names it.
    #[error("{message}")]
    PermissionDenied {
        /// The node's explanation.
        message: String,
    },
    /// A watch cannot resume from its position: a node evicted it from its
    /// bounded change log, or restarted since (its log is in memory). Scan
    /// the prefix to catch up, then watch again from now.
    #[error("{0}")]
    ResyncRequired(String),
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
            Error::RateLimited { .. } => "rate_limited",
            Error::Unauthenticated { .. } => "unauthenticated",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::ResyncRequired(_) => "resync_required",
            Error::Other { kind, .. } => kind,
        }
    }

    /// True when the same request may succeed if retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. } | Error::Connect { .. } | Error::RateLimited { .. })
    }

    /// True when the status came from the transport, not from a node: the
    /// request may never have arrived, so another endpoint can be tried.
    /// Whether it did is [`Delivery::of_status`](ringkv_proto::delivery::Delivery::of_status).
    pub(crate) fn is_transport(status: &tonic::Status) -> bool {
        !status.metadata().contains_key(KIND_HEADER) && matches!(status.code(), Code::Unavailable | Code::Unknown)
    }
}

fn number(status: &tonic::Status, key: &str) -> u32 {
    status.metadata().get(key).and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let raw = status.metadata().get(KIND_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
        let message = status.message().to_string();
        match (ErrorKind::of(&status), status.code()) {
            // A peer call the coordinator never sent: nothing was written.
            (Some(ErrorKind::Unavailable | ErrorKind::NotSent), _) => {
                Error::Unavailable { required: number(&status, REQUIRED_HEADER), alive: number(&status, GOT_HEADER), message }
            }
            (Some(ErrorKind::Indeterminate), _) => Error::Indeterminate { message },
            (Some(ErrorKind::ResyncRequired), _) => Error::ResyncRequired(message),
            (Some(ErrorKind::Unauthenticated), _) | (None, Code::Unauthenticated) => Error::Unauthenticated { message },
            (Some(ErrorKind::PermissionDenied), _) | (None, Code::PermissionDenied) => Error::PermissionDenied { message },
            (Some(ErrorKind::RateLimited), _) => {
                Error::RateLimited { retry_after: std::time::Duration::from_millis(number(&status, RETRY_AFTER_HEADER).into()), message }
            }
            (Some(ErrorKind::InvalidArgument), _) | (None, Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted) => {
                Error::InvalidArgument { message }
            }
            (Some(ErrorKind::Timeout), _) | (None, Code::DeadlineExceeded | Code::Cancelled) => Error::Timeout { message },
            (Some(k), _) => Error::Other { kind: k.as_str().to_string(), message },
            // A kind this client does not know (a newer node): kept as sent.
            (None, code) => Error::Other { kind: raw.unwrap_or_else(|| format!("{code:?}").to_lowercase()), message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(kind: ErrorKind) -> tonic::Status {
        let mut s = tonic::Status::unavailable("peer n2: blocked");
        s.metadata_mut().insert(KIND_HEADER, kind.as_str().parse().unwrap());
        s
    }

    #[test]
    fn a_call_the_node_never_sent_is_unavailable_and_retryable() {
        let e = Error::from(tagged(ErrorKind::NotSent));
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        assert!(e.is_retryable());
    }

    #[test]
    fn a_status_from_a_node_is_never_a_transport_failure() {
        assert!(!Error::is_transport(&tagged(ErrorKind::Peer)));
        assert!(Error::is_transport(&tonic::Status::unavailable("connection reset")));
    }

    #[test]
    fn a_rate_limited_status_carries_its_wait_and_is_retryable() {
        let mut s = tonic::Status::resource_exhausted("rate limited");
        s.metadata_mut().insert(KIND_HEADER, ErrorKind::RateLimited.as_str().parse().unwrap());
        s.metadata_mut().insert(RETRY_AFTER_HEADER, "250".parse().unwrap());
        let e = Error::from(s);
        assert!(matches!(e, Error::RateLimited { retry_after, .. } if retry_after.as_millis() == 250), "{e:?}");
        assert!(e.is_retryable());
        assert_eq!(e.kind(), "rate_limited");
    }

    #[test]
    fn a_resync_status_is_its_own_variant_and_not_retryable() {
        let mut s = tonic::Status::out_of_range("resync required: evicted");
        s.metadata_mut().insert(KIND_HEADER, ErrorKind::ResyncRequired.as_str().parse().unwrap());
        let e = Error::from(s);
        assert!(matches!(&e, Error::ResyncRequired(m) if m.contains("evicted")), "{e:?}");
        assert_eq!(e.kind(), "resync_required");
        assert!(!e.is_retryable(), "the same position fails again; scan instead");
    }

    #[test]
    fn an_unknown_kind_from_a_newer_node_is_kept_as_sent() {
        let mut s = tonic::Status::internal("x");
        s.metadata_mut().insert(KIND_HEADER, "quota".parse().unwrap());
        assert_eq!(Error::from(s).kind(), "quota");
    }
}
