//! Forwarding a write to a node that may coordinate it.
//!
//! Only a replica may coordinate a write (its dot names the coordinator),
//! so a non-replica hands the write to the first live replica that takes
//! it. The danger is applying it twice, or calling it failed when it
//! landed: the next replica is tried only after a failure that proves the
//! message was never sent ([`not_sent`]). Once an attempt may have landed,
//! any later failure is reported as `Indeterminate`, the same rule the
//! client follows between coordinators.

use ringkv_proto::v1 as pb;
use tokio::time::Instant;

use super::ctx::Ctx;
use super::{decode_context, encode_context, Write};
use crate::error::{Error, Result};
use crate::version::Context;

/// Hands a write to the first replica in `alive` that takes it.
pub(super) async fn forward(ctx: &Ctx, w: Write, alive: &[String], start: Instant) -> Result<(Context, pb::Receipt)> {
    let req = pb::ForwardWriteRequest {
        key: w.key.clone(),
        value: w.value.clone(),
        context: w.context.as_ref().map(encode_context),
        tombstone: w.tombstone,
        options: Some(pb::RequestOptions {
            consistency: w.level.to_proto() as i32,
            timeout_ms: w.timeout.as_millis() as u32,
            sloppy: w.sloppy,
            ..Default::default()
        }),
        from: ctx.me().to_string(),
    };
    let mut last = None;
    // Set once an attempt failed in a way that does not prove the write
    // never arrived: from then on no failure may be reported as definite.
    let mut maybe_applied: Option<String> = None;
    let required = w.level.required(ctx.n()) as u32;
    for target in alive {
        let remaining = w.timeout.saturating_sub(start.elapsed());
        match ctx.forward_write(target, req.clone(), remaining).await {
            Ok(resp) => {
                let mut receipt = resp.receipt.unwrap_or_default();
                receipt.forwarded_from = ctx.me().to_string();
                receipt.latency_us = start.elapsed().as_micros() as u64;
                return Ok((decode_context(&resp.context)?, receipt));
            }
            // The replica answered: its verdict (unavailable, indeterminate…)
            // stands, unless an earlier attempt may have landed.
            Err(e @ Error::Forwarded(_)) => {
                return Err(match maybe_applied {
                    Some(earlier) => Error::Indeterminate { acked: 0, required, reason: format!("{earlier}, then {e}") },
                    None => e,
                })
            }
            // It may have applied the write; trying another could apply it twice.
            Err(Error::PeerTimeout { peer, ms }) => {
                return Err(Error::Indeterminate {
                    acked: 0,
                    required,
                    reason: format!("the write was forwarded to {peer}, which did not answer within {ms} ms"),
                })
            }
            // Try the next replica; remember if this one may have applied it.
            Err(e) => {
                if !not_sent(&e) {
                    maybe_applied.get_or_insert_with(|| format!("forwarding to {target} failed ({e})"));
                }
                last = Some(e);
            }
        }
    }
    if let Some(earlier) = maybe_applied {
        return Err(Error::Indeterminate { acked: 0, required, reason: earlier });
    }
    Err(last.unwrap_or_else(|| Error::Unavailable {
        level: w.level.as_str().into(),
        required: 1,
        alive: 0,
        hint: "; no replica of this key could be reached to coordinate the write".into(),
    }))
}

/// True when a failed peer call cannot have delivered its message: the
/// fault layer stopped it, the connection was refused, or the peer is unknown.
pub(super) fn not_sent(e: &Error) -> bool {
    match e {
        Error::Peer { reason, .. } => {
            let r = reason.to_ascii_lowercase();
            ["fault layer", "connection refused", "tcp connect", "not a known member"].iter().any(|m| r.contains(m))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_that_prove_nothing_was_sent_count_as_not_sent() {
        let peer = |reason: &str| Error::Peer { peer: "b".into(), reason: reason.into() };
        let table = [
            (peer("blocked by the fault layer"), true),
            (peer("transport error: Connection refused (os error 111)"), true),
            (peer("tcp connect error"), true),
            (peer("b is not a known member"), true),
            (peer("connection reset by peer"), false),
            (peer("h2 protocol error: stream closed"), false),
            (Error::PeerTimeout { peer: "b".into(), ms: 100 }, false),
            (Error::Storage("disk".into()), false),
        ];
        for (e, want) in table {
            assert_eq!(not_sent(&e), want, "{e}");
        }
    }
}
