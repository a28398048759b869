//! Checkers over a run's record. Each says what it checked and lists counter-examples.

use super::executions::{overlaps, Execution};
use super::history::{Event, Outcome};
use crate::pb::api::JobStatus;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub name: String,
    pub checked: String,
    pub violations: Vec<String>,
}

impl Verdict {
    fn new(name: &str, checked: String, violations: Vec<String>) -> Self {
        Verdict {
            name: name.to_string(),
            checked,
            violations,
        }
    }

    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Keep reports readable: the first few counter-examples and how many more.
pub fn capped(mut v: Vec<String>) -> Vec<String> {
    const MAX: usize = 20;
    if v.len() > MAX {
        let more = v.len() - MAX;
        v.truncate(MAX);
        v.push(format!("... and {more} more"));
    }
    v
}

/// No acknowledged submission is lost; no key produced two jobs; every acknowledgement of a
/// key named the same job; no submission that definitely failed appeared.
pub fn submissions(events: &[Event], final_jobs: &[JobStatus]) -> Verdict {
    let by_id: BTreeMap<&str, &JobStatus> =
        final_jobs.iter().map(|j| (j.job_id.as_str(), j)).collect();
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    // The schedule's jobs share its name (and lose the note of their schedule when a
    // downgrade passes): the `periodic` checker holds them to one per time.
    let submitted = |j: &&JobStatus| j.name != super::periodic_checker::SCHEDULE;
    for j in final_jobs.iter().filter(submitted) {
        by_name
            .entry(j.name.as_str())
            .or_default()
            .push(j.job_id.as_str());
    }
    let mut violations = Vec::new();
    let mut acked: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let (mut ok, mut unknown, mut failed) = (0, 0, 0);
    for e in events {
        let Event::Op {
            op,
            key,
            outcome,
            job_id,
            ..
        } = e
        else {
            continue;
        };
        match (op.as_str(), outcome) {
            ("submit", Outcome::Ok) => {
                ok += 1;
                if let Some(id) = job_id {
                    acked.entry(key.as_str()).or_default().insert(id.as_str());
                    if !by_id.contains_key(id.as_str()) {
                        violations.push(format!("acknowledged submission {key} → {id} is missing"));
                    }
                }
            }
            ("submit", Outcome::Unknown) => unknown += 1,
            ("submit", Outcome::Fail) => failed += 1,
            ("invalid_submit", Outcome::Ok) => {
                violations.push(format!("invalid submission {key} was accepted"));
            }
            ("invalid_submit", _) if by_name.contains_key(key.as_str()) => {
                violations.push(format!("refused submission {key} appeared as a job"));
            }
            _ => {}
        }
    }
    for (key, ids) in &acked {
        if ids.len() > 1 {
            violations.push(format!(
                "key {key} was acknowledged with different jobs {ids:?}"
            ));
        }
    }
    for (name, ids) in &by_name {
        if ids.len() > 1 {
            violations.push(format!(
                "idempotency key {name} produced {} jobs: {ids:?}",
                ids.len()
            ));
        }
    }
    Verdict::new(
        "submissions",
        format!(
            "{ok} acknowledged, {unknown} unknown, {failed} refused submissions against {} jobs in the final state",
            final_jobs.len()
        ),
        capped(violations),
    )
}

/// No shard ran on two TaskManagers at overlapping times, and every finished shard's epoch in
/// the final state is one that really ran to its end there (no stale report counted).
pub fn executions(runs: &[Execution], final_jobs: &[JobStatus]) -> Verdict {
    let mut violations: Vec<String> = overlaps(runs)
        .into_iter()
        .map(|(a, b)| {
            format!(
                "{} shard {} ran twice at once: epoch {} on {} [{}..{}] and epoch {} on {} [{}..{}]",
                a.job, a.shard, a.epoch, a.taskmanager, a.start_ms, a.last_ms, b.epoch, b.taskmanager, b.start_ms, b.last_ms
            )
        })
        .collect();
    let ended: BTreeSet<(&str, u32, u64, &str)> = runs
        .iter()
        .filter(|e| e.ended)
        .map(|e| (e.job.as_str(), e.shard, e.epoch, e.taskmanager.as_str()))
        .collect();
    let mut finished = 0;
    for job in final_jobs {
        for s in job.shards.iter().filter(|s| s.state == "finished") {
            finished += 1;
            let tm = s.taskmanager.as_deref().unwrap_or("");
            if !ended.contains(&(job.job_id.as_str(), s.index, s.epoch, tm)) {
                violations.push(format!(
                    "{} shard {} is finished at epoch {} on {tm}, but no such run ended",
                    job.job_id, s.index, s.epoch
                ));
            }
        }
    }
    Verdict::new(
        "executions",
        format!("{} recorded runs, {finished} finished shards", runs.len()),
        capped(violations),
    )
}

/// At most one leader per term, and no replica's commit index goes backwards within one
/// process lifetime (Raft's commit index is volatile: a restarted process starts over), and
/// the cluster's highest commit index never goes backwards.
pub fn leaders_and_commits(events: &[Event]) -> Verdict {
    let mut leaders: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut last_commit: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut cluster_commit = 0u64;
    let mut violations = Vec::new();
    let mut samples = 0;
    for e in events {
        let Event::Sample {
            at_ns,
            replica,
            incarnation,
            term,
            state,
            committed,
            ..
        } = e
        else {
            continue;
        };
        samples += 1;
        if state == "leader" {
            leaders.entry(*term).or_default().insert(*replica);
        }
        let key = (*replica, *incarnation);
        if let Some(prev) = last_commit.get(&key) {
            if committed < prev {
                violations.push(format!(
                    "replica {replica} (incarnation {incarnation}) commit index went back from {prev} to {committed} at {} ms",
                    at_ns / 1_000_000
                ));
            }
        }
        last_commit.insert(key, *committed);
        cluster_commit = cluster_commit.max(*committed);
    }
    for (term, who) in &leaders {
        if who.len() > 1 {
            violations.push(format!("term {term} had {} leaders: {who:?}", who.len()));
        }
    }
    Verdict::new(
        "leaders-and-commits",
        format!(
            "{samples} status samples over {} terms; highest commit index {cluster_commit}",
            leaders.len()
        ),
        capped(violations),
    )
}

/// Failover as clients felt it: from each leader fault to the first acknowledged submission
/// sent after it.
pub fn failovers(events: &[Event]) -> Vec<u64> {
    let mut starts = Vec::new();
    for e in events {
        if let Event::Fault {
            at_ns,
            fault,
            phase,
            ..
        } = e
        {
            if phase == "start"
                && matches!(
                    fault.as_str(),
                    "kill-leader" | "pause-leader" | "isolate-leader" | "kill-all"
                )
            {
                starts.push(*at_ns);
            }
        }
    }
    let mut acks: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Op {
                op,
                outcome: Outcome::Ok,
                invoke_ns,
                complete_ns,
                ..
            } if op == "submit" => Some((*invoke_ns, *complete_ns)),
            _ => None,
        })
        .collect();
    acks.sort();
    starts
        .into_iter()
        .filter_map(|t| {
            acks.iter()
                .filter(|(invoked, _)| *invoked >= t)
                .map(|(_, done)| done - t)
                .min()
        })
        .collect()
}
