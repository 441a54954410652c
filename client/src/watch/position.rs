//! Where a watch stands: per node, the incarnation and the last change of
//! its log accounted for. A node's position means "every change this node
//! stored up to here has been delivered (or superseded by one that was)".
//!
//! The token form is for callers that must carry a position as text (the
//! HTTP gateway, a file): `w1.` then base64url of `node:epoch:seq` entries
//! joined by commas. Node ids never hold commas or whitespace (the node
//! refuses such ids), and an id is split from the right, so ids may hold
//! colons.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine;

use crate::{pb, Error};

/// The token's version prefix.
const TOKEN_PREFIX: &str = "w1.";

/// A combined watch position: one per node watched (see the module docs).
///
/// ```
/// use ringkv_client::WatchPosition;
/// let p: WatchPosition = WatchPosition::from_token(&WatchPosition::default().to_token()).unwrap();
/// assert!(p.is_empty());
/// assert!(WatchPosition::from_token("nonsense").is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchPosition {
    nodes: BTreeMap<String, (u64, u64)>,
}

impl WatchPosition {
    /// True when no node's position is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The position on `node`, if known.
    pub fn node(&self, node: &str) -> Option<pb::WatchPosition> {
        self.nodes.get(node).map(|&(epoch, seq)| pb::WatchPosition { node: node.to_string(), epoch, seq })
    }

    /// Every node's position.
    pub fn nodes(&self) -> Vec<pb::WatchPosition> {
        self.nodes.iter().map(|(node, &(epoch, seq))| pb::WatchPosition { node: node.clone(), epoch, seq }).collect()
    }

    /// Records a node's position (a later one replaces it).
    pub fn set(&mut self, p: &pb::WatchPosition) {
        self.nodes.insert(p.node.clone(), (p.epoch, p.seq));
    }

    /// The opaque text form: [`WatchPosition::from_token`] reads it back.
    pub fn to_token(&self) -> String {
        let text: Vec<String> = self.nodes.iter().map(|(node, (epoch, seq))| format!("{node}:{epoch}:{seq}")).collect();
        format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text.join(",")))
    }

    /// Reads a token made by [`WatchPosition::to_token`].
    pub fn from_token(token: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::InvalidArgument {
            message: format!("watch position token {token:?} {why}; pass a token a watch event gave, unchanged"),
        };
        let body = token.trim().strip_prefix(TOKEN_PREFIX).ok_or_else(|| bad("does not start with w1."))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).map_err(|_| bad("is not base64url"))?;
        let text = String::from_utf8(bytes).map_err(|_| bad("is not text inside"))?;
        let mut nodes = BTreeMap::new();
        for entry in text.split(',').filter(|e| !e.is_empty()) {
            let mut parts = entry.rsplitn(3, ':');
            let (Some(seq), Some(epoch), Some(node)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("has an entry without node:epoch:seq"));
            };
            let number = |s: &str| s.parse::<u64>().map_err(|_| bad("has a non-numeric epoch or sequence"));
            if node.is_empty() {
                return Err(bad("has an entry without a node id"));
            }
            nodes.insert(node.to_string(), (number(epoch)?, number(seq)?));
        }
        Ok(Self { nodes })
    }
}

impl fmt::Display for WatchPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_token())
    }
}

impl FromStr for WatchPosition {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_token(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_every_node_and_odd_ids() {
        let mut p = WatchPosition::default();
        p.set(&pb::WatchPosition { node: "n1".into(), epoch: 1_733_000_000_000, seq: 42 });
        p.set(&pb::WatchPosition { node: "zone:a/n2".into(), epoch: 7, seq: 0 });
        let token = p.to_token();
        assert!(token.starts_with("w1.") && !token.contains(['+', '/', '=']), "URL-safe: {token}");
        assert_eq!(WatchPosition::from_token(&token).unwrap(), p);
        assert_eq!(token.parse::<WatchPosition>().unwrap().node("zone:a/n2").unwrap().epoch, 7);
        p.set(&pb::WatchPosition { node: "n1".into(), epoch: 1_733_000_000_000, seq: 43 });
        assert_eq!(p.node("n1").unwrap().seq, 43, "a later position replaces the earlier");
    }

    #[test]
    fn a_bad_token_is_refused_with_a_reason() {
        for bad in ["", "w2.abc", "w1.!!!", &format!("w1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("n1:x:1"))] {
            let e = WatchPosition::from_token(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains("token"), "{bad}: {e}");
        }
    }
}
