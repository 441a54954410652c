//! `ringkv watch PREFIX`: prints changes under a prefix as they happen,
//! until Ctrl-C (or `--count` events), then the position to resume from.
//!
//! Text: one line per event, `put<TAB>key<TAB>value[ | sibling…]` or
//! `delete<TAB>key`. `--json`: one JSON object per event and line (the
//! stream form of the one-object rule), with the siblings (tombstones
//! flagged), the context, the node that sent it and the resume position.

use anyhow::Result;
use futures::StreamExt;
use ringkv_client::{Client, WatchEvent, WatchPosition};
use serde_json::{json, Value};

use crate::commands::print;
use crate::output::{b64, sibling_json, value_json, value_text};

fn event_json(e: &WatchEvent) -> Value {
    let live: Vec<Value> = e.siblings.iter().filter(|s| !s.tombstone).map(|s| value_json(&s.value)).collect();
    json!({
        "key": String::from_utf8_lossy(&e.key),
        "deleted": e.deleted,
        "values": live,
        "siblings": e.siblings.iter().map(|s| sibling_json(s, true)).collect::<Vec<_>>(),
        "context": b64(&e.context),
        "node": e.node,
        "position": e.position.to_token(),
    })
}

fn event_text(e: &WatchEvent) -> String {
    let key = String::from_utf8_lossy(&e.key);
    if e.deleted {
        return format!("delete\t{key}");
    }
    let values: Vec<String> = e.siblings.iter().filter(|s| !s.tombstone).map(|s| value_text(&s.value)).collect();
    format!("put\t{key}\t{}", values.join(" | "))
}

/// Watches `prefix` (after `resume`, a token a previous watch printed).
pub async fn run(client: &Client, prefix: &str, resume: Option<&str>, count: Option<usize>, json_mode: bool) -> Result<()> {
    let resume = resume.map(WatchPosition::from_token).transpose()?;
    let mut stream = client.watch(prefix.as_bytes(), resume).await?;
    eprintln!("watching {prefix:?} on {} (Ctrl-C stops)", stream.nodes().join(", "));
    let mut seen = 0;
    loop {
        if count.is_some_and(|c| seen >= c) {
            break;
        }
        tokio::select! {
            next = stream.next() => match next {
                Some(event) => {
                    let event = event?;
                    print(json_mode, event_json(&event), || event_text(&event));
                    seen += 1;
                }
                None => anyhow::bail!("the watch ended: every node stream stopped"),
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    eprintln!("resume with --resume {}", stream.position().to_token());
    Ok(())
}
