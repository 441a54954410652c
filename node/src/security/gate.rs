//! The gate in front of each surface: a tonic interceptor that
//! authenticates the caller (authz.rs), refuses `Admin` and `Peer` calls it
//! may not make before their bodies are decoded, and hands the caller's
//! [`Grants`] to the `Kv` handlers, which check each key.

use std::net::IpAddr;
use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::transport::server::TlsConnectInfo;
use tonic::{Extensions, Request, Status};

use super::authz::{authenticate, Grants, Presented};
use super::{identity, Security};
use crate::error::Error;
use crate::transport::ConnInfo;

/// One of a node's three surfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// `Kv`: any principal; keys are checked by the handlers.
    Kv,
    /// `Admin`: the `admin` grant.
    Admin,
    /// `Peer`: the `peer` grant.
    Peer,
}

/// The Admin RPCs any authenticated caller may make: the read-only view of
/// the cluster that the client library's routing policies discover.
const ROUTING_VIEW: [&str; 2] = ["/ringkv.v1.Admin/Status", "/ringkv.v1.Admin/Ring"];

/// The path of the RPC being called (`/ringkv.v1.Admin/Status`), put in the
/// request's extensions by [`record_path`] before the gates run: tonic's
/// interceptors see metadata and extensions, not the URI. A clone of the
/// URI's own path (reference-counted bytes), so recording it copies nothing.
#[derive(Clone, Debug)]
pub struct RpcPath(pub http::uri::PathAndQuery);

/// Records each request's [`RpcPath`]; the server applies it as a layer.
pub fn record_path<B>(mut req: http::Request<B>) -> http::Request<B> {
    if let Some(path) = req.uri().path_and_query().cloned() {
        req.extensions_mut().insert(RpcPath(path));
    }
    req
}

/// The interceptor for one surface.
#[derive(Clone)]
pub struct Gate {
    security: Arc<Security>,
    surface: Surface,
}

impl Gate {
    /// A gate for `surface`.
    pub fn new(security: Arc<Security>, surface: Surface) -> Self {
        Self { security, surface }
    }

    fn admit(&self, req: &Request<()>) -> Result<Arc<Grants>, Error> {
        let presented = presented(req.metadata(), req.extensions())?;
        let grants = authenticate(self.security.mode(), &presented, &self.security.tokens())?;
        let path = req.extensions().get::<RpcPath>().map_or("", |p| p.0.path());
        match self.surface {
            Surface::Kv => {}
            // The cluster view a client needs to route (members, zones,
            // tokens, liveness) is open to every principal; the rest of
            // Admin (faults, removals, repairs, inspecting values) is not.
            Surface::Admin if ROUTING_VIEW.contains(&path) => {}
            Surface::Admin => grants.check_admin()?,
            Surface::Peer => grants.check_peer()?,
        }
        Ok(grants)
    }
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let grants = self.admit(&req).map_err(|e| {
            let remote = remote_ip(req.extensions()).map_or("unknown".into(), |ip| ip.to_string());
            tracing::debug!(surface = ?self.surface, %remote, error = %e, "refused");
            Status::from(e)
        })?;
        req.extensions_mut().insert(grants);
        Ok(req)
    }
}

/// What the request presents: a bearer token if it sent one, else its
/// verified client certificate, else nothing.
fn presented(metadata: &MetadataMap, extensions: &Extensions) -> Result<Presented, Error> {
    if let Some(value) = metadata.get("authorization") {
        let text = value.to_str().map_err(|_| Error::Unauthenticated("the authorization header is not text".into()))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or_else(|| Error::Unauthenticated("the authorization header must be `Bearer <token>`".into()))?;
        return Ok(Presented::Token(token.trim().to_string()));
    }
    let certs = extensions.get::<TlsConnectInfo<ConnInfo>>().and_then(|t| t.peer_certs());
    match certs.as_ref().and_then(|c| c.first()) {
        Some(der) => identity::of_der(der)
            .map(Presented::Certificate)
            .ok_or_else(|| Error::Unauthenticated("the client certificate could not be read".into())),
        None => Ok(Presented::Nothing),
    }
}

/// The caller's IP address, with or without TLS.
pub fn remote_ip(extensions: &Extensions) -> Option<IpAddr> {
    let plain = extensions.get::<ConnInfo>().cloned();
    let tls = || extensions.get::<TlsConnectInfo<ConnInfo>>().map(|t| t.get_ref().clone());
    plain.or_else(tls).and_then(|c| c.remote).map(|a| a.ip())
}

/// The grants the gate attached to a request.
pub fn grants_of<T>(req: &Request<T>) -> Result<&Arc<Grants>, Error> {
    req.extensions()
        .get::<Arc<Grants>>()
        .ok_or_else(|| Error::Unauthenticated("the request reached a handler without passing the gate; this is a bug".into()))
}
