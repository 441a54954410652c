//! The report: every checker's verdict and the PACELC measurements, as
//! text, as `report.json`, and as one self-contained `report.html` with
//! SVG charts. Building it ([`Report::build`]) is pure; the run writes it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use ringkv_harness::chart::{render, render_lines, Group, LineChart, Panel};
use serde::Serialize;

use crate::cas_check;
use crate::checkers;
use crate::history::{level_name, History, Kind, NemesisEvent, Op, Outcome, SERIAL_LEVEL};
use crate::linearizability::{self, LevelResult};
use crate::staleness::{self, Bucket};

/// What was run.
#[derive(Clone, Debug, Serialize)]
pub struct Header {
    /// `git describe` of the tree, or "unknown".
    pub commit: String,
    /// The nemesis and workload seed.
    pub seed: u64,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Seconds of workload under faults.
    pub duration_s: u64,
    /// Fault kinds.
    pub nemesis: String,
    /// How partitions were made.
    pub net: String,
    /// Concurrent clients.
    pub clients: usize,
    /// register, set or both.
    pub workload: String,
}

/// How long the replicas took to agree after the final heal.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Convergence {
    /// ms from the final heal until every replica's Merkle roots matched
    /// with no help (hint replay, read repair, the nodes' own anti-entropy
    /// schedule): `None` if not within the wait.
    pub passive_ms: Option<u64>,
    /// How long the passive wait was allowed.
    pub passive_wait_ms: u64,
    /// When the passive wait ran out: ms from the final heal until the roots
    /// matched after an explicit repair on every node.
    pub after_repair_ms: Option<u64>,
}

impl Convergence {
    /// Converged one way or the other.
    pub fn converged(&self) -> bool {
        self.passive_ms.is_some() || self.after_repair_ms.is_some()
    }
}

/// One checker's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What it checks.
    pub name: String,
    /// Passed.
    pub passed: bool,
    /// How many violations.
    pub violations: usize,
    /// The first violations, described with their operations.
    pub examples: Vec<String>,
}

/// Latency of acknowledged operations at one level.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// The level.
    pub level: String,
    /// Acknowledged puts.
    pub puts: u64,
    /// Put p50, ms.
    pub put_p50_ms: f64,
    /// Put p99, ms.
    pub put_p99_ms: f64,
    /// Acknowledged gets.
    pub gets: u64,
    /// Get p50, ms.
    pub get_p50_ms: f64,
    /// Get p99, ms.
    pub get_p99_ms: f64,
}

/// A stretch of the run: healthy, or one fault active.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    /// ms since the start.
    pub start_ms: u64,
    /// ms since the start.
    pub end_ms: u64,
    /// `healthy` or the fault's kind.
    pub fault: String,
    /// The fault, described.
    pub description: String,
    /// Per level: (acknowledged, attempted) operations invoked in it.
    pub per_level: BTreeMap<String, (u64, u64)>,
}

/// Everything the run found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What was run.
    pub header: Header,
    /// Faults and heals.
    pub timeline: Vec<NemesisEvent>,
    /// Operations by outcome.
    pub ops: BTreeMap<String, u64>,
    /// Healthy and faulty stretches with availability per level.
    pub windows: Vec<Window>,
    /// Per level, per [`BIN_MS`] of the run: (bin start ms, acknowledged, attempted).
    pub over_time: BTreeMap<String, Vec<(u64, u64, u64)>>,
    /// Per fault kind (and `healthy`), per level: fraction acknowledged.
    pub availability: BTreeMap<String, BTreeMap<String, f64>>,
    /// Latency per level.
    pub latency: Vec<Latency>,
    /// Per read level: fresh-read fraction against time since the write.
    pub t_visibility: BTreeMap<String, Vec<Bucket>>,
    /// Per read level: reads that missed k acknowledged writes.
    pub k_staleness: BTreeMap<String, BTreeMap<usize, usize>>,
    /// After the final heal.
    pub convergence: Convergence,
    /// Diagnostic: per read level, linearizable key segments.
    pub linearizability: BTreeMap<String, LevelResult>,
    /// The safety checkers.
    pub checks: Vec<Check>,
    /// Checkers passed.
    pub passed: usize,
    /// Checkers failed.
    pub failed: usize,
}

const EXAMPLES: usize = 20;
/// Width of the availability-over-time bins.
pub const BIN_MS: u64 = 2_000;

fn over_time(h: &History, end_ms: u64) -> BTreeMap<String, Vec<(u64, u64, u64)>> {
    let bins = end_ms / BIN_MS + 1;
    let mut out = BTreeMap::new();
    for level in 1..=3 {
        let mut v: Vec<(u64, u64, u64)> = (0..bins).map(|b| (b * BIN_MS, 0, 0)).collect();
        for o in h.ops.iter().filter(|o| o.level == level) {
            let b = &mut v[(o.invoke_ms / BIN_MS) as usize];
            b.1 += u64::from(o.outcome == Outcome::Ok);
            b.2 += 1;
        }
        out.insert(level_name(level).to_string(), v);
    }
    out
}

fn check(name: &str, violations: Vec<String>) -> Check {
    Check {
        name: name.into(),
        passed: violations.is_empty(),
        violations: violations.len(),
        examples: violations.into_iter().take(EXAMPLES).collect(),
    }
}

fn windows(h: &History, end_ms: u64) -> Vec<Window> {
    let mut out = Vec::new();
    let mut healthy_from = 0;
    let mut open: Option<&NemesisEvent> = None;
    for e in &h.nemesis {
        match (e.phase.as_str(), open) {
            ("start", _) => {
                out.push((healthy_from, e.time_ms, "healthy".to_string(), String::new()));
                open = Some(e);
            }
            ("heal", Some(s)) => {
                out.push((s.time_ms, e.time_ms, s.fault.clone(), s.description.clone()));
                healthy_from = e.time_ms;
                open = None;
            }
            _ => {}
        }
    }
    out.push((healthy_from, end_ms.max(healthy_from), "healthy".into(), String::new()));
    out.retain(|w| w.1 > w.0);
    let mut windows: Vec<Window> = out
        .into_iter()
        .map(|(start_ms, end_ms, fault, description)| Window { start_ms, end_ms, fault, description, per_level: BTreeMap::new() })
        .collect();
    for op in &h.ops {
        if let Some(w) = windows.iter_mut().find(|w| op.invoke_ms >= w.start_ms && op.invoke_ms < w.end_ms) {
            let e = w.per_level.entry(level_name(op.level).to_string()).or_default();
            e.0 += u64::from(op.outcome == Outcome::Ok);
            e.1 += 1;
        }
    }
    windows
}

fn latency(h: &History) -> Vec<Latency> {
    let mut out = Vec::new();
    let serial = h.ops.iter().any(|o| o.level == SERIAL_LEVEL);
    for level in (1..=3).chain(serial.then_some(SERIAL_LEVEL)) {
        let hist = |put: bool| {
            let mut hg = Histogram::<u64>::new_with_bounds(1, 600_000, 3).expect("histogram bounds");
            let write = |o: &Op| matches!(o.kind, Kind::Put { .. } | Kind::Cas { .. });
            for o in h.ops.iter().filter(|o| o.level == level && o.outcome == Outcome::Ok && write(o) == put) {
                let _ = hg.record((o.complete_ms - o.invoke_ms).max(1) * 1000);
            }
            hg
        };
        let (p, g) = (hist(true), hist(false));
        let q = |hg: &Histogram<u64>, q: f64| if hg.is_empty() { 0.0 } else { hg.value_at_quantile(q) as f64 / 1000.0 };
        out.push(Latency {
            level: level_name(level).into(),
            puts: p.len(),
            put_p50_ms: q(&p, 0.5),
            put_p99_ms: q(&p, 0.99),
            gets: g.len(),
            get_p50_ms: q(&g, 0.5),
            get_p99_ms: q(&g, 0.99),
        });
    }
    out
}

impl Report {
    /// Judges `h` against the final state `finals` (every key read at ALL
    /// after the final heal) and the measured convergence.
    pub fn build(header: Header, h: &History, finals: &BTreeMap<String, Vec<String>>, convergence: Convergence) -> Self {
        let end_ms = h.ops.iter().map(|o| o.complete_ms).max().unwrap_or(0);
        let windows = windows(h, end_ms);
        let mut totals: BTreeMap<String, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
        for w in &windows {
            for (level, (ok, all)) in &w.per_level {
                let e = totals.entry(w.fault.clone()).or_default().entry(level.clone()).or_default();
                e.0 += ok;
                e.1 += all;
            }
        }
        let availability = totals
            .into_iter()
            .map(|(fault, levels)| (fault, levels.into_iter().map(|(l, (ok, all))| (l, ok as f64 / all.max(1) as f64)).collect()))
            .collect();
        let mut ops = BTreeMap::new();
        for o in &h.ops {
            *ops.entry(format!("{:?}", o.outcome).to_lowercase()).or_insert(0) += 1;
        }
        let reads = staleness::reads(h);
        let name = |l: usize| level_name(l).to_string();
        let mut checks = vec![
            check("no acknowledged QUORUM or ALL write lost after the final heal", checkers::lost_writes(h, finals, 2)),
            check("no value read that was never written", checkers::phantom_reads(h, finals)),
            check("read-your-writes where R + W > N", checkers::read_your_writes(h, 3)),
            check("monotonic reads at QUORUM and ALL", checkers::monotonic_reads(h, 2)),
        ];
        let conv = if convergence.converged() {
            Vec::new()
        } else {
            vec!["the replicas' Merkle roots still differed after the passive wait and an explicit repair".to_string()]
        };
        checks.push(check("replicas converge after the final heal", conv));
        if h.ops.iter().any(|o| o.level == SERIAL_LEVEL) {
            checks.push(check("SERIAL cas and reads are linearizable (hard WGL check)", cas_check::check(h)));
        }
        let passed = checks.iter().filter(|c| c.passed).count();
        Report {
            header,
            timeline: h.nemesis.clone(),
            ops,
            over_time: over_time(h, end_ms),
            windows,
            availability,
            latency: latency(h),
            t_visibility: staleness::t_visibility(&reads).into_iter().map(|(l, b)| (name(l), b)).collect(),
            k_staleness: staleness::k_histogram(&reads).into_iter().map(|(l, k)| (name(l), k)).collect(),
            convergence,
            linearizability: linearizability::check(h).into_iter().map(|(l, r)| (name(l), r)).collect(),
            failed: checks.len() - passed,
            passed,
            checks,
        }
    }

    /// The summary line: `N passed, N failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed)
    }

    /// The report as text, ending with the summary line.
    pub fn text(&self) -> String {
        let mut t = String::new();
        let h = &self.header;
        let _ = writeln!(
            t,
            "jepsen-lite {} · seed {} · {} nodes · {} s · nemesis {} · net {} · {} clients ({})",
            h.commit, h.seed, h.nodes, h.duration_s, h.nemesis, h.net, h.clients, h.workload
        );
        let _ = writeln!(t, "operations: {}", self.ops.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "));
        let _ = writeln!(t, "\navailability (acknowledged / attempted) by fault kind:");
        let _ = writeln!(t, "  {:<10} {:>8} {:>8} {:>8} {:>8}", "", "ONE", "QUORUM", "ALL", "SERIAL");
        for (fault, levels) in &self.availability {
            let cell = |l: &str| levels.get(l).map_or("-".into(), |v| format!("{:.1}%", v * 100.0));
            let _ = writeln!(t, "  {:<10} {:>8} {:>8} {:>8} {:>8}", fault, cell("ONE"), cell("QUORUM"), cell("ALL"), cell("SERIAL"));
        }
        let _ = writeln!(t, "\nlatency of acknowledged operations (ms):");
        let _ = writeln!(t, "  {:<8} {:>9} {:>9} {:>9} {:>9}", "", "put p50", "put p99", "get p50", "get p99");
        for l in &self.latency {
            let _ = writeln!(t, "  {:<8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}", l.level, l.put_p50_ms, l.put_p99_ms, l.get_p50_ms, l.get_p99_ms);
        }
        let _ = writeln!(t, "\nfresh reads by time since the newest acknowledged write (PBS t-visibility):");
        for (level, buckets) in &self.t_visibility {
            let cells: Vec<String> = buckets
                .iter()
                .map(|b| format!("<{}: {:.0}% of {}", bucket_label(b.below_ms), 100.0 * b.fresh as f64 / b.reads as f64, b.reads))
                .collect();
            let _ = writeln!(t, "  {level:<7} {}", cells.join(" · "));
        }
        let _ = writeln!(t, "\nk-staleness (reads that missed k acknowledged writes):");
        for (level, ks) in &self.k_staleness {
            let total: usize = ks.values().sum();
            let cells: Vec<String> = ks.iter().take(6).map(|(k, n)| format!("k={k}: {n}")).collect();
            let _ = writeln!(t, "  {level:<7} {} (of {total})", cells.join(", "));
        }
        let _ = writeln!(t);
        t.push_str(&self.convergence_and_linearizability());
        let _ = writeln!(t, "\ncheckers:");
        for ch in &self.checks {
            let _ = writeln!(t, "  [{}] {}", if ch.passed { "pass" } else { "FAIL" }, ch.name);
            for e in ch.examples.iter().take(5) {
                let _ = writeln!(t, "         {e}");
            }
            if ch.violations > 5 {
                let _ = writeln!(t, "         ... {} violations in all (report.json lists {})", ch.violations, ch.examples.len());
            }
        }
        let _ = writeln!(t, "\n{}", self.summary());
        t
    }

    /// The convergence line and the linearizability table, as text.
    fn convergence_and_linearizability(&self) -> String {
        let c = &self.convergence;
        let conv = match (c.passive_ms, c.after_repair_ms) {
            (Some(ms), _) => {
                format!("{:.1} s after the final heal, passively (hints, read repair, scheduled anti-entropy)", ms as f64 / 1000.0)
            }
            (None, Some(ms)) => format!(
                "not within {:.0} s passively; {:.1} s after the heal with an explicit repair",
                c.passive_wait_ms as f64 / 1000.0,
                ms as f64 / 1000.0
            ),
            (None, None) => "did not converge".into(),
        };
        let mut t = format!("convergence: {conv}\n");
        let _ = writeln!(t, "\nlinearizability per read level (diagnostic; key segments linearizable / violating / unknown):");
        for (level, r) in &self.linearizability {
            let _ = writeln!(t, "  {level:<7} {} / {} / {}", r.linearizable, r.violations, r.unknown);
        }
        t
    }

    /// The report as one self-contained HTML page with inline SVG charts.
    pub fn html(&self) -> String {
        let mut body = String::new();
        let h = &self.header;
        let _ = write!(
            body,
            "<h1>jepsen-lite report</h1><p class=\"summary {}\">{}</p><table><tr><th>commit</th><td>{}</td></tr><tr><th>seed</th><td>{}</td></tr><tr><th>nodes</th><td>{}</td></tr><tr><th>duration</th><td>{} s</td></tr><tr><th>nemesis</th><td>{}</td></tr><tr><th>net</th><td>{}</td></tr><tr><th>clients</th><td>{} ({})</td></tr><tr><th>operations</th><td>{}</td></tr></table>",
            if self.failed == 0 { "ok" } else { "bad" },
            esc(&self.summary()),
            esc(&h.commit),
            h.seed,
            h.nodes,
            h.duration_s,
            esc(&h.nemesis),
            esc(&h.net),
            h.clients,
            esc(&h.workload),
            esc(&self.ops.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "))
        );
        body.push_str("<h2>Checkers</h2><ul>");
        for c in &self.checks {
            let _ = write!(
                body,
                "<li class=\"{}\"><b>{}</b> {}",
                if c.passed { "ok" } else { "bad" },
                if c.passed { "pass" } else { "FAIL" },
                esc(&c.name)
            );
            if !c.passed {
                let _ = write!(body, " ({} violations)<ul>", c.violations);
                for e in &c.examples {
                    let _ = write!(body, "<li><code>{}</code></li>", esc(e));
                }
                body.push_str("</ul>");
            }
            body.push_str("</li>");
        }
        body.push_str("</ul><h2>Availability over time</h2>");
        body.push_str(&self.availability_chart());
        body.push_str("<h2>Availability per fault kind</h2>");
        body.push_str(&self.availability_bars());
        body.push_str("<h2>Latency per level</h2>");
        body.push_str(&self.latency_bars());
        body.push_str("<h2>Fresh reads against time since the write (PBS t-visibility)</h2>");
        body.push_str(&self.t_visibility_chart());
        body.push_str("<h2>k-staleness</h2>");
        body.push_str(&self.k_staleness_bars());
        body.push_str("<h2>Convergence and linearizability</h2><pre>");
        body.push_str(&esc(&self.convergence_and_linearizability()));
        body.push_str("</pre>");
        for (level, r) in &self.linearizability {
            for e in &r.examples {
                let _ = write!(body, "<p><b>{level}</b> not linearizable: <code>{}</code></p>", esc(e));
            }
        }
        body.push_str("<h2>Nemesis timeline</h2><table><tr><th>ms</th><th>phase</th><th>fault</th><th>what</th></tr>");
        for e in &self.timeline {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e.time_ms,
                esc(&e.phase),
                esc(&e.fault),
                esc(&e.description)
            );
        }
        body.push_str("</table>");
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>jepsen-lite: {}</title><style>body{{font-family:sans-serif;max-width:800px;margin:2em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}.ok{{color:#2a7}}.bad{{color:#c33}}.summary{{font-size:1.4em;font-weight:bold}}code{{font-size:0.85em}}</style></head><body>{body}</body></html>\n",
            esc(&self.summary())
        )
    }

    fn availability_chart(&self) -> String {
        let end = self.windows.last().map_or(0, |w| w.end_ms);
        let series = in_level_order(&self.over_time)
            .into_iter()
            .map(|(level, bins)| {
                let points =
                    bins.iter().filter(|b| b.2 > 0).map(|(start, ok, all)| (*start as f64 / 1000.0, *ok as f64 / *all as f64)).collect();
                (level.clone(), points)
            })
            .collect();
        render_lines(&LineChart {
            title: format!("Acknowledged fraction of operations per {} s, faults shaded", BIN_MS / 1000),
            x_ticks: (0..=end / 10_000).map(|i| ((i * 10) as f64, format!("{} s", i * 10))).collect(),
            x_max: end as f64 / 1000.0,
            y_min: 0.0,
            y_max: 1.0,
            y_label: "acknowledged".into(),
            shade: self
                .windows
                .iter()
                .filter(|w| w.fault != "healthy")
                .map(|w| (w.start_ms as f64 / 1000.0, w.end_ms as f64 / 1000.0, w.description.clone()))
                .collect(),
            series,
        })
    }

    fn availability_bars(&self) -> String {
        let groups = self
            .availability
            .iter()
            .map(|(fault, levels)| Group {
                label: fault.clone(),
                values: ["ONE", "QUORUM", "ALL"].iter().map(|l| 100.0 * levels.get(*l).copied().unwrap_or(0.0)).collect(),
            })
            .collect();
        render(
            "Availability",
            &[Panel {
                title: "acknowledged / attempted".into(),
                unit: "%".into(),
                series: vec!["ONE".into(), "QUORUM".into(), "ALL".into()],
                groups,
            }],
        )
    }

    fn latency_bars(&self) -> String {
        let panel = |title: &str, f: &dyn Fn(&Latency) -> (f64, f64)| Panel {
            title: title.into(),
            unit: "ms".into(),
            series: vec!["p50".into(), "p99".into()],
            groups: self.latency.iter().map(|l| Group { label: l.level.clone(), values: vec![f(l).0, f(l).1] }).collect(),
        };
        render("Latency", &[panel("put", &|l| (l.put_p50_ms, l.put_p99_ms)), panel("get", &|l| (l.get_p50_ms, l.get_p99_ms))])
    }

    fn t_visibility_chart(&self) -> String {
        let x_ticks = staleness::BUCKETS_MS.iter().enumerate().map(|(i, b)| (i as f64, format!("<{}", bucket_label(*b)))).collect();
        let series = in_level_order(&self.t_visibility)
            .into_iter()
            .map(|(level, buckets)| {
                let points = buckets
                    .iter()
                    .map(|b| {
                        let i = staleness::BUCKETS_MS.iter().position(|x| *x == b.below_ms).unwrap_or(0);
                        (i as f64, b.fresh as f64 / b.reads as f64)
                    })
                    .collect();
                (level.clone(), points)
            })
            .collect();
        // Zoom in: fresh fractions are close to 1, and the gaps are the point.
        let lowest = self.t_visibility.values().flatten().map(|b| b.fresh as f64 / b.reads as f64).fold(1.0, f64::min);
        render_lines(&LineChart {
            title: "P(fresh read) by time since the newest acknowledged write".into(),
            x_ticks,
            x_max: (staleness::BUCKETS_MS.len() - 1) as f64,
            y_min: ((lowest - 0.02) * 20.0).floor().max(0.0) / 20.0,
            y_max: 1.0,
            y_label: "P(fresh)".into(),
            shade: Vec::new(),
            series,
        })
    }

    fn k_staleness_bars(&self) -> String {
        // k = 0 (fresh) dwarfs the rest; the text report has it.
        let labels = ["1", "2", "3", "4", "5+"];
        let levels: Vec<&String> = in_level_order(&self.k_staleness).into_iter().map(|(l, _)| l).collect();
        let groups = labels
            .iter()
            .enumerate()
            .map(|(i, label)| Group {
                label: format!("k={label}"),
                values: levels
                    .iter()
                    .map(|l| {
                        let ks = &self.k_staleness[*l];
                        let total: usize = ks.values().sum();
                        let k = i + 1;
                        let n: usize = ks.iter().filter(|(x, _)| if k == 5 { **x >= 5 } else { **x == k }).map(|(_, n)| n).sum();
                        100.0 * n as f64 / total.max(1) as f64
                    })
                    .collect(),
            })
            .collect();
        render(
            "k-staleness",
            &[Panel {
                title: "reads that missed k acknowledged writes, % of reads".into(),
                unit: "%".into(),
                series: levels.iter().map(|l| l.to_string()).collect(),
                groups,
            }],
        )
    }
}

/// Entries keyed by level name, ONE first, so every chart colours a level alike.
fn in_level_order<V>(m: &BTreeMap<String, V>) -> Vec<(&String, &V)> {
    let rank = |l: &str| ["ONE", "QUORUM", "ALL"].iter().position(|x| *x == l).unwrap_or(3);
    let mut v: Vec<(&String, &V)> = m.iter().collect();
    v.sort_by_key(|(l, _)| rank(l));
    v
}

fn bucket_label(below_ms: u64) -> String {
    match below_ms {
        u64::MAX => "∞".into(),
        ms if ms >= 1000 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Detail, Op};

    fn op(key: &str, kind: Kind, level: usize, t: (u64, u64), outcome: Outcome) -> Op {
        Op { client: 0, key: key.into(), kind, level, invoke_ms: t.0, complete_ms: t.1, outcome, detail: Detail::default() }
    }

    fn header() -> Header {
        Header {
            commit: "test".into(),
            seed: 1,
            nodes: 3,
            duration_s: 1,
            nemesis: "kill".into(),
            net: "fault".into(),
            clients: 1,
            workload: "set".into(),
        }
    }

    #[test]
    fn a_lost_write_fails_the_report_and_windows_split_on_faults() {
        let ops = vec![
            op("s-1", Kind::Put { value: "c0-1".into() }, 2, (0, 5), Outcome::Ok),
            op("s-2", Kind::Put { value: "c0-2".into() }, 2, (150, 160), Outcome::Fail),
            op("s-1", Kind::Get { values: vec!["c0-1".into()] }, 1, (300, 301), Outcome::Ok),
        ];
        let nemesis = vec![
            NemesisEvent { time_ms: 100, phase: "start".into(), fault: "kill".into(), description: "kill -9 n2".into() },
            NemesisEvent { time_ms: 200, phase: "heal".into(), fault: "kill".into(), description: "restart n2".into() },
        ];
        let h = History { ops, nemesis };
        let conv = Convergence { passive_ms: Some(50), passive_wait_ms: 1000, after_repair_ms: None };
        let good = Report::build(header(), &h, &BTreeMap::from([("s-1".to_string(), vec!["c0-1".to_string()])]), conv.clone());
        assert_eq!(good.summary(), "5 passed, 0 failed");
        assert_eq!(good.windows.iter().map(|w| w.fault.as_str()).collect::<Vec<_>>(), ["healthy", "kill", "healthy"]);
        assert_eq!(good.availability["kill"]["QUORUM"], 0.0);
        assert_eq!(good.availability["healthy"]["QUORUM"], 1.0);
        let bad = Report::build(header(), &h, &BTreeMap::new(), conv);
        assert_eq!(bad.summary(), "4 passed, 1 failed");
        assert!(bad.text().ends_with("4 passed, 1 failed\n"));
        let html = bad.html();
        assert!(html.contains("FAIL") && html.contains("acknowledged write c0-1 to s-1"), "the violation is in the page");
        assert!(html.matches("<svg").count() >= 5, "every chart is inline");
        assert!(!html.contains("<script"), "no JavaScript");
    }
}
