//! The seed list, resolved afresh every time it is used.
//!
//! `--seeds` takes `host:port` entries: IP addresses or DNS names. Names are
//! resolved again on every use, because the records behind them change: a
//! Kubernetes pod that restarts gets a new IP under the same name, and a
//! headless service answers with the addresses of whichever pods exist now.
//!
//! An entry that resolves to one address (or to none yet) is one seed,
//! contacted by its entry text, so that the connection resolves it again
//! when it reconnects. An entry that resolves to several addresses (a
//! headless service) is one seed per address. A seed is *this node* when
//! one of its names is this node's advertised or listen address, or one of
//! the addresses those resolve to; a seed is *reached* when a live member's
//! address (or what it resolves to) is among its names.

use std::collections::BTreeSet;

use super::formation::SeedView;
use super::Member;
use crate::transport::Transport;

/// One seed and the names it goes by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    /// The address to dial.
    pub contact: String,
    /// Every string that denotes it: the entry and the addresses it resolved to.
    pub names: BTreeSet<String>,
}

/// The seed list as resolved now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seeds {
    /// Seeds that are not this node.
    pub others: Vec<Seed>,
    /// Whether this node is itself in the list.
    pub me_seed: bool,
}

/// An address and what it resolves to; a failed lookup (a name with no
/// records yet) leaves just the text.
async fn names_of(transport: &dyn Transport, addr: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = transport.resolve(addr).await.unwrap_or_default().into_iter().collect();
    names.insert(addr.to_string());
    names
}

/// Resolves `entries` for the node that advertises `advertised` and
/// listens on `listen`.
pub async fn resolve(transport: &dyn Transport, entries: &[String], advertised: &str, listen: &str) -> Seeds {
    let mut mine = names_of(transport, advertised).await;
    mine.insert(listen.to_string());
    let mut out = Seeds::default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for entry in entries {
        let resolved = transport.resolve(entry).await.unwrap_or_default();
        let seeds: Vec<Seed> = if resolved.len() > 1 {
            resolved.into_iter().map(|a| Seed { contact: a.clone(), names: BTreeSet::from([a]) }).collect()
        } else {
            let mut names: BTreeSet<String> = resolved.into_iter().collect();
            names.insert(entry.clone());
            vec![Seed { contact: entry.clone(), names }]
        };
        for seed in seeds {
            if !seen.insert(seed.contact.clone()) {
                continue;
            }
            if seed.names.iter().any(|n| mine.contains(n)) {
                out.me_seed = true;
            } else {
                out.others.push(seed);
            }
        }
    }
    out
}

/// How many of `seeds` are among the live `members` (not this node).
pub async fn view(transport: &dyn Transport, seeds: &Seeds, live_members: &[Member]) -> SeedView {
    let mut member_names: BTreeSet<String> = BTreeSet::new();
    for m in live_members {
        if seeds.others.iter().any(|s| s.names.contains(&m.address)) {
            member_names.insert(m.address.clone());
        } else {
            member_names.extend(names_of(transport, &m.address).await);
        }
    }
    let reached = seeds.others.iter().filter(|s| s.names.iter().any(|n| member_names.contains(n))).count();
    SeedView { others: seeds.others.len(), others_reached: reached, me_seed: seeds.me_seed }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io;

    use futures::future::BoxFuture;

    use super::*;
    use crate::transport::Conn;

    /// A resolver with a fixed table.
    struct Dns(BTreeMap<&'static str, Vec<&'static str>>);

    impl Transport for Dns {
        fn listen(&self, _: &str) -> BoxFuture<'static, io::Result<crate::transport::Incoming>> {
            unimplemented!("resolution only")
        }
        fn connect(&self, _: &str) -> BoxFuture<'static, io::Result<Conn>> {
            unimplemented!("resolution only")
        }
        fn resolve(&self, addr: &str) -> BoxFuture<'static, io::Result<Vec<String>>> {
            let found = self.0.get(addr).map(|v| v.iter().map(|s| s.to_string()).collect());
            Box::pin(async move { found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host")) })
        }
    }

    fn member(id: &str, address: &str) -> Member {
        Member { id: id.into(), address: address.into(), ..Default::default() }
    }

    #[tokio::test]
    async fn the_same_list_on_every_node_leaves_each_node_out_of_its_own_others() {
        let dns = Dns(BTreeMap::new());
        let list: Vec<String> = ["10.0.0.1:7101", "10.0.0.2:7101", "10.0.0.3:7101"].map(String::from).to_vec();
        let seeds = resolve(&dns, &list, "10.0.0.2:7101", "0.0.0.0:7101").await;
        assert!(seeds.me_seed);
        assert_eq!(seeds.others.iter().map(|s| s.contact.as_str()).collect::<Vec<_>>(), ["10.0.0.1:7101", "10.0.0.3:7101"]);
        let v = view(&dns, &seeds, &[member("a", "10.0.0.3:7101")]).await;
        assert_eq!(v, SeedView { others: 2, others_reached: 1, me_seed: true });
        assert!(v.majority());
    }

    #[tokio::test]
    async fn names_match_addresses_they_resolve_to_and_unresolved_names_still_count() {
        let dns = Dns(BTreeMap::from([("ringkv-0.ringkv:7101", vec!["10.1.0.5:7101"]), ("ringkv-1.ringkv:7101", vec!["10.1.0.6:7101"])]));
        let list: Vec<String> = ["ringkv-0.ringkv:7101", "ringkv-1.ringkv:7101", "ringkv-2.ringkv:7101"].map(String::from).to_vec();
        // This node advertises its IP; its name is in the list.
        let seeds = resolve(&dns, &list, "10.1.0.5:7101", "0.0.0.0:7101").await;
        assert!(seeds.me_seed);
        assert_eq!(seeds.others.len(), 2, "ringkv-2 has no record yet and is still a seed");
        // A member that advertises its IP reaches the seed named for it.
        let v = view(&dns, &seeds, &[member("b", "10.1.0.6:7101")]).await;
        assert_eq!(v.others_reached, 1);
        // So does one that advertises the name.
        let v = view(&dns, &seeds, &[member("b", "ringkv-1.ringkv:7101")]).await;
        assert_eq!(v.others_reached, 1);
    }

    #[tokio::test]
    async fn a_name_with_several_addresses_is_one_seed_per_address() {
        let dns = Dns(BTreeMap::from([
            ("ringkv:7101", vec!["10.1.0.5:7101", "10.1.0.6:7101", "10.1.0.7:7101"]),
            ("ringkv-1.ringkv:7101", vec!["10.1.0.6:7101"]),
        ]));
        let seeds = resolve(&dns, &["ringkv:7101".to_string()], "ringkv-1.ringkv:7101", "0.0.0.0:7101").await;
        assert!(seeds.me_seed, "this pod's own address is one of the service's");
        assert_eq!(seeds.others.iter().map(|s| s.contact.as_str()).collect::<Vec<_>>(), ["10.1.0.5:7101", "10.1.0.7:7101"]);
    }
}
