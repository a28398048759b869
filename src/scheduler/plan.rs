//! Building a placement plan for the jobs that wait for capacity: jobs whose `--after` jobs
//! have finished, tenant by tenant in fair-share order within their quotas, and inside a
//! tenant by priority then age; gangs all at once or not at all.

use super::fairness::{FairQueue, Turn};
use super::reservation::{reserve, Reservation};
use super::score::{room_after, ScoreWeights, TaskManagerScorer};
use super::shares::ShareMeter;
use crate::domain::{ClusterState, Isolation, JobId, Labels, Resources, ShardState, TaskManager};
use crate::fsm::Placement;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

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
            // Every gang fits one plan: it is placed whole or not at all.
            max_placements: crate::domain::MAX_GANG_SHARDS as usize,
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
    /// What it has and what shards (placed before and in this plan) hold of it.
    capacity: Resources,
    used: Resources,
    full_isolation: bool,
    /// Slots held for this round's reservation (a gang that cannot start yet).
    reserved: u32,
}

impl Candidate<'_> {
    /// Whether one more shard needing `slots` slots and `asked` fits here now; a job behind
    /// the reserved gang (`held_back`) may not use the reserved slots.
    fn fits(&self, slots: u32, asked: Option<&Resources>, held_back: bool) -> bool {
        let free = if held_back {
            self.free.saturating_sub(self.reserved)
        } else {
            self.free
        };
        free >= slots && asked.is_none_or(|a| a.fits(&self.used, &self.capacity))
    }

    fn room_after(&self, slots: u32, asked: Option<&Resources>) -> f64 {
        room_after(
            self.slots,
            self.free,
            slots,
            asked,
            &self.used,
            &self.capacity,
        )
    }
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

/// Plan placements for every job with pending shards whose dependencies have finished, as
/// of `now_ms` (shards in retry back-off and excluded TaskManagers are skipped). With one
/// tenant and no quotas, jobs go highest priority first, then oldest first; otherwise
/// tenants take turns by weighted share (see `fairness`), each within its quota. Jobs that
/// do not fit keep their pending shards; they are planned again when capacity appears.
pub fn plan(
    state: &ClusterState,
    now_ms: u64,
    weights: ScoreWeights,
    limits: PlanLimits,
) -> Vec<Placement> {
    plan_with(state, now_ms, weights, limits, None)
}

/// Room that shards about to end give back: what `plan_into` plans into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Freed {
    /// By TaskManager: the slots and resources the ending shards hold there.
    pub rooms: BTreeMap<String, FreedRoom>,
    /// By tenant: what its ending shards hold, no longer counted in its share once their
    /// ends apply.
    pub tenants: BTreeMap<String, FreedRoom>,
}

impl Freed {
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Count one ending shard of `tenant` on `taskmanager`, holding `slots` and `resources`.
    pub fn add(
        &mut self,
        taskmanager: &str,
        tenant: &str,
        slots: u32,
        resources: Option<&Resources>,
    ) {
        for room in [
            self.rooms.entry(taskmanager.to_string()).or_default(),
            self.tenants.entry(tenant.to_string()).or_default(),
        ] {
            room.slots = room.slots.saturating_add(slots);
            if let Some(asked) = resources {
                room.resources.add_times(asked, 1);
            }
        }
    }
}

/// The slots and resources ending shards hold (on one TaskManager, or of one tenant).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreedRoom {
    pub slots: u32,
    pub resources: Resources,
}

/// A plan into `freed` only: each TaskManager listed takes at most the slots listed, with
/// the resources listed given back. The leader plans into the room a batch of reports gives
/// back before that batch applies, and proposes the plan right behind it
/// (`leader::behind_reports`). Room the state already shows free is the placement loop's,
/// so the two never plan into the same slots. Apply checks every placement again, as for
/// any plan, quotas included; one that lands without the room it counted on, or that its
/// tenant's quota no longer allows, is skipped. Tenants take turns and quotas bound them as
/// in the loop, with what their ending shards hold left out. A waiting gang's reservation
/// holds here too: on a TaskManager it reserves slots of, a job behind the gang may use only
/// the freed slots beyond the reserved ones, so the room that the loop (planning from the
/// state) and this plan (from the ends) hold back together is never less than the
/// reservation; a gang is placed here when the freed room takes it whole.
pub fn plan_into(
    state: &ClusterState,
    now_ms: u64,
    weights: ScoreWeights,
    limits: PlanLimits,
    freed: &Freed,
) -> Vec<Placement> {
    plan_with(state, now_ms, weights, limits, Some(freed))
}

fn plan_with(
    state: &ClusterState,
    now_ms: u64,
    weights: ScoreWeights,
    limits: PlanLimits,
    freed: Option<&Freed>,
) -> Vec<Placement> {
    let one_tenant = state.pending.ready_tenants().nth(1).is_none();
    let shares_matter =
        !(one_tenant && state.quotas.is_empty() && state.resource_quotas.is_empty());
    let scorer = TaskManagerScorer::new(state, weights);
    // In id order either way (ties go to the smallest id); into freed room, only the
    // TaskManagers it lists are looked at, not every one.
    let taskmanagers: Box<dyn Iterator<Item = (&TaskManager, Option<&FreedRoom>)>> = match freed {
        None => Box::new(state.taskmanagers.values().map(|tm| (tm, None))),
        Some(freed) => Box::new(
            freed
                .rooms
                .iter()
                .filter_map(|(id, room)| Some((state.taskmanagers.get(id)?, Some(room)))),
        ),
    };
    let candidates: Vec<Candidate<'_>> = taskmanagers
        .filter_map(|(tm, room)| {
            let free = room.map_or(tm.free_slots(), |room| room.slots.min(tm.slots));
            if !tm.accepts_placements(now_ms) || free == 0 {
                return None;
            }
            let mut used = state.tm_used.get(&tm.id).cloned().unwrap_or_default();
            if let Some(room) = room {
                used.subtract(&room.resources);
            }
            Some(Candidate {
                id: &tm.id,
                slots: tm.slots,
                free,
                static_penalty: scorer.static_penalty(tm),
                capacity: state.capacity(&tm.id),
                used,
                full_isolation: state.isolation(&tm.id) == Isolation::Full,
                reserved: 0,
            })
        })
        .collect();
    let free_slots = candidates.iter().map(|c| u64::from(c.free)).sum();
    let mut round = Round {
        state,
        now_ms,
        scorer,
        candidates,
        free_slots,
        replacements_left: limits.max_replacements,
        placements: Vec::new(),
        cursors: HashMap::new(),
        roomless: HashSet::new(),
        reservation: None,
    };
    if round.candidates.is_empty() || !state.pending.any_ready() {
        return round.placements;
    }
    round.reservation = reserve(state, now_ms);
    if let Some(reservation) = &round.reservation {
        for candidate in &mut round.candidates {
            candidate.reserved = reservation.slots.get(candidate.id).copied().unwrap_or(0);
        }
    }
    if !shares_matter {
        // The queue is walked only as far as room and the budget go.
        for job_id in state.pending.ready_in_priority_order() {
            if round.placements.len() >= limits.max_placements || round.free_slots == 0 {
                break;
            }
            let budget = limits.max_placements - round.placements.len();
            round.plan_job(job_id, budget);
        }
    } else {
        round.plan_fair_share(limits.max_placements, freed.map(|f| &f.tenants));
    }
    round.placements
}

/// The reservation a planning round at `now_ms` makes, if any (for `job status`).
pub fn current_reservation(state: &ClusterState, now_ms: u64) -> Option<Reservation> {
    reserve(state, now_ms)
}

/// What decides whether a job's shard fits a TaskManager: jobs of one shape that found no
/// room in a round find none later in it either (room only shrinks as the plan goes).
#[derive(PartialEq, Eq, Hash)]
struct Shape<'a> {
    selector: &'a Labels,
    slots: u32,
    asked: Option<&'a Resources>,
    full_only: bool,
    held_back: bool,
}

/// One planning round: the TaskManagers' capacity as the plan uses it up, and the plan.
struct Round<'a> {
    state: &'a ClusterState,
    now_ms: u64,
    scorer: TaskManagerScorer,
    candidates: Vec<Candidate<'a>>,
    /// Free slots left over all candidates: none, and the round is over.
    free_slots: u64,
    replacements_left: usize,
    placements: Vec<Placement>,
    /// Each visited job's placement so far (see `new_cursor`).
    cursors: HashMap<JobId, JobCursor<'a>>,
    /// Shapes of jobs that found no TaskManager with room this round.
    roomless: HashSet<Shape<'a>>,
    /// Room held for a gang that cannot start yet (see `reservation`).
    reservation: Option<Reservation>,
}

/// A job's placement state within one round.
struct JobCursor<'a> {
    heap: BinaryHeap<Ranked>,
    same_job: HashMap<&'a str, u32>,
    /// Its pending shards that may be placed now, in index order, found as they are taken:
    /// a round that places a few shards of a job with thousands waiting looks at a few.
    ready: std::iter::Peekable<Box<dyn Iterator<Item = u32> + 'a>>,
    /// Behind the reserved gang, and not sure to end before it is due.
    held_back: bool,
}

impl<'a> Round<'a> {
    /// Tenants take turns, smallest weighted share first; each turn places a run of shards
    /// of the tenant's first job (a gang whole) within its quota. A tenant whose next job
    /// would pass its quota waits whole; a job that finds no room is passed over for the
    /// tenant's next one.
    ///
    /// `released`: what each tenant's ending shards hold (a plan into freed room), left out
    /// of its share and of what its quota counts.
    fn plan_fair_share(
        &mut self,
        max_placements: usize,
        released: Option<&BTreeMap<String, FreedRoom>>,
    ) {
        let state = self.state;
        // Each tenant's ready jobs, taken from the index only as far as the round goes.
        let mut queues: BTreeMap<&str, _> = state
            .pending
            .ready_tenants()
            .map(|tenant| (tenant, state.pending.ready_of(tenant).peekable()))
            .collect();
        let mut meter = ShareMeter::new(state, queues.keys().copied(), self.now_ms);
        for (tenant, room) in released.into_iter().flatten() {
            meter.release(tenant, u64::from(room.slots), &room.resources);
        }
        let mut blocked: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        let mut turns = FairQueue::default();
        for tenant in queues.keys() {
            turns.push(Turn {
                held: meter.share(tenant),
                weight: u64::from(state.quota(tenant).weight.max(1)),
                name: tenant,
                index: 0,
            });
        }
        while let Some(mut turn) = turns.pop() {
            if self.placements.len() >= max_placements || self.free_slots == 0 {
                break;
            }
            let Some(queue) = queues.get_mut(turn.name) else {
                continue;
            };
            let Some(job) = queue.peek().and_then(|id| state.job(*id)) else {
                continue;
            };
            let shards = if state.is_gang(job.id) {
                u64::from(job.counts.get(ShardState::Pending))
            } else {
                1
            };
            let Some(room) = meter.room_within_quota(turn.name, job.id) else {
                continue;
            };
            let held_back = blocked
                .get(turn.name)
                .is_some_and(|dims| meter.asks_any(job.id, dims));
            if room < shards || held_back {
                let full = meter.exhausted(turn.name, job.id, shards);
                if full.contains("slots") && !meter.could_ever_fit(turn.name, job.id, shards) {
                    // Larger than the quota itself (a gang): it can never start under this
                    // quota, so it holds nobody back; `job status` says why it waits.
                    queue.next();
                    if queue.peek().is_some() {
                        turns.push(turn);
                    }
                    continue;
                }
                if full.contains("slots") {
                    // At its slot quota: the tenant waits whole, so that its later,
                    // smaller jobs do not overtake this one.
                    continue;
                }
                // At a resource limit: the tenant's later jobs that ask none of the full
                // resources may go; those that ask one wait behind this job.
                blocked.entry(turn.name).or_default().extend(full);
                queue.next();
                if queue.peek().is_some() {
                    turns.push(turn);
                }
                continue;
            }
            let budget = max_placements - self.placements.len();
            let mut run = if state.is_gang(job.id) {
                budget as u64
            } else {
                turns
                    .run_length(&turn, meter.cost_of_one(job.id))
                    .min(budget as u64)
            };
            run = run.min(room);
            let asked = usize::try_from(run).unwrap_or(usize::MAX);
            let placed = self.plan_job(job.id, asked);
            if placed < asked || placed == 0 {
                // Out of ready shards, or no room for it now: the tenant's next job.
                queue.next();
            }
            meter.grant(turn.name, job.id, placed as u64);
            turn.held = meter.share(turn.name);
            if queue.peek().is_some() {
                turns.push(turn);
            }
        }
    }

    /// Place up to `budget` ready shards of one job (a gang: all its shards, or none);
    /// returns how many.
    fn plan_job(&mut self, job_id: JobId, budget: usize) -> usize {
        let state = self.state;
        let Some(job) = state.job(job_id) else {
            return 0;
        };
        if job.state.is_terminal() {
            return 0;
        }
        let gang = state.is_gang(job_id);
        if gang {
            // Every shard waits, ready now, and the budget takes them all.
            let all_ready = job.shards.iter().all(|s| {
                s.state == crate::domain::ShardState::Pending && s.not_before_ms <= self.now_ms
            });
            if !all_ready || job.shards.len() > budget {
                return 0;
            }
        }
        let saved = gang.then(|| {
            (
                self.candidates
                    .iter()
                    .map(|c| (c.free, c.used.clone()))
                    .collect::<Vec<_>>(),
                self.replacements_left,
                self.placements.len(),
                self.free_slots,
            )
        });
        // A gang restarts whole: the recovery throttle, which spreads the re-placement of
        // many independent shards over time, would split it (and so roll it back) for ever.
        let planned = if gang {
            let throttle = std::mem::replace(&mut self.replacements_left, usize::MAX);
            let planned = self.plan_shards(job_id, budget);
            self.replacements_left = throttle;
            planned
        } else {
            self.plan_shards(job_id, budget)
        };
        if let Some((free, replacements_left, placements, free_slots)) = saved {
            if planned < job.shards.len() {
                // Not all of the gang fits: give back what was taken.
                for (candidate, (free, used)) in self.candidates.iter_mut().zip(free) {
                    candidate.free = free;
                    candidate.used = used;
                }
                self.free_slots = free_slots;
                self.replacements_left = replacements_left;
                self.placements.truncate(placements);
                // Its cursor took what was given back: it is made again if needed.
                self.cursors.remove(&job_id);
                return 0;
            }
        }
        planned
    }

    /// Where a job's placement stands in this round: its eligible TaskManagers by score, its
    /// shards per TaskManager (the spread term), and its ready shards with how many were
    /// taken. Made on a job's first visit and kept for the next (fair-share turns come back
    /// to a job many times), so a visit costs O(placed · log N), not O(N + S).
    fn new_cursor(&self, job: &'a crate::domain::Job, shape: &Shape<'a>) -> JobCursor<'a> {
        let state = self.state;
        let (need, asked, full_only, held_back) =
            (shape.slots, shape.asked, shape.full_only, shape.held_back);
        // The job's shards on each TaskManager, from the index of what each holds (sorted
        // by job): a walk of the job's shards would cost O(S) per round. A job none of whose
        // shards holds slots (a new one, most often) needs no look at all.
        let holds_any =
            job.counts.get(ShardState::Assigned) + job.counts.get(ShardState::Running) > 0;
        let held_of_job = |tm: &str| -> u32 {
            if !holds_any {
                return 0;
            }
            state.shards_by_taskmanager.get(tm).map_or(0, |held| {
                held.range((job.id, 0)..=(job.id, u32::MAX)).count() as u32
            })
        };
        let mut same_job: HashMap<&'a str, u32> = HashMap::new();
        let heap: BinaryHeap<Ranked> = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.fits(need, asked, held_back) && (c.full_isolation || !full_only))
            .filter(|(_, c)| {
                state
                    .taskmanager(c.id)
                    .is_some_and(|tm| tm.matches(&job.spec.selector))
            })
            .map(|(i, c)| {
                let held = held_of_job(c.id);
                if held > 0 {
                    same_job.insert(c.id, held);
                }
                Ranked {
                    score: self
                        .scorer
                        .score(c.static_penalty, c.room_after(need, asked), held),
                    candidate: i,
                }
            })
            .collect();
        // Nowhere to go (no TaskManager matches, or none has room): the shards are not
        // even looked at, so jobs that wait cost nothing per round.
        let now_ms = self.now_ms;
        let ready: Box<dyn Iterator<Item = u32> + 'a> = if heap.is_empty() {
            Box::new(std::iter::empty())
        } else {
            Box::new(
                job.pending_shards()
                    .filter(move |s| s.not_before_ms <= now_ms)
                    .map(|s| s.index),
            )
        };
        JobCursor {
            heap,
            same_job,
            ready: ready.peekable(),
            held_back,
        }
    }

    /// What decides where `job`'s shards fit this round.
    fn shape(&self, job: &'a crate::domain::Job) -> Shape<'a> {
        let state = self.state;
        Shape {
            selector: &job.spec.selector,
            slots: job.spec.slots_per_shard,
            asked: state.asked_resources(job.id),
            full_only: state.needs_full_isolation(job.id),
            held_back: self.reservation.as_ref().is_some_and(|r| {
                r.holds_back(state, job.id) && !r.lets_backfill(state, job.id, self.now_ms)
            }),
        }
    }

    /// Place up to `budget` ready shards of one job, each on the best-scoring TaskManager.
    fn plan_shards(&mut self, job_id: JobId, budget: usize) -> usize {
        let state = self.state;
        let Some(job) = state.job(job_id) else {
            return 0;
        };
        let need = job.spec.slots_per_shard;
        let asked = state.asked_resources(job_id);
        let mut cursor = match self.cursors.remove(&job_id) {
            Some(cursor) => cursor,
            None => {
                let shape = self.shape(job);
                if self.roomless.contains(&shape) {
                    return 0;
                }
                let cursor = self.new_cursor(job, &shape);
                if cursor.heap.is_empty() {
                    self.roomless.insert(shape);
                }
                cursor
            }
        };
        let scorer = &self.scorer;
        let mut planned = 0;
        while planned < budget {
            let Some(&index) = cursor.ready.peek() else {
                break;
            };
            let replacement = job
                .shards
                .get(index as usize)
                .is_some_and(|s| s.attempt > 0);
            if replacement && self.replacements_left == 0 {
                // A re-placement, and the recovery throttle is spent for this round.
                cursor.ready.next();
                continue;
            }
            // The best TaskManager. Other jobs' placements since this heap was made lowered
            // some scores (scores only fall as capacity is used up): an entry whose score is
            // stale goes back with its current one, so the true best comes up.
            let best = loop {
                let Some(top) = cursor.heap.pop() else {
                    break None;
                };
                let c = &self.candidates[top.candidate];
                if !c.fits(need, asked, cursor.held_back) {
                    continue;
                }
                let score = scorer.score(
                    c.static_penalty,
                    c.room_after(need, asked),
                    cursor.same_job.get(c.id).copied().unwrap_or(0),
                );
                if score.total_cmp(&top.score).is_lt() {
                    cursor.heap.push(Ranked {
                        score,
                        candidate: top.candidate,
                    });
                    continue;
                }
                break Some(top.candidate);
            };
            let Some(best) = best else { break };
            if replacement {
                self.replacements_left -= 1;
            }
            cursor.ready.next();
            let c = &mut self.candidates[best];
            c.free -= need;
            self.free_slots -= u64::from(need);
            if let Some(asked) = asked {
                c.used.add_times(asked, 1);
            }
            let count = cursor.same_job.entry(c.id).or_default();
            *count += 1;
            self.placements.push(Placement {
                job_id,
                shard: index,
                taskmanager: c.id.to_string(),
            });
            planned += 1;
            if c.fits(need, asked, cursor.held_back) {
                cursor.heap.push(Ranked {
                    score: scorer.score(c.static_penalty, c.room_after(need, asked), *count),
                    candidate: best,
                });
            }
        }
        self.cursors.insert(job_id, cursor);
        planned
    }
}
