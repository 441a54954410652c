//! SERIAL compare-and-set against real processes: two concurrent cas from
//! the same expected value through different coordinators, over many
//! rounds, apply exactly once each round; the loser sees the winner's
//! value, and reads at SERIAL and at QUORUM both see the winner. The CLI's
//! `cas` prints applied / not applied with the current value.

use std::time::Duration;

use ringkv_client::{Client, Error, Level, Options};
use ringkv_tests::process::{cli_json, cluster};

/// Rounds of the race; each is two cas and two reads.
const ROUNDS: usize = 40;

#[test]
fn concurrent_cas_through_different_coordinators_applies_exactly_once_per_round() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 3, &["--gossip-interval", "300ms"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let a = Client::connect([nodes[0].addr.as_str()]).await.unwrap();
        let b = Client::connect([nodes[1].addr.as_str()]).await.unwrap();
        let serial = Options { level: Level::Serial, timeout: Some(Duration::from_secs(5)), ..Default::default() };
        let mut expect: Option<Vec<u8>> = None;
        let mut contention = 0;
        for round in 0..ROUNDS {
            let (va, vb) = (format!("a{round}").into_bytes(), format!("b{round}").into_bytes());
            let (ra, rb) =
                tokio::join!(a.cas(b"race", expect.as_deref(), Some(&va), serial), b.cas(b"race", expect.as_deref(), Some(&vb), serial));
            let (ra, rb) =
                (ra.unwrap_or_else(|e| panic!("round {round}, via n1: {e}")), rb.unwrap_or_else(|e| panic!("round {round}, via n2: {e}")));
            assert_eq!(u8::from(ra.applied) + u8::from(rb.applied), 1, "round {round}: exactly one applies: {ra:?} {rb:?}");
            let (winner, loser) = if ra.applied { (va, &rb) } else { (vb, &ra) };
            let seen: Vec<&[u8]> = loser.current.iter().map(|s| s.value.as_slice()).collect();
            assert_eq!(seen, [winner.as_slice()], "round {round}: the loser reports the winner's value");
            for r in [&ra, &rb] {
                contention += r.receipt.as_ref().and_then(|r| r.paxos.as_ref()).map_or(0, |p| p.contention_retries);
            }
            let read = a.get(b"race", serial).await.unwrap();
            assert_eq!(
                read.siblings.iter().map(|s| s.value.as_slice()).collect::<Vec<_>>(),
                [winner.as_slice()],
                "round {round}: SERIAL read"
            );
            let read = b.get(b"race", Options::level(Level::Quorum)).await.unwrap();
            assert_eq!(
                read.siblings.iter().map(|s| s.value.as_slice()).collect::<Vec<_>>(),
                [winner.as_slice()],
                "round {round}: QUORUM read"
            );
            expect = Some(winner);
        }
        eprintln!("{ROUNDS} rounds, {contention} contention retries in all");

        // A level other than SERIAL is refused, saying what to pass.
        let e = a.cas(b"race", None, Some(b"x"), Options::level(Level::Quorum)).await.unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { message } if message.contains("SERIAL")), "{e}");
        // And a put at SERIAL points to cas.
        let e = a.put(b"race", b"x", None, Options::level(Level::Serial)).await.unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { message } if message.contains("cas")), "{e}");
    });

    // The CLI: applied, then not applied with the current value; a delete.
    let n1 = &nodes[0].addr;
    let v = cli_json(n1, &["cas", "cli-key", "--absent", "--set", "one"]);
    assert_eq!((v["applied"].as_bool(), v["receipt"]["consistency"].as_str()), (Some(true), Some("SERIAL")), "{v}");
    assert!(v["receipt"]["paxos"]["round_trips"].as_u64().unwrap() >= 3, "prepare, propose, commit: {v}");
    let v = cli_json(n1, &["cas", "cli-key", "--expect", "nope", "--set", "two"]);
    assert_eq!((v["applied"].as_bool(), &v["values"]), (Some(false), &serde_json::json!(["one"])), "{v}");
    let v = cli_json(n1, &["cas", "cli-key", "--expect", "one", "--delete", "-c", "local_serial"]);
    assert_eq!(v["applied"].as_bool(), Some(true), "{v}");
    let v = cli_json(n1, &["get", "cli-key", "-c", "serial"]);
    assert_eq!(v["values"], serde_json::json!([]), "{v}");
}
