//! When the cluster may run elsewhere what a TaskManager agent was running: the timing rule
//! that keeps two copies of a shard from ever running at once, and its proof.
//!
//! The same rule covers a TaskManager declared lost (`taskmanager_watch`) and an id taken
//! over by another agent process (a second agent started with the same `--id`, or one
//! started after a partition cut the first off while its shards still ran).
//!
//! ## The rule
//!
//! - **Agent.** Its lease is renewed only by a heartbeat reply, and runs for `lease` from the
//!   moment it *sent* that heartbeat, on its own monotonic clock. When the lease runs out it
//!   stops its runs (its shard host kills their process groups) and stops writing keep-alives
//!   to the host, which kills every shard at the latest `KEEPALIVE_TIMEOUT` (500 ms) after the
//!   last keep-alive if the agent is frozen (SIGSTOP) and cannot even do that, and at once
//!   if the agent dies (its pipe closes).
//! - **Leader.** It runs elsewhere what an agent held only after that agent has been silent
//!   for `lease + LEASE_MARGIN_MS` (900 ms) on the leader's monotonic clock, counted from the
//!   last heartbeat it *received* from that agent, or from the moment it became leader if it
//!   has heard nothing since: a loss waits `timeout_ms`, which config validation keeps at
//!   least that long, and a takeover waits exactly that long ([`takeover_after`]). At that
//!   moment the holder is condemned under the lock heartbeats take, so no later heartbeat of
//!   it is answered, and the command that moves its shards names the holder it fenced (apply
//!   refuses it if the id has changed hands since).
//! - **A new leader** answers no heartbeat before it has applied an entry of its own term, so
//!   a loss or takeover a previous leader committed is in the state it answers from: it
//!   cannot renew the lease of an agent whose shards were just moved.
//!
//! ## Why it holds
//!
//! Let `s` be the send time of the last heartbeat whose reply renewed the agent's lease. Its
//! shards are dead by `s + lease + KEEPALIVE_TIMEOUT + ε` (ε: the host's 50 ms poll and the
//! kill), on the agent's clock.
//!
//! - If this leader answered that heartbeat, it received it at `r ≥ s`, so it waits until at
//!   least `r + lease + margin ≥ s + lease + 900 ms`, after the shards died. Condemning under
//!   the heartbeat lock means no heartbeat is answered (so no lease renewed) after the check.
//! - If an earlier leader answered it, it did so while it still held its leader lease, which
//!   ends before any later leader can be elected (a leader answers heartbeats only within the
//!   election timeout's lower bound of a quorum acknowledging it). So `s` is before this
//!   leader's election, hence before the moment it counts from.
//! - If a later leader would answer it after the move was decided: the move is either
//!   committed, and then applied before that leader answers anything (the agent is told it
//!   lost the id, or its shards are no longer its own), or it never commits, and then no
//!   shard moved.
//!
//! Both clocks only need to agree on how long a second is: the margin (400 ms over the 500 ms
//! keep-alive timeout) absorbs scheduling delays; drift between monotonic clocks is parts per
//! million. No wall clock is involved, so skewed clocks change nothing. The agent and its
//! shard host measure on CLOCK_BOOTTIME, which keeps counting while a machine is suspended.
//! The lease and timeouts come from each replica's `[taskmanagers]` settings: they must be
//! the same on every replica.
//!
//! After the takeover, the old agent's heartbeats and reports carry an incarnation the id no
//! longer has: they are refused before the log, and its shards' epochs are stale in any case
//! (they run again under new epochs). When it reaches the cluster again it learns it lost the
//! id, tries to register, is refused with `ALREADY_EXISTS` and exits.

use crate::config::{TaskManagerSettings, LEASE_MARGIN_MS};
use std::time::Duration;

/// How long an agent must have been silent before another agent process may take its id.
pub fn takeover_after(settings: &TaskManagerSettings) -> Duration {
    Duration::from_millis(settings.lease_ms + LEASE_MARGIN_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeConfig;
    use crate::taskmanager::KEEPALIVE_TIMEOUT;

    #[test]
    fn the_margin_outlasts_a_frozen_agents_supervisors() {
        assert!(Duration::from_millis(LEASE_MARGIN_MS) > KEEPALIVE_TIMEOUT);
        let settings = TaskManagerSettings::default();
        assert!(takeover_after(&settings) > Duration::from_millis(settings.lease_ms));
    }

    #[test]
    fn a_config_whose_loss_timeout_is_shorter_than_the_takeover_bound_is_refused() {
        let mut config = ServeConfig::default();
        config.taskmanagers.timeout_ms = config.taskmanagers.lease_ms + LEASE_MARGIN_MS - 1;
        assert!(config.validate().is_err());
        config.taskmanagers.timeout_ms = config.taskmanagers.lease_ms + LEASE_MARGIN_MS;
        assert!(config.validate().is_ok());
        assert!(
            Duration::from_millis(config.taskmanagers.timeout_ms)
                >= takeover_after(&config.taskmanagers)
        );
    }
}
