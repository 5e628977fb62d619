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

#[cfg(test)]
mod tests {
    use super::*;

    const AGENTMON: &str = "/usr/bin/agentmon";

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    /// `agentmon hook` (pid 30) forked by `/bin/sh -c '/usr/bin/agentmon hook'` (pid 20), which the
    /// agent (pid 10) started.
    fn hook_sender() -> Sender {
        Sender {
            pid: 30,
            session_id: uuid::Uuid::nil(),
            exec_id: "x-30-1".into(),
            is_agent: false,
            exe: AGENTMON.into(),
            argv: v(&[AGENTMON, "hook"]),
            ppid: 20,
            action: Some(uuid::Uuid::nil()),
            action_root: Some((20, 10, v(&["/bin/sh", "-c", "/usr/bin/agentmon hook"]))),
            agent: Some(10),
        }
    }

    #[test]
    fn the_agents_own_hook_is_attested() {
        assert!(hook(&hook_sender(), AGENTMON).is_ok());
        // bash may exec the command: the shell's pid is the sender's.
        let exec = Sender { pid: 20, ppid: 10, ..hook_sender() };
        assert!(hook(&exec, AGENTMON).is_ok());
    }

    #[test]
    fn a_report_piped_from_a_tool_call_is_not() {
        let tool = Sender {
            action_root: Some((20, 10, v(&["/bin/bash", "-c", "eval 'echo {} | /usr/bin/agentmon hook'"]))),
            ..hook_sender()
        };
        assert!(hook(&tool, AGENTMON).is_err_and(|e| e.contains("inside an action")));
        // Even when the tool exec'd a shell that looks like a hook: the first image counts.
        let deeper = Sender { ppid: 25, ..hook_sender() };
        assert!(hook(&deeper, AGENTMON).is_err_and(|e| e.contains("did not start the sender")));
        let not_ours = Sender { exe: "/tmp/agentmon".into(), ..hook_sender() };
        assert!(hook(&not_ours, AGENTMON).is_err_and(|e| e.contains("not by `agentmon hook`")));
        let agent = Sender { is_agent: true, ..hook_sender() };
        assert!(hook(&agent, AGENTMON).is_err());
        let not_the_agents =
            Sender { action_root: Some((20, 99, v(&["/bin/sh", "-c", "/usr/bin/agentmon hook"]))), ..hook_sender() };
        assert!(hook(&not_the_agents, AGENTMON).is_err_and(|e| e.contains("not started by the agent")));
    }

    #[test]
    fn telemetry_is_attested_from_the_agent_process_only() {
        assert!(otlp(&Sender { is_agent: true, ..hook_sender() }).is_ok());
        assert!(otlp(&hook_sender()).is_err());
    }
}
