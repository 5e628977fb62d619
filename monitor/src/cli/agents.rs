//! `agentmon agents install|uninstall`: write (or remove) the hooks and telemetry settings that
//! make Claude Code and Codex report to the daemon. The contents come from `crate::agents`.

use std::{
    io::Write as _,
    net::SocketAddr,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::Subcommand;

use crate::agents::{self, Agent, Target};

/// Default of the config key `agents.otlp_listen`.
pub const DEFAULT_OTLP_LISTEN: &str = "127.0.0.1:4318";

#[derive(Debug, Subcommand)]
pub enum AgentsCmd {
    /// Write managed settings so the agents run `agentmon hook` and send OpenTelemetry to the
    /// daemon (root). No names: both.
    Install {
        #[arg(value_enum)]
        agents: Vec<Agent>,
        /// The agentmon binary the hooks run [default: this one].
        #[arg(long, value_name = "PATH")]
        agentmon: Option<PathBuf>,
        /// The daemon's OTLP/HTTP receiver.
        #[arg(long, value_name = "ADDR", default_value = DEFAULT_OTLP_LISTEN)]
        otlp_listen: SocketAddr,
        /// Print what would be written, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Root directory the files are under (tests).
        #[arg(long, hide = true, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Remove what `install` wrote, and nothing else (root). No names: both.
    Uninstall {
        #[arg(value_enum)]
        agents: Vec<Agent>,
        /// Print what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, hide = true, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
}

/// Returns the exit code.
pub fn run(cmd: AgentsCmd) -> anyhow::Result<i32> {
    match cmd {
        AgentsCmd::Install { agents, agentmon, otlp_listen, dry_run, root } => {
            check_root(&root, dry_run, "install")?;
            let agentmon = match agentmon {
                Some(p) => p,
                None => std::env::current_exe().context("finding the agentmon binary (pass --agentmon PATH)")?,
            };
            anyhow::ensure!(agentmon.is_absolute(), "--agentmon must be an absolute path");
            let agentmon = agentmon.to_str().context("the agentmon path is not UTF-8")?;
            install(&selected(agents), &Target::new(agentmon, otlp_listen), &root, dry_run)
        }
        AgentsCmd::Uninstall { agents, dry_run, root } => {
            check_root(&root, dry_run, "uninstall")?;
            uninstall(&selected(agents), &root, dry_run)
        }
    }
}

fn selected(mut agents: Vec<Agent>) -> Vec<Agent> {
    if agents.is_empty() {
        return vec![Agent::Claude, Agent::Codex];
    }
    agents.sort();
    agents.dedup();
    agents
}

fn check_root(root: &Path, dry_run: bool, verb: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if root == Path::new("/") && !dry_run && unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("agentmon agents {verb} must run as root: it changes system-wide agent settings (try sudo)");
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replace `path` with `contents` through a temporary file in the same directory, keeping an
/// existing file's mode (else 0644).
fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("a file has a parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("agentmon");
    let tmp = dir.join(format!(".{name}.agentmon-tmp"));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn install(agents: &[Agent], t: &Target, root: &Path, dry_run: bool) -> anyhow::Result<i32> {
    // Compute every file first: a refusal for one agent writes nothing for the other.
    let mut plans = Vec::new();
    for &agent in agents {
        let path = root.join(agent.file());
        let contents = match agent {
            Agent::Claude => agents::claude_settings(t),
            Agent::Codex => {
                let existing = read(&path)?;
                agents::codex_install(existing.as_deref(), t)
                    .map_err(|e| anyhow::anyhow!("not changing {}: {e}", path.display()))?
            }
        };
        plans.push((agent, path, contents));
    }
    for (agent, path, contents) in plans {
        if dry_run {
            let what = if agent == Agent::Codex { " (our block, between the BEGIN and END lines)" } else { "" };
            println!("would write {}{what}:", path.display());
            let shown = match agent {
                Agent::Claude => contents,
                Agent::Codex => agents::codex_block(t),
            };
            print!("{shown}");
        } else {
            write(&path, &contents)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(0)
}

fn uninstall(agents: &[Agent], root: &Path, dry_run: bool) -> anyhow::Result<i32> {
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut any = false;
    for &agent in agents {
        let path = root.join(agent.file());
        let Some(text) = read(&path)? else { continue };
        match agent {
            Agent::Claude => {
                if !dry_run {
                    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                }
                println!("{verb} {}", path.display());
            }
            Agent::Codex => {
                let Some(rest) = agents::codex_uninstall(&text)
                    .map_err(|e| anyhow::anyhow!("not changing {}: {e}", path.display()))?
                else {
                    continue;
                };
                if rest.is_empty() {
                    if !dry_run {
                        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                    }
                    println!("{verb} {} (only our block was in it)", path.display());
                } else {
                    if !dry_run {
                        write(&path, &rest)?;
                    }
                    println!("{verb} the agentmon block from {}", path.display());
                }
            }
        }
        any = true;
    }
    if !any {
        println!("nothing to remove");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("agentmon-agents-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("tmp");
        d
    }

    #[test]
    fn install_then_uninstall_under_a_root() {
        let root = tmpdir("roundtrip");
        let req = root.join(agents::CODEX_FILE);
        std::fs::create_dir_all(req.parent().expect("parent")).expect("dir");
        let user = "allowed_approval_policies = [\"on-request\"]\n";
        std::fs::write(&req, user).expect("user file");
        std::fs::set_permissions(&req, std::fs::Permissions::from_mode(0o600)).expect("mode");
        let t = Target::new("/usr/bin/agentmon", DEFAULT_OTLP_LISTEN.parse().expect("addr"));
        let both = selected(vec![]);
        assert_eq!(install(&both, &t, &root, false).expect("install"), 0);
        assert_eq!(install(&both, &t, &root, false).expect("again"), 0);
        let claude = root.join(agents::CLAUDE_FILE);
        assert_eq!(std::fs::read_to_string(&claude).expect("claude"), agents::claude_settings(&t));
        let text = std::fs::read_to_string(&req).expect("codex");
        assert_eq!(text, format!("{user}{}", agents::codex_block(&t)));
        assert_eq!(std::fs::metadata(&req).expect("meta").permissions().mode() & 0o777, 0o600);
        assert_eq!(uninstall(&both, &root, false).expect("uninstall"), 0);
        assert!(!claude.exists());
        assert_eq!(std::fs::read_to_string(&req).expect("codex"), user);
        assert_eq!(uninstall(&both, &root, false).expect("nothing"), 0);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_conflict_writes_nothing() {
        let root = tmpdir("conflict");
        let req = root.join(agents::CODEX_FILE);
        std::fs::create_dir_all(req.parent().expect("parent")).expect("dir");
        std::fs::write(&req, "[otel]\nlog_user_prompt = false\n").expect("user file");
        let t = Target::new("/usr/bin/agentmon", DEFAULT_OTLP_LISTEN.parse().expect("addr"));
        let e = install(&selected(vec![]), &t, &root, false).expect_err("refused");
        assert!(e.to_string().contains("[otel]"), "{e}");
        assert!(!root.join(agents::CLAUDE_FILE).exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
