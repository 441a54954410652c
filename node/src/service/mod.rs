//! The gRPC services: thin shells that decode a request, call the
//! coordinator or the store, and encode the answer. Errors become
//! `tonic::Status` through `From<Error>` (error.rs), in one place.

mod admin;
mod kv;
mod peer;

pub use admin::AdminService;
pub use kv::KvService;
pub use peer::PeerService;

use std::time::Duration;

use ringkv_proto::v1 as pb;

use crate::config::Config;
use crate::version::{Hlc, Sibling};

impl From<&Hlc> for pb::Hlc {
    fn from(h: &Hlc) -> Self {
        pb::Hlc { wall_ms: h.wall_ms, logical: h.logical, node: h.node.clone() }
    }
}

impl From<&Sibling> for pb::Sibling {
    fn from(s: &Sibling) -> Self {
        pb::Sibling {
            value: s.value.clone(),
            tombstone: s.tombstone,
            hlc: Some((&s.hlc).into()),
            expires_at_ms: s.expires_at_ms.unwrap_or(0),
        }
    }
}

/// The request's deadline, or the configured default.
fn timeout(options: Option<&pb::RequestOptions>, config: &Config) -> Duration {
    options.map(|o| o.timeout_ms).filter(|&ms| ms > 0).map_or(config.request_timeout, |ms| Duration::from_millis(ms.into()))
}
