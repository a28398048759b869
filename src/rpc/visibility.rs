//! What a caller may see of the jobs: every tenant's (operator and admin tokens, replicas,
//! `--insecure`) or only its own tenant's (read and submit tokens). Another tenant's job is
//! answered as if it did not exist (`NOT_FOUND`), so its id tells a stranger nothing.
//!
//! Used by every read of jobs, events and output, on the gRPC and the HTTP side alike. It
//! decides from the replica's applied state; it must not change anything.

use super::access::Caller;
use super::error::ApiError;
use crate::domain::{ClusterState, Job, JobId};
use crate::fsm::events::Event;
use crate::fsm::Rejection;

/// The jobs a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant's.
    All,
    /// Only this tenant's.
    Tenant(String),
}

impl Scope {
    pub fn of(caller: &Caller, state: &ClusterState) -> Scope {
        match caller {
            Caller::Token { role, .. } if role.cancels_any_job() => Scope::All,
            Caller::Token { name, .. } => Scope::Tenant(state.token_tenant(name).to_string()),
            Caller::Anyone | Caller::Replica(_) | Caller::TaskManager(_) => Scope::All,
        }
    }

    /// Whether job `job` (which may be gone) is one this caller may see.
    pub fn sees(&self, state: &ClusterState, job: JobId) -> bool {
        match self {
            Scope::All => true,
            Scope::Tenant(tenant) => state.job(job).is_some() && state.tenant(job) == tenant,
        }
    }

    /// The job, if it exists and this caller may see it; else the same `NOT_FOUND` for both.
    pub fn job<'a>(&self, state: &'a ClusterState, job: JobId) -> Result<&'a Job, ApiError> {
        match state.job(job) {
            Some(found) if self.sees(state, job) => Ok(found),
            _ => Err(ApiError::Rejected(Rejection::UnknownJob(job))),
        }
    }

    /// Whether a stream shows this event: a job's only to those who may see the job; of
    /// the rest, the cluster's (TaskManagers, leadership) to everyone, tokens' and quotas'
    /// only to operators and admins.
    pub fn sees_event(&self, event: &Event) -> bool {
        match (self, &event.tenant, &event.job_id) {
            (Scope::All, _, _) => true,
            // A job's, or a schedule's of no job: only its tenant's.
            (Scope::Tenant(tenant), Some(owner), _) => owner == tenant,
            (Scope::Tenant(_), None, Some(_)) => false,
            (Scope::Tenant(_), None, None) => !crate::fsm::events::is_administrative(event.kind),
        }
    }

    /// Whether this caller may see tenant `tenant`'s quota and load.
    pub fn sees_tenant(&self, tenant: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Tenant(own) => own == tenant,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn token(name: &str, role: Role) -> Caller {
        Caller::test_token(name, role)
    }

    #[test]
    fn tenants_tokens_see_their_own_and_operators_see_all() {
        let mut state = ClusterState::default();
        state.token_tenants.insert("ci".into(), "team-a".into());
        assert_eq!(
            Scope::of(&token("ci", Role::Read), &state),
            Scope::Tenant("team-a".into())
        );
        assert_eq!(
            Scope::of(&token("bob", Role::Submit), &state),
            Scope::Tenant("bob".into())
        );
        assert_eq!(Scope::of(&token("ops", Role::Operator), &state), Scope::All);
        assert_eq!(Scope::of(&token("root", Role::Admin), &state), Scope::All);
        assert_eq!(Scope::of(&Caller::Anyone, &state), Scope::All);
        // A job that does not exist is unseen by a tenant, and NOT_FOUND for everyone.
        let scope = Scope::Tenant("team-a".into());
        assert!(!scope.sees(&state, JobId(9)));
        assert!(matches!(
            Scope::All.job(&state, JobId(9)),
            Err(ApiError::Rejected(Rejection::UnknownJob(JobId(9))))
        ));
    }

    #[test]
    fn events_of_no_job_go_to_everyone_and_a_jobs_to_its_tenant() {
        let mut event = crate::fsm::events::leader_changed(3, 1, 1);
        let a = Scope::Tenant("a".into());
        assert!(a.sees_event(&event));
        event.job_id = Some(JobId(3));
        event.tenant = Some("b".into());
        assert!(!a.sees_event(&event));
        assert!(Scope::All.sees_event(&event));
        event.tenant = Some("a".into());
        assert!(a.sees_event(&event));
        event.tenant = None;
        assert!(
            !a.sees_event(&event),
            "a gone job's events are shown to operators only"
        );
        let mut quota = crate::fsm::events::leader_changed(4, 1, 1);
        quota.kind = "quota_set";
        assert!(!a.sees_event(&quota) && Scope::All.sees_event(&quota));
        assert!(a.sees_tenant("a") && !a.sees_tenant("b") && Scope::All.sees_tenant("b"));
        // A schedule's events of no job: its tenant's alone.
        let mut skipped = crate::fsm::events::leader_changed(5, 1, 1);
        skipped.kind = "cron_skipped";
        skipped.tenant = Some("b".into());
        assert!(!a.sees_event(&skipped) && Scope::All.sees_event(&skipped));
        skipped.tenant = Some("a".into());
        assert!(a.sees_event(&skipped));
    }
}
