//! The gateway's settings: where it listens, the per-client rate limit and
//! how many recent requests the cluster page keeps.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

/// How many requests the cluster page's "recent requests" list keeps by
/// default: enough to see a burst, small enough to poll every second.
pub const DEFAULT_RECENT: usize = 50;

/// The gateway's settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The address the HTTP server binds (`host:port`).
    pub listen: String,
    /// Requests per second each client may send to the data routes
    /// (`/v1/kv`, `/v1/scan`); `None` is unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Requests kept for the cluster page (`/v1/recent`).
    pub recent: usize,
    /// Whether the gateway was given a token of its own. It presents that
    /// token only for its own calls (discovery, the cluster page), never on
    /// behalf of an HTTP caller: a caller without a bearer token reaches the
    /// nodes with none.
    pub own_token: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8080".into(), rate_limit: None, recent: DEFAULT_RECENT, own_token: false }
    }
}

/// A per-client rate: `N/s` (or a bare `N`), burst `N`.
///
/// ```
/// use ringkv_gateway::RateLimit;
/// assert_eq!("200/s".parse::<RateLimit>().unwrap().per_second.get(), 200);
/// assert_eq!("5".parse::<RateLimit>().unwrap().to_string(), "5/s");
/// assert!("0/s".parse::<RateLimit>().unwrap_err().contains("at least 1"));
/// assert!("10/min".parse::<RateLimit>().unwrap_err().contains("N/s"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests admitted per second, and the burst allowed above it.
    pub per_second: NonZeroU32,
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let n = s.trim().strip_suffix("/s").unwrap_or(s.trim());
        let n: u32 = n.parse().map_err(|_| format!("{s:?} is not a rate; write N/s, e.g. 100/s"))?;
        let per_second = NonZeroU32::new(n).ok_or_else(|| format!("{s:?}: a rate must be at least 1/s; leave the flag out for none"))?;
        Ok(Self { per_second })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.per_second)
    }
}
