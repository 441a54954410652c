//! The cost receipt every response carries (DESIGN §2, "Receipt"): who
//! coordinated, at which level, how many answers were needed and came, and
//! per node whether it answered, how fast, whether it was stale, repaired,
//! hinted or stood in for another. Pure: the paths fill it in as answers
//! arrive.

use ringkv_proto::v1 as pb;

use crate::quorum::Level;

/// A fresh receipt listing `nodes`; the ones that are down are marked as
/// not asked.
pub(crate) fn new(me: &str, level: Level, required: usize, nodes: &[String], is_up: impl Fn(&str) -> bool) -> pb::Receipt {
    pb::Receipt {
        coordinator: me.to_string(),
        consistency: level.to_proto() as i32,
        required: required as u32,
        replicas: nodes
            .iter()
            .map(|id| pb::ReplicaReport {
                node: id.clone(),
                error: if is_up(id) { String::new() } else { "down: not asked".into() },
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The receipt's report for `id`, added if this is the first word of it
/// (a stand-in recruited mid-write).
pub(crate) fn report_for<'a>(receipt: &'a mut pb::Receipt, id: &str) -> &'a mut pb::ReplicaReport {
    let i = match receipt.replicas.iter().position(|r| r.node == id) {
        Some(i) => i,
        None => {
            receipt.replicas.push(pb::ReplicaReport { node: id.to_string(), ..Default::default() });
            receipt.replicas.len() - 1
        }
    };
    &mut receipt.replicas[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_receipt_lists_every_node_and_marks_the_down_ones_unasked() {
        let nodes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let r = new("a", Level::Quorum, 2, &nodes, |id| id != "b");
        assert_eq!((r.coordinator.as_str(), r.required, r.acked), ("a", 2, 0));
        assert_eq!(r.consistency, Level::Quorum.to_proto() as i32);
        let errors: Vec<&str> = r.replicas.iter().map(|p| p.error.as_str()).collect();
        assert_eq!(errors, ["", "down: not asked", ""]);
        assert!(r.replicas.iter().all(|p| !p.answered && !p.hinted && p.stand_in_for.is_empty()));
    }

    #[test]
    fn report_for_finds_a_listed_node_and_adds_an_unlisted_one_once() {
        let mut r = new("a", Level::One, 1, &["a".to_string()], |_| true);
        report_for(&mut r, "a").answered = true;
        report_for(&mut r, "d").stand_in_for = "b".into();
        report_for(&mut r, "d").latency_us = 7;
        let nodes: Vec<(&str, bool, &str, u64)> =
            r.replicas.iter().map(|p| (p.node.as_str(), p.answered, p.stand_in_for.as_str(), p.latency_us)).collect();
        assert_eq!(nodes, [("a", true, "", 0), ("d", false, "b", 7)]);
    }
}
