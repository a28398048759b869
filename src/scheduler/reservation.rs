//! Reservations and backfill: a gang that cannot start now is not starved by a stream of
//! smaller jobs that take every slot as it frees.
//!
//! # Rule
//! Each planning round, the first ready gang (by priority, then age) that does not fit the
//! free slots now gets a *reservation*: on the TaskManagers that may run it, the slots that
//! will free first, enough for all its shards. The job at the head of the queue gets one
//! before any gang when its shards are wider than one slot and none fits now: room for one
//! shard, so that narrower jobs behind it do not take each slot as it frees. A running shard frees its slots at
//! `started + timeout` when its job has a time limit (`submit --timeout`), at an unknown time
//! otherwise; the reservation's expected start is the moment the last slot it needs frees
//! (unknown if any of them has no time limit).
//!
//! While it holds, a job behind the gang (lower priority, or equal and younger) may use the
//! reserved slots of a TaskManager only if it surely ends before the expected start:
//! `now + its timeout ≤ expected start` (backfill). Jobs ahead of the gang are not held
//! back. Free slots beyond the reserved ones stay free for anybody. The reservation is
//! computed from the state each round, never stored: a new leader computes the same one.
//!
//! Pure: no clock, no I/O; `now_ms` comes from the caller.

use crate::domain::{ClusterState, Job, JobId, ShardState, TaskManager, TaskManagerState};
use std::collections::BTreeMap;

/// The room held for one gang (or one shard of a wide job at the head of the queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub job: JobId,
    pub priority: u32,
    /// TaskManager → the slots held there for the gang.
    pub slots: BTreeMap<String, u32>,
    /// When the last slot it needs frees, if every one of them has a known end.
    pub expected_start_ms: Option<u64>,
}

impl Reservation {
    /// Whether `job` is behind the gang: a lower priority, or the same and submitted later.
    pub fn holds_back(&self, state: &ClusterState, job: JobId) -> bool {
        if job == self.job {
            return false;
        }
        let priority = state.priority(job);
        priority < self.priority || (priority == self.priority && job > self.job)
    }

    /// Whether `job` (behind the gang) may still use reserved slots: it surely ends before
    /// the gang is due.
    pub fn lets_backfill(&self, state: &ClusterState, job: JobId, now_ms: u64) -> bool {
        let timeout = state.requests.get(&job).and_then(|r| r.timeout_ms);
        match (timeout, self.expected_start_ms) {
            (Some(timeout), Some(start)) => now_ms.saturating_add(timeout) <= start,
            _ => false,
        }
    }
}

/// Whether TaskManager `tm` may ever run a shard of `job`: alive, its labels, wide enough,
/// the isolation it needs, and every resource it asks for in what `tm` has at all.
fn may_run(state: &ClusterState, tm: &TaskManager, job: &Job, now_ms: u64) -> bool {
    let holds_what_it_asks = state.asked_resources(job.id).is_none_or(|asked| {
        asked
            .over(
                &crate::domain::Resources::default(),
                &state.capacity(&tm.id),
            )
            .is_empty()
    });
    tm.state == TaskManagerState::Alive
        && !tm.is_excluded(now_ms)
        && tm.matches(&job.spec.selector)
        && tm.slots >= job.spec.slots_per_shard
        && (!state.needs_full_isolation(job.id)
            || state.isolation(&tm.id) == crate::domain::Isolation::Full)
        && holds_what_it_asks
}

/// The job at the head of the ready queue, if its shards are wider than one slot, it asks
/// for nothing but slots, and no TaskManager that may run it has room for one now: room for
/// one of its shards is held for it, or narrower jobs behind it would take every slot as it
/// frees (a shard of 4 slots never finds 4 free on one agent while 1-slot jobs stream in).
fn wide_head(state: &ClusterState, now_ms: u64) -> Option<&Job> {
    let id = state.pending.ready_in_priority_order().next()?;
    let job = state.job(id)?;
    let wide =
        job.spec.slots_per_shard > 1 && !state.is_gang(id) && state.asked_resources(id).is_none();
    if !wide
        || !job.pending_shards().any(|s| s.not_before_ms <= now_ms)
        || !state.quota_allows_one_more(id, now_ms)
    {
        return None;
    }
    let fits_now = state
        .taskmanagers
        .values()
        .any(|tm| tm.free_slots() >= job.spec.slots_per_shard && may_run(state, tm, job, now_ms));
    (!fits_now).then_some(job)
}

/// The reservation of this round, if the job at the head of the queue has shards too wide
/// for any room now (`wide_head`: room for one shard), or else some ready gang cannot start
/// now: the first of the gangs with pending shards (highest priority, then oldest) that
/// waits for no other job (room for all its shards).
pub fn reserve(state: &ClusterState, now_ms: u64) -> Option<Reservation> {
    if let Some(head) = wide_head(state, now_ms) {
        return reserve_for(state, head, 1, now_ms);
    }
    let gang = state.pending.gangs().find_map(|id| {
        let job = state.job(id)?;
        let waiting = state.unfinished_dependency(id).is_none()
            && job.state == crate::domain::JobState::Pending
            && job
                .shards
                .iter()
                .all(|s| s.state == ShardState::Pending && s.not_before_ms <= now_ms);
        // A gang its tenant's quota can never hold would hold the room for ever.
        let need = u64::from(job.spec.slots_per_shard) * job.shards.len() as u64;
        let within_quota = state
            .quota(state.tenant(id))
            .slots
            .is_none_or(|limit| need <= limit);
        (waiting && within_quota).then_some(job)
    })?;
    reserve_for(state, gang, gang.shards.len() as u64, now_ms)
}

/// Room for `needed` shards of `job` where it frees first, unless it fits now or never.
fn reserve_for(state: &ClusterState, job: &Job, needed: u64, now_ms: u64) -> Option<Reservation> {
    let per_shard = job.spec.slots_per_shard.max(1);
    // What each TaskManager that may run it has free now, and when more frees.
    let mut free: BTreeMap<&str, u32> = BTreeMap::new();
    let mut frees: Vec<(u64, &str, u32)> = Vec::new();
    for tm in state
        .taskmanagers
        .values()
        .filter(|tm| may_run(state, tm, job, now_ms))
    {
        free.insert(&tm.id, tm.free_slots());
        for (job, shard) in state.assignments(&tm.id) {
            let timeout = state.requests.get(&job.id).and_then(|r| r.timeout_ms);
            let ends = match (shard.started_at_ms, timeout) {
                (Some(started), Some(timeout)) => started.saturating_add(timeout).max(now_ms),
                _ => u64::MAX,
            };
            frees.push((ends, &tm.id, job.spec.slots_per_shard));
        }
    }
    // How many of its shards fit, kept as slots free up (not recounted over every
    // TaskManager each time: that is quadratic in a large cluster).
    let mut fitting: u64 = free
        .values()
        .map(|slots| u64::from(*slots / per_shard))
        .sum();
    if fitting >= needed {
        // It fits now: the plan places it (or something else stops it, not room).
        return None;
    }
    frees.sort();
    let mut expected = now_ms;
    for (ends, tm, slots) in frees {
        if let Some(room) = free.get_mut(tm) {
            let before = u64::from(*room / per_shard);
            *room = room.saturating_add(slots);
            fitting += u64::from(*room / per_shard) - before;
        }
        expected = ends;
        if fitting >= needed {
            break;
        }
    }
    if fitting < needed {
        // Not even once everything running ends: no reservation helps (the reason says why).
        return None;
    }
    // Hold room where it frees first: shards go to the TaskManagers in order of most room.
    let mut by_room: Vec<(&str, u32)> = free.into_iter().collect();
    by_room.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut left = needed;
    let mut slots = BTreeMap::new();
    for (tm, room) in by_room {
        if left == 0 {
            break;
        }
        let shards = u64::from(room / per_shard).min(left);
        if shards > 0 {
            slots.insert(tm.to_string(), (shards as u32) * per_shard);
            left -= shards;
        }
    }
    Some(Reservation {
        job: job.id,
        priority: state.priority(job.id),
        slots,
        expected_start_ms: (expected != u64::MAX).then_some(expected),
    })
}
