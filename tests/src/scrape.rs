//! Reading a node's HTTP listener (`--http-listen`) the way Prometheus and
//! a probe do: a plain HTTP/1.1 GET, and the exposition parsed into series.
//!
//! Hand-written on `std::net` because the requests are three fixed GETs to
//! 127.x and the answers carry a `Content-Length`; an HTTP client crate
//! would add a dependency tree for nothing the tests need.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET path` on `addr`: the status code and the body. An error says what
/// failed (connect, read, or a malformed answer).
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    stream.write_all(get_request(addr, path).as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| format!("read {addr}{path}: {e}"))?;
    parse_response(raw)
}

/// The request line every GET here sends: HTTP/1.1, closed after the answer.
pub fn get_request(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// A whole HTTP/1.1 answer (read to the end of the connection): its status
/// code and body.
pub fn parse_response(raw: Vec<u8>) -> Result<(u16, String), String> {
    let text = String::from_utf8(raw).map_err(|e| format!("not UTF-8: {e}"))?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no header end in {text:?}"))?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// The samples of an exposition, keyed by series as written (name and
/// labels, e.g. `ringkv_requests_total{op="put",level="one",outcome="ok"}`).
/// Comment lines (`# HELP`, `# TYPE`, `# EOF`) are skipped.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Scrapes `/metrics` on `addr`, panicking with the reason if it fails.
pub fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics").unwrap_or_else(|e| panic!("scrape {addr}: {e}"));
    assert_eq!(status, 200, "GET /metrics on {addr}: {body}");
    assert!(body.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF: {body}");
    parse_metrics(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_metrics_keys_samples_by_series_and_skips_comments() {
        let text = "# HELP a_total x\n# TYPE a counter\na_total{op=\"get\",level=\"one\"} 3\nb 1.5\n# EOF\n";
        let m = parse_metrics(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[r#"a_total{op="get",level="one"}"#], 3.0);
        assert_eq!(m["b"], 1.5);
    }
}
