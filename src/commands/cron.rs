//! `dispatcher cron ...`: add, list, show, suspend, resume, delete and run schedules, and
//! how they are printed (text for people, JSON for scripts).

use super::output::{message, print_json};
use super::table::Table;
use super::{connect, job_request, terminal, CliError, ExitCode};
use crate::cli::{CatchUpArg, ClientArgs, ConcurrencyArg, CronCommand, OutputFormat};
use crate::domain::{format_duration, rfc3339};
use crate::pb::api::{AddScheduleRequest, ScheduleInfo};
use serde_json::{json, Value};

pub async fn cron(command: CronCommand, args: ClientArgs) -> Result<ExitCode, CliError> {
    let client = connect(&args)?;
    let tenant_of = |tenant: Option<String>| tenant.unwrap_or_default();
    match command {
        CronCommand::Add {
            name,
            schedule,
            timezone,
            concurrency,
            starting_deadline,
            catch_up,
            job,
        } => {
            let job = job_request(name.clone(), *job)?;
            let request = AddScheduleRequest {
                name,
                schedule,
                timezone: timezone.unwrap_or_default(),
                concurrency: match concurrency {
                    ConcurrencyArg::Allow => "allow",
                    ConcurrencyArg::Forbid => "forbid",
                    ConcurrencyArg::Replace => "replace",
                }
                .into(),
                starting_deadline_ms: starting_deadline,
                catch_up: match catch_up {
                    CatchUpArg::None => "none",
                    CatchUpArg::Last => "last",
                    CatchUpArg::All => "all",
                }
                .into(),
                job: Some(job),
            };
            let added = client.add_schedule(request).await?;
            let verb = if added.created { "added" } else { "updated" };
            let next = added
                .next_fires_ms
                .first()
                .map_or_else(|| "never".to_string(), |ms| rfc3339(*ms));
            let text = format!("{verb} schedule {} (next at {next})", added.name);
            message(args.output, schedule_json(&added), &text);
        }
        CronCommand::List => {
            let schedules = client.list_schedules().await?;
            list(args.output, &schedules);
        }
        CronCommand::Show { name, tenant } => {
            let schedule = client.get_schedule(&name, &tenant_of(tenant)).await?;
            show(args.output, &schedule);
        }
        CronCommand::Suspend { name, tenant } => {
            let schedule = client
                .suspend_schedule(&name, &tenant_of(tenant), true)
                .await?;
            let text = format!("suspended schedule {}", schedule.name);
            message(args.output, schedule_json(&schedule), &text);
        }
        CronCommand::Resume { name, tenant } => {
            let schedule = client
                .suspend_schedule(&name, &tenant_of(tenant), false)
                .await?;
            let next = schedule
                .next_fires_ms
                .first()
                .map_or_else(|| "never".to_string(), |ms| rfc3339(*ms));
            let text = format!("resumed schedule {} (next at {next})", schedule.name);
            message(args.output, schedule_json(&schedule), &text);
        }
        CronCommand::Delete { name, tenant } => {
            let deleted = client.delete_schedule(&name, &tenant_of(tenant)).await?;
            message(
                args.output,
                json!({"name": deleted.name, "tenant": deleted.tenant, "deleted": true}),
                &format!(
                    "deleted schedule {} of tenant {}",
                    deleted.name, deleted.tenant
                ),
            );
        }
        CronCommand::Run { name, tenant } => {
            let reply = client.run_schedule(&name, &tenant_of(tenant)).await?;
            message(
                args.output,
                json!({"job_id": reply.job_id, "created": reply.created}),
                &format!("submitted {}", reply.job_id),
            );
        }
    }
    Ok(0)
}

/// One schedule as JSON: the contract's `cron list` fields, then the rest of `cron show`.
fn schedule_json(s: &ScheduleInfo) -> Value {
    let last_job_id = s.recent.last().map(|r| r.job_id.clone());
    json!({
        "name": s.name,
        "schedule": s.schedule,
        "timezone": s.timezone,
        "suspended": s.suspended,
        "next_fire_ms": s.next_fires_ms.first(),
        "last_job_id": last_job_id,
        "tenant": s.tenant,
        "concurrency": s.concurrency,
        "catch_up": s.catch_up,
        "starting_deadline_ms": s.starting_deadline_ms,
        "next_fires_ms": s.next_fires_ms,
        "settled_until_ms": s.settled_until_ms,
        "recent": s.recent.iter().map(|r| json!({
            "scheduled_ms": r.scheduled_ms, "job_id": r.job_id, "state": r.state,
        })).collect::<Vec<_>>(),
        "skipped_total": s.skipped_total,
        "last_skip": s.last_skip.as_ref().map(|k| json!({
            "count": k.count, "at_least": k.at_least, "first_ms": k.first_ms,
            "last_ms": k.last_ms, "reason": k.reason, "at_ms": k.at_ms,
        })),
        "created_at_ms": s.created_at_ms,
        "command": s.spec.as_ref().map(|spec| {
            std::iter::once(spec.command.clone()).chain(spec.args.iter().cloned()).collect::<Vec<_>>()
        }),
        "shards": s.spec.as_ref().map(|spec| spec.shard_count),
        "priority": s.priority,
        "created": s.created,
    })
}

fn list(format: OutputFormat, schedules: &[ScheduleInfo]) {
    match format {
        OutputFormat::Json => {
            print_json(&Value::Array(schedules.iter().map(schedule_json).collect()))
        }
        OutputFormat::Text => {
            let mut t = Table::new(&[
                "NAME", "TENANT", "SCHEDULE", "TIMEZONE", "STATE", "NEXT", "LAST JOB",
            ]);
            for s in schedules {
                t.row(vec![
                    s.name.clone(),
                    s.tenant.clone(),
                    s.schedule.clone(),
                    s.timezone.clone(),
                    if s.suspended { "suspended" } else { "active" }.to_string(),
                    s.next_fires_ms
                        .first()
                        .map_or_else(|| "-".to_string(), |ms| rfc3339(*ms)),
                    s.recent.last().map_or_else(
                        || "-".to_string(),
                        |r| format!("{} ({})", r.job_id, r.state),
                    ),
                ]);
            }
            println!("{}", t.render());
        }
    }
}

fn show(format: OutputFormat, s: &ScheduleInfo) {
    if matches!(format, OutputFormat::Json) {
        print_json(&schedule_json(s));
        return;
    }
    let state = if s.suspended { "suspended" } else { "active" };
    let mut rules = format!("concurrency {}, catch-up {}", s.concurrency, s.catch_up);
    if let Some(ms) = s.starting_deadline_ms {
        rules.push_str(&format!(", starting deadline {}", format_duration(ms)));
    }
    let line = format!(
        "{} (tenant {}): \"{}\" in {}, {state}; {rules}",
        s.name, s.tenant, s.schedule, s.timezone
    );
    println!("{}", terminal::line(&line));
    if let Some(spec) = &s.spec {
        let command = std::iter::once(spec.command.as_str())
            .chain(spec.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let line = format!(
            "runs: {command} ({} shards, priority {}{})",
            spec.shard_count,
            s.priority,
            if s.gang { ", gang" } else { "" }
        );
        println!("{}", terminal::line(&line));
    }
    if s.next_fires_ms.is_empty() {
        println!("next: none");
    } else {
        let next: Vec<String> = s.next_fires_ms.iter().map(|ms| rfc3339(*ms)).collect();
        println!("next: {}", next.join(", "));
    }
    println!("settled up to {}", rfc3339(s.settled_until_ms));
    if s.recent.is_empty() {
        println!("no jobs yet");
    } else {
        let mut t = Table::new(&["SCHEDULED", "JOB", "STATE"]);
        for r in &s.recent {
            t.row(vec![
                rfc3339(r.scheduled_ms),
                r.job_id.clone(),
                r.state.clone(),
            ]);
        }
        println!("{}", t.render());
    }
    if let Some(k) = &s.last_skip {
        let more = if k.at_least { "at least " } else { "" };
        let line = format!(
            "skipped {} in all; last: {more}{} from {} to {}: {}",
            s.skipped_total,
            k.count,
            rfc3339(k.first_ms),
            rfc3339(k.last_ms),
            k.reason
        );
        println!("{}", terminal::line(&line));
    }
}
