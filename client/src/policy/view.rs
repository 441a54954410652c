//! What a policy sees: the nodes with their health and load, and the ring.

/// The kind of request, for content-based rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A point read.
    Read,
    /// A put or delete.
    Write,
    /// A scan.
    Scan,
}

/// One request, as policies see it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The key (empty for scans).
    pub key: &'a [u8],
    /// What it does.
    pub kind: OpKind,
    /// A stable id of the client, for sticky routing.
    pub client_id: &'a str,
}

/// One node, as policies see it.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Zone.
    pub zone: String,
    /// Passing health checks and not failing requests.
    pub healthy: bool,
    /// Requests this client has in flight to it.
    pub outstanding: u64,
    /// Exponentially weighted moving average latency, in µs.
    pub ewma_us: f64,
    /// Configured weight (capacity).
    pub weight: u32,
    /// Load the node gossips (requests in flight there, from all clients).
    pub load: u64,
}

/// The cluster as the client last saw it.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// The nodes.
    pub nodes: Vec<NodeView>,
    /// Ring tokens with the index of their owner, sorted.
    tokens: Vec<(u64, usize)>,
    /// Replication factor.
    pub replication_factor: usize,
}

/// Where a key lands on the ring (the node's own hash: blake3, first 8 bytes).
pub fn token_of(key: &[u8]) -> u64 {
    u64::from_le_bytes(blake3::hash(key).as_bytes()[..8].try_into().expect("8 bytes"))
}

impl View {
    /// A view over `nodes` with ring `tokens` (token, node index).
    pub fn new(nodes: Vec<NodeView>, mut tokens: Vec<(u64, usize)>, replication_factor: usize) -> Self {
        tokens.sort();
        Self { nodes, tokens, replication_factor }
    }

    /// The key's replicas, owner first, walking the ring clockwise. (Zone
    /// spreading on the node can reorder the tail; the owner is exact.)
    pub fn replicas(&self, key: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        if self.tokens.is_empty() {
            return out;
        }
        let t = token_of(key);
        let start = self.tokens.partition_point(|(tok, _)| *tok < t);
        for i in 0..self.tokens.len() {
            let owner = self.tokens[(start + i) % self.tokens.len()].1;
            if !out.contains(&owner) {
                out.push(owner);
                if out.len() == self.replication_factor {
                    break;
                }
            }
        }
        out
    }
}
