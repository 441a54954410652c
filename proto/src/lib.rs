//! ringkv's gRPC surface: the `.proto` files under `ringkv/v1/` compiled by
//! tonic-prost-build, plus what node and client must agree on beyond the
//! messages: the wire constants (`wire`), the delivery rule
//! (`delivery`) and the channel that carries credentials (`channel`). Nothing else lives here, so the client can depend on this
//! crate without pulling in the node.

pub mod channel;
pub mod delivery;
pub mod wire;

/// Version 1 of the wire protocol: `Kv`, `Peer` and `Admin` services.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("ringkv.v1");
}

/// etcd's v3 `KV` service, Range and Put only (`etcd/kv.proto`), for
/// benchmarking against etcd in the same run.
pub mod etcd {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("etcdserverpb");
}
