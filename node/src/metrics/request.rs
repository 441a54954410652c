//! What a finished client request leaves behind: its counters, its latency,
//! and the fields of its tracing span.
//!
//! The `Kv` service (`service/kv.rs`) wraps every Get, Put, Delete, Scan
//! and Cas in [`request_span`] and, once it is answered, calls
//! [`RequestMetrics::finish`] with the outcome and the receipt. Everything
//! recorded is read off the receipt, which the coordinator fills in anyway
//! (DESIGN §2, "Receipt"), so the coordinator's paths carry no metrics code
//! of their own; the one exception is read repair, counted where it is
//! pushed (`coordinator/ctx.rs`), because async and late repairs finish
//! after the receipt has gone.
//!
//! Labels are `&'static str`: op, level (lowercase, as the CLI spells it)
//! and outcome (`ok` or the wire error kind, `ringkv_proto::wire`). All
//! three come from fixed sets, so the number of series is bounded; no key
//! ever becomes a label.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use ringkv_proto::v1 as pb;
use ringkv_proto::wire::ErrorKind;
use tracing::field::Empty;

use crate::quorum::Level;

/// The client operations counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `Kv.Get` (at SERIAL too).
    Get,
    /// `Kv.Put`.
    Put,
    /// `Kv.Delete`.
    Delete,
    /// `Kv.Scan`.
    Scan,
    /// `Kv.Cas`.
    Cas,
}

impl Op {
    /// The `op` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::Scan => "scan",
            Op::Cas => "cas",
        }
    }
}

/// The `level` label of a request's raw consistency field, as the service
/// would read it: unset is QUORUM, or SERIAL for a cas; a number that is no
/// level is `invalid` (the request then fails as `invalid_argument`).
pub fn level_label(raw: i32, op: Op) -> &'static str {
    let level = match (raw, op) {
        (0, Op::Cas) => Ok(Level::Serial),
        _ => Level::from_proto(raw),
    };
    match level {
        Ok(Level::One) => "one",
        Ok(Level::Two) => "two",
        Ok(Level::Quorum) => "quorum",
        Ok(Level::All) => "all",
        Ok(Level::LocalQuorum) => "local_quorum",
        Ok(Level::Any) => "any",
        Ok(Level::Serial) => "serial",
        Ok(Level::LocalSerial) => "local_serial",
        Err(_) => "invalid",
    }
}

/// The `outcome` label: `ok`, or the error's wire kind (`unavailable`,
/// `timeout`, `indeterminate`, ...), or `error` for a status that carries
/// no kind.
pub fn outcome_of<T>(result: &Result<T, tonic::Status>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(status) => ErrorKind::of(status).map_or("error", ErrorKind::as_str),
    }
}

/// A response that carries a receipt.
pub trait Receipted {
    /// Its receipt, when it has one.
    fn receipt(&self) -> Option<&pb::Receipt>;
}

macro_rules! receipted {
    ($($t:ty),*) => {$(
        impl Receipted for $t {
            fn receipt(&self) -> Option<&pb::Receipt> {
                self.receipt.as_ref()
            }
        }
    )*};
}
receipted!(pb::GetResponse, pb::PutResponse, pb::DeleteResponse, pb::ScanResponse, pb::CasResponse);

/// What a receipt says about the replicas, counted. Pure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Replicas the receipt lists (the key's replicas, stand-ins, and for
    /// a scan every node asked). The receipt does not tell a read replica
    /// that was asked but had not answered from one never asked, so this
    /// is the list, not a count of messages sent.
    pub replicas: u32,
    /// Replicas that answered.
    pub answered: u32,
    /// Replicas that were asked and failed (not those skipped as down).
    pub failed: u32,
    /// Replicas whose version lacked something the merge had.
    pub stale: u32,
    /// Stale replicas repaired before the answer (blocking read repair).
    pub repaired: u32,
    /// Replicas asked because another was slower than its recent p99.
    pub speculative: u32,
    /// Replicas the coordinator kept a hint for.
    pub hinted: u32,
}

/// The error a receipt gives a replica that was down and never asked
/// (`coordinator/receipt.rs`).
const NOT_ASKED: &str = "down: not asked";

impl Summary {
    /// Counts `receipt`'s replica reports.
    pub fn of(receipt: &pb::Receipt) -> Self {
        let mut s = Summary { replicas: receipt.replicas.len() as u32, ..Default::default() };
        for r in &receipt.replicas {
            s.answered += u32::from(r.answered);
            s.failed += u32::from(!r.answered && !r.error.is_empty() && r.error != NOT_ASKED);
            s.stale += u32::from(r.stale);
            s.repaired += u32::from(r.repaired);
            s.speculative += u32::from(r.speculative);
            s.hinted += u32::from(r.hinted);
        }
        s
    }
}

/// A request span, its receipt's fields left empty until it finishes.
/// At `debug` (per request, STYLE.md): with the default `info` filter it
/// is disabled, and recording into it costs a branch.
pub fn request_span(op: Op, level: &'static str) -> tracing::Span {
    tracing::debug_span!(
        "request",
        op = op.as_str(),
        level,
        outcome = Empty,
        coordinator = Empty,
        forwarded_from = Empty,
        required = Empty,
        acked = Empty,
        replicas = Empty,
        answered = Empty,
        failed = Empty,
        stale = Empty,
        repaired = Empty,
        speculative = Empty,
        hinted = Empty,
        duration_us = Empty,
    )
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    op: &'static str,
    level: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    op: &'static str,
    level: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets: 100 µs doubling to 6.5 s (17 buckets), wide enough for
/// a local ONE read and for a QUORUM write waiting out a peer timeout.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

/// The client-request series of one node.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<LatencyLabels>,
    stale: Counter,
    speculative: Counter,
    hinted: Counter,
    repairs: Family<ResultLabels, Counter>,
    batches: Counter,
    batch_items: Counter,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            stale: Counter::default(),
            speculative: Counter::default(),
            hinted: Counter::default(),
            repairs: Family::default(),
            batches: Counter::default(),
            batch_items: Counter::default(),
        }
    }
}

impl RequestMetrics {
    /// Registers the series with `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ringkv_requests",
            "Client requests answered by this node, by operation, level and outcome",
            self.requests.clone(),
        );
        registry.register(
            "ringkv_request_duration_seconds",
            "Time from receiving a client request to answering it, by operation and level",
            self.duration.clone(),
        );
        registry.register(
            "ringkv_stale_replicas",
            "Replicas found stale by reads (their version lacked part of the merge)",
            self.stale.clone(),
        );
        registry.register(
            "ringkv_speculative_reads",
            "Extra replicas asked because an asked one failed or was slower than its recent p99",
            self.speculative.clone(),
        );
        registry.register(
            "ringkv_hinted_replicas",
            "Replicas a client write left a hint for (down, failed or stood in for)",
            self.hinted.clone(),
        );
        registry.register(
            "ringkv_read_repairs",
            "Merged versions pushed to stale replicas by read repair (blocking, async and late), by result",
            self.repairs.clone(),
        );
        registry.register(
            "ringkv_batches",
            "Kv.Batch calls received (concurrent client requests coalesced into one call); each item is also counted in ringkv_requests",
            self.batches.clone(),
        );
        registry.register("ringkv_batch_items", "Requests that arrived inside Kv.Batch calls", self.batch_items.clone());
    }

    /// Records a `Kv.Batch` call of `items` requests.
    pub fn batch(&self, items: usize) {
        self.batches.inc();
        self.batch_items.inc_by(items as u64);
    }

    /// Records a finished request: its count, its latency and its
    /// receipt's replicas, and fills in its span.
    pub fn finish(
        &self,
        span: &tracing::Span,
        op: Op,
        level: &'static str,
        outcome: &'static str,
        took: Duration,
        receipt: Option<&pb::Receipt>,
    ) {
        self.requests.get_or_create(&RequestLabels { op: op.as_str(), level, outcome }).inc();
        self.duration.get_or_create(&LatencyLabels { op: op.as_str(), level }).observe(took.as_secs_f64());
        span.record("outcome", outcome).record("duration_us", took.as_micros() as u64);
        let Some(receipt) = receipt else { return };
        let s = Summary::of(receipt);
        self.stale.inc_by(u64::from(s.stale));
        self.speculative.inc_by(u64::from(s.speculative));
        self.hinted.inc_by(u64::from(s.hinted));
        if span.is_disabled() {
            return;
        }
        span.record("coordinator", receipt.coordinator.as_str())
            .record("required", receipt.required)
            .record("acked", receipt.acked)
            .record("replicas", s.replicas)
            .record("answered", s.answered)
            .record("failed", s.failed)
            .record("stale", s.stale)
            .record("repaired", s.repaired)
            .record("speculative", s.speculative)
            .record("hinted", s.hinted);
        if !receipt.forwarded_from.is_empty() {
            span.record("forwarded_from", receipt.forwarded_from.as_str());
        }
    }

    /// Records one read repair pushed to a stale replica.
    pub fn repaired(&self, ok: bool) {
        self.repairs.get_or_create(&ResultLabels { result: if ok { "ok" } else { "failed" } }).inc();
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    fn report(node: &str, answered: bool, error: &str) -> pb::ReplicaReport {
        pb::ReplicaReport { node: node.into(), answered, error: error.into(), ..Default::default() }
    }

    #[test]
    fn a_summary_counts_each_flag_and_tells_failures_from_replicas_skipped_as_down() {
        let mut receipt = pb::Receipt {
            replicas: vec![report("a", true, ""), report("b", false, "peer timeout"), report("c", false, NOT_ASKED), report("d", true, "")],
            ..Default::default()
        };
        receipt.replicas[0].stale = true;
        receipt.replicas[0].repaired = true;
        receipt.replicas[3].speculative = true;
        receipt.replicas[2].hinted = true;
        let s = Summary::of(&receipt);
        assert_eq!(s, Summary { replicas: 4, answered: 2, failed: 1, stale: 1, repaired: 1, speculative: 1, hinted: 1 });
    }

    #[test]
    fn levels_are_labelled_as_the_service_reads_them() {
        use ringkv_proto::v1::Consistency;
        assert_eq!(level_label(0, Op::Get), "quorum", "unset is QUORUM");
        assert_eq!(level_label(0, Op::Cas), "serial", "unset is SERIAL for a cas");
        assert_eq!(level_label(Consistency::One as i32, Op::Put), "one");
        assert_eq!(level_label(Consistency::LocalSerial as i32, Op::Get), "local_serial");
        assert_eq!(level_label(999, Op::Get), "invalid");
    }

    #[test]
    fn outcomes_are_ok_or_the_wire_kind() {
        let ok: Result<(), tonic::Status> = Ok(());
        assert_eq!(outcome_of(&ok), "ok");
        let unavailable =
            tonic::Status::from(crate::Error::Unavailable { level: "ALL".into(), required: 3, alive: 2, hint: String::new() });
        assert_eq!(outcome_of::<()>(&Err(unavailable)), "unavailable");
        assert_eq!(outcome_of::<()>(&Err(tonic::Status::internal("no kind"))), "error");
    }

    /// Collects every field value a span is given, at creation or later.
    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

    struct Fields<'a>(&'a mut Vec<(String, String)>);

    impl tracing::field::Visit for Fields<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().into(), format!("{value:?}")));
        }
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.push((field.name().into(), value.into()));
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, _: &tracing::span::Id, _: tracing_subscriber::layer::Context<'_, S>) {
            attrs.record(&mut Fields(&mut self.0.lock().unwrap()));
        }
        fn on_record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            values.record(&mut Fields(&mut self.0.lock().unwrap()));
        }
    }

    #[test]
    fn the_request_span_gets_the_receipts_fields_when_the_request_finishes() {
        use tracing_subscriber::layer::SubscriberExt;
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::with_default(subscriber, || {
            let mut receipt = pb::Receipt {
                coordinator: "n1".into(),
                required: 2,
                acked: 2,
                replicas: vec![report("n1", true, ""), report("n2", true, ""), report("n3", false, "peer timeout")],
                ..Default::default()
            };
            receipt.replicas[1].stale = true;
            receipt.replicas[1].repaired = true;
            let span = request_span(Op::Get, "quorum");
            RequestMetrics::default().finish(&span, Op::Get, "quorum", "ok", Duration::from_micros(1500), Some(&receipt));
        });
        let got: std::collections::BTreeMap<String, String> = capture.0.lock().unwrap().iter().cloned().collect();
        let want = [
            ("op", "get"),
            ("level", "quorum"),
            ("outcome", "ok"),
            ("coordinator", "n1"),
            ("required", "2"),
            ("acked", "2"),
            ("replicas", "3"),
            ("answered", "2"),
            ("failed", "1"),
            ("stale", "1"),
            ("repaired", "1"),
            ("speculative", "0"),
            ("hinted", "0"),
            ("duration_us", "1500"),
        ];
        for (field, value) in want {
            assert_eq!(got.get(field).map(String::as_str), Some(value), "field {field} in {got:?}");
        }
        assert!(!got.contains_key("forwarded_from"), "recorded only for a forwarded write");
    }

    #[test]
    fn a_finished_request_moves_its_own_series_only() {
        let m = RequestMetrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut receipt = pb::Receipt { replicas: vec![report("a", true, ""), report("b", true, "")], ..Default::default() };
        receipt.replicas[1].stale = true;
        let span = tracing::Span::none();
        m.finish(&span, Op::Get, "quorum", "ok", Duration::from_millis(3), Some(&receipt));
        m.finish(&span, Op::Get, "quorum", "ok", Duration::from_millis(3), Some(&receipt));
        m.finish(&span, Op::Put, "one", "unavailable", Duration::from_micros(50), None);
        m.repaired(true);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains(r#"ringkv_requests_total{op="get",level="quorum",outcome="ok"} 2"#), "{text}");
        assert!(text.contains(r#"ringkv_requests_total{op="put",level="one",outcome="unavailable"} 1"#), "{text}");
        assert!(text.contains(r#"ringkv_request_duration_seconds_count{op="get",level="quorum"} 2"#), "{text}");
        assert!(text.contains(r#"ringkv_request_duration_seconds_bucket{le="0.0001",op="put",level="one"} 1"#), "{text}");
        assert!(text.contains("ringkv_stale_replicas_total 2"), "{text}");
        assert!(text.contains(r#"ringkv_read_repairs_total{result="ok"} 1"#), "{text}");
    }
}
