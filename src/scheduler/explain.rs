//! Why a job's shards wait, in one line for `job status`: computed from the state when
//! asked, never stored.

use crate::domain::{ClusterState, Job, JobState, ShardState};

/// The reason a job that has not ended still has shards waiting, or why it ended without
/// running; `None` when there is nothing to say (it runs, or it ended normally).
pub fn waiting_reason(state: &ClusterState, job: &Job) -> Option<String> {
    if let Some(dependency) = state.dependency_failures.get(&job.id) {
        return Some(crate::fsm::events::dependency_detail(*dependency));
    }
    if job.state.is_terminal() {
        return None;
    }
    let pending = job
        .shards
        .iter()
        .filter(|s| s.state == ShardState::Pending)
        .count();
    if pending == 0 {
        return None;
    }
    if let Some(dependency) = state.unfinished_dependency(job.id) {
        let how = state.job(dependency).map_or("", |d| d.state.as_str());
        return Some(format!(
            "waiting for job {dependency} (--after), which is {how}"
        ));
    }
    let tenant = state.tenant(job.id);
    let quota = state.quota(tenant);
    let slots = u64::from(job.spec.slots_per_shard);
    if let Some(limit) = quota.slots {
        let held = state
            .slots_held_by_tenant()
            .get(tenant)
            .copied()
            .unwrap_or(0);
        let need = if state.is_gang(job.id) {
            slots * pending as u64
        } else {
            slots
        };
        if held + need > limit {
            return Some(format!(
                "tenant '{tenant}' holds {held} of its quota of {limit} slots; the shards wait \
                 for its running shards to end (or raise it: `quota set {tenant} --slots N`)"
            ));
        }
    }
    if state.is_gang(job.id) && job.state == JobState::Pending {
        return Some(format!(
            "gang of {} shards: waiting until {} slots are free at once",
            job.shards.len(),
            slots * job.shards.len() as u64
        ));
    }
    Some("waiting for free slots".to_string())
}
