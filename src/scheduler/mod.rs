//! Placement policy: a pure function from a read-only view of the cluster state to a plan.
//!
//! The leader runs it, proposes the plan as one `PlaceShards` command, and apply re-checks
//! every placement, so a plan computed from a state that moved on is harmless. This module
//! imports no tokio, tonic, openraft or sled, and performs no I/O.
//!
//! # Score
//! For a TaskManager `t` and a shard needing `s` slots:
//!
//! ```text
//! score(t) = W_R · R(t) − W_T · T(t) / (T(t) + T̄) − W_F · min(1, ρ(t) / ρ_max) − W_S · n(t)
//!
//! R(t) = min_d (free_d(t) − r_d) / capacity_d(t)   free capacity left after the placement in
//!                                                  its tightest dimension d: slots and each
//!                                                  resource the shard asks for, 0..1
//! T(t) = observed mean shard run time on t         (term is 0 until t or the cluster ran shards)
//! T̄    = mean shard run time over the cluster
//! ρ(t) = failures(t) / (run hours(t) + 0.1 h)      failures per hour of shard run time
//! n(t) = shards of the same job already on t       (spreads a job over TaskManagers)
//! W_R = 1, W_T = 0.25, W_F = 0.5, W_S = 2, ρ_max = 6 failures/hour
//! ```
//!
//! The highest score wins; ties go to the smallest TaskManager id. Because `W_S` (2) outweighs
//! the other terms together (at most 1 + 0.25 + 0.5), a job's shards spread over every eligible TaskManager before
//! any TaskManager takes a second one.
//!
//! # Which shards go first
//! `plan` places only jobs whose `--after` jobs have finished. With one tenant and no quotas,
//! jobs go by priority, then age. Otherwise tenants take turns by weighted share within
//! their quotas (`fairness`; by dominant share once resources are in play, `shares`), and
//! inside a tenant by priority, then age. A gang's shards are
//! all placed in one plan or none is. `preemption` chooses shards to stop for a waiting
//! higher priority, never taking another tenant below its guaranteed share (`guarantee`);
//! `explain` says in one line why a job waits. The first ready gang that cannot start
//! gets a `reservation`: the slots that free first are held for it, and jobs behind it may
//! use them only if they surely end before it is due (backfill).
//!
//! # Cost
//! Each job's eligible TaskManagers go into a max-heap keyed by score; placing a shard pops
//! the best, and pushes it back with its new score if it still has room. A job of `S` shards
//! over `N` TaskManagers costs O(N + S·log N), not O(N·S). The heap is kept for the whole
//! round, so fair-share turns that come back to a job many times do not pay `N` again.

mod explain;
pub mod fairness;
pub mod guarantee;
mod plan;
pub mod preemption;
mod recovery;
pub mod reservation;
mod score;
mod shares;

pub use explain::waiting_reason;
pub use plan::{current_reservation, plan, plan_into, Freed, FreedRoom, PlanLimits};
pub use recovery::retry_delay_ms;
pub use score::{ScoreWeights, TaskManagerScorer};

#[cfg(test)]
mod tests;
