//! Who is calling: the bearer token from `Authorization`, and the remote
//! address. The token is passed through to the nodes, which decide what it
//! may do; the gateway itself only uses it (hashed) to key the rate limit.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use http::header::AUTHORIZATION;
use http::request::Parts;

use crate::error::ApiError;

/// The caller of one HTTP request.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The bearer token, if the request carried one.
    pub token: Option<String>,
    /// The remote IP address (absent only when served without connect info).
    pub ip: Option<IpAddr>,
}

impl Caller {
    /// Reads the caller from the request headers and the connection.
    pub fn from_parts(parts: &Parts) -> Result<Self, ApiError> {
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let token = match parts.headers.get(AUTHORIZATION) {
            None => None,
            Some(v) => Some(bearer(v.to_str().unwrap_or(""))?),
        };
        Ok(Self { token, ip })
    }

    /// The rate limiter's key: a hash of the token when there is one
    /// (every client holding it shares its budget), else the remote IP.
    pub fn limit_key(&self) -> String {
        match (&self.token, self.ip) {
            (Some(t), _) => format!("token:{}", &blake3::hash(t.as_bytes()).to_hex()[..16]),
            (None, Some(ip)) => format!("ip:{ip}"),
            (None, None) => "anonymous".into(),
        }
    }
}

fn bearer(header: &str) -> Result<String, ApiError> {
    let (scheme, token) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::Unauthenticated("the Authorization header must be `Bearer TOKEN` (a token from `ringkv token add`)".into()));
    }
    Ok(token.to_string())
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Caller::from_parts(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(auth: Option<&str>) -> Result<Caller, ApiError> {
        let mut req = http::Request::builder().uri("/v1/kv/a");
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        parts.extensions.insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 7], 4000))));
        Caller::from_parts(&parts)
    }

    #[test]
    fn a_bearer_token_keys_the_limit_else_the_remote_address_does() {
        let with = caller(Some("bearer abc")).unwrap();
        assert_eq!(with.token.as_deref(), Some("abc"));
        assert!(with.limit_key().starts_with("token:") && !with.limit_key().contains("abc"), "the key never holds the token");
        assert_eq!(caller(None).unwrap().limit_key(), "ip:127.0.0.7");
        assert_eq!(caller(Some("Bearer abc")).unwrap().limit_key(), with.limit_key());
    }

    #[test]
    fn another_scheme_or_an_empty_token_is_refused() {
        for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   "] {
            assert!(matches!(caller(Some(bad)), Err(ApiError::Unauthenticated(_))), "{bad}");
        }
    }
}
