//! Why a job's shards wait, in one line for `job status`: computed from the state when
//! asked, never stored.

use crate::domain::{ClusterState, Isolation, Job, JobState, ShardState, TaskManagerState};

/// The reason a job that has not ended still has shards waiting, or why it ended without
/// running; `None` when there is nothing to say (it runs, or it ended normally).
pub fn waiting_reason(state: &ClusterState, job: &Job, now_ms: u64) -> Option<String> {
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
        let (held, _) = state.tenant_held(tenant, now_ms);
        let need = if state.is_gang(job.id) {
            slots * pending as u64
        } else {
            slots
        };
        if need > limit {
            return Some(format!(
                "needs {need} slots at once, above tenant '{tenant}''s quota of {limit}: it \
                 cannot start under that quota (raise it: `quota set {tenant} --slots {need}`, \
                 or cancel the job)"
            ));
        }
        if held + need > limit {
            return Some(format!(
                "tenant '{tenant}' holds {held} of its quota of {limit} slots; the shards wait \
                 for its running shards to end (or raise it: `quota set {tenant} --slots N`)"
            ));
        }
    }
    if let Some(reason) = resource_reason(state, job, now_ms) {
        return Some(reason);
    }
    let may_run = |tm: &&crate::domain::TaskManager| {
        tm.state == TaskManagerState::Alive
            && tm.matches(&job.spec.selector)
            && tm.slots >= job.spec.slots_per_shard
    };
    if !state.taskmanagers.values().any(|tm| may_run(&tm)) {
        return Some(format!(
            "no live TaskManager that may run it takes shards now (none registered with its \
             labels and {} slots, or all are draining or lost)",
            job.spec.slots_per_shard
        ));
    }
    if let Some(until) = state
        .taskmanagers
        .values()
        .filter(may_run)
        .map(|tm| tm.excluded_until_ms)
        .min()
        .filter(|until| *until > now_ms)
    {
        return Some(format!(
            "every TaskManager that may run it is excluded for failing too often, the first \
             until {} s from now",
            (until - now_ms).div_ceil(1000)
        ));
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

/// Why a job that asks for resources or full isolation waits, if that is why.
fn resource_reason(state: &ClusterState, job: &Job, now_ms: u64) -> Option<String> {
    let live: Vec<&str> = state
        .taskmanagers
        .values()
        .filter(|tm| tm.state == TaskManagerState::Alive)
        .map(|tm| tm.id.as_str())
        .collect();
    if state.needs_full_isolation(job.id)
        && !live.iter().any(|tm| state.isolation(tm) == Isolation::Full)
    {
        let levels: Vec<String> = live
            .iter()
            .take(5)
            .map(|tm| format!("{tm}: {}", state.isolation(tm).as_str()))
            .collect();
        return Some(format!(
            "needs full isolation (--isolation full); no live TaskManager gives it ({}); run \
             an agent as root with --sandbox auto",
            if levels.is_empty() {
                "none is live".to_string()
            } else {
                levels.join(", ")
            }
        ));
    }
    let asked = state.asked_resources(job.id)?;
    let tenant = state.tenant(job.id);
    if let Some(limits) = state.resource_quotas.get(tenant) {
        let (_, held) = state.tenant_held(tenant, now_ms);
        let over = asked.over(&held, limits);
        let limited: Vec<String> = over
            .into_iter()
            .filter(|dimension| match dimension.as_str() {
                "cpu" => limits.cpu_millis > 0,
                "memory" => limits.memory_bytes > 0,
                name => limits.named.contains_key(name),
            })
            .collect();
        if !limited.is_empty() {
            return Some(format!(
                "tenant '{tenant}' holds {held} of its limits {limits}; one more shard would \
                 pass its {} limit (raise it: `quota set {tenant} --{} ...`)",
                limited.join(", "),
                if limited[0] == "cpu" || limited[0] == "memory" {
                    limited[0].as_str()
                } else {
                    "resources"
                }
            ));
        }
    }
    let missing: Vec<&str> = asked
        .named
        .keys()
        .filter(|name| {
            !live.iter().any(|tm| {
                state
                    .tm_resources
                    .get(*tm)
                    .is_some_and(|r| r.capacity.named.contains_key(*name))
            })
        })
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "needs {asked} per shard; no live TaskManager has {}",
            missing.join(", ")
        ));
    }
    Some(format!(
        "needs {asked} per shard; waiting for a TaskManager with that much free"
    ))
}
