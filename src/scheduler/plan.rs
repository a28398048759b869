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

/// Plan placements for every job with pending shards, highest priority first, then oldest
/// job first, as of `now_ms`
/// (shards in retry back-off and excluded TaskManagers are skipped). Jobs that do not fit
/// keep their pending shards; they are planned again when capacity appears.
pub fn plan(
    state: &ClusterState,
    now_ms: u64,
    weights: ScoreWeights,
    limits: PlanLimits,
) -> Vec<Placement> {
    let scorer = TaskManagerScorer::new(state, weights);
    let candidates: Vec<Candidate<'_>> = state
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
    let mut round = Round {
        state,
        now_ms,
        scorer,
        candidates,
        replacements_left: limits.max_replacements,
        placements: Vec::new(),
    };
    if round.candidates.is_empty() {
        return round.placements;
    }
    for job_id in jobs_in_priority_order(state) {
        if round.placements.len() >= limits.max_placements {
            break;
        }
        let budget = limits.max_placements - round.placements.len();
        round.plan_job(job_id, budget);
    }
    round.placements
}

/// The jobs with pending shards, highest priority first, then oldest (smallest id) first.
fn jobs_in_priority_order(state: &ClusterState) -> Vec<JobId> {
    let mut jobs: Vec<JobId> = state.jobs_with_pending_shards.iter().copied().collect();
    if !state.scheduling.is_empty() {
        // Stable: equal priorities keep their id order.
        jobs.sort_by_key(|job| std::cmp::Reverse(state.priority(*job)));
    }
    jobs
}

/// One planning round: the TaskManagers' capacity as the plan uses it up, and the plan.
struct Round<'a> {
    state: &'a ClusterState,
    now_ms: u64,
    scorer: TaskManagerScorer,
    candidates: Vec<Candidate<'a>>,
    replacements_left: usize,
    placements: Vec<Placement>,
}

impl Round<'_> {
    /// Place up to `budget` ready shards of one job.
    fn plan_job(&mut self, job_id: JobId, budget: usize) {
        let state = self.state;
        let Some(job) = state.job(job_id) else { return };
        if job.state.is_terminal() {
            return;
        }
        let need = job.spec.slots_per_shard;
        let eligible: Vec<usize> = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.free >= need)
            .filter(|(_, c)| {
                state
                    .taskmanager(c.id)
                    .is_some_and(|tm| tm.matches(&job.spec.selector))
            })
            .map(|(i, _)| i)
            .collect();
        // Nowhere to go (no TaskManager matches, or none has room): skip the job without
        // looking at its shards, so jobs that wait cost nothing per round.
        if eligible.is_empty() {
            return;
        }
        // Shards of this job already on each TaskManager (for the spread term).
        let mut same_job: HashMap<&str, u32> = HashMap::new();
        for shard in job.shards.iter().filter(|s| s.state.holds_slots()) {
            if let Some(tm) = &shard.taskmanager {
                *same_job.entry(tm.as_str()).or_default() += 1;
            }
        }
        let scorer = &self.scorer;
        let mut heap: BinaryHeap<Ranked> = eligible
            .into_iter()
            .map(|i| {
                let c = &self.candidates[i];
                Ranked {
                    score: scorer.score(
                        c.static_penalty,
                        c.slots,
                        c.free,
                        need,
                        same_job.get(c.id).copied().unwrap_or(0),
                    ),
                    candidate: i,
                }
            })
            .collect();
        let now_ms = self.now_ms;
        let mut planned = 0;
        for shard in job.pending_shards().filter(|s| s.not_before_ms <= now_ms) {
            if planned >= budget {
                break;
            }
            if shard.attempt > 0 {
                // A re-placement: subject to the recovery throttle.
                if self.replacements_left == 0 {
                    continue;
                }
                self.replacements_left -= 1;
            }
            let Some(best) = heap.pop() else { break };
            let c = &mut self.candidates[best.candidate];
            c.free -= need;
            let count = same_job.entry(c.id).or_default();
            *count += 1;
            self.placements.push(Placement {
                job_id,
                shard: shard.index,
                taskmanager: c.id.to_string(),
            });
            planned += 1;
            if c.free >= need {
                heap.push(Ranked {
                    score: scorer.score(c.static_penalty, c.slots, c.free, need, *count),
                    candidate: best.candidate,
                });
            }
        }
    }
}
