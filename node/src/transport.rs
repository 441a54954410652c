//! The injected transport: the only place that names `tokio::net`.
//!
//! A node listens and dials through a [`Transport`]. In production that is
//! [`TcpTransport`]. Its outgoing sockets bind to the node's own IP, so that
//! iptables rules between 127.0.0.x addresses can cut single links. A
//! simulation supplies one built on turmoil's sockets (see `tests/`). Either
//! way the bytes are wrapped in a [`Conn`], which tonic can serve
//! (`Connected`) and dial (via [`channel`]).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::security::PeerCredentials;

/// Anything a connection can be.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// One connection, from either world.
pub struct Conn {
    io: Box<dyn Io>,
    remote: Option<SocketAddr>,
}

impl Conn {
    /// Wraps a stream and the peer address it came from.
    pub fn new(io: impl Io, remote: Option<SocketAddr>) -> Self {
        Self { io: Box::new(io), remote }
    }
}

/// What tonic learns about an accepted connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The remote address, when the transport knows it.
    pub remote: Option<SocketAddr>,
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        ConnInfo { remote: self.remote }
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Accepted connections.
pub type Incoming = BoxStream<'static, io::Result<Conn>>;

/// How a node listens and dials.
pub trait Transport: Send + Sync + 'static {
    /// Binds `addr` and yields accepted connections.
    fn listen(&self, addr: &str) -> BoxFuture<'static, io::Result<Incoming>>;
    /// Opens a connection to `addr` (`host:port`).
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<Conn>>;
    /// The socket addresses `addr` (`host:port`) names right now, as
    /// `ip:port` strings. A seed given by name is resolved again every round,
    /// so a DNS name whose records change (a Kubernetes headless service)
    /// keeps working. The default knows no names: callers then match
    /// addresses by their text alone, which is what a simulation needs.
    fn resolve(&self, addr: &str) -> BoxFuture<'static, io::Result<Vec<String>>> {
        let _ = addr;
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Real TCP. Outgoing sockets bind to `local_ip` when set.
#[derive(Clone, Debug, Default)]
pub struct TcpTransport {
    /// The IP outgoing connections come from; `None` lets the OS choose.
    pub local_ip: Option<IpAddr>,
}

impl Transport for TcpTransport {
    fn listen(&self, addr: &str) -> BoxFuture<'static, io::Result<Incoming>> {
        let addr = addr.to_string();
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            let stream = futures::stream::unfold(listener, |l| async move {
                let conn = l.accept().await.map(|(s, remote)| {
                    let _ = s.set_nodelay(true);
                    Conn::new(s, Some(remote))
                });
                Some((conn, l))
            });
            Ok(Box::pin(stream) as Incoming)
        })
    }

    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<Conn>> {
        let addr = addr.to_string();
        let local_ip = self.local_ip;
        Box::pin(async move {
            let target = tokio::net::lookup_host(&addr)
                .await?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to nothing")))?;
            let socket = if target.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            if let Some(ip) = local_ip.filter(|ip| ip.is_ipv4() == target.is_ipv4() && !ip.is_unspecified()) {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            let stream = socket.connect(target).await?;
            stream.set_nodelay(true)?;
            Ok(Conn::new(stream, Some(target)))
        })
    }

    fn resolve(&self, addr: &str) -> BoxFuture<'static, io::Result<Vec<String>>> {
        let addr = addr.to_string();
        Box::pin(async move {
            let mut found: Vec<String> = tokio::net::lookup_host(&addr).await?.map(|a| a.to_string()).collect();
            found.sort();
            found.dedup();
            Ok(found)
        })
    }
}

/// Keepalive settings shared by every channel. Without them a connection
/// that lost packets during a partition can stay wedged after it heals.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A lazily connecting tonic channel to `addr` through `transport`.
pub fn channel(transport: Arc<dyn Transport>, addr: &str, connect_timeout: Duration) -> Result<Channel, String> {
    build(transport, addr, connect_timeout, None)
}

/// A channel to peer `addr` that presents this node's credentials: mutual
/// TLS when configured, and the peer token when set.
pub fn dial(
    transport: Arc<dyn Transport>,
    addr: &str,
    connect_timeout: Duration,
    credentials: &PeerCredentials,
) -> Result<ringkv_proto::channel::Channel, String> {
    let inner = build(transport, addr, connect_timeout, credentials.tls.clone())?;
    ringkv_proto::channel::Channel::new(inner, credentials.token.as_deref())
}

fn build(transport: Arc<dyn Transport>, addr: &str, connect_timeout: Duration, tls: Option<ClientTlsConfig>) -> Result<Channel, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS settings for {addr}: {e}"))?;
    }
    let target = addr.to_string();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let transport = transport.clone();
        let target = target.clone();
        async move { transport.connect(&target).await.map(TokioIo::new) }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_resolves_names_and_literals_afresh() {
        let t = TcpTransport::default();
        let found = t.resolve("localhost:7101").await.unwrap();
        assert!(found.iter().any(|a| a == "127.0.0.1:7101" || a == "[::1]:7101"), "{found:?}");
        assert_eq!(t.resolve("10.0.0.7:7101").await.unwrap(), ["10.0.0.7:7101"], "a literal is itself");
        assert!(t.resolve("no-such-host.invalid:7101").await.is_err(), "an unknown name is an error, not a guess");
    }
}
