//! `dispatcher`: parse the command line, start logging, run the subcommand, exit with its
//! code. Errors print one line on stderr.

use clap::Parser;
use dispatcher::cli::{Cli, Command};
use dispatcher::commands::{self, CliError};
use dispatcher::config::flags::LogFormat;
use dispatcher::node;
use std::io::Write;

fn init_tracing(serving: bool, format: LogFormat) {
    let default = if serving {
        "info,openraft=warn"
    } else {
        "warn,openraft=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DISPATCHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}

/// `--log-format` (or its variable), else the config file's, else text. A file that cannot
/// be read is reported by the command itself, with its reason.
fn log_format(command: &Command) -> LogFormat {
    let from_file = |path: &Option<std::path::PathBuf>, serve: bool| {
        let path = path.as_deref()?;
        if serve {
            dispatcher::config::flags::read_serve_file(path)
                .ok()?
                .0
                .log_format
        } else {
            dispatcher::config::flags::read_agent_file(path)
                .ok()?
                .log_format
        }
    };
    match command {
        Command::Serve(args) => args.log_format.or_else(|| from_file(&args.config, true)),
        Command::Taskmanager { agent, .. } => {
            agent.log_format.or_else(|| from_file(&agent.config, false))
        }
        _ => None,
    }
    .unwrap_or_default()
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn run(cli: Cli) -> Result<i32, CliError> {
    match cli.command {
        Command::Serve(args) => {
            node::serve(commands::serve_options(args)?, shutdown_signal()).await?;
            Ok(0)
        }
        Command::Cluster { command, client } => commands::cluster(command, client).await,
        Command::Tm { command, client } => commands::tm(command, client).await,
        Command::Submit { submit, client } => commands::submit(submit, client).await,
        Command::Job { command, client } => commands::job(command, client).await,
        Command::Bench(args) => commands::bench(args).await,
        Command::Chaos(args) => commands::chaos(args).await,
        Command::Demo(args) => commands::demo(args).await,
        Command::Certs { command } => commands::certs(command).await,
        Command::Completions { shell } => commands::completions(shell),
        Command::Token { command, client } => commands::token(command, client).await,
        Command::Quota { command, client } => commands::quota(command, client).await,
        Command::Cron { command, client } => commands::cron(command, client).await,
        Command::Events { from_index, client } => commands::events(from_index, client).await,
        Command::Taskmanager { agent, client } => {
            let opts = commands::agent_options(agent, client)?;
            dispatcher::taskmanager::run(opts, shutdown_signal()).await?;
            Ok(0)
        }
        // Handled before the runtime starts.
        Command::ShardHost { .. } | Command::DemoShard { .. } => Ok(2),
    }
}

/// A client command whose output is cut short (`dispatcher job list | head`) ends quietly, as
/// Unix tools do, instead of panicking on the broken pipe. Servers and agents keep Rust's
/// default (SIGPIPE ignored, the write fails): they write to sockets, never to a reader that
/// may go away. (Socket writes use MSG_NOSIGNAL in any case.)
fn quiet_on_a_closed_stdout(command: &Command) {
    let prints = matches!(
        command,
        Command::Cluster { .. }
            | Command::Tm { .. }
            | Command::Submit { .. }
            | Command::Job { .. }
            | Command::Token { .. }
            | Command::Quota { .. }
            | Command::Cron { .. }
            | Command::Events { .. }
            | Command::Completions { .. }
    );
    if prints {
        // SAFETY: setting a signal's disposition to its default before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
}

fn main() {
    dispatcher::failpoint::setup();
    let cli = Cli::parse();
    quiet_on_a_closed_stdout(&cli.command);
    if let Command::ShardHost {
        keepalive_timeout_ms,
        run_dir_pool,
        sandbox,
    } = &cli.command
    {
        let sandbox = match sandbox.as_deref().map(serde_json::from_str).transpose() {
            Ok(sandbox) => sandbox.unwrap_or_default(),
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "error: --sandbox: {e}");
                std::process::exit(2);
            }
        };
        let code = dispatcher::taskmanager::shard_host::shard_host(
            std::time::Duration::from_millis(*keepalive_timeout_ms),
            run_dir_pool.clone(),
            sandbox,
        );
        std::process::exit(code);
    }
    if let Command::DemoShard {
        step,
        data,
        parts,
        pace_ms,
    } = &cli.command
    {
        let pace = std::time::Duration::from_millis(*pace_ms);
        if let Err(e) = dispatcher::demo::shard::run(*step, data, *parts, pace) {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    init_tracing(
        matches!(
            cli.command,
            Command::Serve(_) | Command::Bench(_) | Command::Chaos(_) | Command::Taskmanager { .. }
        ),
        log_format(&cli.command),
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the async runtime: {e}"
            );
            std::process::exit(1);
        }
    };
    // Run on the runtime's workers, not on this thread: a future polled by `block_on` is
    // woken across threads each time a worker's task wakes it (the agent's loop on every
    // assignment push, the replica's accept loop), two context switches every time.
    let code = match runtime.block_on(async { tokio::spawn(run(cli)).await }) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            // A refusal may quote what a job or a server said: one line, no control bytes.
            let said = e.to_string();
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                dispatcher::commands::terminal::line(&said)
            );
            1
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            1
        }
    };
    std::process::exit(code);
}
