//! `agentmon completions SHELL`: the shell completion script, generated from the clap definitions.

use clap::CommandFactory as _;

/// Print the completion script for `shell` to stdout.
pub fn run(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut super::Cli::command(), "agentmon", &mut std::io::stdout());
}
