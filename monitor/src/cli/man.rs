//! `agentmon man`: the man pages, generated from the clap definitions.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;

/// Print agentmon(1) to stdout, or write agentmon(1) and one agentmon-COMMAND(1) per command into `dir`.
pub fn run(dir: Option<&Path>) -> anyhow::Result<()> {
    let cmd = super::Cli::command();
    match dir {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()).context("writing the man page"),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir).with_context(|| format!("writing the man pages into {}", dir.display()))
        }
    }
}
