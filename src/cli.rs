//! Command-line types (clap) only; what each command does lives in `commands`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "dispatcher",
    version,
    long_version = crate::formats::long_version(),
    about = "A highly available job dispatcher"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Options every client command takes.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Replica addresses; any one of them is enough, the client finds the leader.
    #[arg(
        long,
        env = "DISPATCHER_ENDPOINTS",
        value_delimiter = ',',
        global = true
    )]
    pub endpoints: Vec<String>,
    /// Output format: aligned text for people, one JSON document for scripts.
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub output: OutputFormat,
    /// The access token (its secret) sent with every call; prefer DISPATCHER_TOKEN, which
    /// other users of the machine cannot read from the process list.
    #[arg(long, env = "DISPATCHER_TOKEN", global = true, hide_env_values = true,
          value_parser = parse_secret)]
    pub token: Option<crate::security::Secret>,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// How a command secures its connections: certificates from `dispatcher certs init`, or
/// `--insecure` for development on one machine.
#[derive(Debug, Clone, Default, Args)]
pub struct SecurityArgs {
    /// Directory with the cluster CA (`ca.pem`) and this party's `<name>.pem` and
    /// `<name>-key.pem`.
    #[arg(long, env = "DISPATCHER_TLS_DIR", global = true)]
    pub tls_dir: Option<PathBuf>,
    /// Which certificate of --tls-dir to present (replica-<id>, tm-<name>, client-<name>;
    /// serve and taskmanager default to their own, clients to the only client-*.pem there).
    #[arg(long, env = "DISPATCHER_TLS_NAME", global = true)]
    pub tls_name: Option<String>,
    /// No TLS and no tokens: for development on one machine only.
    #[arg(long, env = "DISPATCHER_INSECURE", global = true)]
    pub insecure: bool,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a cluster CA and a certificate and key per party into a directory.
    Init {
        /// Directory to write into (created if missing; nothing in it is overwritten).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        parties: CertsParties,
    },
    /// Issue certificates for more parties under the CA already in a directory.
    Add {
        /// The directory `certs init` wrote (it must hold ca.pem and ca-key.pem).
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        parties: CertsParties,
    },
    /// Refuse a party's certificates on every replica from now on (admin token): every
    /// certificate naming the party, or with --cert only that one (the party may then get a
    /// new certificate under the same name).
    Revoke {
        /// replica-<id>, tm-<name> or client-<name>.
        party: String,
        /// The one certificate (PEM) to revoke.
        #[arg(long)]
        cert: Option<PathBuf>,
        #[command(flatten)]
        client: Box<ClientArgs>,
    },
}

/// The parties `certs init` and `certs add` issue certificates for.
#[derive(Debug, Args)]
pub struct CertsParties {
    /// Replica ids: each gets `replica-<id>`.
    #[arg(long, value_delimiter = ',')]
    pub replicas: Vec<u64>,
    /// TaskManager names: each gets `tm-<name>`, good for its HTTPS side too (`--http-listen`)
    /// as `tm-<name>`, localhost and, written `<name>=<host>`, that DNS name or IP address.
    #[arg(long, value_delimiter = ',')]
    pub taskmanagers: Vec<String>,
    /// Client names: each gets `client-<name>`.
    #[arg(long, value_delimiter = ',')]
    pub clients: Vec<String>,
    /// Extra DNS names or IP addresses for the replica certificates (localhost and
    /// 127.0.0.1 are always in).
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
}

impl CertsParties {
    pub fn plan(self) -> crate::security::certs::CertsPlan {
        crate::security::certs::CertsPlan {
            replicas: self.replicas,
            taskmanagers: self.taskmanagers,
            clients: self.clients,
            hosts: self.hosts,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; its secret is printed once and stored nowhere.
    Create {
        #[arg(long)]
        name: String,
        /// admin, operator, submit or read.
        #[arg(long)]
        role: String,
        /// The tenant of the jobs its holder submits (default: the token's name).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Every token's name, role and creation time (never secrets).
    List,
    /// Revoke a token: every replica refuses it within a second.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a dispatcher replica.
    Serve(ServeArgs),
    /// Cluster status and membership.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// TaskManagers.
    Tm {
        #[command(subcommand)]
        command: TmCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Submit a job: `dispatcher submit --name N --shards 4 -- command args...`
    Submit {
        #[command(flatten)]
        submit: SubmitArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Jobs.
    Job {
        #[command(subcommand)]
        command: JobCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Measure throughput and failover on a local cluster of this binary.
    Bench(BenchArgs),
    /// Run a TaskManager agent: register, heartbeat, run the shards it is given.
    Taskmanager {
        #[command(flatten)]
        agent: TaskManagerArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Attack a local cluster with faults while clients work, then check the history.
    Chaos(ChaosArgs),
    /// The cluster's events (jobs, shards, TaskManagers, leadership), then live.
    Events {
        /// Replay from this log index (what the replica still holds), then follow.
        #[arg(long, default_value_t = 1)]
        from_index: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A completion script for your shell: `dispatcher completions bash > /etc/bash_completion.d/dispatcher`.
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Periodic jobs: schedules the cluster fires, through failovers and outages.
    Cron {
        #[command(subcommand)]
        command: CronCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Tenants' slot quotas and fair-share weights.
    Quota {
        #[command(subcommand)]
        command: QuotaCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Access tokens (admin only).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Certificates for mutual TLS.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Internal: the process a TaskManager agent starts its shards from.
    #[command(hide = true)]
    ShardHost {
        #[arg(long, default_value_t = 500)]
        keepalive_timeout_ms: u64,
        /// Where finished run directories wait to be used again.
        #[arg(long)]
        run_dir_pool: Option<std::path::PathBuf>,
        /// What to enforce on every run (JSON, as the agent resolved it).
        #[arg(long)]
        sandbox: Option<String>,
    },
    /// See it work: a local cluster runs a real job while its leader and a TaskManager are killed.
    Demo(DemoArgs),
    /// Internal: one shard of the demo's jobs.
    #[command(hide = true)]
    DemoShard {
        #[arg(value_enum)]
        step: crate::demo::shard::Step,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        parts: u32,
        #[arg(long, default_value_t = 0)]
        pace_ms: u64,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the cluster's files here instead of a temporary directory that is removed after.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Parts of the data set (shards of the generate and aggregate jobs).
    #[arg(long, default_value_t = 24)]
    pub parts: u32,
    /// How long each aggregate shard works, in ms (long enough to kill things under it).
    #[arg(long, default_value_t = 3000)]
    pub pace_ms: u64,
    /// Output format of the final summary: text, or one JSON document (the live view then goes to stderr).
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Seconds of faults (the checks after healing take longer).
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Seed of the fault schedule and the workload; printed, so any run can be replayed.
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, default_value_t = 3)]
    pub replicas: u64,
    #[arg(long, default_value_t = 3)]
    pub taskmanagers: usize,
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Faults to use (default all): kill-leader, kill-replica, pause-leader, isolate-leader,
    /// split, one-way, kill-all, kill-tm, pause-tm, isolate-tm, restart-upgrade (with
    /// --other-binary, and then in the default set); or `none` for a soak, where
    /// any TaskManager declared lost or shard interrupted is a false suspicion.
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Threads that keep the CPU busy for the whole run (a loaded machine), beside the
    /// cluster.
    #[arg(long, default_value_t = 0)]
    pub load: usize,
    /// Where the run keeps its cluster, history and report (default: a new temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seconds within which every job must end after healing.
    #[arg(long, default_value_t = 120)]
    pub liveness_bound: u64,
    /// Mutual TLS and tokens on every replica, agent and client (default: --insecure).
    #[arg(long)]
    pub tls: bool,
    /// A hostile tenant with its own `submit` token and a rogue agent certificate attacks
    /// the other tenants throughout; the `walls` checker judges it (implies --tls).
    #[arg(long)]
    pub hostile: bool,
    /// An older release of the dispatcher (e.g. target/releases/v0.1.0/dispatcher, from
    /// `scripts/build-release.sh v0.1.0`): enables the `restart-upgrade` fault, which restarts
    /// a replica on the other binary (downgrading the cluster first when it must).
    #[arg(long)]
    pub other_binary: Option<PathBuf>,
}

/// `dispatcher taskmanager`. Every flag may also come from its DISPATCHER_* variable or from
/// `[taskmanager]` in the --config file (flag over variable over file).
#[derive(Debug, Args)]
pub struct TaskManagerArgs {
    /// This TaskManager's id, unique in the cluster; restarting with the same id resumes it.
    #[arg(long, env = "DISPATCHER_TM_ID")]
    pub id: Option<String>,
    /// How many slots it offers.
    #[arg(long, env = "DISPATCHER_SLOTS")]
    pub slots: Option<u32>,
    /// Labels that job selectors can match: k=v,...
    #[arg(long, value_delimiter = ',', value_parser = parse_label, env = "DISPATCHER_LABELS")]
    pub labels: Vec<(String, String)>,
    /// Where shard runs keep their output and results (default: ./taskmanager-<id>).
    #[arg(long, env = "DISPATCHER_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Dial the replicas from this local address (multi-homed hosts).
    #[arg(long, env = "DISPATCHER_SOURCE_IP")]
    pub source_ip: Option<std::net::IpAddr>,
    /// The address this TaskManager is known by (host:port), shown in `tm list`
    /// (default: this host's name, port 0: the agent takes no inbound connections yet).
    #[arg(long, env = "DISPATCHER_TM_ADVERTISE")]
    pub advertise: Option<String>,
    /// TOML file with this agent's flags under [taskmanager].
    #[arg(long, env = "DISPATCHER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log lines as text (default) or one JSON object per line.
    #[arg(long, value_enum, env = "DISPATCHER_LOG_FORMAT")]
    pub log_format: Option<crate::config::flags::LogFormat>,
    /// Serve HTTP here (host:port): /metrics, /healthz and /readyz (HTTPS when TLS is on).
    #[arg(long, env = "DISPATCHER_TM_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// The shard sandbox: `auto` gives each run its own user, PID namespace, /proc and
    /// cgroup as far as this host allows (all of it as root); `off` runs shards as the
    /// agent's user, seeing what it sees.
    #[arg(long, value_enum, env = "DISPATCHER_SANDBOX")]
    pub sandbox: Option<SandboxMode>,
    /// Each run gets a uid of its own from this range (default 1900000000-1900065535).
    #[arg(long, env = "DISPATCHER_RUN_AS_UIDS", conflicts_with = "run_as")]
    pub run_as_uids: Option<String>,
    /// Every run as this one user (name or uid; never root): runs then share it.
    #[arg(long, env = "DISPATCHER_RUN_AS")]
    pub run_as: Option<String>,
    /// Where the cgroup filesystem is mounted (default /sys/fs/cgroup): a cgroup v2 tree
    /// when `cgroup.controllers` is there, else v1 hierarchies `memory`, `cpu`, `pids`.
    #[arg(long, env = "DISPATCHER_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// CPU it offers, in cores (fractions allowed; default: the CPUs this process may use).
    #[arg(long, env = "DISPATCHER_CPUS", value_parser = crate::domain::parse_cpu)]
    pub cpus: Option<u64>,
    /// Memory it offers: 16GiB, 512MiB, bytes (default: the host's memory).
    #[arg(long, env = "DISPATCHER_MEMORY", value_parser = crate::domain::parse_size)]
    pub memory: Option<u64>,
    /// Named countable resources it offers: gpu=2,fpga=1. Runs are told which indices they
    /// got in DISPATCHER_RESOURCE_<NAME>.
    #[arg(long, env = "DISPATCHER_RESOURCES", value_parser = crate::domain::parse_named)]
    pub resources: Option<std::collections::BTreeMap<String, u64>>,
}

/// `submit --isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolationArg {
    Full,
}

/// `taskmanager --sandbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    Auto,
    Off,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Replicas in the local cluster.
    #[arg(long, default_value_t = 3)]
    pub replicas: u64,
    /// Concurrent client counts to measure submissions at.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64,256")]
    pub clients: Vec<usize>,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Leader kills to time.
    #[arg(long, default_value_t = 20)]
    pub failover_rounds: usize,
    /// Simulated TaskManager fleet sizes for the placement and heartbeat figures (`--fleets` alone skips them).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "1000,10000")]
    pub fleets: Vec<usize>,
    /// Shards submitted to time placement, per fleet size.
    #[arg(long, default_value_t = 200_000)]
    pub placement_shards: u32,
    /// Shards the largest fleet's cluster is filled with for the memory figures (0 skips).
    #[arg(long, default_value_t = 1_000_000)]
    pub memory_shards: u64,
    /// Seconds of heartbeats as fast as the leader answers them (0 skips).
    #[arg(long, default_value_t = 10.0)]
    pub heartbeat_seconds: f64,
    /// Draw submissions per second and latency against concurrency into this PNG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// TaskManager kills to time (real agents running real shard processes).
    #[arg(long, default_value_t = 10)]
    pub tm_loss_rounds: usize,
    /// Clients flooding a default-configured cluster with shards that can never run, until
    /// admission control refuses them (0 skips).
    #[arg(long, default_value_t = 4)]
    pub flood_clients: usize,
    /// Shards per job in that flood.
    #[arg(long, default_value_t = 50_000)]
    pub flood_shards_per_job: u32,
    /// Short shards to run across a leader kill to find the longest pause in progress (0 skips).
    #[arg(long, default_value_t = 300)]
    pub progress_shards: u32,
    /// One-shard jobs timed from submit to their process running, with the CLI and with the
    /// library client (0 skips).
    #[arg(long, default_value_t = 30)]
    pub dispatch_runs: usize,
    /// `/bin/true` shards on 3 agents × 8 slots, timed from `submit` to `job wait`
    /// returning (0 skips).
    #[arg(long, default_value_t = 1000)]
    pub end_to_end_shards: u32,
    /// How many such jobs, one after another; the figures are their medians.
    #[arg(long, default_value_t = 5)]
    pub end_to_end_runs: usize,
    /// Tenants to share the end-to-end shards out between, one job each submitted at once
    /// (fair share decides between them); 1: one job, no tenant named.
    #[arg(long, default_value_t = 1)]
    pub end_to_end_tenants: u32,
    /// Jobs that name one `--end-to-end-shards` job in `--after`, for its rate against the
    /// same job alone (0 skips).
    #[arg(long, default_value_t = 20_000)]
    pub dependents: u32,
    /// Pairs of runs (alone, named) for that ratio; the figures are their medians.
    #[arg(long, default_value_t = 3)]
    pub dependents_runs: usize,
    /// Also measure submissions on a cluster with mutual TLS and tokens, beside the
    /// --insecure one (`--tls false` skips it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub tls: bool,
    /// Shards held in the state for the planning-turn figure (a tenth of them running; 0
    /// skips it). The turn runs the scheduler in this process, not on a replica.
    #[arg(long, default_value_t = 1_000_000)]
    pub planning_shards: u64,
    /// Shards per job in that state (1: a million one-shard jobs).
    #[arg(long, default_value_t = 100)]
    pub planning_job_shards: u32,
    /// Measure only the planning turn, with no cluster.
    #[arg(long)]
    pub planning_only: bool,
    /// Also measure etcd's puts at the same client counts, when `etcd` is on PATH
    /// (`--etcd false` skips it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub etcd: bool,
    /// AppendEntries batches in flight per follower on the bench's replicas (`[raft]
    /// append_pipeline`), to measure the bound
    #[arg(long, default_value_t = crate::config::DEFAULT_APPEND_PIPELINE)]
    pub append_pipeline: usize,
    /// Seconds an idle cluster is watched for elections nobody provoked, before the
    /// failovers (0 skips).
    #[arg(long, default_value_t = 0)]
    pub idle_seconds: u64,
    /// Measure only leader failover (`--failover-rounds` kills, then as many pauses).
    #[arg(long)]
    pub failover_only: bool,
    /// Where the replicas keep their data (default: a fresh directory under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `dispatcher serve`. Every flag may also come from its DISPATCHER_* variable or from
/// `[serve]` in the --config file (flag over variable over file).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This replica's id (a positive integer, unique in the cluster).
    #[arg(long, env = "DISPATCHER_ID")]
    pub id: Option<u64>,
    /// Address to listen on, e.g. 0.0.0.0:7001.
    #[arg(long, env = "DISPATCHER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The address the others dial to reach this replica (host:port), when it differs from
    /// --listen (a wildcard, NAT). It must match this replica's entry in --peers.
    #[arg(long, env = "DISPATCHER_ADVERTISE")]
    pub advertise: Option<String>,
    /// Directory for the Raft log and snapshots; restarting on it resumes the replica.
    #[arg(long, env = "DISPATCHER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Every replica of the initial cluster: id=host:port,... (this one included).
    #[arg(long, value_delimiter = ',', value_parser = parse_peer, env = "DISPATCHER_PEERS")]
    pub peers: Vec<(u64, String)>,
    /// TOML file: this replica's flags under [serve], and Raft timings, TaskManager
    /// timings, retention and limits.
    #[arg(long, env = "DISPATCHER_CONFIG")]
    pub config: Option<PathBuf>,
    /// File holding the first admin token's secret; seeded when the cluster first forms (give
    /// the same file to every initial replica), ignored afterwards.
    #[arg(long, env = "DISPATCHER_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Log lines as text (default) or one JSON object per line.
    #[arg(long, value_enum, env = "DISPATCHER_LOG_FORMAT")]
    pub log_format: Option<crate::config::flags::LogFormat>,
    /// Serve HTTP here (host:port): /metrics, /healthz, /readyz and the dashboard at /
    /// (HTTPS with this replica's certificate when TLS is on).
    #[arg(long, env = "DISPATCHER_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Send each job's trace (submission, placement and run of every shard) over OTLP/gRPC
    /// to this collector, e.g. http://127.0.0.1:4317. Off by default.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[command(flatten)]
    pub security: SecurityArgs,
}

pub fn parse_peer(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("peer '{s}' is not id=host:port"))?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|_| format!("peer id '{id}' is not a positive integer"))?;
    if id == 0 {
        return Err("peer ids start at 1".into());
    }
    crate::fsm::validate_address(addr.trim()).map_err(|e| e.to_string())?;
    Ok((id, addr.trim().to_string()))
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, members and their roles.
    Status {
        /// Ask the first endpoint for its own view, with its state digest.
        #[arg(long)]
        local: bool,
    },
    /// Add a replica: it joins as a learner, catches up, then votes.
    Add { id: u64, addr: String },
    /// Remove a replica from the cluster.
    Remove { id: u64 },
    /// Hand leadership to another voter.
    TransferLeader { id: u64 },
    /// Lower the cluster version so that replicas of an older release can run the cluster
    /// (admin): refused while the state needs the newer version; every replica then writes
    /// a snapshot in the older format and drops the log before it. Replace the binaries
    /// after. `--cancel` lets the leader raise the version again.
    Downgrade {
        /// The cluster version to go down to (an older release's newest: 1 for v0.1.0).
        #[arg(required_unless_present = "cancel")]
        version: Option<u32>,
        #[arg(long, conflicts_with = "version")]
        cancel: bool,
    },
    /// Build a snapshot now on the first endpoint's replica (its log is then compacted);
    /// `save` writes it to a backup file, `restore` makes a new replica's data dir from one.
    #[command(args_conflicts_with_subcommands = true)]
    Snapshot {
        #[command(subcommand)]
        action: Option<SnapshotCommand>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a backup of the whole state to a new file (needs an admin token).
    Save { file: PathBuf },
    /// Make the data dir of one replica of a new cluster from a backup (offline; run it for
    /// every replica of the new cluster, then start them with `serve`).
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file `snapshot save` wrote.
    pub file: PathBuf,
    /// The new replica's data dir (must be empty or absent).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The new replica's id.
    #[arg(long)]
    pub id: u64,
    /// Every replica of the new cluster: id=host:port,... (this one included).
    #[arg(long, value_delimiter = ',', value_parser = parse_peer, required = true)]
    pub peers: Vec<(u64, String)>,
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set a tenant's quota (most running slots) and weight (its part of free slots); what
    /// is not given keeps its value. Needs an admin token.
    Set {
        tenant: String,
        /// The most slots its running shards may hold.
        #[arg(long, conflicts_with = "unlimited")]
        slots: Option<u64>,
        /// Remove the slot limit.
        #[arg(long)]
        unlimited: bool,
        /// Its share of free slots against other tenants with waiting work (1 to 1000, default 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        weight: Option<u32>,
        /// The highest priority its jobs may ask for (0 to 1000; default 500 for every
        /// tenant); only an admin's own submissions may go above it.
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
        max_priority: Option<u32>,
        /// The most CPU its running shards may ask for in all, in cores.
        #[arg(long, value_parser = crate::domain::parse_cpu)]
        cpu: Option<u64>,
        /// The most memory its running shards may ask for in all (64GiB).
        #[arg(long, value_parser = crate::domain::parse_size)]
        memory: Option<u64>,
        /// The most of each named resource its running shards may hold: gpu=4,...
        #[arg(long, value_parser = crate::domain::parse_named)]
        resources: Option<std::collections::BTreeMap<String, u64>>,
    },
    /// Every tenant with a quota or with unfinished jobs: quota, weight, slots held, shards waiting.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TmCommand {
    /// Registered TaskManagers with their slots and state.
    List,
    /// Stop placing new shards on a TaskManager; its running shards may finish until the
    /// deadline, then they are stopped and placed elsewhere.
    Drain {
        id: String,
        /// Seconds the running shards get to finish (default 300).
        #[arg(long)]
        deadline: Option<u64>,
    },
    /// What a TaskManager may claim when it registers (admin): the labels it may carry, the
    /// most slots, CPU and memory it may offer and the named resources it may declare. With
    /// TLS on, an agent registers only labels (and, from cluster version 4, named resources)
    /// pinned to it, none without a pin, so no agent certificate can name itself into a
    /// trusted pool or draw the jobs that ask for a device. A pin replaces the one before.
    /// Takes effect at the agent's next registration.
    Pin {
        id: String,
        /// Labels it may carry: k=v,...
        #[arg(long, value_delimiter = ',', value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// The most slots it may offer.
        #[arg(long)]
        slots: Option<u32>,
        /// The most CPU it may offer, in cores (cluster version 4).
        #[arg(long, value_parser = crate::domain::parse_cpu)]
        cpus: Option<u64>,
        /// The most memory it may offer: 64GiB (cluster version 4).
        #[arg(long, value_parser = crate::domain::parse_size)]
        memory: Option<u64>,
        /// Named resources it may offer, each up to its count: gpu=2,fpga=1 (cluster
        /// version 4; with TLS an agent declares no other).
        #[arg(long, value_parser = crate::domain::parse_named)]
        resources: Option<std::collections::BTreeMap<String, u64>>,
    },
    /// Remove a TaskManager's pin (admin): it may then register with no labels (and, from
    /// cluster version 4, no named resources).
    Unpin { id: String },
    /// Let a draining TaskManager take new shards again (needs cluster version 2).
    Undrain { id: String },
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[arg(long)]
    pub name: String,
    /// Resubmitting with the same key returns the same job instead of a new one.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Start only once these jobs have finished (job ids, comma-separated); if one fails or
    /// is cancelled, this job fails without running.
    #[arg(long, value_delimiter = ',')]
    pub after: Vec<String>,
    #[command(flatten)]
    pub job: JobArgs,
}

/// What a job is and asks for: `submit`'s options, which `cron add` takes too.
#[derive(Debug, Args)]
pub struct JobArgs {
    #[arg(long)]
    pub shards: u32,
    #[arg(long, default_value_t = 1)]
    pub slots_per_shard: u32,
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Only TaskManagers carrying all these labels may run the shards: k=v,...
    #[arg(long, value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Environment for every shard: K=V (repeatable).
    #[arg(long = "env", value_parser = parse_label)]
    pub env: Vec<(String, String)>,
    /// 0 to 1000 (default 500): jobs of higher priority are placed first.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub priority: Option<u32>,
    /// All shards start together, or none does; if one fails, all restart together.
    #[arg(long)]
    pub gang: bool,
    /// The tenant whose quota the job counts against (under --insecure; with a token, the
    /// token's tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    /// CPU per shard, in cores (fractions allowed): placed only where that much is free,
    /// and held to it by the sandbox.
    #[arg(long, value_parser = crate::domain::parse_cpu)]
    pub cpu: Option<u64>,
    /// Memory per shard (512MiB, 2GiB): placed where that much is free; a shard over it is
    /// killed and fails "out of memory".
    #[arg(long, value_parser = crate::domain::parse_size)]
    pub memory: Option<u64>,
    /// Named resources per shard: gpu=1,... (refused at once if no TaskManager has them).
    #[arg(long, value_parser = crate::domain::parse_named)]
    pub resources: Option<std::collections::BTreeMap<String, u64>>,
    /// `full`: run only on TaskManagers whose sandbox is complete (own user, PID namespace,
    /// cgroup).
    #[arg(long, value_enum)]
    pub isolation: Option<IsolationArg>,
    /// Each run's wall-clock limit (90s, 10m, 2h): a run past it is stopped and fails
    /// "timed out after ..." (counted as an attempt). Default: the cluster's, if any.
    #[arg(long, value_parser = crate::domain::parse_duration)]
    pub timeout: Option<u64>,
    /// The command each shard runs, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `dispatcher cron ...`: periodic jobs.
#[derive(Debug, Subcommand)]
pub enum CronCommand {
    /// Add a schedule (or give one of that name a new definition): `cron add nightly
    /// --schedule "0 3 * * *" --timezone Europe/Berlin --shards 1 -- /usr/bin/backup`.
    Add {
        name: String,
        /// Cron: 5 fields (minute hour day-of-month month day-of-week), 6 with seconds
        /// first, or a nickname (@hourly, @daily, ...).
        #[arg(long)]
        schedule: String,
        /// An IANA time zone (Europe/Berlin); default UTC.
        #[arg(long)]
        timezone: Option<String>,
        /// While the previous job still runs: allow a second, forbid (skip this time) or
        /// replace (cancel it, start the new one).
        #[arg(long, value_enum, default_value_t = ConcurrencyArg::Allow)]
        concurrency: ConcurrencyArg,
        /// A time older than this when it can fire is let go (90s, 10m).
        #[arg(long, value_parser = crate::domain::parse_duration)]
        starting_deadline: Option<u64>,
        /// Times missed while the cluster could not fire: none, last (one job for the
        /// newest) or all (each, up to 100).
        #[arg(long, value_enum, default_value_t = CatchUpArg::Last)]
        catch_up: CatchUpArg,
        #[command(flatten)]
        job: Box<JobArgs>,
    },
    /// Every schedule you may see.
    List,
    /// A schedule: its next times, its last jobs, what it let go.
    Show {
        name: String,
        /// Whose schedule (an admin, or under --insecure); default your own tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Stop firing until resumed.
    Suspend {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Fire again, from now on (the times while suspended are not fired).
    Resume {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Remove a schedule (its jobs stay).
    Delete {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Fire now, outside the schedule (under its --concurrency).
    Run {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ConcurrencyArg {
    Allow,
    Forbid,
    Replace,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CatchUpArg {
    None,
    Last,
    All,
}

fn parse_secret(s: &str) -> Result<crate::security::Secret, String> {
    crate::security::Secret::parse(s).map_err(|e| e.to_string())
}

pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not key=value"))?;
    if k.is_empty() {
        return Err(format!("'{s}' has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// A job's state and each shard's TaskManager, attempt and epoch.
    Status { job_id: String },
    /// Every job.
    List,
    /// Cancel a job's shards that have not ended.
    Cancel { job_id: String },
    /// Follow a job: one line per event until it ends (JSON lines with --output json).
    Watch { job_id: String },
    /// A shard's output, from wherever it runs or ran: live from its TaskManager while it
    /// runs, else the end of it kept by the cluster (`limits.output_tail_bytes`).
    Logs {
        job_id: String,
        /// Which shard.
        #[arg(long, default_value_t = 0)]
        shard: u32,
        /// Show stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        /// Keep following a running shard's output until it ends.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Write the output's bytes as the shard printed them; by default control
        /// characters (other than newline and tab) are shown escaped, so that a shard cannot
        /// drive the terminal.
        #[arg(long)]
        raw: bool,
    },
    /// Wait for a job to end: exit 0 finished, 1 failed or cancelled, 2 timeout.
    Wait {
        job_id: String,
        /// Give up after this many seconds.
        #[arg(long)]
        timeout: Option<f64>,
    },
}
