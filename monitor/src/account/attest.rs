//! Whether a report is the agent's own (`attested`): decided from the kernel's record of the
//! sending process, never from the report.
//!
//! Observed with Claude Code 2.1.328: a hook runs as `/bin/sh -c <command>`, a child of the
//! agent process; where `/bin/sh` is dash it forks `agentmon hook`, where it is bash it may exec
//! it. A Bash tool call runs as `/bin/bash -c "source <snapshot> ... eval '<command>' ..."`, also
//! a child of the agent. So a hook report is attested when the sender runs `agentmon hook`, and
//! its action (the agent's child and that child's subtree) began as a shell running
//! `agentmon hook` (or as `agentmon hook` itself), started by the agent process, with the
//! sender that shell or its child. A report piped into `agentmon hook` from a tool call is in
//! the tool's action, which began as the tool's shell: never attested.

use crate::correlate::Sender;

/// Why a hook report is (`Ok`) or is not (`Err`) the agent's own, in one line. `agentmon` is
/// the daemon's own executable (the hook is the same program).
pub fn hook(s: &Sender, agentmon: &str) -> Result<String, String> {
    let exe = s.exe.trim_end_matches(" (deleted)");
    if s.is_agent {
        return Err("sent by the agent process itself, not by a hook it started".into());
    }
    if exe != agentmon.trim_end_matches(" (deleted)") || s.argv.get(1).map(String::as_str) != Some("hook") {
        return Err(format!(
            "sent by `{}` ({}), not by `agentmon hook`",
            crate::text::visible(&crate::text::truncate_chars(&crate::text::shell_join(&s.argv), 200)),
            crate::text::visible(&crate::text::truncate_chars(exe, 200)),
        ));
    }
    let (Some((root, root_parent, first)), Some(agent)) = (&s.action_root, s.agent) else {
        return Err("the sender's process tree is not known to agentmon".into());
    };
    if *root_parent != agent {
        return Err(format!("its action was not started by the agent process (pid {agent})"));
    }
    if !super::is_hook_command(first) {
        return Err(format!(
            "sent from inside an action that began as `{}`, not as a hook",
            crate::text::visible(&crate::text::truncate_chars(&crate::text::shell_join(first), 200))
        ));
    }
    if s.pid != *root && s.ppid != *root {
        return Err("the hook's shell did not start the sender directly".into());
    }
    Ok(format!(
        "hook: `agentmon hook` started by the agent (pid {agent}) through `{}`",
        crate::text::visible(&crate::text::truncate_chars(&crate::text::shell_join(first), 120))
    ))
}

/// Whether an OpenTelemetry request is the agent's own: sent by the agent process itself.
pub fn otlp(s: &Sender) -> Result<String, String> {
    if s.is_agent {
        Ok("agent: sent by the agent process".into())
    } else {
        Err(format!(
            "sent by `{}`, a process of the session other than the agent",
            crate::text::visible(&crate::text::truncate_chars(&crate::text::shell_join(&s.argv), 200))
        ))
    }
}
