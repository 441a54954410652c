//! Who may reach a node, and how it proves who it is.
//!
//! - **TLS** (rustls through tonic): with `tls_ca`, `tls_cert` and
//!   `tls_key` a node serves only TLS, asks every caller for a client
//!   certificate from the cluster CA (optional for clients, which may send a
//!   token instead), and dials its peers over mutual TLS with its own node
//!   certificate.
//! - **Tokens**: with `tokens_file`, every client must be a principal of
//!   that file (tokens.rs), by bearer token or by client certificate name.
//!   The file is re-read on SIGHUP.
//! - **Three surfaces**: `Kv`, `Admin` and `Peer` each check the caller
//!   (gate.rs) by the rules in authz.rs; `grpc.health.v1` stays open.
//!
//! With neither TLS nor tokens a node is open to anyone who can reach it;
//! config validation refuses that off loopback unless `insecure` is set
//! (CockroachDB's rule).

pub mod authz;
pub mod ca;
mod gate;
pub mod identity;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

pub use authz::{Grants, Mode};
pub use gate::{grants_of, record_path, remote_ip, Gate, RpcPath, Surface};

use crate::config::Config;
use crate::error::{Error, Result};

/// How a node presents itself to its peers.
#[derive(Clone, Debug, Default)]
pub struct PeerCredentials {
    /// Mutual TLS toward peers.
    pub tls: Option<ClientTlsConfig>,
    /// A bearer token with the `peer` role (when peers do not use TLS).
    pub token: Option<String>,
}

/// A node's security settings, loaded and checked at start.
pub struct Security {
    mode: Mode,
    tokens_file: Option<PathBuf>,
    tokens: RwLock<Arc<tokens::Tokens>>,
    server_tls: Option<ServerTlsConfig>,
    peer: PeerCredentials,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::Config(format!("cannot read the {what} {}: {e} (`ringkv cert init` and `ringkv cert issue` make them)", path.display()))
    })
}

impl Security {
    /// Loads certificates and the token file named by `config`.
    pub fn load(config: &Config) -> Result<Self> {
        let tls_files = match (&config.tls_ca, &config.tls_cert, &config.tls_key) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => Some((read(ca, "CA certificate")?, read(cert, "certificate")?, read(key, "key")?)),
            _ => return Err(Error::Config("TLS needs all three of --ca, --cert and --key (tls_ca, tls_cert, tls_key)".into())),
        };
        let (server_tls, peer_tls) = match tls_files {
            None => (None, None),
            Some((ca, cert, key)) => {
                let identity = Identity::from_pem(&cert, &key);
                let ca = Certificate::from_pem(&ca);
                let server = ServerTlsConfig::new().identity(identity.clone()).client_ca_root(ca.clone()).client_auth_optional(true);
                let peer = ClientTlsConfig::new().ca_certificate(ca).identity(identity).domain_name(ca::PEER_NAME);
                (Some(server), Some(peer))
            }
        };
        let mode = Mode { tls: server_tls.is_some(), principals: config.tokens_file.is_some() };
        if mode.principals && !mode.tls && config.peer_token.is_none() {
            return Err(Error::Config(
                "with a token file and no TLS, peers must sign in too: set --peer-token (RINGKV_PEER_TOKEN) to a token whose \
                 principal has the peer role (`ringkv token add NODE --role peer`), or turn on TLS"
                    .into(),
            ));
        }
        let security = Self {
            mode,
            tokens_file: config.tokens_file.clone(),
            tokens: RwLock::new(Arc::default()),
            server_tls,
            peer: PeerCredentials { tls: peer_tls, token: config.peer_token.as_ref().map(|s| s.0.clone()) },
        };
        security.reload()?;
        Ok(security)
    }

    /// Re-reads the token file; on error the old principals stay in force.
    /// Returns how many principals are now known.
    pub fn reload(&self) -> Result<usize> {
        let Some(path) = &self.tokens_file else { return Ok(0) };
        if !path.exists() {
            return Err(Error::Config(format!("token file {} does not exist; `ringkv token add` creates it", path.display())));
        }
        let compiled = tokens::TokenFile::read(path)?.compile()?;
        let count = compiled.len();
        *self.tokens.write().expect("tokens lock") = Arc::new(compiled);
        Ok(count)
    }

    /// The token file, when there is one.
    pub fn tokens_file(&self) -> Option<&Path> {
        self.tokens_file.as_deref()
    }

    /// How the node is secured.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// TLS for the node's listener.
    pub fn server_tls(&self) -> Option<ServerTlsConfig> {
        self.server_tls.clone()
    }

    /// How to dial peers.
    pub fn peer_credentials(&self) -> &PeerCredentials {
        &self.peer
    }

    fn tokens(&self) -> Arc<tokens::Tokens> {
        self.tokens.read().expect("tokens lock").clone()
    }
}

/// Writes a secret: owner-only permissions on Unix, set before the bytes.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))?;
    file.write_all(bytes).map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))
}
