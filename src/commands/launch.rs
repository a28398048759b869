//! `serve` and `taskmanager` options from their three sources: flags and DISPATCHER_*
//! variables (already merged by clap, flag first) over the config file over defaults.

use super::CliError;
use crate::cli::{parse_label, parse_peer, ClientArgs, ServeArgs, TaskManagerArgs};
use crate::config::flags::{missing, read_agent_file, read_serve_file, AgentFlags, ServeFlags};
use crate::config::ServeConfig;
use crate::node::{ServeOptions, ServeSecurity};
use crate::security::{choose_transport, require_own_party, Credentials, Party, Secret};
use crate::taskmanager::AgentOptions;
use std::path::PathBuf;

pub fn serve_options(args: ServeArgs) -> Result<ServeOptions, CliError> {
    let (file, config) = match &args.config {
        Some(path) => read_serve_file(path)?,
        None => (ServeFlags::default(), ServeConfig::default()),
    };
    let id = args
        .id
        .or(file.id)
        .ok_or_else(|| missing("--id", "DISPATCHER_ID", "serve"))?;
    let listen = args
        .listen
        .or(file.listen)
        .ok_or_else(|| missing("--listen", "DISPATCHER_LISTEN", "serve"))?;
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .ok_or_else(|| missing("--data-dir", "DISPATCHER_DATA_DIR", "serve"))?;
    let peers = if args.peers.is_empty() {
        file.peers
            .unwrap_or_default()
            .iter()
            .map(|p| parse_peer(p).map_err(CliError::Usage))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        args.peers
    };
    if peers.is_empty() {
        return Err(missing("--peers", "DISPATCHER_PEERS", "serve").into());
    }
    let insecure = args.security.insecure || file.insecure.unwrap_or(false);
    let tls_dir = args.security.tls_dir.or(file.tls_dir);
    let tls_name = args.security.tls_name.or(file.tls_name);
    let transport = choose_transport(insecure, tls_dir.as_deref(), tls_name.as_deref(), |_| {
        Some(format!("replica-{id}"))
    })?;
    require_own_party(&transport, &Party::Replica(id))?;
    let bootstrap_token = args
        .bootstrap_token_file
        .or(file.bootstrap_token_file)
        .as_deref()
        .map(Secret::from_file)
        .transpose()?;
    Ok(ServeOptions {
        id,
        listen,
        advertise: args.advertise.or(file.advertise),
        data_dir,
        peers: peers.into_iter().collect(),
        config,
        security: ServeSecurity {
            transport,
            bootstrap_token,
        },
        http_listen: args.http_listen.or(file.http_listen),
        otlp_endpoint: args.otlp_endpoint.or(file.otlp_endpoint),
    })
}

pub fn agent_options(agent: TaskManagerArgs, client: ClientArgs) -> Result<AgentOptions, CliError> {
    let file = match &agent.config {
        Some(path) => read_agent_file(path)?,
        None => AgentFlags::default(),
    };
    let capacity = agent_capacity(agent.cpus, agent.memory, agent.resources, &file)?;
    let id = agent
        .id
        .or(file.id)
        .ok_or_else(|| missing("--id", "DISPATCHER_TM_ID", "taskmanager"))?;
    let slots = agent
        .slots
        .or(file.slots)
        .ok_or_else(|| missing("--slots", "DISPATCHER_SLOTS", "taskmanager"))?;
    let labels = if agent.labels.is_empty() {
        file.labels.unwrap_or_default()
    } else {
        agent.labels.into_iter().collect()
    };
    for (key, value) in &labels {
        // The same check as the flag's, so a file cannot carry what --labels refuses.
        parse_label(&format!("{key}={value}")).map_err(CliError::Usage)?;
    }
    let endpoints = if client.endpoints.is_empty() {
        file.endpoints.unwrap_or_default()
    } else {
        client.endpoints
    };
    let insecure = client.security.insecure || file.insecure.unwrap_or(false);
    let tls_dir = client.security.tls_dir.or(file.tls_dir);
    let tls_name = client.security.tls_name.or(file.tls_name);
    let transport = choose_transport(insecure, tls_dir.as_deref(), tls_name.as_deref(), |_| {
        Some(format!("tm-{id}"))
    })?;
    require_own_party(&transport, &Party::TaskManager(id.clone()))?;
    let work_dir = agent
        .work_dir
        .or(file.work_dir)
        .unwrap_or_else(|| PathBuf::from(format!("taskmanager-{id}")));
    Ok(AgentOptions {
        id,
        slots,
        labels,
        work_dir,
        endpoints,
        source_ip: agent.source_ip.or(file.source_ip),
        advertise: agent.advertise.or(file.advertise),
        credentials: Credentials {
            transport,
            token: None,
        },
        http_listen: agent.http_listen.or(file.http_listen),
        capacity,
        sandbox: sandbox_request(
            agent.sandbox.or(file.sandbox),
            agent.run_as_uids.or(file.run_as_uids),
            agent.run_as.or(file.run_as),
            agent.cgroup_root.or(file.cgroup_root),
        )?,
    })
}

/// What the agent offers: flags over the file, CPU and memory defaulting to the host's.
fn agent_capacity(
    cpus: Option<u64>,
    memory: Option<u64>,
    resources: Option<std::collections::BTreeMap<String, u64>>,
    file: &AgentFlags,
) -> Result<crate::domain::Resources, CliError> {
    use crate::taskmanager::capacity::{host_cpu_millis, host_memory_bytes};
    let cpu_millis = match (cpus, file.cpus) {
        (Some(millis), _) => millis,
        (None, Some(cores)) => {
            crate::domain::parse_cpu(&cores.to_string()).map_err(CliError::Usage)?
        }
        (None, None) => host_cpu_millis(),
    };
    let memory_bytes = match (memory, &file.memory) {
        (Some(bytes), _) => bytes,
        (None, Some(size)) => crate::domain::parse_size(size).map_err(CliError::Usage)?,
        (None, None) => host_memory_bytes()
            .unwrap_or(crate::domain::MAX_MEMORY_BYTES)
            .min(crate::domain::MAX_MEMORY_BYTES),
    };
    let named = match resources {
        Some(named) => named,
        None => {
            let named = file.resources.clone().unwrap_or_default();
            crate::domain::validate_named(&named).map_err(CliError::Usage)?;
            named
        }
    };
    Ok(crate::domain::Resources {
        cpu_millis,
        memory_bytes,
        named,
    })
}

/// What the agent asks of its sandbox, checked.
fn sandbox_request(
    mode: Option<crate::cli::SandboxMode>,
    uids: Option<String>,
    user: Option<String>,
    cgroup_root: Option<PathBuf>,
) -> Result<crate::taskmanager::sandbox::SandboxRequest, CliError> {
    use crate::taskmanager::sandbox::uids::RunAs;
    let run_as = match (uids, user) {
        (Some(_), Some(_)) => {
            return Err(CliError::Usage(
                "give --run-as-uids or --run-as, not both".into(),
            ))
        }
        (Some(range), None) => Some(RunAs::parse_range(&range).map_err(CliError::Usage)?),
        (None, Some(user)) => Some(RunAs::user(&user).map_err(CliError::Usage)?),
        (None, None) => None,
    };
    Ok(crate::taskmanager::sandbox::SandboxRequest {
        enabled: mode != Some(crate::cli::SandboxMode::Off),
        run_as,
        cgroup_root,
    })
}
