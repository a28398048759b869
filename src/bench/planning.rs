//! The cost of one planning turn on a large state: the leader's placement plan and its
//! preemption search, timed in this process on a state built by applying real commands.
//!
//! Unlike the other measurements this one runs the pure scheduler directly, with no replica:
//! a turn is CPU work on a state the leader already holds, and what it costs is the figure
//! (a replica adds only the proposal of the plan, which the submission figures measure).
//!
//! The state: tenants with quotas and weights, jobs at several priorities (so preemption is
//! on), some gangs and some jobs that wait for others (`--after`), every slot taken by a
//! running shard but for a few empty TaskManagers, and the rest of the shards pending.

use crate::domain::{Admission, ClusterState, JobId, JobScheduling, JobSpec, Labels};
use crate::fsm::{apply, Command, Placement, Response, SlotLimit};
use crate::scheduler::preemption::plan_preemption;
use crate::scheduler::{plan, PlanLimits, ScoreWeights};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct PlanningOptions {
    /// Shards held in the state, running and pending.
    pub shards: u64,
    /// Of which running (they fill every TaskManager but `spare_taskmanagers`).
    pub running: u64,
    pub shards_per_job: u32,
    pub slots_per_taskmanager: u32,
    /// Empty TaskManagers, so that the turn also places shards.
    pub spare_taskmanagers: u32,
    pub tenants: u32,
    /// Turns timed (the state does not change between them).
    pub turns: usize,
}

impl Default for PlanningOptions {
    fn default() -> Self {
        PlanningOptions {
            shards: 1_000_000,
            running: 100_000,
            shards_per_job: 100,
            slots_per_taskmanager: 100,
            spare_taskmanagers: 10,
            tenants: 8,
            turns: 11,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanningResult {
    pub shards: u64,
    pub running: u64,
    pub jobs: u64,
    pub taskmanagers: u64,
    /// Building the state by applying commands.
    pub build_seconds: f64,
    /// A turn with room: the placement plan (it places `placements` shards).
    pub plan: super::Summary,
    /// A turn on the full cluster: a plan that finds no room, then the preemption search.
    pub full_turn: super::Summary,
    pub preemption: super::Summary,
    pub placements: usize,
    /// Whether the search chose a preemption.
    pub preempts: bool,
}

fn spec(shards: u32) -> JobSpec {
    JobSpec {
        command: "/bin/true".to_string(),
        args: Vec::new(),
        env: Default::default(),
        shard_count: shards,
        slots_per_shard: 1,
        max_attempts: 3,
        selector: Labels::new(),
    }
}

/// The state described in the module doc, and the number of TaskManagers in it.
pub fn build_state(o: &PlanningOptions) -> Result<(ClusterState, u64), String> {
    let mut state = ClusterState::default();
    let mut index = 0u64;
    let mut next = |state: &mut ClusterState, command: Command| {
        index += 1;
        (index, apply(state, index, command))
    };
    let busy = o
        .running
        .div_ceil(u64::from(o.slots_per_taskmanager.max(1)));
    let taskmanagers = busy + u64::from(o.spare_taskmanagers);
    for t in 0..taskmanagers {
        let (_, response) = next(
            &mut state,
            Command::RegisterTaskManager {
                incarnation: 0,
                successor_of: None,
                replaces: None,
                id: format!("tm-{t:06}"),
                addr: format!("10.0.{}.{}:7001", t / 250, t % 250),
                slots: o.slots_per_taskmanager,
                labels: Labels::new(),
                now_ms: 1,
            },
        );
        if !matches!(response, Response::TaskManagerRegistered { .. }) {
            return Err(format!("registering a TaskManager: {response:?}"));
        }
    }
    for tenant in 0..o.tenants {
        next(
            &mut state,
            Command::SetQuota {
                tenant: format!("tenant-{tenant}"),
                slots: SlotLimit::Set(o.running * 2 / u64::from(o.tenants.max(1))),
                weight: Some(1 + tenant % 3),
                now_ms: 1,
            },
        );
    }
    let admission = Admission {
        max_pending_shards: u64::MAX / 4,
        max_pending_shards_per_client: u64::MAX / 4,
        max_spec_bytes: u64::MAX / 4,
    };
    let jobs = o.shards.div_ceil(u64::from(o.shards_per_job.max(1)));
    let running_jobs = o.running / u64::from(o.shards_per_job.max(1));
    let mut first_job = None;
    for j in 0..jobs {
        let waits = j >= running_jobs && j % 10 == 3;
        let options = JobScheduling {
            // Running jobs low, waiting ones higher: the preemption search has work.
            priority: if j < running_jobs {
                100
            } else {
                200 + (j % 5) as u32 * 100
            },
            after: match first_job {
                Some(first) if waits => vec![first],
                _ => Vec::new(),
            },
            gang: j >= running_jobs && j % 10 == 7,
            tenant: format!("tenant-{}", j % u64::from(o.tenants.max(1))),
        };
        let (id, response) = next(
            &mut state,
            Command::SubmitJobWithOptions {
                name: format!("job-{j}"),
                spec: spec(o.shards_per_job),
                idempotency_key: None,
                owner: "bench".to_string(),
                admission,
                options,
                now_ms: 2,
            },
        );
        if !matches!(response, Response::JobSubmitted { .. }) {
            return Err(format!("submitting a job: {response:?}"));
        }
        first_job.get_or_insert(JobId(id));
        if j < running_jobs {
            // Each running job fills its share of the busy TaskManagers in turn.
            let placements = (0..o.shards_per_job)
                .map(|s| {
                    let slot = j * u64::from(o.shards_per_job) + u64::from(s);
                    Placement {
                        job_id: JobId(id),
                        shard: s,
                        taskmanager: format!("tm-{:06}", slot / u64::from(o.slots_per_taskmanager)),
                    }
                })
                .collect();
            next(
                &mut state,
                Command::PlaceShards {
                    placements,
                    now_ms: 3,
                },
            );
        }
    }
    Ok((state, taskmanagers))
}

/// Builds the state, then times `turns` planning turns on it: first with the spare
/// TaskManagers empty (the plan places shards), then, that plan applied, on the full cluster
/// (the plan finds no room and the preemption search runs, as on the leader).
pub fn measure_planning(o: &PlanningOptions) -> Result<PlanningResult, String> {
    let started = Instant::now();
    let (mut state, taskmanagers) = build_state(o)?;
    let build_seconds = started.elapsed().as_secs_f64();
    let now_ms = 10;
    let turns = o.turns.max(1);
    let plan_now = |state: &ClusterState| {
        plan(
            state,
            now_ms,
            ScoreWeights::default(),
            PlanLimits::default(),
        )
    };
    let mut plans = Vec::new();
    let mut placements = Vec::new();
    for _ in 0..turns {
        let t0 = Instant::now();
        placements = plan_now(&state);
        plans.push(t0.elapsed());
    }
    let shards = state.jobs.values().map(|j| j.shards.len() as u64).sum();
    let placed = placements.len();
    let response = apply(
        &mut state,
        u64::MAX / 2,
        Command::PlaceShards { placements, now_ms },
    );
    if !matches!(response, Response::ShardsPlaced(_)) {
        return Err(format!("applying the plan: {response:?}"));
    }
    let mut full_turns = Vec::new();
    let mut preemptions = Vec::new();
    let mut preempts = false;
    for _ in 0..turns {
        let t0 = Instant::now();
        let nothing = plan_now(&state);
        let t1 = Instant::now();
        preempts = plan_preemption(&state, now_ms).is_some();
        let t2 = Instant::now();
        if !nothing.is_empty() {
            return Err("a full cluster still took placements".to_string());
        }
        full_turns.push(t2 - t0);
        preemptions.push(t2 - t1);
    }
    let summary = |samples: &[std::time::Duration]| {
        super::Summary::of(samples).ok_or_else(|| "no samples".to_string())
    };
    Ok(PlanningResult {
        shards,
        running: state.tenant_slots.values().sum(),
        jobs: state.jobs.len() as u64,
        taskmanagers,
        build_seconds,
        plan: summary(&plans)?,
        full_turn: summary(&full_turns)?,
        preemption: summary(&preemptions)?,
        placements: placed,
        preempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_state_plans_and_preempts() {
        let o = PlanningOptions {
            shards: 2_000,
            running: 400,
            shards_per_job: 20,
            slots_per_taskmanager: 20,
            spare_taskmanagers: 1,
            tenants: 3,
            turns: 2,
        };
        let r = measure_planning(&o).expect("bench runs");
        assert_eq!(r.shards, 2_000);
        assert_eq!(r.running, 420, "the spare TaskManager was filled");
        assert_eq!(r.taskmanagers, 21);
        assert!(r.placements > 0, "the spare TaskManager takes shards");
        assert!(
            r.preempts,
            "higher-priority jobs wait behind full TaskManagers"
        );
    }
}
