//! The intake socket's protocol, shared by `agentmon hook` (the client, `cli/hook.rs`) and the
//! daemon (`daemon/intake.rs`). Any user may connect; all a connection can do is deliver one
//! report. The daemon learns who sent it from the kernel (the socket's peer credentials), never
//! from what it says.
//!
//! A connection carries one header line (JSON, [`Header`]), then the hook's input as given on
//! stdin (at most [`MAX_INPUT`] bytes), then the client shuts its side down. The daemon answers
//! one line, `ok` or why not, once the report is bound to its session (so the sender is still
//! alive while the daemon checks who it is).

use std::{path::Path, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

pub const SOCKET_NAME: &str = "intake.sock";
/// Bytes of a hook's input delivered; the rest is cut (and the report marked truncated).
pub const MAX_INPUT: usize = 1 << 20;
/// Bytes of a header line.
pub const MAX_HEADER: usize = 4096;
/// The longest `agentmon hook` waits for the daemon, from connect to answer. Past it the hook
/// exits 0 all the same: the agent is never held up longer.
pub const CLIENT_BUDGET: Duration = Duration::from_secs(2);

pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(SOCKET_NAME)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Protocol version: 1.
    pub v: u32,
    /// `agentmon hook`'s own arguments after `hook` (an `--agent` hint; stored, not trusted).
    #[serde(default)]
    pub args: Vec<String>,
    /// The input was longer than [`MAX_INPUT`] and was cut.
    #[serde(default)]
    pub cut: bool,
}
