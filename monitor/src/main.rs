//! The `agentmon` binary: parse, run, and turn any error into one line on stderr.

use clap::Parser as _;
use monitor::cli::{Cli, Command, run::EXIT_AGENTMON_FAILED};

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGENTMON_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
    out.replace('\n', " ")
}
