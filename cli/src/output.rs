//! Text and JSON rendering shared by the commands.

use base64::Engine;
use ringkv_client::pb;
use serde_json::{json, Value};

/// Base64 for contexts and binary values.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes a base64 context given on the command line.
pub fn unb64(s: &str) -> anyhow::Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| anyhow::anyhow!("--context is not valid base64 ({e}); pass the context printed by `ringkv get --json`"))
}

/// A value as JSON: a string when it is UTF-8, else `{"base64": ...}`.
pub fn value_json(v: &[u8]) -> Value {
    match std::str::from_utf8(v) {
        Ok(s) => Value::String(s.into()),
        Err(_) => json!({ "base64": b64(v) }),
    }
}

/// A value for a terminal.
pub fn value_text(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) => s.to_string(),
        Err(_) => format!("base64:{}", b64(v)),
    }
}

/// An HLC as JSON.
pub fn hlc_json(h: Option<&pb::Hlc>) -> Value {
    match h {
        Some(h) => json!({ "wall_ms": h.wall_ms, "logical": h.logical, "node": h.node }),
        None => Value::Null,
    }
}

/// An HLC for a terminal: `wall.logical@node`.
pub fn hlc_text(h: Option<&pb::Hlc>) -> String {
    h.map_or("-".into(), |h| format!("{}.{}@{}", h.wall_ms, h.logical, h.node))
}

/// A sibling as JSON: value, HLC, the tombstone flag when `with_tombstone`
/// (inspect shows stored tombstones; reads never return one), and its
/// expiry as `expires_at_ms` and RFC 3339 `expires_at`, both null when it
/// never expires.
pub fn sibling_json(s: &pb::Sibling, with_tombstone: bool) -> Value {
    let (expires_at_ms, expires_at) = match ringkv_client::expires_at(s) {
        Some(at) => (json!(s.expires_at_ms), Value::String(humantime::format_rfc3339_millis(at).to_string())),
        None => (Value::Null, Value::Null),
    };
    let mut v =
        json!({ "value": value_json(&s.value), "hlc": hlc_json(s.hlc.as_ref()), "expires_at_ms": expires_at_ms, "expires_at": expires_at });
    if with_tombstone {
        v["tombstone"] = Value::Bool(s.tombstone);
    }
    v
}

/// A sibling's expiry for a terminal: `(expires 2026-12-02T07:00:00.000Z,
/// in 29.8s)`, or `(expired …, 2s ago)` once past; `None` when it never
/// expires.
pub fn expiry_text(s: &pb::Sibling, now: std::time::SystemTime) -> Option<String> {
    let at = ringkv_client::expires_at(s)?;
    let when = humantime::format_rfc3339_millis(at);
    let ms = |d: std::time::Duration| std::time::Duration::from_millis(d.as_millis() as u64);
    Some(match at.duration_since(now) {
        Ok(left) => format!("(expires {when}, in {})", humantime::format_duration(ms(left))),
        Err(e) => format!("(expired {when}, {} ago)", humantime::format_duration(ms(e.duration()))),
    })
}

/// The level's name.
pub fn level_name(raw: i32) -> String {
    pb::Consistency::try_from(raw).map_or("?".into(), |c| c.as_str_name().trim_start_matches("CONSISTENCY_").to_string())
}

/// A receipt as JSON.
pub fn receipt_json(r: Option<&pb::Receipt>) -> Value {
    let Some(r) = r else { return Value::Null };
    json!({
        "coordinator": r.coordinator,
        "forwarded_from": r.forwarded_from,
        "consistency": level_name(r.consistency),
        "required": r.required,
        "acked": r.acked,
        "latency_us": r.latency_us,
        "hints_stored": r.hints_stored,
        "replicas": r.replicas.iter().map(|x| json!({
            "node": x.node, "answered": x.answered, "latency_us": x.latency_us,
            "stale": x.stale, "repaired": x.repaired, "error": x.error,
            "hinted": x.hinted, "stand_in_for": x.stand_in_for, "speculative": x.speculative,
        })).collect::<Vec<_>>(),
        "paxos": r.paxos.as_ref().map_or(Value::Null, |p| json!({
            "ballot": hlc_json(p.ballot.as_ref()),
            "promised": p.promised, "accepted": p.accepted,
            "round_trips": p.round_trips, "contention_retries": p.contention_retries,
            "in_flight_completed": p.in_flight_completed,
        })),
    })
}

/// A receipt for a terminal.
pub fn receipt_text(r: Option<&pb::Receipt>) -> String {
    let Some(r) = r else { return "receipt: none".into() };
    let mut out = format!(
        "receipt: coordinator {}{} · level {} needs {} · {} acked · {:.2} ms\n",
        r.coordinator,
        if r.forwarded_from.is_empty() { String::new() } else { format!(" (forwarded by {})", r.forwarded_from) },
        level_name(r.consistency),
        r.required,
        r.acked,
        r.latency_us as f64 / 1000.0
    );
    for x in &r.replicas {
        let state = if x.answered {
            format!("answered in {:.2} ms", x.latency_us as f64 / 1000.0)
        } else if x.error.is_empty() {
            "no answer needed/awaited".into()
        } else {
            x.error.clone()
        };
        let mut flags = match (x.stale, x.repaired) {
            (true, true) => " · stale, repaired".to_string(),
            (true, false) => " · stale".to_string(),
            _ => String::new(),
        };
        if x.hinted {
            flags.push_str(" · hint stored for it");
        }
        if !x.stand_in_for.is_empty() {
            flags.push_str(&format!(" · stand-in for {}", x.stand_in_for));
        }
        if x.speculative {
            flags.push_str(" · speculative retry");
        }
        out.push_str(&format!("  {:<6} {state}{flags}\n", x.node));
    }
    if let Some(p) = &r.paxos {
        out.push_str(&format!(
            "paxos: ballot {} · promised by {} · accepted by {} · {} round trips · {} contention retries · {} in-flight completed\n",
            hlc_text(p.ballot.as_ref()),
            if p.promised.is_empty() { "-".into() } else { p.promised.join(",") },
            if p.accepted.is_empty() { "-".into() } else { p.accepted.join(",") },
            p.round_trips,
            p.contention_retries,
            p.in_flight_completed
        ));
    }
    out.trim_end().to_string()
}
