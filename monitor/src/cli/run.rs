//! `agentmon run`: start a session and exec the agent inside it.

use std::{os::unix::process::CommandExt as _, path::Path};

use anyhow::{bail, Context as _};

use crate::control::{self, Request, Response};

/// Exit status when agentmon itself fails (as `env` and container runtimes use 125).
pub const EXIT_AGENTMON_FAILED: i32 = 125;

/// Ask the daemon for a session, check we are in it, then exec. Returns only on failure.
pub fn run(
    runtime_dir: &Path,
    agent: &str,
    label: Option<String>,
    cmd: &[String],
) -> anyhow::Result<std::convert::Infallible> {
    let Some((prog, args)) = cmd.split_first() else {
        bail!("no command given: agentmon run --agent NAME -- CMD [ARGS...]");
    };
    let before = crate::cgroup::proc_cgroup(std::process::id()).context("reading /proc/self/cgroup")?;
    let resp = control::request(runtime_dir, &Request::StartSession { agent: agent.to_owned(), label })?;
    let Response::Session(s) = resp else { bail!("unexpected reply from the daemon: {resp:?}") };
    // The daemon moved us; confirm before anything runs, so nothing escapes capture.
    let mine = crate::cgroup::proc_cgroup(std::process::id()).context("reading /proc/self/cgroup")?;
    if !s.cgroup.ends_with(mine.trim_end_matches('/')) || mine.len() <= 1 {
        bail!("the daemon did not move this process into {} (it is in {mine})", s.cgroup);
    }
    // And below where we were, so the limits of our cgroup still hold (both paths are as our
    // cgroup namespace sees them).
    let parent = before.trim_end_matches('/');
    if !parent.is_empty() && !mine.strip_prefix(parent).is_some_and(|rest| rest.starts_with('/')) {
        bail!("the daemon moved this process out of its cgroup {before} (into {mine}), past that cgroup's limits");
    }
    eprintln!("agentmon: session {}", s.session_id);
    let err = std::process::Command::new(prog).args(args).exec();
    bail!("cannot run {prog}: {err}")
}
