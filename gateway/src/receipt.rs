//! The receipt (what a request's consistency choice cost) as JSON and as
//! `X-Ringkv-*` headers.
//!
//! | header | meaning |
//! |---|---|
//! | `X-Ringkv-Level` | the level the coordinator applied |
//! | `X-Ringkv-Coordinator` | the node that coordinated |
//! | `X-Ringkv-Required`, `X-Ringkv-Acked` | replicas the level needed, and those that answered |
//! | `X-Ringkv-Replicas` | the replicas that answered, comma-separated |
//! | `X-Ringkv-Stale`, `X-Ringkv-Repaired` | replicas found stale, and those read repair fixed |
//! | `X-Ringkv-Duration-Us` | the coordinator's time for the request, in µs |

use http::{HeaderMap, HeaderName, HeaderValue};
use ringkv_client::pb;
use serde_json::{json, Value};

/// The applied level's name (`quorum`), from the receipt's enum value.
pub fn level(r: &pb::Receipt) -> String {
    pb::Consistency::try_from(r.consistency)
        .map_or("unknown".into(), |c| c.as_str_name().trim_start_matches("CONSISTENCY_").to_ascii_lowercase())
}

fn nodes(r: &pb::Receipt, pick: impl Fn(&pb::ReplicaReport) -> bool) -> Vec<&str> {
    r.replicas.iter().filter(|x| pick(x)).map(|x| x.node.as_str()).collect()
}

/// A receipt as JSON (`null` when the node sent none).
pub fn json(r: Option<&pb::Receipt>) -> Value {
    let Some(r) = r else { return Value::Null };
    json!({
        "coordinator": r.coordinator,
        "forwarded_from": r.forwarded_from,
        "level": level(r),
        "required": r.required,
        "acked": r.acked,
        "latency_us": r.latency_us,
        "hints_stored": r.hints_stored,
        "replicas": r.replicas.iter().map(|x| json!({
            "node": x.node, "answered": x.answered, "latency_us": x.latency_us,
            "stale": x.stale, "repaired": x.repaired, "error": x.error,
            "hinted": x.hinted, "stand_in_for": x.stand_in_for, "speculative": x.speculative,
        })).collect::<Vec<_>>(),
    })
}

/// Sets the `X-Ringkv-*` receipt headers.
pub fn set_headers(headers: &mut HeaderMap, r: Option<&pb::Receipt>) {
    let Some(r) = r else { return };
    let mut set = |name: &'static str, value: String| {
        // Node ids are plain ASCII; one that is not is left out rather
        // than failing the answer.
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    set("x-ringkv-level", level(r));
    set("x-ringkv-coordinator", r.coordinator.clone());
    set("x-ringkv-required", r.required.to_string());
    set("x-ringkv-acked", r.acked.to_string());
    set("x-ringkv-replicas", nodes(r, |x| x.answered).join(","));
    set("x-ringkv-stale", nodes(r, |x| x.stale).join(","));
    set("x-ringkv-repaired", nodes(r, |x| x.repaired).join(","));
    set("x-ringkv-duration-us", r.latency_us.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_the_replicas_that_answered_were_stale_and_were_repaired() {
        let replica = |node: &str, answered, stale, repaired| pb::ReplicaReport {
            node: node.into(),
            answered,
            stale,
            repaired,
            ..Default::default()
        };
        let r = pb::Receipt {
            coordinator: "n1".into(),
            consistency: pb::Consistency::LocalQuorum as i32,
            required: 2,
            acked: 2,
            latency_us: 1234,
            replicas: vec![replica("n1", true, false, false), replica("n2", true, true, true), replica("n3", false, false, false)],
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        set_headers(&mut h, Some(&r));
        assert_eq!(h["x-ringkv-level"], "local_quorum");
        assert_eq!(h["x-ringkv-replicas"], "n1,n2");
        assert_eq!(h["x-ringkv-stale"], "n2");
        assert_eq!(h["x-ringkv-repaired"], "n2");
        assert_eq!(h["x-ringkv-duration-us"], "1234");
        assert_eq!(json(Some(&r))["replicas"][1]["stale"], true);
        assert_eq!(json(None), Value::Null);
    }
}
