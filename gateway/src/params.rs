//! Query parameters, checked and mapped to the client's [`Options`].
//!
//! The names and values are the CLI's (`ringkv get -c quorum --timeout 2s
//! --read-repair async --sloppy`): `consistency`, `timeout`, `read_repair`,
//! `sloppy`, plus `ttl` on a PUT and `prefix`, `start_after`, `limit` on a
//! scan. An unknown parameter or value is a 400 that lists what is
//! accepted, so a typo (`consistancy=all`) never silently means "default".

use std::time::Duration;

use ringkv_client::{Level, Options, ReadRepair};
use serde::Deserialize;

/// The levels by the names the HTTP API accepts.
const LEVELS: [(&str, Level); 8] = [
    ("one", Level::One),
    ("two", Level::Two),
    ("quorum", Level::Quorum),
    ("all", Level::All),
    ("local_quorum", Level::LocalQuorum),
    ("any", Level::Any),
    ("serial", Level::Serial),
    ("local_serial", Level::LocalSerial),
];

/// The most keys one scan page may ask for.
pub const MAX_SCAN_LIMIT: u32 = 10_000;
/// A scan page's size when `limit` is not given.
pub const DEFAULT_SCAN_LIMIT: u32 = 100;

/// `/v1/kv/{key}`'s parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvParams {
    /// A level name (`one`, `quorum`, ...); absent is the node's default.
    pub consistency: Option<String>,
    /// A deadline such as `500ms` or `2s`.
    pub timeout: Option<String>,
    /// `blocking`, `async` or `off`.
    pub read_repair: Option<String>,
    /// `true`/`false` (a bare `sloppy` is true).
    pub sloppy: Option<String>,
    /// PUT only: expire the value after this long, e.g. `30s`, `10m`, `7d`.
    pub ttl: Option<String>,
}

/// `/v1/scan`'s parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanParams {
    /// Only keys starting with this.
    #[serde(default)]
    pub prefix: String,
    /// Resume after this key (a page's `next_start_after`).
    #[serde(default)]
    pub start_after: String,
    /// At most this many keys (default 100, at most 10,000).
    pub limit: Option<String>,
    /// As for [`KvParams`].
    pub consistency: Option<String>,
    /// As for [`KvParams`].
    pub timeout: Option<String>,
    /// As for [`KvParams`].
    pub read_repair: Option<String>,
    /// As for [`KvParams`].
    pub sloppy: Option<String>,
}

impl KvParams {
    /// The client options these parameters ask for.
    pub fn options(&self) -> Result<Options, String> {
        options(self.consistency.as_deref(), self.timeout.as_deref(), self.read_repair.as_deref(), self.sloppy.as_deref())
    }

    /// The TTL asked for, if any.
    pub fn ttl(&self) -> Result<Option<Duration>, String> {
        let Some(s) = self.ttl.as_deref() else { return Ok(None) };
        let d = humantime::parse_duration(s.trim()).map_err(|e| format!("ttl={s:?} is not a duration ({e}); write e.g. 30s, 10m or 7d"))?;
        if d.is_zero() {
            return Err("ttl must be positive; leave it out for a value that never expires".into());
        }
        Ok(Some(d))
    }
}

impl ScanParams {
    /// The client options these parameters ask for.
    pub fn options(&self) -> Result<Options, String> {
        options(self.consistency.as_deref(), self.timeout.as_deref(), self.read_repair.as_deref(), self.sloppy.as_deref())
    }

    /// The page size asked for.
    pub fn limit(&self) -> Result<u32, String> {
        let Some(s) = self.limit.as_deref() else { return Ok(DEFAULT_SCAN_LIMIT) };
        match s.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_SCAN_LIMIT).contains(&n) => Ok(n),
            _ => Err(format!("limit={s:?}: expected a whole number from 1 to {MAX_SCAN_LIMIT}")),
        }
    }
}

/// The level's name as the API spells it; `default` for none.
pub fn level_name(level: Level) -> &'static str {
    LEVELS.iter().find(|(_, l)| *l == level).map_or("default", |(name, _)| name)
}

fn options(consistency: Option<&str>, timeout: Option<&str>, read_repair: Option<&str>, sloppy: Option<&str>) -> Result<Options, String> {
    let level = match consistency {
        None => Level::Unspecified,
        Some(s) => LEVELS.iter().find(|(name, _)| name.eq_ignore_ascii_case(s.trim())).map(|(_, l)| *l).ok_or_else(|| {
            let names: Vec<&str> = LEVELS.iter().map(|(n, _)| *n).collect();
            format!("consistency={s:?} is not a level; expected one of {}", names.join(", "))
        })?,
    };
    let timeout = timeout.map(|s| ringkv_client::parse_duration(s).map_err(|e| format!("timeout: {e}"))).transpose()?;
    let read_repair = match read_repair.map(str::trim) {
        None => ReadRepair::Unspecified,
        Some("blocking") => ReadRepair::Blocking,
        Some("async") => ReadRepair::Async,
        Some("off") => ReadRepair::Off,
        Some(s) => return Err(format!("read_repair={s:?}: expected blocking, async or off")),
    };
    let sloppy = match sloppy.map(str::trim) {
        None | Some("false" | "0") => false,
        Some("" | "true" | "1") => true,
        Some(s) => return Err(format!("sloppy={s:?}: expected true or false")),
    };
    Ok(Options { level, read_repair, timeout, sloppy })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(query: &str) -> Result<Options, String> {
        let p: KvParams = serde_urlencoded::from_str(query).map_err(|e| e.to_string())?;
        p.options()
    }

    #[test]
    fn parameters_map_to_the_options_the_cli_flags_set() {
        let o = kv("consistency=all&timeout=300ms&read_repair=async&sloppy").unwrap();
        assert_eq!((o.level, o.timeout, o.read_repair, o.sloppy), (Level::All, Some(Duration::from_millis(300)), ReadRepair::Async, true));
        let o = kv("").unwrap();
        assert_eq!((o.level, o.timeout, o.read_repair, o.sloppy), (Level::Unspecified, None, ReadRepair::Unspecified, false));
        assert_eq!(kv("consistency=LOCAL_QUORUM").unwrap().level, Level::LocalQuorum);
        assert_eq!(level_name(Level::LocalSerial), "local_serial");
        assert_eq!(level_name(Level::Unspecified), "default");
    }

    #[test]
    fn bad_parameters_say_what_is_accepted() {
        assert!(kv("consistency=strong").unwrap_err().contains("expected one of one, two, quorum"));
        assert!(kv("timeout=soon").unwrap_err().starts_with("timeout:"));
        assert!(kv("read_repair=sometimes").unwrap_err().contains("blocking, async or off"));
        assert!(kv("sloppy=maybe").unwrap_err().contains("true or false"));
        assert!(kv("consistancy=all").unwrap_err().contains("unknown field"), "a typo is refused, not ignored");
        let ttl = |q: &str| serde_urlencoded::from_str::<KvParams>(q).unwrap().ttl();
        assert_eq!(ttl("ttl=7d"), Ok(Some(Duration::from_secs(7 * 86_400))));
        assert!(ttl("ttl=30").unwrap_err().contains("30s"), "a bare number has no unit");
        let limit = |q: &str| serde_urlencoded::from_str::<ScanParams>(q).unwrap().limit();
        assert_eq!(limit(""), Ok(DEFAULT_SCAN_LIMIT));
        assert!(limit("limit=0").unwrap_err().contains("1 to 10000"));
    }
}
