//! Values and causal contexts on the wire: raw bytes or JSON with base64,
//! and the context header.
//!
//! - A PUT's body is the value as is, unless its `Content-Type` is
//!   `application/json`: then it is `{"value_b64": "..."}` (or
//!   `{"value": "text"}`), optionally with `"context"`.
//! - A GET answers the raw value unless `Accept` names `application/json`.
//! - The causal context travels base64-encoded in `X-Ringkv-Context`, and
//!   as an `ETag` (quoted). A PUT or DELETE sends it back in `If-Match` or
//!   `X-Ringkv-Context` to supersede exactly what the read saw.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{ACCEPT, CONTENT_TYPE, ETAG, IF_MATCH};
use http::{HeaderMap, HeaderName, HeaderValue};
use ringkv_client::pb;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;

/// The header that carries the causal context.
pub const CONTEXT: HeaderName = HeaderName::from_static("x-ringkv-context");

/// Base64 (standard alphabet, padded).
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// True when `Accept` asks for JSON.
pub fn wants_json(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("application/json"))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim_start().starts_with("application/json"))
}

/// A PUT's JSON body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPut {
    value_b64: Option<String>,
    value: Option<String>,
    context: Option<String>,
}

/// What a PUT carries: the value, and the context to supersede (if any).
#[derive(Debug, PartialEq)]
pub struct PutBody {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The causal context, from the body or a header.
    pub context: Option<Vec<u8>>,
}

/// Reads a PUT's value and context.
pub fn put_body(headers: &HeaderMap, body: &[u8]) -> Result<PutBody, ApiError> {
    let header_context = context(headers)?;
    if !is_json(headers) {
        return Ok(PutBody { value: body.to_vec(), context: header_context });
    }
    let doc: JsonPut = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the JSON body must be {{\"value_b64\": \"...\"}} or {{\"value\": \"text\"}}: {e}")))?;
    let value = match (doc.value_b64, doc.value) {
        (Some(b), None) => STANDARD.decode(b.trim()).map_err(|e| ApiError::BadRequest(format!("value_b64 is not base64: {e}")))?,
        (None, Some(text)) => text.into_bytes(),
        _ => return Err(ApiError::BadRequest("the JSON body needs exactly one of value_b64 and value".into())),
    };
    let body_context = doc.context.as_deref().map(|c| decode_context(c, "context")).transpose()?.filter(|c| !c.is_empty());
    Ok(PutBody { value, context: body_context.or(header_context) })
}

/// The context a PUT or DELETE sends back: `If-Match` (an ETag from a
/// GET, quoted or not) or `X-Ringkv-Context`.
pub fn context(headers: &HeaderMap) -> Result<Option<Vec<u8>>, ApiError> {
    for (name, what) in [(IF_MATCH, "If-Match"), (CONTEXT, "X-Ringkv-Context")] {
        if let Some(v) = headers.get(&name) {
            let text = v.to_str().map_err(|_| ApiError::BadRequest(format!("{what} must be ASCII base64")))?;
            let text = text.trim().trim_start_matches("W/").trim_matches('"');
            if text == "*" || text.is_empty() {
                continue;
            }
            return Ok(Some(decode_context(text, what)?));
        }
    }
    Ok(None)
}

fn decode_context(text: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    STANDARD
        .decode(text.trim())
        .map_err(|e| ApiError::BadRequest(format!("{what} is not a context ({e}); send back the X-Ringkv-Context or ETag a GET returned")))
}

/// Sets `X-Ringkv-Context` and `ETag` to `context` (nothing when empty).
pub fn set_context(headers: &mut HeaderMap, context: &[u8]) {
    if context.is_empty() {
        return;
    }
    let text = b64(context);
    headers.insert(CONTEXT, HeaderValue::from_str(&text).expect("base64 is a valid header value"));
    headers.insert(ETAG, HeaderValue::from_str(&format!("\"{text}\"")).expect("quoted base64 is a valid header value"));
}

/// A value as JSON: `value` (the text, or null when it is not UTF-8) and
/// `value_b64` (always).
pub fn value_json(v: &[u8]) -> Value {
    json!({ "value": std::str::from_utf8(v).ok(), "value_b64": b64(v) })
}

/// A sibling as JSON: its value, HLC and expiry (`expires_at_ms`, null
/// when it never expires).
pub fn sibling_json(s: &pb::Sibling) -> Value {
    let mut v = value_json(&s.value);
    v["hlc"] = s.hlc.as_ref().map_or(Value::Null, |h| json!({ "wall_ms": h.wall_ms, "logical": h.logical, "node": h.node }));
    v["expires_at_ms"] = if s.expires_at_ms > 0 { json!(s.expires_at_ms) } else { Value::Null };
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn a_raw_body_is_the_value_and_a_json_body_carries_base64() {
        let raw = put_body(&headers(&[]), b"\x00\xffbytes").unwrap();
        assert_eq!(raw, PutBody { value: b"\x00\xffbytes".to_vec(), context: None });
        let json = headers(&[("content-type", "application/json; charset=utf-8")]);
        assert_eq!(put_body(&json, br#"{"value_b64": "AP8="}"#).unwrap().value, vec![0, 255]);
        assert_eq!(put_body(&json, br#"{"value": "text", "context": "AQI="}"#).unwrap().context, Some(vec![1, 2]));
        assert!(put_body(&json, br#"{"value_b64": "%%%"}"#).unwrap_err().to_string().contains("not base64"));
        assert!(put_body(&json, br#"{}"#).unwrap_err().to_string().contains("exactly one"));
        assert!(put_body(&json, br#"{"valu": "x"}"#).unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn the_context_round_trips_through_etag_if_match_and_its_own_header() {
        let mut h = HeaderMap::new();
        set_context(&mut h, &[7, 8, 9]);
        let etag = h[ETAG].to_str().unwrap().to_string();
        assert_eq!(etag, "\"BwgJ\"");
        assert_eq!(context(&headers(&[("if-match", &etag)])).unwrap(), Some(vec![7, 8, 9]));
        assert_eq!(context(&headers(&[("x-ringkv-context", "BwgJ")])).unwrap(), Some(vec![7, 8, 9]));
        assert_eq!(context(&headers(&[("if-match", "*")])).unwrap(), None, "`*` names no version");
        assert!(context(&headers(&[("if-match", "\"not base64!\"")])).unwrap_err().to_string().contains("send back"));
        let mut empty = HeaderMap::new();
        set_context(&mut empty, &[]);
        assert!(empty.is_empty());
    }

    #[test]
    fn accept_decides_between_raw_and_json() {
        assert!(wants_json(&headers(&[("accept", "text/html, application/json;q=0.9")])));
        assert!(!wants_json(&headers(&[("accept", "*/*")])));
        assert_eq!(value_json(&[0xff])["value"], Value::Null);
        assert_eq!(value_json(b"hi")["value"], "hi");
    }
}
