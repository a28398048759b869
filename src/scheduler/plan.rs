//! Building a placement plan for the jobs that wait for capacity.

use super::score::{ScoreWeights, TaskManagerScorer};
use crate::domain::{ClusterState, JobId};
use crate::fsm::Placement;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// Bounds on one plan, so that one Raft entry stays small and one round stays short.
#[derive(Debug, Clone, Copy)]
pub struct PlanLimits {
    pub max_placements: usize,
    /// Most re-placements (shards that ran before: retries and recoveries) in this plan, so
    /// that recovery from a large loss is spread over time.
    pub max_replacements: usize,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits {
            max_placements: 20_000,
            max_replacements: usize::MAX,
        }
    }
}

/// A TaskManager as the plan sees it: capacity left after the placements planned so far.
struct Candidate<'a> {
    id: &'a str,
    slots: u32,
    free: u32,
    static_penalty: f64,
}

/// Heap entry: highest score first, then smallest TaskManager id (lower candidate index,
/// since candidates are in id order).
struct Ranked {
    score: f64,
    candidate: usize,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.candidate.cmp(&self.candidate))
    }
}

/// Plan placements for every job with pending shards, oldest job first, as of `now_ms`
/// (shards in retry back-off and excluded TaskManagers are skipped). Jobs that do not fit
/// keep their pending shards; they are planned again when capacity appears.
pub fn plan(
    state: &ClusterState,
    now_ms: u64,
    weights: ScoreWeights,
    limits: PlanLimits,
) -> Vec<Placement> {
    let scorer = TaskManagerScorer::new(state, weights);
    let mut candidates: Vec<Candidate<'_>> = state
        .taskmanagers
        .values()
        .filter(|tm| tm.accepts_placements(now_ms) && tm.free_slots() > 0)
        .map(|tm| Candidate {
            id: &tm.id,
            slots: tm.slots,
            free: tm.free_slots(),
            static_penalty: scorer.static_penalty(tm),
        })
        .collect();
    let mut placements = Vec::new();
    if candidates.is_empty() {
        return placements;
    }
    let mut replacements_left = limits.max_replacements;
    for job_id in &state.jobs_with_pending_shards {
        if placements.len() >= limits.max_placements {
            break;
        }
        let budget = limits.max_placements - placements.len();
        plan_job(
            state,
            *job_id,
            now_ms,
            &scorer,
            &mut candidates,
            budget,
            &mut replacements_left,
            &mut placements,
        );
    }
    placements
}

fn plan_job(
    state: &ClusterState,
    job_id: JobId,
    now_ms: u64,
    scorer: &TaskManagerScorer,
    candidates: &mut [Candidate<'_>],
    budget: usize,
    replacements_left: &mut usize,
    out: &mut Vec<Placement>,
) {
    let Some(job) = state.job(job_id) else { return };
    if job.state.is_terminal() {
        return;
    }
    let need = job.spec.slots_per_shard;
    // Shards of this job already on each TaskManager (for the spread term).
    let mut same_job: HashMap<&str, u32> = HashMap::new();
    for shard in job.shards.iter().filter(|s| s.state.holds_slots()) {
        if let Some(tm) = &shard.taskmanager {
            *same_job.entry(tm.as_str()).or_default() += 1;
        }
    }
    let mut heap: BinaryHeap<Ranked> = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.free >= need)
        .filter(|(_, c)| {
            state
                .taskmanager(c.id)
                .is_some_and(|tm| tm.matches(&job.spec.selector))
        })
        .map(|(i, c)| Ranked {
            score: scorer.score(
                c.static_penalty,
                c.slots,
                c.free,
                need,
                same_job.get(c.id).copied().unwrap_or(0),
            ),
            candidate: i,
        })
        .collect();
    let ready = job.pending_shards().filter(|s| s.not_before_ms <= now_ms);
    for shard in ready.take(budget) {
        let is_replacement = shard.attempt > 0;
        if is_replacement {
            if *replacements_left == 0 {
                continue;
            }
            *replacements_left -= 1;
        }
        let Some(best) = heap.pop() else { break };
        let c = &mut candidates[best.candidate];
        c.free -= need;
        let count = same_job.entry(c.id).or_default();
        *count += 1;
        out.push(Placement {
            job_id,
            shard: shard.index,
            taskmanager: c.id.to_string(),
        });
        if c.free >= need {
            heap.push(Ranked {
                score: scorer.score(c.static_penalty, c.slots, c.free, need, *count),
                candidate: best.candidate,
            });
        }
    }
}
