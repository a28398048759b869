//! Which jobs the overview lists: by tenant, by state, and by a piece of the name, as the
//! page's URL says (`/?tenant=etl&state=running&name=nightly`), so a filtered view is a
//! link that can be shared. Each value is cut to `MAX_FILTER_BYTES`.

use crate::domain::{ClusterState, Job};
use serde::Deserialize;

/// The longest filter value looked at.
pub const MAX_FILTER_BYTES: usize = 256;

#[derive(Debug, Default, Deserialize)]
pub struct JobFilter {
    tenant: Option<String>,
    state: Option<String>,
    name: Option<String>,
}

fn cut(value: &Option<String>) -> Option<&str> {
    let value = value.as_deref().filter(|v| !v.is_empty())?;
    Some(crate::domain::prefix_within(value, MAX_FILTER_BYTES))
}

impl JobFilter {
    /// Whether it lets every job through.
    pub fn is_empty(&self) -> bool {
        cut(&self.tenant).is_none() && cut(&self.state).is_none() && cut(&self.name).is_none()
    }

    /// Whether `job` is one the filter lets through.
    pub fn matches(&self, state: &ClusterState, job: &Job) -> bool {
        if cut(&self.tenant).is_some_and(|t| state.tenant(job.id) != t) {
            return false;
        }
        if cut(&self.state).is_some_and(|s| job.state.as_str() != s) {
            return false;
        }
        if let Some(piece) = cut(&self.name) {
            return job.name.to_lowercase().contains(&piece.to_lowercase());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobId, JobSpec, JobState};

    fn job(name: &str, state: JobState) -> Job {
        Job {
            id: JobId(1),
            name: name.into(),
            spec: JobSpec::of_command("true", 0),
            state,
            created_at_ms: 0,
            ended_at_ms: None,
            idempotency_key: None,
            owner: "me".into(),
            counts: Default::default(),
            shards: vec![],
        }
    }

    fn filter(tenant: &str, state: &str, name: &str) -> JobFilter {
        let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
        JobFilter {
            tenant: some(tenant),
            state: some(state),
            name: some(name),
        }
    }

    #[test]
    fn each_part_narrows_and_the_name_is_a_piece_in_any_case() {
        let state = ClusterState::default();
        let nightly = job("Nightly-ETL", JobState::Running);
        assert!(filter("", "", "").matches(&state, &nightly));
        assert!(filter("default", "running", "etl").matches(&state, &nightly));
        assert!(!filter("team", "", "").matches(&state, &nightly));
        assert!(!filter("", "finished", "").matches(&state, &nightly));
        assert!(!filter("", "", "backup").matches(&state, &nightly));
        let long = "é".repeat(MAX_FILTER_BYTES);
        assert!(!filter("", "", &long).matches(&state, &nightly));
    }
}
