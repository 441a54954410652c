//! The gateway's own request statistics, per operation and level: counts
//! by HTTP status and an HDR histogram of the time spent in the gateway.
//! The cluster page reads them as JSON (`/v1/latency`); Prometheus scrapes
//! them from `/metrics` in its text format.
//!
//! The latency series is a Prometheus *summary* (quantiles, `_sum`,
//! `_count`): the histogram keeps exact percentiles, which is what the page
//! shows, and a summary is how the text format carries them. Counts and
//! quantiles cover the gateway process's lifetime.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The quantiles reported.
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

struct Series {
    latency_us: Histogram<u64>,
    sum_us: u64,
    by_status: BTreeMap<u16, u64>,
}

/// Statistics for every (operation, level) seen.
#[derive(Default)]
pub struct Stats {
    series: Mutex<BTreeMap<(&'static str, String), Series>>,
}

/// One (operation, level) as the page shows it.
#[derive(Debug, Serialize)]
pub struct LatencyRow {
    /// `get`, `put`, `delete`, `scan`.
    pub op: &'static str,
    /// The level asked for.
    pub level: String,
    /// Requests answered.
    pub count: u64,
    /// Of which errors (status ≥ 500, or 429).
    pub errors: u64,
    /// Percentiles of the time in the gateway, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Slowest, µs.
    pub max_us: u64,
}

impl Stats {
    /// Records one request.
    pub fn record(&self, op: &'static str, level: &str, status: u16, took: Duration) {
        let us = (took.as_micros() as u64).max(1);
        let mut map = self.series.lock().expect("no code panics while holding this lock");
        let s = map.entry((op, level.to_string())).or_insert_with(|| Series {
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            sum_us: 0,
            by_status: BTreeMap::new(),
        });
        s.latency_us.saturating_record(us);
        s.sum_us += us;
        *s.by_status.entry(status).or_default() += 1;
    }

    /// Every series, for the page.
    pub fn rows(&self) -> Vec<LatencyRow> {
        let map = self.series.lock().expect("no code panics while holding this lock");
        map.iter()
            .map(|((op, level), s)| LatencyRow {
                op,
                level: level.clone(),
                count: s.latency_us.len(),
                errors: s.by_status.iter().filter(|(code, _)| **code >= 500 || **code == 429).map(|(_, n)| n).sum(),
                p50_us: s.latency_us.value_at_quantile(0.5),
                p90_us: s.latency_us.value_at_quantile(0.9),
                p99_us: s.latency_us.value_at_quantile(0.99),
                max_us: s.latency_us.max(),
            })
            .collect()
    }

    /// Everything in Prometheus' text exposition format.
    pub fn prometheus(&self) -> String {
        let map = self.series.lock().expect("no code panics while holding this lock");
        let mut out = String::new();
        out.push_str("# HELP ringkv_gateway_requests_total HTTP requests answered by the gateway, by operation, level and status.\n");
        out.push_str("# TYPE ringkv_gateway_requests_total counter\n");
        for ((op, level), s) in map.iter() {
            for (status, n) in &s.by_status {
                let _ = writeln!(out, "ringkv_gateway_requests_total{{op=\"{op}\",level=\"{level}\",status=\"{status}\"}} {n}");
            }
        }
        out.push_str("# HELP ringkv_gateway_request_duration_seconds Time from request in to answer out, in the gateway.\n");
        out.push_str("# TYPE ringkv_gateway_request_duration_seconds summary\n");
        for ((op, level), s) in map.iter() {
            let labels = format!("op=\"{op}\",level=\"{level}\"");
            for q in QUANTILES {
                let v = s.latency_us.value_at_quantile(q) as f64 / 1e6;
                let _ = writeln!(out, "ringkv_gateway_request_duration_seconds{{{labels},quantile=\"{q}\"}} {v}");
            }
            let _ = writeln!(out, "ringkv_gateway_request_duration_seconds_sum{{{labels}}} {}", s.sum_us as f64 / 1e6);
            let _ = writeln!(out, "ringkv_gateway_request_duration_seconds_count{{{labels}}} {}", s.latency_us.len());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_kept_per_operation_and_level_with_errors_counted() {
        let s = Stats::default();
        for ms in 1..=100 {
            s.record("get", "one", 200, Duration::from_millis(ms));
        }
        s.record("get", "one", 503, Duration::from_millis(1));
        s.record("put", "quorum", 200, Duration::from_millis(5));
        let rows = s.rows();
        assert_eq!(rows.len(), 2);
        let get = &rows[0];
        assert_eq!((get.op, get.level.as_str(), get.count, get.errors), ("get", "one", 101, 1));
        assert!((49_000..=51_000).contains(&get.p50_us), "{get:?}");
        assert!(get.max_us >= 100_000);
        let text = s.prometheus();
        assert!(text.contains("ringkv_gateway_requests_total{op=\"get\",level=\"one\",status=\"503\"} 1"), "{text}");
        assert!(text.contains("ringkv_gateway_request_duration_seconds_count{op=\"put\",level=\"quorum\"} 1"), "{text}");
        assert!(text.contains("quantile=\"0.99\""));
    }
}
