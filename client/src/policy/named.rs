//! Policies by name, as `--policy` and `RINGKV_POLICY` spell them. The one
//! list of names: the CLI parses its flag with [`PolicyName`]'s `FromStr`,
//! so a new policy is added here and nowhere else.

use std::fmt;
use std::str::FromStr;

use super::{BoundedLoad, DynamicLoad, LeastLatency, LeastOutstanding, Policy, RoundRobin, Sticky, TokenAware, Weighted, ZoneAware};

/// The ε `bounded-load` takes when the name gives none.
pub const DEFAULT_EPSILON: f64 = 0.25;

/// A routing policy by name.
///
/// ```
/// use ringkv_client::policy::PolicyName;
/// let p: PolicyName = "bounded-load:0.5".parse().unwrap();
/// assert_eq!(p, PolicyName::BoundedLoad(0.5));
/// assert_eq!("zone-aware:eu-1".parse::<PolicyName>().unwrap().to_string(), "zone-aware:eu-1");
/// let err = "fastest".parse::<PolicyName>().unwrap_err();
/// assert!(err.contains("round-robin") && err.contains("zone-aware:ZONE"), "{err}");
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PolicyName {
    /// No policy: the endpoints in the order given ([`Client::connect`](crate::Client::connect)).
    #[default]
    Endpoints,
    /// [`RoundRobin`].
    RoundRobin,
    /// [`Weighted`].
    Weighted,
    /// [`LeastOutstanding`].
    LeastOutstanding,
    /// [`LeastLatency`].
    LeastLatency,
    /// [`Sticky`].
    Sticky,
    /// [`TokenAware`] over round robin.
    TokenAware,
    /// [`BoundedLoad`] with this ε (`bounded-load` alone is [`DEFAULT_EPSILON`]).
    BoundedLoad(f64),
    /// [`DynamicLoad`].
    DynamicLoad,
    /// [`ZoneAware`] for this zone, over round robin.
    ZoneAware(String),
}

/// The names that take no argument, in the order `--help` lists them.
const PLAIN: [(&str, PolicyName); 9] = [
    ("endpoints", PolicyName::Endpoints),
    ("round-robin", PolicyName::RoundRobin),
    ("weighted", PolicyName::Weighted),
    ("least-outstanding", PolicyName::LeastOutstanding),
    ("least-latency", PolicyName::LeastLatency),
    ("sticky", PolicyName::Sticky),
    ("token-aware", PolicyName::TokenAware),
    ("bounded-load", PolicyName::BoundedLoad(DEFAULT_EPSILON)),
    ("dynamic-load", PolicyName::DynamicLoad),
];

impl PolicyName {
    /// Every form [`FromStr`] accepts, for help and error text:
    /// `endpoints, round-robin, …, dynamic-load, bounded-load:EPS, zone-aware:ZONE`.
    pub fn forms() -> String {
        let mut names: Vec<&str> = PLAIN.iter().map(|(name, _)| *name).collect();
        names.extend(["bounded-load:EPS", "zone-aware:ZONE"]);
        names.join(", ")
    }

    /// The policy itself; `None` for [`PolicyName::Endpoints`], which is
    /// the client without one. `seed` seeds [`LeastLatency`]'s sampling.
    pub fn build(&self, seed: u64) -> Option<Box<dyn Policy>> {
        let round_robin = || Box::new(RoundRobin::default());
        Some(match self {
            PolicyName::Endpoints => return None,
            PolicyName::RoundRobin => round_robin(),
            PolicyName::Weighted => Box::new(Weighted::default()),
            PolicyName::LeastOutstanding => Box::new(LeastOutstanding),
            PolicyName::LeastLatency => Box::new(LeastLatency::new(seed)),
            PolicyName::Sticky => Box::new(Sticky),
            PolicyName::TokenAware => Box::new(TokenAware::new(round_robin())),
            PolicyName::BoundedLoad(epsilon) => Box::new(BoundedLoad::new(*epsilon)),
            PolicyName::DynamicLoad => Box::new(DynamicLoad),
            PolicyName::ZoneAware(zone) => Box::new(ZoneAware::new(zone.clone(), round_robin())),
        })
    }
}

impl FromStr for PolicyName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((_, p)) = PLAIN.iter().find(|(name, _)| *name == s) {
            return Ok(p.clone());
        }
        if let Some(eps) = s.strip_prefix("bounded-load:") {
            return match eps.parse::<f64>() {
                Ok(e) if e >= 0.0 && e.is_finite() => Ok(PolicyName::BoundedLoad(e)),
                _ => Err(format!("{s:?}: ε in bounded-load:EPS must be a number ≥ 0, e.g. bounded-load:0.25")),
            };
        }
        match s.strip_prefix("zone-aware:") {
            Some(zone) if !zone.is_empty() => Ok(PolicyName::ZoneAware(zone.to_string())),
            Some(_) => Err(format!("{s:?}: zone-aware:ZONE needs a zone, e.g. zone-aware:eu-1")),
            None => Err(format!("unknown policy {s:?}; expected one of {}", PolicyName::forms())),
        }
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyName::BoundedLoad(e) if *e != DEFAULT_EPSILON => write!(f, "bounded-load:{e}"),
            PolicyName::ZoneAware(zone) => write!(f, "zone-aware:{zone}"),
            plain => {
                let (name, _) = PLAIN.iter().find(|(_, p)| p == plain).expect("every other name is in PLAIN");
                f.write_str(name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_and_prints_back() {
        for name in PLAIN.iter().map(|(n, _)| n.to_string()).chain(["bounded-load:0.5".into(), "zone-aware:eu-1".into()]) {
            let parsed: PolicyName = name.parse().unwrap();
            assert_eq!(parsed.to_string(), name);
            assert_eq!(parsed.build(1).is_none(), parsed == PolicyName::Endpoints, "{name}");
        }
        assert_eq!("bounded-load".parse::<PolicyName>(), Ok(PolicyName::BoundedLoad(0.25)));
    }

    #[test]
    fn bad_names_say_what_is_accepted() {
        let err = "round_robin".parse::<PolicyName>().unwrap_err();
        assert!(err.contains("unknown policy \"round_robin\"") && err.contains("least-outstanding"), "{err}");
        assert!("bounded-load:-1".parse::<PolicyName>().unwrap_err().contains("≥ 0"));
        assert!("bounded-load:x".parse::<PolicyName>().unwrap_err().contains("≥ 0"));
        assert!("zone-aware:".parse::<PolicyName>().unwrap_err().contains("needs a zone"));
    }
}
