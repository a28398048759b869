//! Checkers of the scheduling rules over a run's record: no job ran before a job it waits
//! for (`--after`) had finished, no gang ran in part, no tenant ran past its quota. They
//! read the shards' own records of what ran, and the final state for what was asked.

use super::checker::{capped, Verdict};
use super::executions::{max_concurrent, Execution};
use crate::pb::api::JobStatus;
use std::collections::{BTreeMap, BTreeSet};

/// Every run of a job with `--after` started after every run of each of its dependencies
/// ended, and only once they all finished; a job whose dependency did not finish never ran
/// and ended failed.
pub fn dependencies(runs: &[Execution], final_jobs: &[JobStatus]) -> Verdict {
    let by_id: BTreeMap<&str, &JobStatus> =
        final_jobs.iter().map(|j| (j.job_id.as_str(), j)).collect();
    let mut runs_of: BTreeMap<&str, Vec<&Execution>> = BTreeMap::new();
    for run in runs {
        runs_of.entry(run.job.as_str()).or_default().push(run);
    }
    let mut violations = Vec::new();
    let mut checked = 0;
    for job in final_jobs.iter().filter(|j| !j.after.is_empty()) {
        checked += 1;
        let own = runs_of.get(job.job_id.as_str()).map_or(&[][..], |r| r);
        let first_start = own.iter().map(|r| r.start_ms).min();
        for dependency in &job.after {
            let Some(dep) = by_id.get(dependency.as_str()) else {
                continue; // forgotten by retention: it had ended
            };
            if dep.state != "finished" {
                if let Some(start) = first_start {
                    violations.push(format!(
                        "{} ran at {start} although {dependency}, named in --after, ended {}",
                        job.job_id, dep.state
                    ));
                }
                if job.state != "failed" {
                    violations.push(format!(
                        "{} is {} although {dependency}, named in --after, ended {}",
                        job.job_id, job.state, dep.state
                    ));
                }
                continue;
            }
            let dep_end = runs_of
                .get(dependency.as_str())
                .into_iter()
                .flatten()
                .map(|r| r.last_ms)
                .max();
            if let (Some(start), Some(end)) = (first_start, dep_end) {
                if start < end {
                    violations.push(format!(
                        "{} started at {start}, before {dependency} (--after) ran until {end}",
                        job.job_id
                    ));
                }
            }
        }
    }
    Verdict {
        name: "dependencies".into(),
        checked: format!("{checked} jobs with --after against {} runs", runs.len()),
        violations: capped(violations),
    }
}

/// Every gang ran whole: runs of one gang that overlapped in time came from one placement
/// (one epoch), which a partial placement completed later, or a restart that did not wait
/// for the old runs to stop, would break; and a finished gang's shards all finished in one
/// placement.
pub fn gangs(runs: &[Execution], final_jobs: &[JobStatus]) -> Verdict {
    let mut violations = Vec::new();
    let mut checked = 0;
    for job in final_jobs.iter().filter(|j| j.gang) {
        checked += 1;
        if job.state == "finished" {
            let epochs: BTreeSet<u64> = job.shards.iter().map(|s| s.epoch).collect();
            if epochs.len() != 1 {
                violations.push(format!(
                    "gang {} finished with shards from {} placements: {epochs:?}",
                    job.job_id,
                    epochs.len()
                ));
            }
        }
        let mut own: Vec<&Execution> = runs.iter().filter(|r| r.job == job.job_id).collect();
        own.sort_by_key(|r| r.start_ms);
        for (i, a) in own.iter().enumerate() {
            for b in own[i + 1..].iter().take_while(|b| b.start_ms <= a.last_ms) {
                if a.epoch != b.epoch {
                    violations.push(format!(
                        "gang {}: shard {} of placement {} [{}..{}] ran beside shard {} of \
                         placement {} [{}..{}]",
                        job.job_id,
                        a.shard,
                        a.epoch,
                        a.start_ms,
                        a.last_ms,
                        b.shard,
                        b.epoch,
                        b.start_ms,
                        b.last_ms
                    ));
                }
            }
        }
    }
    Verdict {
        name: "gangs".into(),
        checked: format!("{checked} gangs against {} runs", runs.len()),
        violations: capped(violations),
    }
}

/// No tenant with a quota ran more one-slot shards at once than its quota.
pub fn quotas(runs: &[Execution], final_jobs: &[JobStatus], quotas: &[(&str, u64)]) -> Verdict {
    let mut violations = Vec::new();
    for (tenant, limit) in quotas {
        let jobs: BTreeSet<&str> = final_jobs
            .iter()
            .filter(|j| j.tenant == *tenant)
            .map(|j| j.job_id.as_str())
            .collect();
        let most = max_concurrent(runs.iter().filter(|r| jobs.contains(r.job.as_str())));
        if most as u64 > *limit {
            violations.push(format!(
                "tenant {tenant} ran {most} shards at once; its quota is {limit} slots"
            ));
        }
    }
    Verdict {
        name: "quotas".into(),
        checked: format!("{} tenants with quotas", quotas.len()),
        violations,
    }
}

/// No TaskManager ran more shards at once than it has slots (every chaos job takes one slot
/// a shard), counting a stopped run until its last record: a run placed into the room of one
/// still stopping must wait for it. A run's last record comes before its process is killed,
/// so a newcomer may start at that same millisecond without any overlap.
pub fn capacity(runs: &[Execution], slots_of: &BTreeMap<String, u32>) -> Verdict {
    let mut violations = Vec::new();
    for (tm, slots) in slots_of {
        let mut edges: Vec<(u64, i64)> = Vec::new();
        for run in runs.iter().filter(|r| &r.taskmanager == tm) {
            edges.push((run.start_ms, 1));
            edges.push((run.last_ms, -1));
        }
        // Ends sort before starts at the same instant.
        edges.sort();
        let (mut now, mut most, mut at) = (0i64, 0i64, 0u64);
        for (time, step) in edges {
            now += step;
            if now > most {
                most = now;
                at = time;
            }
        }
        if most > i64::from(*slots) {
            violations.push(format!(
                "{tm} ran {most} shards at once (at {at} ms); it has {slots} slots"
            ));
        }
    }
    Verdict {
        name: "capacity".into(),
        checked: format!("{} TaskManagers' slots at every moment", slots_of.len()),
        violations: capped(violations),
    }
}
