//! SERIAL compare-and-set in simulation: concurrent cas from the same
//! expected value through different coordinators apply exactly once per
//! round; with one node partitioned away SERIAL works on the majority
//! side and is `unavailable` on the minority side; and a SERIAL read
//! completes a proposal that was chosen but never committed.

use std::time::Duration;

use ringkv_client::{Error, Level, Options};
use ringkv_node::paxos::{AcceptorState, Proposal};
use ringkv_node::storage::{Storage, Tree};
use ringkv_node::version::{DvvSet, Hlc, Sibling};
use ringkv_tests::sim::{add_nodes, builder, client, run, seed, sees, until};

use super::{cluster_ready, heal_n3, values, CONVERGE};

fn serial() -> Options {
    Options { level: Level::Serial, timeout: Some(Duration::from_secs(2)), ..Default::default() }
}

#[test]
fn concurrent_cas_from_one_value_applies_exactly_once_per_round() {
    let seed = seed(0x5eed_0c45);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        let coordinators = [client(&["n1"]), client(&["n2"]), client(&["n3"])];
        let mut expect: Option<Vec<u8>> = None;
        for round in 0..30 {
            let tries = coordinators.iter().enumerate().map(|(i, c)| {
                let value = format!("r{round}-n{}", i + 1).into_bytes();
                let expect = expect.clone();
                async move { (value.clone(), c.cas(b"k", expect.as_deref(), Some(&value), serial()).await) }
            });
            let answers = futures::future::join_all(tries).await;
            let mut winners = Vec::new();
            for (value, r) in &answers {
                let r = r.as_ref().map_err(|e| format!("round {round}: {e}"))?;
                if r.applied {
                    winners.push(value.clone());
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: exactly one of three applies: {answers:?}");
            let winner = winners.pop().expect("one");
            for (_, r) in &answers {
                let r = r.as_ref().expect("checked above");
                if !r.applied {
                    let seen: Vec<&[u8]> = r.current.iter().map(|s| s.value.as_slice()).collect();
                    assert_eq!(seen, [winner.as_slice()], "round {round}");
                }
            }
            let read = client(&["n3"]).get(b"k", Options::level(Level::Quorum)).await?;
            assert_eq!(values(&read), [winner.as_slice()], "round {round}: a QUORUM read sees the commit");
            expect = Some(winner);
        }
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn serial_works_on_the_majority_side_and_is_unavailable_on_the_minority_side() {
    let seed = seed(0x5eed_0c46);
    let mut sim = builder(seed).build();
    add_nodes(&mut sim, 3, seed);
    sim.client("client", async {
        cluster_ready().await?;
        assert!(client(&["n1"]).cas(b"p", None, Some(b"before"), serial()).await?.applied);
        turmoil::partition("n3", "n1");
        turmoil::partition("n3", "n2");
        until("n1 sees n3 down", CONVERGE, || sees("n1", "n3", "down")).await?;
        until("n3 sees n1 and n2 down", CONVERGE, || async { sees("n3", "n1", "down").await && sees("n3", "n2", "down").await }).await?;

        // Majority side: cas and SERIAL reads work.
        let majority = client(&["n1"]);
        assert!(majority.cas(b"p", Some(b"before"), Some(b"during"), serial()).await?.applied);
        assert_eq!(values(&majority.get(b"p", serial()).await?), [b"during".as_slice()]);

        // Minority side: refused as unavailable, before anything is sent.
        let minority = client(&["n3"]);
        let e = minority.cas(b"p", Some(b"during"), Some(b"split"), serial()).await.unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "cas on the minority side: {e}");
        let e = minority.get(b"p", serial()).await.unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "SERIAL read on the minority side: {e}");

        heal_n3().await?;
        // After the heal, n3 coordinates SERIAL again and sees the majority's write.
        until("n3 serves SERIAL", CONVERGE, || async { minority.get(b"p", serial()).await.is_ok() }).await?;
        assert_eq!(values(&minority.get(b"p", serial()).await?), [b"during".as_slice()]);
        assert!(!minority.cas(b"p", Some(b"before"), Some(b"stale"), serial()).await?.applied, "a stale expectation fails");
        Ok(())
    });
    run(sim, seed);
}

#[test]
fn a_serial_read_completes_a_proposal_chosen_but_never_committed() {
    let seed = seed(0x5eed_0c47);
    let mut sim = builder(seed).build();
    let nodes = add_nodes(&mut sim, 3, seed);
    // A coordinator that died after n1 and n2 accepted its proposal (a
    // majority: chosen) and before it sent the commit.
    let (n1, n2) = (nodes[0].storage.clone(), nodes[1].storage.clone());
    sim.client("client", async move {
        cluster_ready().await?;
        let serial = serial();
        let now = turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64 + 1_800_000_000_000;
        let ballot = Hlc { wall_ms: now, logical: 0, node: "ghost".into() };
        let mut value = DvvSet::default();
        let sibling = Sibling { hlc: ballot.clone(), value: b"chosen".to_vec(), tombstone: false, expires_at_ms: None };
        value.update(&Default::default(), "ghost@1+cas", sibling, false)?;
        let state =
            AcceptorState { promised: Some(ballot.clone()), accepted: Some(Proposal { ballot, value: Some(value) }), committed: None };
        for s in [&n1, &n2] {
            s.put(Tree::Paxos, b"orphan", &ringkv_node::record::encode(&state))?;
        }
        // No replica holds the value yet: a QUORUM read sees nothing.
        assert!(values(&client(&["n3"]).get(b"orphan", Options::level(Level::Quorum)).await?).is_empty());
        // A SERIAL read through n3 finds the proposal in flight, commits it,
        // and answers with it.
        let read = client(&["n3"]).get(b"orphan", serial).await?;
        assert_eq!(values(&read), [b"chosen".as_slice()]);
        assert_eq!(read.receipt.and_then(|r| r.paxos).map(|p| p.in_flight_completed), Some(1));
        // Committed like any write: QUORUM reads see it now.
        assert_eq!(values(&client(&["n1"]).get(b"orphan", Options::level(Level::Quorum)).await?), [b"chosen".as_slice()]);
        // And the cas that expects it applies.
        assert!(client(&["n2"]).cas(b"orphan", Some(b"chosen"), Some(b"next"), serial).await?.applied);
        Ok(())
    });
    run(sim, seed);
}
