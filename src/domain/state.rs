//! The whole replicated state: what every replica holds after applying the same log.

use super::ids::JobId;
use super::job::{Job, Shard};
use super::output::OutputStore;
use super::resources::{Isolation, ResourceRequest, Resources, TaskManagerResources};
use super::scheduling::{JobScheduling, PriorityOnly, Quota, DEFAULT_TENANT};
use super::taskmanager::{TaskManager, TaskManagerPin};
use super::token::Token;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// Jobs and the per-TaskManager shard sets sit behind `Arc`s, so that a copy of the state
/// (taken for a snapshot while applying goes on) costs a pointer per job instead of every
/// shard; apply changes them through `Arc::make_mut`, copying only what a copy still shares.
/// The encoding, and so the digest and the snapshot format, is the same as without them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub taskmanagers: BTreeMap<String, TaskManager>,
    pub jobs: BTreeMap<JobId, Arc<Job>>,
    /// Client idempotency key → the job it created.
    pub idempotency_keys: super::key_index::KeyIndex,
    /// Jobs that still have pending (unplaced) shards: the scheduler's work list, kept so the
    /// leader never scans every job to find work.
    pub jobs_with_pending_shards: BTreeSet<JobId>,
    /// TaskManager id → the shards (job, index) that hold slots there. Kept by apply so that
    /// heartbeats, loss and drain never scan every job.
    pub shards_by_taskmanager: BTreeMap<String, Arc<BTreeSet<(JobId, u32)>>>,
    /// Shards of jobs that have not ended (admission control), in all ...
    pub pending_shards: u64,
    /// ... and per job owner (the submitting client).
    pub pending_shards_by_owner: BTreeMap<String, u64>,
    /// Encoded size of the specs of every job held, ended or not (admission control).
    pub spec_bytes: u64,
    /// Access tokens by name (hashes only, never secrets).
    pub tokens: BTreeMap<String, Token>,
    /// Whether a token was ever created: the bootstrap token is seeded only before that.
    pub tokens_seeded: bool,
    /// What ended shards printed. Encoded as a section of its own after the rest (see
    /// `encode`), so that snapshots from before it existed still decode.
    #[serde(skip)]
    pub outputs: OutputStore,
    /// Scheduling options of the jobs that set any; the rest have the defaults. In the same
    /// extra section as `outputs`.
    #[serde(skip)]
    pub scheduling: BTreeMap<JobId, JobScheduling>,
    /// How often each shard was preempted (only shards that were). Same section.
    #[serde(skip)]
    pub preemptions: BTreeMap<(JobId, u32), u32>,
    /// Tenants' quotas and weights (tenants not listed: no quota, weight 1). Same section.
    #[serde(skip)]
    pub quotas: BTreeMap<String, Quota>,
    /// The tenant of each token created with one other than its name. Same section.
    #[serde(skip)]
    pub token_tenants: BTreeMap<String, String>,
    /// Each tenant's highest priority, where an admin set one other than the default
    /// (`quota set --max-priority`). Same section, from format 8.
    #[serde(skip)]
    pub max_priorities: BTreeMap<String, u32>,
    /// What an admin lets each TaskManager claim (`tm pin`). Same section, from format 8.
    #[serde(skip)]
    pub pins: BTreeMap<String, TaskManagerPin>,
    /// Certificates no longer accepted (`certs revoke`). Same section, from format 8.
    #[serde(skip)]
    pub revocations: super::Revocations,
    /// Jobs that ended without running because a job they waited for (`--after`) failed or
    /// was cancelled: the job → that job. Same section.
    #[serde(skip)]
    pub dependency_failures: BTreeMap<JobId, JobId>,
    /// What each TaskManager that declared resources has (capacity, isolation). Same section,
    /// from format 9.
    #[serde(skip)]
    pub tm_resources: BTreeMap<String, TaskManagerResources>,
    /// What a shard of each job asks beyond slots (only jobs that ask). Same section, from
    /// format 9.
    #[serde(skip)]
    pub requests: BTreeMap<JobId, ResourceRequest>,
    /// Tenants' limits on CPU, memory and named resources (a zero or absent dimension: no
    /// limit). Same section, from format 9.
    #[serde(skip)]
    pub resource_quotas: BTreeMap<String, Resources>,
    /// Slots and resources that stopped shards still hold in their tenants' counts, until
    /// they are surely stopped (`stopping`). Same section, from format 10.
    #[serde(skip)]
    pub stopping: super::stopping::StoppingHolds,
    /// Which command kinds and formats every replica must read (`cluster_version`). After
    /// the rest, from format 11; snapshots of a cluster at version 1 are written in format
    /// 10, without it, so that a release that knows no cluster version reads them.
    #[serde(skip)]
    pub cluster_version: super::ClusterVersion,
    /// Periodic jobs: the schedules and which jobs they made (`cron`). After the cluster
    /// version, from format 12 (cluster version 3).
    #[serde(skip)]
    pub cron: super::cron::CronState,
    /// What each TaskManager may declare of CPU, memory and named resources (`tm pin
    /// --cpus --memory --resources`). After the periodic jobs, from format 13 (cluster
    /// version 4).
    #[serde(skip)]
    pub resource_pins: BTreeMap<String, super::taskmanager::ResourcePin>,
    /// Resources held now on each TaskManager by shards that asked for some. Derived, like
    /// `tenant_slots`.
    #[serde(skip)]
    pub tm_used: BTreeMap<String, Resources>,
    /// Resources held now by each tenant's shards. Derived.
    #[serde(skip)]
    pub tenant_resources: BTreeMap<String, Resources>,
    /// Job → the jobs that wait for it (`--after`). Derived from `scheduling`, never encoded:
    /// rebuilt on decode.
    #[serde(skip)]
    pub dependents: BTreeMap<JobId, BTreeSet<JobId>>,
    /// Slots held now by shards of each priority, priorities holding none left out: whether
    /// any running shard is below a waiting one, without a scan. Derived.
    #[serde(skip)]
    pub held_by_priority: BTreeMap<u32, u64>,
    /// The pending work list filed for the scheduler (`pending`). Derived.
    #[serde(skip)]
    pub pending: super::pending::PendingIndex,
    /// Slots held now (assigned or running) by each tenant's shards, tenants holding none
    /// left out. Derived (kept by apply as slots are taken and given back, rebuilt on
    /// decode), so that the planner never counts every running shard.
    #[serde(skip)]
    pub tenant_slots: BTreeMap<String, u64>,
}

/// The sections encoded after the main one (format 10); format 9 had all but the last,
/// format 8 all but the last four,
/// format 7 the first six, format 6 the first three (with a priority alone per job), and
/// format 5 `outputs` alone.
#[derive(Serialize)]
struct ExtensionsRef<'a> {
    outputs: &'a OutputStore,
    scheduling: &'a BTreeMap<JobId, JobScheduling>,
    preemptions: &'a BTreeMap<(JobId, u32), u32>,
    quotas: &'a BTreeMap<String, Quota>,
    token_tenants: &'a BTreeMap<String, String>,
    dependency_failures: &'a BTreeMap<JobId, JobId>,
    max_priorities: &'a BTreeMap<String, u32>,
    pins: &'a BTreeMap<String, TaskManagerPin>,
    revocations: &'a super::Revocations,
    tm_resources: &'a BTreeMap<String, TaskManagerResources>,
    requests: &'a BTreeMap<JobId, ResourceRequest>,
    resource_quotas: &'a BTreeMap<String, Resources>,
    stopping: &'a super::stopping::StoppingHolds,
}

/// The extra section as format 10 writes it: format 9's, then the stopping holds.
#[derive(Deserialize)]
struct Extensions {
    since_v9: ExtensionsV9,
    stopping: super::stopping::StoppingHolds,
}

/// The extra section as format 9 wrote it: format 8's, then the resources.
#[derive(Deserialize)]
struct ExtensionsV9 {
    since_v8: ExtensionsV8,
    tm_resources: BTreeMap<String, TaskManagerResources>,
    requests: BTreeMap<JobId, ResourceRequest>,
    resource_quotas: BTreeMap<String, Resources>,
}

/// The extra section as format 8 wrote it: format 7's, then what format 8 added. bincode
/// lays a nested struct's fields out in line, so this reads what `ExtensionsRef` wrote.
#[derive(Deserialize)]
struct ExtensionsV8 {
    since_v7: ExtensionsV7,
    max_priorities: BTreeMap<String, u32>,
    pins: BTreeMap<String, TaskManagerPin>,
    revocations: super::Revocations,
}

/// The extra section as format 7 wrote it: no highest priorities, pins or revocations.
#[derive(Deserialize)]
struct ExtensionsV7 {
    outputs: OutputStore,
    scheduling: BTreeMap<JobId, JobScheduling>,
    preemptions: BTreeMap<(JobId, u32), u32>,
    quotas: BTreeMap<String, Quota>,
    token_tenants: BTreeMap<String, String>,
    dependency_failures: BTreeMap<JobId, JobId>,
}

#[derive(Deserialize)]
struct ExtensionsV6 {
    outputs: OutputStore,
    scheduling: BTreeMap<JobId, PriorityOnly>,
    preemptions: BTreeMap<(JobId, u32), u32>,
}

/// Which assignment list of a TaskManager a heartbeat reply describes: the greatest epoch
/// among the shards it holds, and how many it holds. Heartbeat replies leave the list out
/// when the agent already has this version.
///
/// Two moments of one log history with the same version hold the same list: a shard joins a
/// list only by a placement, whose epoch (its log index) exceeds every epoch before it, and
/// it leaves it for good (a later placement gives it a new epoch). So if the greatest epoch
/// `M` is the same at `t1` and `t2`, every shard held at `t2` was placed by command `M` or
/// earlier, before `t1`, and never left: the list at `t2` is part of the list at `t1`, and
/// with equal counts it is the same list. Any replica computes it from applied state alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssignmentsVersion {
    pub max_epoch: u64,
    pub count: u64,
}

/// A hash of the whole state: equal on every replica that applied the same log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateDigest(pub [u8; 32]);

impl fmt::Display for StateDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..16] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl ClusterState {
    /// Digest of the canonical encoding. Deterministic because every map is ordered.
    pub fn digest(&self) -> StateDigest {
        let bytes = self.encode();
        StateDigest(*blake3::hash(&bytes).as_bytes())
    }

    /// The snapshot format `encode` writes: 10 while the cluster version is 1 (what a
    /// release without cluster versions reads), 11 at version 2, 12 from version 3 (the
    /// periodic jobs after the cluster version).
    pub fn format_version(&self) -> u32 {
        match self.cluster_version.0 {
            0 | 1 => 10,
            2 => 11,
            3 => 12,
            _ => 13,
        }
    }

    /// Canonical bytes of the state (bincode, standard config): the length of the main
    /// section (8 bytes, big-endian), the main section, then the extensions (the shards'
    /// output and the jobs' scheduling options), then from format 11 the cluster version
    /// (see `format_version`).
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain owned data into a Vec cannot fail.
        let main =
            bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default();
        let extensions = ExtensionsRef {
            outputs: &self.outputs,
            scheduling: &self.scheduling,
            preemptions: &self.preemptions,
            quotas: &self.quotas,
            token_tenants: &self.token_tenants,
            dependency_failures: &self.dependency_failures,
            max_priorities: &self.max_priorities,
            pins: &self.pins,
            revocations: &self.revocations,
            tm_resources: &self.tm_resources,
            requests: &self.requests,
            resource_quotas: &self.resource_quotas,
            stopping: &self.stopping,
        };
        let mut outputs = bincode::serde::encode_to_vec(&extensions, bincode::config::standard())
            .unwrap_or_default();
        if self.format_version() >= 11 {
            outputs.extend(
                bincode::serde::encode_to_vec(self.cluster_version, bincode::config::standard())
                    .unwrap_or_default(),
            );
        }
        if self.format_version() >= 12 {
            outputs.extend(
                bincode::serde::encode_to_vec(&self.cron, bincode::config::standard())
                    .unwrap_or_default(),
            );
        }
        if self.format_version() >= 13 {
            outputs.extend(
                bincode::serde::encode_to_vec(&self.resource_pins, bincode::config::standard())
                    .unwrap_or_default(),
            );
        }
        let mut out = Vec::with_capacity(8 + main.len() + outputs.len());
        out.extend_from_slice(&(main.len() as u64).to_be_bytes());
        out.extend_from_slice(&main);
        out.extend_from_slice(&outputs);
        out
    }

    /// The main section and the rest, as `encode` lays them out.
    fn split_sections(bytes: &[u8]) -> Result<(Self, &[u8]), bincode::error::DecodeError> {
        let short = || bincode::error::DecodeError::UnexpectedEnd { additional: 8 };
        let (len, rest) = bytes.split_first_chunk::<8>().ok_or_else(short)?;
        let len = usize::try_from(u64::from_be_bytes(*len)).map_err(|_| short())?;
        let main = rest.get(..len).ok_or_else(short)?;
        Ok((crate::decode::decode_untrusted(main)?, &rest[len..]))
    }

    /// Decode what `encode` wrote in the newest format.
    pub fn decode(bytes: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        Self::decode_format(bytes, u32::MAX)
    }

    /// Decode what `encode` wrote in `format` (11, 12, 13): after the extensions the
    /// cluster version (nothing there: version 1), then from format 12 the periodic jobs
    /// (nothing: none), then from format 13 the resource pins (nothing: none). What follows
    /// is not read: a format does not hold more than it knew of.
    pub fn decode_format(bytes: &[u8], format: u32) -> Result<Self, bincode::error::DecodeError> {
        let (mut state, rest) = Self::split_sections(bytes)?;
        let (extensions, used): (Extensions, usize) = crate::decode::decode_untrusted_prefix(rest)?;
        state.install_v10(extensions);
        let mut rest = rest.get(used..).unwrap_or(&[]);
        if let Some(version) = next_section(&mut rest, true)? {
            state.cluster_version = version;
        }
        if let Some(cron) = next_section(&mut rest, format >= 12)? {
            state.cron = cron;
        }
        if let Some(pins) = next_section(&mut rest, format >= 13)? {
            state.resource_pins = pins;
        }
        state.rebuild_derived();
        Ok(state)
    }

    /// Decode the state as snapshot format 10 writes it: cluster version 1, whatever
    /// follows.
    pub fn decode_v10(bytes: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        let (mut state, rest) = Self::split_sections(bytes)?;
        state.install_v10(crate::decode::decode_untrusted(rest)?);
        state.rebuild_derived();
        Ok(state)
    }

    fn install_v10(&mut self, extensions: Extensions) {
        self.install_v9(extensions.since_v9);
        self.stopping = extensions.stopping;
    }

    /// Decode the state as snapshot format 9 wrote it: no stopping holds.
    pub fn decode_v9(bytes: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        let (mut state, rest) = Self::split_sections(bytes)?;
        state.install_v9(crate::decode::decode_untrusted(rest)?);
        state.rebuild_derived();
        Ok(state)
    }

    fn install_v9(&mut self, extensions: ExtensionsV9) {
        self.install_v8(extensions.since_v8);
        self.tm_resources = extensions.tm_resources;
        self.requests = extensions.requests;
        self.resource_quotas = extensions.resource_quotas;
    }

    /// Decode the state as snapshot format 8 wrote it: no resources.
    pub fn decode_v8(bytes: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        let (mut state, rest) = Self::split_sections(bytes)?;
        state.install_v8(crate::decode::decode_untrusted(rest)?);
        state.rebuild_derived();
        Ok(state)
    }

    fn install_v8(&mut self, extensions: ExtensionsV8) {
        self.install_v7(extensions.since_v7);
        self.max_priorities = extensions.max_priorities;
        self.pins = extensions.pins;
        self.revocations = extensions.revocations;
    }

    /// Decode the state as snapshot format 7 wrote it: no highest priorities, pins or
    /// revocations.
    pub fn decode_v7(bytes: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        let (mut state, rest) = Self::split_sections(bytes)?;
        state.install_v7(crate::decode::decode_untrusted(rest)?);
        state.rebuild_derived();
        Ok(state)
    }

    fn install_v7(&mut self, extensions: ExtensionsV7) {
        self.outputs = extensions.outputs;
        self.scheduling = extensions.scheduling;
        self.preemptions = extensions.preemptions;
        self.quotas = extensions.quotas;
        self.token_tenants = extensions.token_tenants;
        self.dependency_failures = extensions.dependency_failures;
    }

    /// Decode the state as snapshot format 6 wrote it: output, a priority per job and the
    /// preemption counts after the main section.
    pub fn decode_v6(bytes: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        let (mut state, rest) = Self::split_sections(bytes)?;
        let extensions: ExtensionsV6 = crate::decode::decode_untrusted(rest)?;
        state.outputs = extensions.outputs;
        state.scheduling = extensions
            .scheduling
            .into_iter()
            .map(|(job, old)| (job, JobScheduling::from(old)))
            .collect();
        state.preemptions = extensions.preemptions;
        state.rebuild_derived();
        Ok(state)
    }

    /// Rebuild the fields derived from the rest: `dependents`, `tenant_slots`, the resources
    /// held, the pending index and each job's shard counts.
    fn rebuild_derived(&mut self) {
        for job in self.jobs.values_mut() {
            Arc::make_mut(job).recount();
        }
        self.dependents.clear();
        for (job, options) in &self.scheduling {
            for dependency in &options.after {
                self.dependents.entry(*dependency).or_default().insert(*job);
            }
        }
        let mut held: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_priority: BTreeMap<u32, u64> = BTreeMap::new();
        let mut tm_used: BTreeMap<String, Resources> = BTreeMap::new();
        let mut tenant_resources: BTreeMap<String, Resources> = BTreeMap::new();
        for (tm, shards) in &self.shards_by_taskmanager {
            for (job_id, _) in shards.iter() {
                if let Some(job) = self.jobs.get(job_id) {
                    let tenant = self.tenant(*job_id);
                    *held.entry(tenant.to_string()).or_default() +=
                        u64::from(job.spec.slots_per_shard);
                    *by_priority.entry(self.priority(*job_id)).or_default() +=
                        u64::from(job.spec.slots_per_shard);
                    if let Some(asked) = self.asked_resources(*job_id) {
                        tm_used.entry(tm.clone()).or_default().add_times(asked, 1);
                        tenant_resources
                            .entry(tenant.to_string())
                            .or_default()
                            .add_times(asked, 1);
                    }
                }
            }
        }
        self.tenant_slots = held;
        self.held_by_priority = by_priority;
        self.tm_used = tm_used;
        self.tenant_resources = tenant_resources;
        self.rebuild_pending_index();
    }

    /// What one shard of `job` asks beyond slots, if anything.
    pub fn asked_resources(&self, job: JobId) -> Option<&Resources> {
        self.requests
            .get(&job)
            .map(|r| &r.per_shard)
            .filter(|r| !r.is_empty())
    }

    /// Whether `job`'s shards run only where isolation is `full`.
    pub fn needs_full_isolation(&self, job: JobId) -> bool {
        self.requests.get(&job).is_some_and(|r| r.isolation_full)
    }

    /// A TaskManager's isolation level (`none` when it never said).
    pub fn isolation(&self, taskmanager: &str) -> Isolation {
        self.tm_resources
            .get(taskmanager)
            .map_or(Isolation::None, |r| r.isolation)
    }

    /// What a TaskManager has: as declared, or (it declared nothing) CPU and memory without
    /// limit and no named resources.
    pub fn capacity(&self, taskmanager: &str) -> Resources {
        match self.tm_resources.get(taskmanager) {
            Some(declared) => declared.capacity.clone(),
            None => Resources {
                cpu_millis: u64::MAX,
                memory_bytes: u64::MAX,
                named: BTreeMap::new(),
            },
        }
    }

    /// Whether one more shard of `job` may go to `taskmanager` as far as resources and
    /// isolation go (slots, state and labels are checked apart).
    pub fn resources_allow(&self, job: JobId, taskmanager: &str) -> bool {
        if self.needs_full_isolation(job) && self.isolation(taskmanager) != Isolation::Full {
            return false;
        }
        let Some(asked) = self.asked_resources(job) else {
            return true;
        };
        let empty = Resources::default();
        let used = self.tm_used.get(taskmanager).unwrap_or(&empty);
        asked.fits(used, &self.capacity(taskmanager))
    }

    /// Whether `shards` more shards of `job` keep its tenant within its quota (slots) and
    /// its resource limits, given that it holds `held_slots` slots and `held` resources.
    pub fn quota_allows(
        &self,
        job: JobId,
        shards: u64,
        held_slots: u64,
        held: Option<&Resources>,
    ) -> bool {
        let Some(slots) = self
            .jobs
            .get(&job)
            .map(|j| u64::from(j.spec.slots_per_shard))
        else {
            return false;
        };
        let tenant = self.tenant(job);
        if let Some(limit) = self.quota(tenant).slots {
            if held_slots.saturating_add(slots.saturating_mul(shards)) > limit {
                return false;
            }
        }
        let (Some(limits), Some(asked)) =
            (self.resource_quotas.get(tenant), self.asked_resources(job))
        else {
            return true;
        };
        let empty = Resources::default();
        let held = held.unwrap_or(&empty);
        let within = |limit: u64, held: u64, per_shard: u64| {
            limit == 0
                || per_shard == 0
                || held.saturating_add(per_shard.saturating_mul(shards)) <= limit
        };
        within(limits.cpu_millis, held.cpu_millis, asked.cpu_millis)
            && within(limits.memory_bytes, held.memory_bytes, asked.memory_bytes)
            && limits.named.iter().all(|(name, limit)| {
                within(
                    *limit,
                    held.named.get(name).copied().unwrap_or(0),
                    asked.named.get(name).copied().unwrap_or(0),
                )
            })
    }

    /// Whether one more shard of `job` keeps its tenant within its quota and limits at
    /// `now_ms`, counting what its stopped shards still hold (`stopping`).
    pub fn quota_allows_one_more(&self, job: JobId, now_ms: u64) -> bool {
        let (slots, resources) = self.tenant_held(self.tenant(job), now_ms);
        self.quota_allows(job, 1, slots, Some(&resources))
    }

    /// Count one shard of `job` on `taskmanager` as taking (or giving back) what it asked.
    pub fn count_resources(&mut self, job: JobId, taskmanager: &str, taken: bool) {
        let Some(asked) = self.asked_resources(job).cloned() else {
            return;
        };
        let tenant = self.tenant(job).to_string();
        for (map, key) in [
            (&mut self.tm_used, taskmanager.to_string()),
            (&mut self.tenant_resources, tenant),
        ] {
            if taken {
                map.entry(key).or_default().add_times(&asked, 1);
            } else if let Some(held) = map.get_mut(&key) {
                held.subtract(&asked);
                if held.is_empty() {
                    map.remove(&key);
                }
            }
        }
    }

    /// Count `slots` more (taken) or fewer (given back) for the tenant and the priority of
    /// `job`.
    pub fn count_tenant_slots(&mut self, job: JobId, slots: u32, taken: bool) {
        let priority = self.priority(job);
        let at_priority = self.held_by_priority.entry(priority).or_default();
        if taken {
            *at_priority += u64::from(slots);
        } else {
            *at_priority = at_priority.saturating_sub(u64::from(slots));
        }
        if *at_priority == 0 {
            self.held_by_priority.remove(&priority);
        }
        // The options' map and the counts are separate fields: both may be borrowed at once.
        let tenant = self
            .scheduling
            .get(&job)
            .map_or(DEFAULT_TENANT, |s| s.tenant.as_str());
        if taken {
            match self.tenant_slots.get_mut(tenant) {
                Some(held) => *held += u64::from(slots),
                None => {
                    self.tenant_slots
                        .insert(tenant.to_string(), u64::from(slots));
                }
            }
        } else if let Some(held) = self.tenant_slots.get_mut(tenant) {
            *held = held.saturating_sub(u64::from(slots));
            if *held == 0 {
                self.tenant_slots.remove(tenant);
            }
        }
    }

    /// Decode the state as snapshot format 5 wrote it: the shards' output alone after the
    /// main section.
    pub fn decode_with_outputs_only(bytes: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        let (mut state, rest) = Self::split_sections(bytes)?;
        state.outputs = crate::decode::decode_untrusted(rest)?;
        state.rebuild_derived();
        Ok(state)
    }

    /// A job's priority.
    pub fn priority(&self, job: JobId) -> u32 {
        self.scheduling
            .get(&job)
            .map_or(super::DEFAULT_PRIORITY, |s| s.priority)
    }

    /// A job's tenant.
    pub fn tenant(&self, job: JobId) -> &str {
        self.scheduling
            .get(&job)
            .map_or(DEFAULT_TENANT, |s| s.tenant.as_str())
    }

    /// Whether a job's shards are placed only all together.
    pub fn is_gang(&self, job: JobId) -> bool {
        self.scheduling.get(&job).is_some_and(|s| s.gang)
    }

    /// The jobs a job waits for (`--after`).
    pub fn after(&self, job: JobId) -> &[JobId] {
        self.scheduling
            .get(&job)
            .map_or(&[], |s| s.after.as_slice())
    }

    /// The first job named in `--after` that has not finished yet, if any. A job no longer
    /// held finished: retention drops only ended jobs, and one that failed or was cancelled
    /// failed its dependents when it ended.
    pub fn unfinished_dependency(&self, job: JobId) -> Option<JobId> {
        self.after(job).iter().copied().find(|dependency| {
            self.job(*dependency)
                .is_some_and(|d| d.state != super::JobState::Finished)
        })
    }

    /// A tenant's quota and weight (the defaults if none was set).
    pub fn quota(&self, tenant: &str) -> Quota {
        self.quotas.get(tenant).copied().unwrap_or_default()
    }

    /// The highest priority a tenant's jobs may ask for (an admin's own submissions aside).
    pub fn max_priority(&self, tenant: &str) -> u32 {
        self.max_priorities
            .get(tenant)
            .copied()
            .unwrap_or(super::DEFAULT_PRIORITY)
    }

    /// The tenant of the jobs a token's holder submits: the one it was created with, or its
    /// name.
    pub fn token_tenant<'a>(&'a self, token: &'a str) -> &'a str {
        self.token_tenants
            .get(token)
            .map_or(token, |tenant| tenant.as_str())
    }

    /// Slots held now (assigned or running) by each tenant's shards.
    pub fn slots_held_by_tenant(&self) -> &BTreeMap<String, u64> {
        &self.tenant_slots
    }

    /// Decode the state as written before shards' output was kept (snapshot format 4): the
    /// main section alone.
    pub fn decode_without_outputs(bytes: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        let mut state: Self = crate::decode::decode_untrusted(bytes)?;
        state.rebuild_derived();
        Ok(state)
    }

    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id).map(|job| &**job)
    }

    pub fn taskmanager(&self, id: &str) -> Option<&TaskManager> {
        self.taskmanagers.get(id)
    }

    /// The shards a TaskManager holds, with their jobs.
    pub fn assignments<'a>(
        &'a self,
        taskmanager: &str,
    ) -> impl Iterator<Item = (&'a Job, &'a Shard)> + 'a {
        self.shards_by_taskmanager
            .get(taskmanager)
            .into_iter()
            .flat_map(|held| held.iter())
            .filter_map(|(job_id, index)| {
                let job: &Job = self.jobs.get(job_id)?;
                Some((job, job.shards.get(*index as usize)?))
            })
    }

    pub fn assignments_version(&self, taskmanager: &str) -> AssignmentsVersion {
        self.assignments(taskmanager)
            .fold(AssignmentsVersion::default(), |v, (_, shard)| {
                AssignmentsVersion {
                    max_epoch: v.max_epoch.max(shard.epoch),
                    count: v.count + 1,
                }
            })
    }
}

/// The next of the sections `encode` appends after the extensions, in the order formats added
/// them: `None` when this `format` does not have it or it was not written (then none after it
/// is read either), and the rest moves past it.
fn next_section<T: serde::de::DeserializeOwned>(
    rest: &mut &[u8],
    format_has_it: bool,
) -> Result<Option<T>, bincode::error::DecodeError> {
    if !format_has_it || rest.is_empty() {
        *rest = &[];
        return Ok(None);
    }
    let (value, used) = crate::decode::decode_untrusted_prefix(rest)?;
    *rest = rest.get(used..).unwrap_or(&[]);
    Ok(Some(value))
}
