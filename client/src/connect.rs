//! How the client reaches a node: plain or TLS, with or without a token.
//!
//! [`Credentials`] holds what a secured cluster asks for: the cluster CA to
//! trust (turns TLS on), an optional client certificate and key (mutual
//! TLS), and an optional bearer token. Every channel the client opens, to
//! the endpoints given and to the nodes a policy discovers, is made here,
//! so all of them present the same credentials.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::{Channel, Error};

/// What the client presents to the cluster.
#[derive(Clone, Default)]
pub struct Credentials {
    /// The cluster CA (PEM). Set, the client speaks TLS and trusts only
    /// servers this CA signed.
    pub ca: Option<Vec<u8>>,
    /// A client certificate and its key (PEM), for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// A bearer token, sent on every request.
    pub token: Option<String>,
    /// The name to check the server's certificate against (default: the
    /// host part of the endpoint).
    pub server_name: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("tls", &self.ca.is_some())
            .field("client_certificate", &self.identity.is_some())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("server_name", &self.server_name)
            .finish()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::InvalidArgument { message: format!("cannot read the {what} {}: {e}", path.display()) })
}

impl Credentials {
    /// Just a token.
    pub fn token(token: impl Into<String>) -> Self {
        Self { token: Some(token.into()), ..Default::default() }
    }

    /// From files, as the CLI's `--ca`, `--cert`, `--key` and `--token`
    /// name them. A certificate needs its key, and both need the CA.
    pub fn from_files(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>, token: Option<String>) -> Result<Self, Error> {
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((read(c, "client certificate")?, read(k, "client key")?)),
            _ => return Err(Error::InvalidArgument { message: "--cert and --key go together".into() }),
        };
        if identity.is_some() && ca.is_none() {
            return Err(Error::InvalidArgument {
                message: "a client certificate needs --ca too: the cluster CA the node's certificate must be signed by".into(),
            });
        }
        let ca = ca.map(|p| read(p, "CA certificate")).transpose()?;
        Ok(Self { ca, identity, token: token.filter(|t| !t.is_empty()), server_name: None })
    }

    /// Whether TLS is on.
    pub fn tls(&self) -> bool {
        self.ca.is_some()
    }

    /// A lazily connecting channel to `addr` (`host:port`, or a URL).
    pub fn channel(&self, addr: &str) -> Result<Channel, Error> {
        let bad = |err: String| Error::InvalidArgument { message: format!("bad endpoint {addr:?}: {err}") };
        let scheme = if self.tls() { "https" } else { "http" };
        let uri = if addr.contains("://") { addr.to_string() } else { format!("{scheme}://{addr}") };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if let Some(ca) = &self.ca {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            if let Some(name) = &self.server_name {
                tls = tls.domain_name(name.clone());
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(format!("TLS: {e}")))?;
        }
        Channel::new(endpoint.connect_lazy(), self.token.as_deref()).map_err(|e| Error::InvalidArgument { message: e })
    }
}
