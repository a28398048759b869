//! Placements proposed right behind a batch of reports, into the room its ends give back.
//!
//! Without this, a shard's end costs two rounds through the log before its slot runs the
//! next shard: the report's entry commits and applies, which wakes the placement loop, whose
//! plan then commits and applies. Here the leader, about to propose a batch of reports,
//! plans into the slots the batch's ends will free (`scheduler::plan_into`) and proposes the
//! plan in the same breath, so both entries share one append, one `fdatasync` per replica
//! and one replication message, and the slot is refilled one commit sooner.
//!
//! Apply checks every placement again, as for any plan: if the report does not free what was
//! counted (it is refused, or its TaskManager was excluded meanwhile), the placements that
//! no longer fit are skipped and their shards stay pending for the loop.
//!
//! While such a plan is in flight the placement loop waits for it, briefly
//! (`PlacementsBehind`): it would see the report's room before the plan behind it applied,
//! and place twice into it (the second plan only to be skipped at apply, an entry for
//! nothing). Briefly, because the loop must still plan what these plans do not.
//!
//! Several tenants take turns here as in the loop, within their quotas, each one's share and
//! quota counted without what its ending shards hold; apply checks the quota again, so an
//! end that does not apply as counted cannot let a tenant pass it. A waiting gang's
//! reservation holds back the freed room as the loop's round holds back free room. Left to
//! the loop: preemption (see `scheduler::plan_into`). Shards that ran before are placed here
//! too: into room that ends give back, so at the pace shards end, which the loop's recovery
//! throttle exists to keep.

use crate::domain::ClusterState;
use crate::fsm::{Placement, Report, Response};
use crate::scheduler::{plan_into, Freed, PlanLimits, ScoreWeights};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

/// How many plans behind reports are in flight; the placement loop waits while any is.
#[derive(Debug, Default)]
pub struct PlacementsBehind {
    in_flight: AtomicUsize,
    settled: Notify,
}

/// Held while one plan behind reports is in flight; dropping it lets the loop plan again.
pub struct InFlight<'a>(&'a PlacementsBehind);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

impl PlacementsBehind {
    /// Count a plan in flight until the guard drops.
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self)
    }

    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Wait until no plan is in flight (at once if none is).
    pub async fn settled(&self) {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drop between the two is not missed.
            notified.as_mut().enable();
            if !self.busy() {
                return;
            }
            notified.await;
        }
    }
}

/// The slots and resources that `reports`' ends give back, as of `state`: only ends of
/// the shards' current assignments count (what apply will release).
pub fn freed_by(state: &ClusterState, reports: &[Report]) -> Freed {
    let mut freed = Freed::default();
    for report in reports {
        let Report::Ended {
            taskmanager,
            job_id,
            shard,
            epoch,
            ..
        } = report
        else {
            continue;
        };
        if crate::fsm::check_report(state, taskmanager, *job_id, *shard, *epoch).is_err() {
            continue;
        }
        let Some(job) = state.job(*job_id) else {
            continue;
        };
        freed.add(
            taskmanager,
            state.tenant(*job_id),
            job.spec.slots_per_shard,
            state.asked_resources(*job_id),
        );
    }
    freed
}

/// The plan to propose right behind `reports`: empty when they free nothing or nothing
/// waits (and in the cases `plan_into` leaves to the loop).
pub fn plan_behind(state: &ClusterState, reports: &[Report], now_ms: u64) -> Vec<Placement> {
    if state.jobs_with_pending_shards.is_empty() {
        return Vec::new();
    }
    let freed = freed_by(state, reports);
    if freed.is_empty() {
        return Vec::new();
    }
    plan_into(
        state,
        now_ms,
        ScoreWeights::default(),
        PlanLimits::default(),
        &freed,
    )
}

/// How many of a plan of `planned` placements apply placed (logged with `from`, where the
/// plan came from).
pub fn placed(planned: usize, reply: &Response, from: &str) -> u32 {
    let Response::ShardsPlaced(outcome) = reply else {
        return 0;
    };
    tracing::debug!(
        planned,
        placed = outcome.placed,
        stale = outcome.stale,
        from,
        "placement plan applied"
    );
    outcome.placed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn the_loop_waits_until_every_plan_behind_reports_is_settled() {
        let behind = Arc::new(PlacementsBehind::default());
        behind.settled().await;
        let first = behind.begin();
        let second = behind.begin();
        assert!(behind.busy());
        let waiter = {
            let behind = behind.clone();
            tokio::spawn(async move { behind.settled().await })
        };
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one plan is still in flight");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("settled once none is in flight")
            .expect("joined");
        assert!(!behind.busy());
    }
}
