//! What each CLI command does: talk to the cluster through `client`, print through `output`.

mod bench;
mod chaos;
mod completions;
mod cron;
mod demo;
mod launch;
mod logs;
mod output;
mod snapshot;
mod watch;

pub use bench::bench;
pub use chaos::chaos;
pub use completions::completions;
pub use cron::cron;
pub use demo::demo;
pub use launch::{agent_options, serve_options};
pub use watch::events;
mod plot;
mod resources_output;
mod table;
pub mod terminal;

use crate::cli::{
    ClientArgs, ClusterCommand, JobArgs, JobCommand, QuotaCommand, SnapshotCommand, SubmitArgs,
    TmCommand, TokenCommand,
};
use crate::client::{Client, ClientError};
use crate::domain::Role;
use crate::pb::api::{JobSpec, SubmitRequest};
use crate::security::{choose_transport, only_client_certificate, Credentials};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Serve(#[from] crate::node::NodeError),
    #[error("benchmark failed: {0}")]
    Bench(#[from] crate::bench::BenchError),
    #[error("{0}")]
    Agent(#[from] crate::taskmanager::AgentError),
    #[error("{0}")]
    Certs(#[from] crate::security::certs::CertsError),
    #[error("{0}")]
    Security(#[from] crate::security::SecurityError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
}

/// `dispatcher certs init|add|revoke`.
pub async fn certs(command: crate::cli::CertsCommand) -> Result<ExitCode, CliError> {
    use crate::cli::CertsCommand;
    use crate::security::certs::{add, init};
    let (dir, written) = match command {
        CertsCommand::Revoke {
            party,
            cert,
            client,
        } => return revoke_certificate(&party, cert.as_deref(), &client).await,
        CertsCommand::Init { out, parties } => {
            let written = init(&out, &parties.plan())?;
            (out, written)
        }
        CertsCommand::Add { dir, parties } => {
            let written = add(&dir, &parties.plan())?;
            (dir, written)
        }
    };
    println!(
        "wrote {} files to {} (keys mode 0600); keep ca-key.pem offline once every party has its files",
        written.len(),
        dir.display()
    );
    Ok(0)
}

/// `dispatcher certs revoke <party> [--cert <file>]`.
async fn revoke_certificate(
    party: &str,
    cert: Option<&std::path::Path>,
    args: &ClientArgs,
) -> Result<ExitCode, CliError> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let fingerprint = match cert {
        None => None,
        Some(path) => {
            let der = CertificateDer::from_pem_file(path).map_err(|e| {
                CliError::Usage(format!(
                    "cannot read a certificate from {}: {e}",
                    path.display()
                ))
            })?;
            let named = crate::security::Party::from_certificate(der.as_ref())
                .map(|p| p.to_string())
                .unwrap_or_default();
            if named != party {
                return Err(CliError::Usage(format!(
                    "{} is the certificate of '{named}', not of '{party}'",
                    path.display()
                )));
            }
            Some(crate::domain::fingerprint(der.as_ref()))
        }
    };
    let client = connect(args)?;
    let reply = client.revoke_certificate(party, fingerprint).await?;
    let what = match fingerprint {
        None => format!("every certificate of {}", reply.party),
        Some(_) => format!("that certificate of {}", reply.party),
    };
    output::message(
        args.output,
        json!({"party": reply.party, "whole_party": fingerprint.is_none()}),
        &format!("revoked {what}: every replica refuses it from now on"),
    );
    Ok(0)
}

/// The credentials a client command presents: its certificate (or `--insecure`) and token.
pub fn client_credentials(args: &ClientArgs) -> Result<Credentials, CliError> {
    let security = &args.security;
    let transport = choose_transport(
        security.insecure,
        security.tls_dir.as_deref(),
        security.tls_name.as_deref(),
        only_client_certificate,
    )?;
    Ok(Credentials {
        transport,
        token: args.token.clone(),
    })
}

/// `dispatcher token create|list|revoke`.
pub async fn token(command: TokenCommand, args: ClientArgs) -> Result<ExitCode, CliError> {
    let client = connect(&args)?;
    match command {
        TokenCommand::Create { name, role, tenant } => {
            let role: Role = role.parse().map_err(CliError::Usage)?;
            let (reply, secret) = client.create_token(&name, role, tenant.as_deref()).await?;
            output::message(
                args.output,
                json!({"name": reply.name, "role": reply.role, "tenant": reply.tenant,
                       "secret": secret.expose()}),
                &format!(
                    "token '{}' ({}, tenant {}): {}\nthe secret is shown only now; keep it safe",
                    reply.name,
                    reply.role,
                    reply.tenant,
                    secret.expose()
                ),
            );
        }
        TokenCommand::List => {
            let tokens = client.list_tokens().await?;
            output::tokens(args.output, &tokens);
        }
        TokenCommand::Revoke { name } => {
            let reply = client.revoke_token(&name).await?;
            output::message(
                args.output,
                json!({"name": reply.name, "revoked": true}),
                &format!("token '{}' revoked", reply.name),
            );
        }
    }
    Ok(0)
}

/// How a command ended, as a process exit code.
pub type ExitCode = i32;

fn connect(args: &ClientArgs) -> Result<Client, CliError> {
    Ok(Client::new(
        args.endpoints.clone(),
        client_credentials(args)?,
    )?)
}

pub async fn cluster(command: ClusterCommand, args: ClientArgs) -> Result<ExitCode, CliError> {
    // Offline: no replica is asked, so no endpoints or credentials are needed.
    let command = match command {
        ClusterCommand::Snapshot {
            action: Some(SnapshotCommand::Restore(restore)),
        } => return snapshot::restore_into(restore, args.output).await,
        other => other,
    };
    let client = connect(&args)?;
    match command {
        ClusterCommand::Status { local } => {
            let status = if local {
                client.local_status(None).await?
            } else {
                client.cluster_status().await?
            };
            output::cluster_status(args.output, &status, local);
        }
        ClusterCommand::Add { id, addr } => {
            let reply = client.add_member(id, &addr).await?;
            output::members(args.output, &reply.members);
        }
        ClusterCommand::Remove { id } => {
            let reply = client.remove_member(id).await?;
            output::members(args.output, &reply.members);
        }
        ClusterCommand::Snapshot {
            action: Some(SnapshotCommand::Save { file }),
        } => return snapshot::save(&client, &file, args.output).await,
        ClusterCommand::Snapshot {
            action: Some(SnapshotCommand::Restore(restore)),
        } => return snapshot::restore_into(restore, args.output).await,
        ClusterCommand::Snapshot { action: None } => {
            let reply = client.snapshot(None).await?;
            output::message(
                args.output,
                json!({"snapshot_index": reply.snapshot_index, "size_bytes": reply.size_bytes}),
                &format!(
                    "snapshot at log index {} ({} bytes)",
                    reply.snapshot_index, reply.size_bytes
                ),
            );
        }
        ClusterCommand::TransferLeader { id } => {
            let reply = client.transfer_leader(id).await?;
            output::members(args.output, &reply.members);
        }
        ClusterCommand::Downgrade { version, cancel } => {
            // Every replica compacts its data dir before the leader answers.
            let patient = crate::client::ClientOptions {
                rpc_timeout: std::time::Duration::from_secs(120),
                call_timeout: std::time::Duration::from_secs(150),
                ..crate::client::ClientOptions::new(client_credentials(&args)?)
            };
            let client = Client::with_options(args.endpoints.clone(), patient)?;
            let reply = client.downgrade(version.unwrap_or(0), cancel).await?;
            return Ok(output::downgrade(args.output, &reply, cancel));
        }
    }
    Ok(0)
}

pub async fn tm(command: TmCommand, args: ClientArgs) -> Result<ExitCode, CliError> {
    let client = connect(&args)?;
    match command {
        TmCommand::List => {
            let tms = client.list_taskmanagers().await?;
            output::taskmanagers(args.output, &tms);
        }
        TmCommand::Pin {
            id,
            labels,
            slots,
            cpus,
            memory,
            resources,
        } => {
            let pinned = crate::domain::ResourcePin {
                cpu_millis: cpus,
                memory_bytes: memory,
                named: resources.unwrap_or_default(),
            };
            if labels.is_empty() && slots.is_none() && pinned.is_empty() {
                return Err(CliError::Usage(
                    "give --labels, --slots, --cpus, --memory or --resources (or remove the pin \
                     with `tm unpin`)"
                        .into(),
                ));
            }
            let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let named: Vec<String> = pinned
                .named
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let reply = client
                .pin_taskmanager_with(&id, labels.into_iter().collect(), slots, pinned.clone())
                .await?;
            if !pinned.is_empty() && !reply.resources_pinned {
                return Err(CliError::Usage(format!(
                    "the leader runs a release before resource pins: TaskManager {id} was \
                     pinned to its labels and slots only; upgrade every replica, then pin again"
                )));
            }
            let mut text = format!(
                "TaskManager {} may carry [{}] and offer {} slots",
                reply.id,
                shown.join(","),
                slots.map_or_else(|| "any number of".to_string(), |n| n.to_string())
            );
            if let Some(cpu) = pinned.cpu_millis {
                text.push_str(&format!(
                    ", at most {} CPUs",
                    crate::domain::format_cpu(cpu)
                ));
            }
            if let Some(bytes) = pinned.memory_bytes {
                text.push_str(&format!(", at most {}", crate::domain::format_size(bytes)));
            }
            text.push_str(&format!(
                ", resources [{}], from its next registration",
                named.join(",")
            ));
            output::message(
                args.output,
                json!({
                    "id": reply.id,
                    "labels": shown,
                    "slots": slots,
                    "cpu_millis": pinned.cpu_millis,
                    "memory_bytes": pinned.memory_bytes,
                    "resources": pinned.named,
                }),
                &text,
            );
        }
        TmCommand::Unpin { id } => {
            let reply = client
                .pin_taskmanager(&id, Default::default(), None)
                .await?;
            output::message(
                args.output,
                json!({"id": reply.id, "pinned": false}),
                &format!(
                    "TaskManager {} has no pin: it may register with no labels (and no named \
                     resources at cluster version 4)",
                    reply.id
                ),
            );
        }
        TmCommand::Undrain { id } => {
            let reply = client.undrain_taskmanager(&id).await?;
            output::message(
                args.output,
                json!({"id": reply.id, "state": "alive"}),
                &format!("TaskManager {} takes new shards again", reply.id),
            );
        }
        TmCommand::Drain { id, deadline } => {
            let reply = client.drain_taskmanager(&id, deadline).await?;
            output::message(
                args.output,
                json!({"id": reply.id, "state": "draining"}),
                &format!(
                    "TaskManager {} is draining: it takes no new shards",
                    reply.id
                ),
            );
        }
    }
    Ok(0)
}

/// `dispatcher quota set|list`.
pub async fn quota(command: QuotaCommand, args: ClientArgs) -> Result<ExitCode, CliError> {
    let client = connect(&args)?;
    match command {
        QuotaCommand::Set {
            tenant,
            slots,
            unlimited,
            weight,
            max_priority,
            cpu,
            memory,
            resources,
        } => {
            let limits = crate::pb::api::ResourceAmounts {
                cpu_millis: cpu.unwrap_or(0),
                memory_bytes: memory.unwrap_or(0),
                named: resources.unwrap_or_default().into_iter().collect(),
            };
            let quota = client
                .set_quota_limits(crate::pb::api::SetQuotaRequest {
                    tenant,
                    slots,
                    unlimited,
                    weight,
                    max_priority,
                    resources: Some(limits),
                })
                .await?;
            output::quotas(args.output, std::slice::from_ref(&quota));
        }
        QuotaCommand::List => {
            let quotas = client.list_quotas().await?;
            output::quotas(args.output, &quotas);
        }
    }
    Ok(0)
}

/// The request for a job as `JobArgs` describe it (`submit`, and each fire of `cron add`).
pub fn job_request(name: String, job: JobArgs) -> Result<SubmitRequest, CliError> {
    let mut command = job.command.into_iter();
    let program = command.next().ok_or_else(|| {
        CliError::Usage("give the command to run after `--`, e.g. `-- /bin/echo hello`".into())
    })?;
    Ok(SubmitRequest {
        name,
        spec: Some(JobSpec {
            command: program,
            args: command.collect(),
            env: job.env.into_iter().collect(),
            shard_count: job.shards,
            slots_per_shard: job.slots_per_shard,
            max_attempts: job.max_attempts,
            selector: job.labels.into_iter().collect(),
        }),
        idempotency_key: String::new(),
        priority: job.priority,
        after: Vec::new(),
        gang: job.gang,
        tenant: job.tenant.unwrap_or_default(),
        resources: Some(crate::pb::api::ResourceAmounts {
            cpu_millis: job.cpu.unwrap_or(0),
            memory_bytes: job.memory.unwrap_or(0),
            named: job.resources.unwrap_or_default().into_iter().collect(),
        }),
        timeout_ms: job.timeout,
        isolation: match job.isolation {
            Some(crate::cli::IsolationArg::Full) => "full".into(),
            None => String::new(),
        },
    })
}

pub async fn submit(submit: SubmitArgs, args: ClientArgs) -> Result<ExitCode, CliError> {
    let mut request = job_request(submit.name, submit.job)?;
    request.idempotency_key = submit.idempotency_key.unwrap_or_default();
    request.after = submit.after;
    let client = connect(&args)?;
    let reply = client.submit(request).await?;
    // Warnings go to stderr, so stdout stays one JSON document with --output json.
    for warning in &reply.warnings {
        eprintln!("warning: {}", terminal::line(warning));
    }
    let text = if reply.created {
        format!("submitted {}", reply.job_id)
    } else {
        format!("{} already exists for this idempotency key", reply.job_id)
    };
    output::message(
        args.output,
        json!({"job_id": reply.job_id, "created": reply.created, "warnings": reply.warnings}),
        &text,
    );
    Ok(0)
}

pub async fn job(command: JobCommand, args: ClientArgs) -> Result<ExitCode, CliError> {
    let client = connect(&args)?;
    match command {
        JobCommand::Status { job_id } => {
            let status = client.job_status(&job_id).await?;
            output::job_status(args.output, &status);
        }
        JobCommand::List => {
            let jobs = client.list_jobs().await?;
            output::jobs(args.output, &jobs);
        }
        JobCommand::Cancel { job_id } => {
            let reply = client.cancel_job(&job_id).await?;
            output::message(
                args.output,
                json!({"job_id": reply.job_id, "state": "cancelled", "shards_cancelled": reply.shards_cancelled}),
                &format!(
                    "cancelled {} ({} shards)",
                    reply.job_id, reply.shards_cancelled
                ),
            );
        }
        JobCommand::Wait { job_id, timeout } => {
            return watch::wait(&client, &job_id, timeout, args.output).await
        }
        JobCommand::Watch { job_id } => return watch::watch(&client, &job_id, args.output).await,
        JobCommand::Logs {
            job_id,
            shard,
            stderr,
            follow,
            raw,
        } => return logs::logs(&client, &job_id, shard, stderr, follow, raw, args.output).await,
    }
    Ok(0)
}
