//! The `agentmon` binary: parse, run, and turn any error into one line on stderr.

use clap::Parser as _;
use monitor::cli::{run::EXIT_AGENTMON_FAILED, Cli, Command};

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Daemon(_)) {
        // Behave like other CLI tools when piped into `head`: a closed pipe ends the process
        // quietly, and `run` hands the agent the default disposition. The daemon keeps Rust's
        // ignore, so a control client that hangs up cannot kill it.
        // SAFETY: setting a signal disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // `run` must exec without a runtime or extra threads; everything else uses tokio.
    if let Command::Run { agent, label, addr, cmd } = &cli.command {
        let Err(e) = monitor::cli::run::run(&addr.runtime_dir, agent, label.clone(), cmd);
        eprintln!("agentmon: {}", one_line(&e));
        std::process::exit(EXIT_AGENTMON_FAILED);
    }
    // `hook` runs on every tool call of an agent: no runtime, no logging, always exit 0.
    if let Command::Hook { addr, args } = &cli.command {
        std::process::exit(monitor::cli::hook::run(&addr.runtime_dir, args));
    }
    init_logging(matches!(cli.command, Command::Daemon(_)));
    let code = match tokio::runtime::Runtime::new() {
        Ok(rt) => match rt.block_on(monitor::cli::dispatch(cli)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("agentmon: {}", one_line(&e));
                1
            }
        },
        Err(e) => {
            eprintln!("agentmon: cannot start the async runtime: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// Logs go to stderr; the daemon under systemd (its stderr is the journal: `JOURNAL_STREAM`)
/// logs to the journal directly, with structured fields (`SESSION=`, `PID=`, ...) and
/// priorities, falling back to stderr when the journal socket is absent.
fn init_logging(daemon: bool) {
    use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let filter = || tracing_subscriber::EnvFilter::try_from_env("AGENTMON_LOG").unwrap_or_else(|_| "info".into());
    if daemon && std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journal) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter())
                .with(journal.with_syslog_identifier("agentmon".into()))
                .init();
            return;
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The error and its causes on one line, without repeating a cause already in the message.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    // One line, and nothing in it (a name from the database, a path) can rewrite the terminal.
    monitor::text::visible(&out.replace('\n', " "))
}
