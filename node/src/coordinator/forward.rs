//! Forwarding a write to a node that may coordinate it.
//!
//! Only a replica may coordinate a write (its dot names the coordinator),
//! so a non-replica hands the write to the first live replica that takes
//! it. The danger is applying it twice, or calling it failed when it
//! landed: the next replica is tried only after a failure that proves the
//! message was never sent (`Error::NotSent`, typed where it happens). Once
//! an attempt may have landed, any later failure is reported as
//! `Indeterminate`: the rule is `ringkv_proto::delivery::Failover`, the one
//! the client follows between coordinators.

use ringkv_proto::delivery::Failover;
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
        ttl_ms: w.ttl_ms,
    };
    let mut last = None;
    // Set once an attempt failed in a way that does not prove the write
    // never arrived: from then on no failure may be reported as definite.
    let mut failover = Failover::default();
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
                return Err(match failover.maybe_landed() {
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
                failover.failed(e.delivery(), || format!("forwarding to {target} failed ({e})"));
                last = Some(e);
            }
        }
    }
    if let Some(earlier) = failover.maybe_landed() {
        return Err(Error::Indeterminate { acked: 0, required, reason: earlier.to_string() });
    }
    Err(last.unwrap_or_else(|| Error::Unavailable {
        level: w.level.as_str().into(),
        required: 1,
        alive: 0,
        hint: "; no replica of this key could be reached to coordinate the write".into(),
    }))
}

#[cfg(test)]
mod tests {
    use ringkv_proto::delivery::Delivery;

    use super::*;

    #[test]
    fn only_a_typed_not_sent_proves_nothing_was_sent() {
        let table = [
            (Error::NotSent { peer: "b".into(), reason: "blocked by the fault layer".into() }, Delivery::NotSent),
            (Error::NotSent { peer: "b".into(), reason: "anything at all".into() }, Delivery::NotSent),
            // The old text rule's words prove nothing without the type.
            (Error::Peer { peer: "b".into(), reason: "tcp connect error: Connection refused".into() }, Delivery::MaybeDelivered),
            (Error::Peer { peer: "b".into(), reason: "connection reset by peer".into() }, Delivery::MaybeDelivered),
            (Error::PeerTimeout { peer: "b".into(), ms: 100 }, Delivery::MaybeDelivered),
            (Error::Storage("disk".into()), Delivery::MaybeDelivered),
        ];
        for (e, want) in table {
            assert_eq!(e.delivery(), want, "{e}");
        }
    }
}
