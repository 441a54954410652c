//! [`Channel`]: a tonic channel that presents the caller's credentials on
//! every call.
//!
//! A node that requires tokens reads `authorization: Bearer <token>` from
//! each request's metadata. Rather than every call site adding the header,
//! the channel does: it wraps `tonic::transport::Channel` and sets the
//! header on each outgoing HTTP/2 request, so generated clients
//! (`KvClient<Channel>`, `PeerClient<Channel>`) carry it unchanged. The
//! token itself is never logged; `Debug` prints only whether one is set.

use std::fmt;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::HeaderValue;
use tonic::body::Body;

/// A tonic channel with optional bearer credentials.
#[derive(Clone)]
pub struct Channel {
    inner: tonic::transport::Channel,
    bearer: Option<HeaderValue>,
}

impl Channel {
    /// A channel that sends `token` (if any) as `authorization: Bearer …`.
    /// Fails when the token cannot be a header value (a control character
    /// or a non-ASCII byte).
    pub fn new(inner: tonic::transport::Channel, token: Option<&str>) -> Result<Self, String> {
        let bearer = token
            .map(|t| {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| "the token holds a character a header cannot carry (control or non-ASCII)".to_string())?;
                v.set_sensitive(true);
                Ok::<_, String>(v)
            })
            .transpose()?;
        Ok(Self { inner, bearer })
    }

    /// The channel underneath.
    pub fn inner(&self) -> &tonic::transport::Channel {
        &self.inner
    }
}

impl From<tonic::transport::Channel> for Channel {
    fn from(inner: tonic::transport::Channel) -> Self {
        Self { inner, bearer: None }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel").field("bearer", &self.bearer.is_some()).finish()
    }
}

impl tower::Service<http::Request<Body>> for Channel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = <tonic::transport::Channel as tower::Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        if let Some(v) = &self.bearer {
            req.headers_mut().insert(AUTHORIZATION, v.clone());
        }
        tower::Service::call(&mut self.inner, req)
    }
}
