//! The phi-accrual failure detector (Hayashibara et al., "The φ Accrual
//! Failure Detector", 2004), in the form Akka and Cassandra use. Pure: time
//! comes in as milliseconds.
//!
//! For each peer it keeps a window of recent heartbeat inter-arrival times.
//! φ is how surprising the silence since the last heartbeat is:
//! `φ = -log10(P(a heartbeat arrives later than now))`, with inter-arrival
//! times modelled as normal, with mean `μ + pause` and deviation
//! `max(σ, min_std)`. A peer is down when φ exceeds the threshold (8 by
//! default, Cassandra's).
//!
//! **Detection bound.** φ > 8 means `P < 1e-8`, which for a normal tail is
//! `z > 5.61`. A peer that goes silent is therefore convicted after
//! `μ + pause + 5.61 · σ'` of silence. With the defaults (heartbeats about
//! every `gossip_interval` = 1 s, pause 3 s, σ' at least 250 ms) that is
//! about 1 + 3 + 1.4 ≈ 5.4 s, plus up to one gossip round for the last
//! heartbeat to have spread: under 7 s. Jitter raises σ, which raises the
//! bound instead of causing flapping.

use std::collections::VecDeque;

/// Inter-arrival samples kept per peer.
const WINDOW: usize = 100;

/// One peer's heartbeat history.
#[derive(Clone, Debug)]
pub struct PhiDetector {
    intervals: VecDeque<f64>,
    last_ms: u64,
    min_std_ms: f64,
    pause_ms: f64,
}

impl PhiDetector {
    /// A detector that saw its first heartbeat at `now_ms`. `expected_ms`
    /// seeds the window (the gossip interval), `pause_ms` is the acceptable
    /// heartbeat pause and `min_std_ms` the floor on the deviation.
    pub fn new(now_ms: u64, expected_ms: u64, pause_ms: u64, min_std_ms: u64) -> Self {
        let mut intervals = VecDeque::with_capacity(WINDOW);
        intervals.push_back(expected_ms as f64);
        Self { intervals, last_ms: now_ms, min_std_ms: min_std_ms as f64, pause_ms: pause_ms as f64 }
    }

    /// Records a heartbeat seen at `now_ms`.
    pub fn heartbeat(&mut self, now_ms: u64) {
        let gap = now_ms.saturating_sub(self.last_ms) as f64;
        self.last_ms = now_ms;
        if self.intervals.len() == WINDOW {
            self.intervals.pop_front();
        }
        self.intervals.push_back(gap);
    }

    /// φ at `now_ms`.
    pub fn phi(&self, now_ms: u64) -> f64 {
        let n = self.intervals.len() as f64;
        let mean = self.intervals.iter().sum::<f64>() / n;
        let var = self.intervals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let std = var.sqrt().max(self.min_std_ms);
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64;
        phi(elapsed, mean + self.pause_ms, std)
    }

    /// When the last heartbeat arrived.
    pub fn last_ms(&self) -> u64 {
        self.last_ms
    }
}

/// φ of a silence of `elapsed` for normal(mean, std) arrivals, with the
/// logistic approximation of the normal CDF that Akka uses.
fn phi(elapsed: f64, mean: f64, std: f64) -> f64 {
    let y = (elapsed - mean) / std;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    let p_later = if elapsed > mean { e / (1.0 + e) } else { 1.0 - 1.0 / (1.0 + e) };
    // Cap instead of returning infinity when p_later underflows.
    (-p_later.max(1e-300).log10()).min(300.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(every: u64, beats: u64) -> PhiDetector {
        let mut d = PhiDetector::new(0, every, 3000, 250);
        for i in 1..=beats {
            d.heartbeat(i * every);
        }
        d
    }

    #[test]
    fn phi_rises_with_silence() {
        let d = steady(1000, 20);
        let last = d.last_ms();
        let samples: Vec<f64> = [0, 1000, 3000, 4000, 5000, 6000].iter().map(|s| d.phi(last + s)).collect();
        assert!(samples.windows(2).all(|w| w[0] <= w[1]), "{samples:?}");
        assert!(samples[2] < 1.0, "3 s of silence is within the pause: {samples:?}");
    }

    #[test]
    fn conviction_happens_within_the_documented_bound() {
        let d = steady(1000, 30);
        let last = d.last_ms();
        let convicted = (0..20_000).step_by(100).find(|s| d.phi(last + s) > 8.0).unwrap();
        // μ + pause + 5.61 σ' = 1000 + 3000 + 5.61 × 250 ≈ 5400 ms.
        assert!((5000..=5800).contains(&convicted), "convicted after {convicted} ms of silence");
    }

    #[test]
    fn jitter_widens_the_bound_instead_of_flapping() {
        let mut d = PhiDetector::new(0, 1000, 3000, 250);
        let mut t = 0;
        for i in 0..100u64 {
            t += if i % 2 == 0 { 200 } else { 2500 };
            d.heartbeat(t);
        }
        // The longest gap seen (2.5 s) must be nowhere near conviction.
        assert!(d.phi(t + 2500) < 1.0, "phi {}", d.phi(t + 2500));
    }
}
