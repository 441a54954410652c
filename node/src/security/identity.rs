//! What a client certificate says about its holder.
//!
//! `ringkv cert issue` (ca.rs) marks every certificate it makes with an
//! organizational unit: `ringkv-node` for a node, `ringkv-client` for a
//! client, and puts the name in the common name. The cluster CA signed
//! both, so TLS alone cannot tell a node from a client; this mark does.
//! Only a node certificate may call the Peer API.

use x509_parser::prelude::{FromDer, X509Certificate};

/// The organizational unit of a node certificate.
pub const NODE_UNIT: &str = "ringkv-node";
/// The organizational unit of a client certificate.
pub const CLIENT_UNIT: &str = "ringkv-client";

/// Which kind of holder a certificate names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    /// A node of the cluster.
    Node,
    /// A client.
    Client,
}

/// The holder a verified certificate names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertIdentity {
    /// Node or client.
    pub kind: CertKind,
    /// Its common name.
    pub name: String,
}

/// Reads the identity from a DER certificate that TLS has already verified
/// against the cluster CA. A certificate without ringkv's mark is a client
/// named by its common name (or `"unnamed"`); it is never a node.
pub fn of_der(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("unnamed").to_string();
    let node = subject.iter_organizational_unit().any(|ou| ou.as_str().ok() == Some(NODE_UNIT));
    Some(CertIdentity { kind: if node { CertKind::Node } else { CertKind::Client }, name })
}
