//! `agentmon hook`: what an agent runs as its hook. Reads the hook's JSON on stdin, hands it to
//! the daemon over the intake socket, and exits 0 within `intake::CLIENT_BUDGET` whatever
//! happens: a hook must never hold the agent up or change its decision, so it prints nothing on
//! stdout. Failures go to stderr, one line.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Instant,
};

use crate::intake::{self, Header};

/// Deliver stdin as one report; returns the exit code (always 0).
pub fn run(runtime_dir: &Path, args: &[String]) -> i32 {
    if let Err(e) = deliver(runtime_dir, args) {
        // The agent shows a hook's stderr only when it fails; the daemon counts hooks that
        // never arrived from the kernel's record of their processes.
        let _ = writeln!(std::io::stderr(), "agentmon hook: report not delivered: {e}");
    }
    0
}

fn deliver(runtime_dir: &Path, args: &[String]) -> std::io::Result<()> {
    let start = Instant::now();
    let mut input = Vec::with_capacity(8192);
    std::io::stdin().lock().take(intake::MAX_INPUT as u64 + 1).read_to_end(&mut input)?;
    let cut = input.len() > intake::MAX_INPUT;
    input.truncate(intake::MAX_INPUT);
    let header = Header { v: 1, args: args.to_vec(), cut };
    let path = intake::socket_path(runtime_dir);
    let mut s = UnixStream::connect(&path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("{} ({e}): is the agentmon daemon running?", path.display()))
    })?;
    let left = || intake::CLIENT_BUDGET.saturating_sub(start.elapsed()).max(std::time::Duration::from_millis(1));
    s.set_write_timeout(Some(left()))?;
    let mut line = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line)?;
    s.write_all(&input)?;
    s.shutdown(std::net::Shutdown::Write)?;
    s.set_read_timeout(Some(left()))?;
    let mut answer = String::new();
    s.take(4096).read_to_string(&mut answer)?;
    match answer.trim() {
        "ok" => Ok(()),
        "" => Err(std::io::Error::other("the daemon closed the connection without an answer")),
        other => Err(std::io::Error::other(crate::text::visible(other))),
    }
}
