//! `ringkv cas KEY (--expect VALUE | --absent) (--set NEW | --delete)`:
//! compare-and-set at SERIAL. Prints `applied` or `not applied` and the
//! current value (text), or one JSON object (`--json`). Not applied is an
//! answer, exit 0; `indeterminate` (a proposal may still complete) is an
//! error, exit 1, like every operational error.

use anyhow::Result;
use ringkv_client::{Client, Options, ReadRepair};
use serde_json::{json, Value};

use crate::args::CasArgs;
use crate::commands::print;
use crate::output::{b64, hlc_json, receipt_json, receipt_text, value_json, value_text};

/// Runs one `cas`.
pub async fn run(client: &Client, args: CasArgs, json_mode: bool) -> Result<()> {
    let opts = Options { level: args.level.into(), read_repair: ReadRepair::Unspecified, timeout: args.timeout, sloppy: false };
    let expect = args.expect.as_deref().map(str::as_bytes);
    let new = args.set.as_deref().map(str::as_bytes);
    let done = client.cas(args.key.as_bytes(), expect, new, opts).await?;
    let current: Vec<Value> =
        done.current.iter().map(|s| json!({ "value": value_json(&s.value), "hlc": hlc_json(s.hlc.as_ref()) })).collect();
    let doc = json!({
        "key": args.key,
        "applied": done.applied,
        "values": done.current.iter().map(|s| value_json(&s.value)).collect::<Vec<_>>(),
        "siblings": current,
        "context": b64(&done.context),
        "receipt": receipt_json(done.receipt.as_ref()),
    });
    print(json_mode, doc, || {
        let mut out = vec![if done.applied { "applied".to_string() } else { "not applied".to_string() }];
        let values: Vec<String> = done.current.iter().map(|s| value_text(&s.value)).collect();
        out.push(if values.is_empty() { "current: (absent)".into() } else { format!("current: {}", values.join(" | ")) });
        if args.explain {
            out.push(receipt_text(done.receipt.as_ref()));
        }
        out.join("\n")
    });
    Ok(())
}
