//! `dispatcher completions <bash|zsh|fish>`: the shell completion script, from the same clap
//! definition the binary parses with, so it never falls behind the flags.

use super::{CliError, ExitCode};
use crate::cli::{Cli, CompletionShell};
use clap::CommandFactory;
use clap_complete::{generate, Shell};

pub fn completions(shell: CompletionShell) -> Result<ExitCode, CliError> {
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    // Into memory first: clap_complete panics on a failed write, and `| head` closes early.
    let mut script = Vec::new();
    generate(shell, &mut Cli::command(), "dispatcher", &mut script);
    use std::io::Write;
    match std::io::stdout().write_all(&script) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(CliError::Usage(format!("cannot write the script: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            generate(shell, &mut Cli::command(), "dispatcher", &mut out);
            let script = String::from_utf8(out).expect("utf-8");
            for word in ["submit", "taskmanager", "completions", "endpoints"] {
                assert!(script.contains(word), "{shell:?} script lacks {word}");
            }
        }
    }
}
