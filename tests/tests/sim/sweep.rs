//! The randomized nemesis sweep (`ringkv_tests::sweep`): each seed runs in
//! a fresh process, two at a time, exactly as its printed `rerun:` command
//! runs it again; and one seed run twice gives the same history.

/// Seeds swept by default in CI; `RINGKV_SIM_SEEDS=1000` sweeps more, and
/// `RINGKV_SIM_SEED=s` reruns one.
const SWEEP_SEEDS: u64 = 50;
/// Simulated seconds of faults per seed; `RINGKV_SIM_FAULT_SECS=300` runs
/// five minutes of them.
fn sweep_fault_secs() -> u64 {
    std::env::var("RINGKV_SIM_FAULT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60)
}

/// `name`, a test in this module, as the test harness names it: the
/// module path without the crate, e.g. `sweep::one_seed_replays_the_same_history`.
fn test_path(name: &str) -> String {
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    format!("{module}::{name}")
}

/// The command that reruns the test `name` of this module with `seed`,
/// as printed after `rerun:`. It keeps a changed fault length, which the
/// schedule depends on.
fn rerun(name: &str, seed: u64) -> String {
    let secs = std::env::var("RINGKV_SIM_FAULT_SECS").map(|s| format!("RINGKV_SIM_FAULT_SECS={s} ")).unwrap_or_default();
    format!("{secs}RINGKV_SIM_SEED={seed} cargo test -p ringkv-tests --test sim -- {} --exact", test_path(name))
}

/// Runs the test `name` of this module in a fresh process with `env`, and
/// returns its stdout (the line the child printed after `marker`).
fn child(name: &str, env: (&str, String), marker: &str) -> Result<String, String> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test_path(name).as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .output()
        .expect("rerun the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    }
    stdout.lines().find_map(|l| l.split(marker).nth(1).map(|d| d.trim().to_string())).ok_or(stdout)
}

/// The sweep. Each seed runs in a fresh process (two at a time), exactly
/// as the printed `rerun:` command (`RINGKV_SIM_SEED=s`, this test alone)
/// runs it again, so a failing seed reproduces.
#[test]
fn randomized_nemesis_sweep_keeps_every_invariant() {
    if let Some(seed) = std::env::var("RINGKV_SWEEP_CHILD").ok().and_then(|s| s.parse::<u64>().ok()) {
        let r = ringkv_tests::sweep::run_sweep(seed, sweep_fault_secs());
        assert!(
            r.violations.is_empty(),
            "seed {seed}: {} violations, first {:?}\nfaults: {:?}\n{}\ndigest {}\nrerun: {}",
            r.violations.len(),
            &r.violations[..r.violations.len().min(5)],
            r.faults,
            ringkv_tests::sweep::describe(&r),
            r.digest,
            rerun("randomized_nemesis_sweep_keeps_every_invariant", seed)
        );
        println!("SWEEP={} {}", r.simulated_secs, r.digest);
        return;
    }
    let seeds: Vec<u64> = match std::env::var("RINGKV_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("RINGKV_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("RINGKV_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(SWEEP_SEEDS);
            (0..n).map(|i| 0x5ee9_0000 + i).collect()
        }
    };
    let started = std::time::Instant::now();
    let mut simulated = 0.0;
    for pair in seeds.chunks(2) {
        let runs: Vec<_> = pair
            .iter()
            .map(|&seed| {
                std::thread::spawn(move || {
                    (seed, child("randomized_nemesis_sweep_keeps_every_invariant", ("RINGKV_SWEEP_CHILD", seed.to_string()), "SWEEP="))
                })
            })
            .collect();
        for run in runs {
            let (seed, result) = run.join().unwrap();
            match result {
                Ok(line) => simulated += line.split_whitespace().next().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0),
                Err(output) => {
                    panic!("seed {seed} failed:\n{output}\nrerun: {}", rerun("randomized_nemesis_sweep_keeps_every_invariant", seed))
                }
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    eprintln!("swept {} seeds: {simulated:.0} simulated s in {wall:.1} wall s ({:.1}x)", seeds.len(), simulated / wall);
}

/// Two runs of one seed, each in a fresh process (as a rerun from the
/// printed seed is), record the same history. Within one process, later
/// runs start from other per-thread `HashMap` hash keys, which libraries
/// underneath may iterate, so each run gets its own process.
#[test]
fn one_seed_replays_the_same_history() {
    const SEED: u64 = 0x5ee9_d1d1;
    if std::env::var_os("RINGKV_DIGEST_CHILD").is_some() {
        let r = ringkv_tests::sweep::run_sweep(SEED, 10);
        assert!(r.history.ops.len() > 50, "{}", ringkv_tests::sweep::describe(&r));
        println!("DIGEST={}", r.digest);
        return;
    }
    let run =
        || child("one_seed_replays_the_same_history", ("RINGKV_DIGEST_CHILD", "1".into()), "DIGEST=").unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (run(), run());
    assert_eq!(a, b, "the same seed gave different histories");
}
