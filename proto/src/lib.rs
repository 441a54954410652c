//! ringkv's gRPC surface: the `.proto` files under `ringkv/v1/` compiled by
//! tonic-prost-build. No logic lives here, so the client can depend on this
//! crate without pulling in the node.

/// Version 1 of the wire protocol: `Kv`, `Peer` and `Admin` services.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("ringkv.v1");
}
