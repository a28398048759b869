//! Rendering of command results: `--output json` prints one JSON document with the
//! contract's fields; text prints aligned tables.

use super::resources_output;
use super::table::Table;
use super::terminal;
use crate::cli::OutputFormat;
use crate::pb::api::{
    ClusterStatusReply, JobStatus, JobSummary, Member, QuotaInfo, TaskManagerInfo, TokenInfo,
};
use serde_json::{json, Value};

pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

pub fn message(format: OutputFormat, value: Value, text: &str) {
    match format {
        OutputFormat::Json => print_json(&value),
        OutputFormat::Text => println!("{}", terminal::escape(text, true)),
    }
}

fn members_json(members: &[Member]) -> Value {
    Value::Array(
        members
            .iter()
            .map(|m| {
                json!({"id": m.id, "addr": m.addr, "role": m.role, "matched_index": m.matched_index,
                       "version": m.version, "max_cluster_version": m.max_cluster_version})
            })
            .collect(),
    )
}

fn members_table(members: &[Member]) -> String {
    let mut t = Table::new(&["ID", "ADDRESS", "ROLE", "MATCHED", "VERSION"]);
    for m in members {
        t.row(vec![
            m.id.to_string(),
            m.addr.clone(),
            m.role.clone(),
            m.matched_index
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into()),
            m.version
                .as_deref()
                .map_or_else(|| "-".to_string(), |v| terminal::line(v).into_owned()),
        ]);
    }
    t.render()
}

pub fn members(format: OutputFormat, members: &[Member]) {
    match format {
        OutputFormat::Json => print_json(&json!({"members": members_json(members)})),
        OutputFormat::Text => println!("{}", members_table(members)),
    }
}

pub fn cluster_status(format: OutputFormat, s: &ClusterStatusReply, local: bool) {
    match format {
        OutputFormat::Json => {
            let mut v = json!({
                "leader_id": s.leader_id,
                "term": s.term,
                "last_applied": s.last_applied,
                "committed": s.committed,
                "members": members_json(&s.members),
                "cluster_version": s.cluster_version.unwrap_or(1),
            });
            if local {
                v["node_id"] = json!(s.node_id);
                v["state_digest"] = json!(s.state_digest);
                v["server_state"] = json!(s.server_state);
                v["last_log_index"] = json!(s.last_log_index);
                v["snapshot_index"] = json!(s.snapshot_index);
                v["purged_index"] = json!(s.purged_index);
                v["initialized"] = json!(s.initialized);
                v["raft_gate"] = json!(s.raft_gate);
                v["max_cluster_version"] = json!(s.max_cluster_version.max(1));
                v["held_at_version"] = json!(s.held_at_version);
                v["peer_troubles"] = Value::Array(
                    s.peer_troubles
                        .iter()
                        .map(|t| json!({"id": t.id, "addr": t.addr, "error": t.error, "since_ms": t.since_ms}))
                        .collect(),
                );
            }
            print_json(&v);
        }
        OutputFormat::Text => {
            let leader = s
                .leader_id
                .map(|l| l.to_string())
                .unwrap_or_else(|| "none".into());
            println!(
                "leader {leader}  term {}  last applied {}  committed {}  cluster version {}",
                s.term,
                s.last_applied,
                s.committed,
                s.cluster_version.unwrap_or(1)
            );
            if let Some(held) = s.held_at_version.filter(|_| local) {
                println!(
                    "held at cluster version {held} by a downgrade (until it restarts as \
                     another release, or `dispatcher cluster downgrade --cancel`)"
                );
            }
            if local {
                println!(
                    "replica {} ({}, raft gate {})  state digest {}  last log {}  snapshot {}",
                    s.node_id,
                    s.server_state,
                    s.raft_gate,
                    s.state_digest,
                    s.last_log_index,
                    s.snapshot_index
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "-".into())
                );
                for t in &s.peer_troubles {
                    println!(
                        "cannot reach replica {} at {} (failing since {}): {}",
                        t.id,
                        terminal::line(&t.addr),
                        age(crate::clock::now_ms().saturating_sub(t.since_ms)),
                        terminal::line(&t.error)
                    );
                }
            }
            println!("{}", members_table(&s.members));
        }
    }
}

/// `cluster downgrade`: the version now and whether each replica's data dir is ready for
/// the older release; exit code 1 when one is not.
pub fn downgrade(
    format: OutputFormat,
    reply: &crate::pb::api::DowngradeReply,
    cancel: bool,
) -> i32 {
    let all_ready = reply.replicas.iter().all(|r| r.ready);
    match format {
        OutputFormat::Json => print_json(&json!({
            "cluster_version": reply.cluster_version,
            "index": reply.index,
            "cancelled": cancel,
            "replicas": reply.replicas.iter().map(|r| json!({
                "id": r.id, "addr": r.addr, "ready": r.ready,
                "error": (!r.error.is_empty()).then_some(&r.error),
                "snapshot_index": r.snapshot_index,
                "note": (!r.note.is_empty()).then_some(&r.note),
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            if cancel {
                println!(
                    "downgrade cancelled: the leader raises the cluster version (now {}) once \
                     every replica reads a newer one",
                    reply.cluster_version
                );
            } else {
                println!("cluster version {}", reply.cluster_version);
            }
            for r in &reply.replicas {
                if r.ready && !cancel && !r.note.is_empty() {
                    println!(
                        "replica {} at {}: ready ({})",
                        r.id,
                        terminal::line(&r.addr),
                        terminal::line(&r.note)
                    );
                } else if r.ready && !cancel {
                    println!(
                        "replica {} at {}: ready for the older release (snapshot at {})",
                        r.id,
                        terminal::line(&r.addr),
                        r.snapshot_index
                    );
                } else if !r.ready {
                    println!(
                        "replica {} at {}: NOT ready: {}",
                        r.id,
                        terminal::line(&r.addr),
                        terminal::line(&r.error)
                    );
                }
            }
            if !all_ready {
                println!("run the same command again once those replicas are up");
            }
        }
    }
    if all_ready {
        0
    } else {
        1
    }
}

pub fn taskmanagers(format: OutputFormat, tms: &[TaskManagerInfo]) {
    match format {
        OutputFormat::Json => print_json(&Value::Array(
            tms.iter().map(crate::rpc::taskmanager_json).collect(),
        )),
        OutputFormat::Text => {
            let mut t = Table::new(&[
                "ID",
                "ADDRESS",
                "STATE",
                "ISOLATION",
                "SLOTS",
                "USED",
                "CPU",
                "MEMORY",
                "RESOURCES",
                "RUNS",
                "FAILED",
                "EXCLUDED",
                "LABELS",
            ]);
            let now = crate::clock::now_ms();
            for tm in tms {
                let mut labels: Vec<String> =
                    tm.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                labels.sort();
                let excluded = tm
                    .excluded_until_ms
                    .filter(|until| *until > now)
                    .map(|until| format!("{}s more", (until - now).div_ceil(1000)))
                    .unwrap_or_else(|| "-".into());
                let [cpu, memory, named] =
                    resources_output::used_of(tm.used.as_ref(), tm.capacity.as_ref());
                t.row(vec![
                    tm.id.clone(),
                    tm.addr.clone(),
                    tm.state.clone(),
                    tm.isolation.clone(),
                    tm.slots.to_string(),
                    tm.used_slots.to_string(),
                    cpu,
                    memory,
                    named,
                    tm.shard_runs.to_string(),
                    tm.shard_failures.to_string(),
                    excluded,
                    labels.join(","),
                ]);
            }
            println!("{}", t.render());
        }
    }
}

pub fn job_status(format: OutputFormat, job: &JobStatus) {
    match format {
        OutputFormat::Json => print_json(&crate::rpc::job_status_json(job)),
        OutputFormat::Text => {
            let mut options = format!("priority {}, tenant {}", job.priority, job.tenant);
            if job.gang {
                options.push_str(", gang");
            }
            if !job.after.is_empty() {
                options.push_str(&format!(", after {}", job.after.join(",")));
            }
            if let Some(asked) = &job.resources {
                let asked = crate::domain::Resources::from(asked);
                if !asked.is_empty() {
                    options.push_str(&format!(", {asked} per shard"));
                }
            }
            if job.isolation_full {
                options.push_str(", isolation full");
            }
            if let Some(ms) = job.timeout_ms {
                options.push_str(&format!(", timeout {}", crate::domain::format_duration(ms)));
            }
            if let (Some(schedule), Some(ms)) = (&job.schedule, job.scheduled_ms) {
                options.push_str(&format!(
                    ", schedule {schedule} for {}",
                    crate::domain::rfc3339(ms)
                ));
            }
            println!(
                "{}  {}  {}  ({} shards, {})",
                job.job_id,
                terminal::line(&job.name),
                job.state,
                job.shards.len(),
                terminal::line(&options),
            );
            if !job.reason.is_empty() {
                println!("{}", terminal::line(&job.reason));
            }
            if let Some(r) = &job.reservation {
                let when = r.expected_start_ms.map_or_else(
                    || "when the runs it waits for end (they have no time limit)".to_string(),
                    |at| {
                        format!(
                            "in about {}",
                            crate::domain::format_duration(
                                at.saturating_sub(crate::clock::now_ms()).max(1000) / 1000 * 1000
                            )
                        )
                    },
                );
                println!(
                    "room held on {}; expected to start {when}",
                    terminal::line(&r.taskmanagers.join(", "))
                );
            }
            let mut t = Table::new(&[
                "SHARD",
                "STATE",
                "TASKMANAGER",
                "ATTEMPT",
                "EPOCH",
                "EXIT",
                "FAILURES",
            ]);
            for s in &job.shards {
                t.row(vec![
                    s.index.to_string(),
                    s.state.clone(),
                    s.taskmanager.clone().unwrap_or_else(|| "-".into()),
                    s.attempt.to_string(),
                    s.epoch.to_string(),
                    s.exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    s.failures.to_string(),
                ]);
            }
            println!("{}", t.render());
            for s in job.shards.iter().filter(|s| s.error.is_some()) {
                let error = s.error.as_deref().unwrap_or_default();
                let last = error.lines().last().unwrap_or_default();
                println!("shard {} last error: {}", s.index, terminal::line(last));
            }
        }
    }
}

pub fn jobs(format: OutputFormat, jobs: &[JobSummary]) {
    match format {
        OutputFormat::Json => print_json(&Value::Array(
            jobs.iter()
                .map(|j| {
                    json!({"job_id": j.job_id, "name": j.name, "state": j.state,
                                "shard_count": j.shard_count, "shards_finished": j.shards_finished})
                })
                .collect(),
        )),
        OutputFormat::Text => {
            let mut t = Table::new(&["JOB", "NAME", "STATE", "SHARDS", "FINISHED"]);
            for j in jobs {
                t.row(vec![
                    j.job_id.clone(),
                    j.name.clone(),
                    j.state.clone(),
                    j.shard_count.to_string(),
                    j.shards_finished.to_string(),
                ]);
            }
            println!("{}", t.render());
        }
    }
}

pub fn tokens(format: OutputFormat, tokens: &[TokenInfo]) {
    match format {
        OutputFormat::Json => print_json(&Value::Array(
            tokens
                .iter()
                .map(|t| {
                    json!({"name": t.name, "role": t.role, "tenant": t.tenant,
                           "created_ms": t.created_ms})
                })
                .collect(),
        )),
        OutputFormat::Text => {
            let mut table = Table::new(&["NAME", "ROLE", "TENANT", "CREATED"]);
            for token in tokens {
                table.row(vec![
                    token.name.clone(),
                    token.role.clone(),
                    token.tenant.clone(),
                    age(crate::clock::now_ms().saturating_sub(token.created_ms)),
                ]);
            }
            println!("{}", table.render());
        }
    }
}

pub fn quotas(format: OutputFormat, quotas: &[QuotaInfo]) {
    match format {
        OutputFormat::Json => print_json(&Value::Array(
            quotas.iter().map(crate::rpc::quota_json).collect(),
        )),
        OutputFormat::Text => {
            let mut table = Table::new(&[
                "TENANT", "QUOTA", "WEIGHT", "MAX PRIO", "RUNNING", "PENDING", "LIMITS", "HOLDS",
            ]);
            for q in quotas {
                table.row(vec![
                    q.tenant.clone(),
                    q.slots.map_or_else(|| "-".to_string(), |n| n.to_string()),
                    q.weight.to_string(),
                    q.max_priority.to_string(),
                    q.running_slots.to_string(),
                    q.pending_shards.to_string(),
                    q.resource_limits.as_ref().map_or_else(
                        || "-".to_string(),
                        |l| crate::domain::Resources::from(l).to_string(),
                    ),
                    q.resources_used.as_ref().map_or_else(
                        || "-".to_string(),
                        |u| crate::domain::Resources::from(u).to_string(),
                    ),
                ]);
            }
            println!("{}", table.render());
        }
    }
}

/// "42s ago", "5m ago", "3h ago", "2d ago".
fn age(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        7200..=172_799 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}
