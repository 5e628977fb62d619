//! The `agentmon` command line. One file per subcommand.

pub mod agents;
pub mod completions;
pub mod export;
pub mod hook;
pub mod man;
pub mod query;
pub mod retention;
pub mod run;
pub mod status;
pub mod table;
pub mod verify;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::{
    config::{self, FileConfig},
    control::{self, Request, Response},
    store::{
        self,
        query::{ActionFilter, CallFilter, SessionFilter},
    },
};

#[derive(Debug, Parser)]
#[command(name = "agentmon", version = env!("AGENTMON_VERSION"), about = "See what AI agents do on this server, from the kernel.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where to find the daemon.
#[derive(Debug, clap::Args)]
pub struct DaemonAddr {
    /// The daemon's runtime directory (control socket).
    #[arg(long, env = "AGENTMON_RUNTIME_DIR", default_value = config::DEFAULT_RUNTIME_DIR, value_name = "DIR")]
    pub runtime_dir: PathBuf,
}

/// Where to find the database, for the query commands.
#[derive(Debug, clap::Args)]
pub struct DbArgs {
    /// `PostgreSQL` URL [default: `DATABASE_URL`, the config file, or the running daemon's].
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub addr: DaemonAddr,
    /// Config file.
    #[arg(long, default_value = config::CONFIG_PATH)]
    pub config: PathBuf,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the capture daemon (root).
    Daemon(crate::daemon::DaemonArgs),
    /// Run a command as an agent session: `agentmon run --agent NAME -- CMD ARGS...`.
    Run {
        /// Agent name recorded on the session.
        #[arg(long)]
        agent: String,
        /// Free-text label recorded on the session.
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        addr: DaemonAddr,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// What agents run as their hook: hands the hook's JSON on stdin to the daemon, prints
    /// nothing, and exits 0 within 2 s whatever happens (see `agentmon agents install`).
    Hook {
        #[command(flatten)]
        addr: DaemonAddr,
        /// Recorded with the report (e.g. `--agent claude`); never trusted.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Mark an existing cgroup (e.g. a systemd unit's) as a session (root).
    Tag {
        /// cgroup path, relative to the cgroup2 mount or absolute.
        #[arg(long)]
        cgroup: String,
        #[arg(long)]
        agent: String,
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        addr: DaemonAddr,
    },
    /// Detach every pinned program and remove the pins (root; for uninstalling). Refuses while
    /// sessions are live or a daemon is running, unless given --force.
    Unload {
        /// bpffs directory of the pins.
        #[arg(long, default_value = config::DEFAULT_PIN_DIR, value_name = "DIR")]
        pin_dir: PathBuf,
        /// Unload even with live sessions or a running daemon (their capture stops).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        addr: DaemonAddr,
    },
    /// Whether a daemon is capturing; exits 1 when none is.
    Status {
        #[command(flatten)]
        addr: DaemonAddr,
        #[arg(long)]
        json: bool,
    },
    /// List sessions.
    Sessions {
        #[arg(long)]
        agent: Option<String>,
        /// A duration ago (10m, 2h, 3d) or a time.
        #[arg(long, value_parser = query::parse_when)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List actions (commands the agents ran), oldest first.
    Actions {
        /// Session id or id prefix.
        #[arg(long, value_parser = query::parse_id_prefix)]
        session: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, value_parser = query::parse_when)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, value_parser = query::parse_when)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Only actions whose command line (or any subprocess's) contains TEXT.
        #[arg(long, value_name = "TEXT")]
        grep: Option<String>,
        /// Only actions that exited non-zero or were killed by a signal.
        #[arg(long)]
        failed: bool,
        /// At most N actions (the most recent).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
        limit: Option<i64>,
        /// Only actions that touched a file matching GLOB (`*`, `?`).
        #[arg(long, value_name = "GLOB")]
        path: Option<String>,
        /// Only actions that modified a file (write, create, delete, rename, mkdir, link, chmod, chown, truncate).
        #[arg(long)]
        writes: bool,
        /// Only actions with a file or network access denied (EACCES or EPERM).
        #[arg(long)]
        denied: bool,
        /// Only actions that used the network with this DNS name.
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
        /// Only actions that used this port.
        #[arg(long, value_name = "N")]
        port: Option<u16>,
        /// Only actions that touched a sensitive file or endpoint (keys, credentials, ...).
        #[arg(long)]
        sensitive: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List alerts raised by the daemon's alert rules, oldest first.
    Alerts {
        /// A duration ago (10m, 2h, 3d) or a time.
        #[arg(long, value_parser = query::parse_when)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// This severity and above.
        #[arg(long, value_parser = ["info", "low", "medium", "high", "critical"])]
        severity: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// Session id or id prefix.
        #[arg(long, value_parser = query::parse_id_prefix)]
        session: Option<String>,
        /// Only this rule.
        #[arg(long)]
        rule: Option<String>,
        /// At most N alerts (the most recent).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
        limit: Option<i64>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List the agent's tool calls with their verdict against the kernel's record, and the
    /// actions no call declared (`undeclared`), oldest first.
    Calls {
        /// Session id or id prefix.
        #[arg(long, value_parser = query::parse_id_prefix)]
        session: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// A duration ago (10m, 2h, 3d) or a time.
        #[arg(long, value_parser = query::parse_when)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only this verdict: matched, mismatch, denied, unobserved or undeclared.
        #[arg(long, value_parser = query::parse_verdict)]
        verdict: Option<String>,
        /// Only calls of this tool (Bash, Write, ...).
        #[arg(long, value_name = "NAME")]
        tool: Option<String>,
        /// At most N calls (the most recent).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
        limit: Option<i64>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// A session's raw events, in order.
    Events {
        /// Session id or id prefix/suffix.
        #[arg(long, value_parser = query::parse_id_prefix)]
        session: String,
        /// Only exec (exec, fork, exit), file, net, tamper or `io_uring` events.
        #[arg(long, value_parser = ["exec", "file", "net", "tamper", "io_uring"])]
        kind: Option<String>,
        /// At most N events.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
        limit: Option<i64>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Check the evidence chain: recompute every row's hash and check the signed checkpoints.
    /// Exits 0 when everything verifies, 3 when something does not.
    Verify(verify::VerifyArgs),
    /// Apply retention now (the daemon also does daily): drop raw events past `hot`, archive
    /// and drop everything past `warm`, each under a signed cut. Root only. Exits 1 when a
    /// partition could not be removed (it stays, and is retried).
    Retention {
        /// Only list what would go.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        addr: DaemonAddr,
        #[arg(long)]
        json: bool,
    },
    /// Write an incident packet: the selected sessions with their actions, process trees,
    /// files, network, raw events and alerts, plus the chain proof up to a signed checkpoint,
    /// in one file that `agentmon verify --packet` checks offline.
    Export(export::ExportArgs),
    /// Apply the database migrations (creates the schema and the `agentmon_owner`, `_writer` and
    /// `_reader` roles). Needs a login that may create roles and tables; the daemon does this
    /// itself when its login may.
    Migrate {
        /// `PostgreSQL` URL of a login that owns the schema (or a superuser).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        #[arg(long, default_value = config::CONFIG_PATH)]
        config: PathBuf,
    },
    /// Print the shell completion script for SHELL to stdout (packaged in the .deb).
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page agentmon(1) to stdout, or write it and one agentmon-COMMAND(1) page
    /// per command into DIR.
    #[command(hide = true)]
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Install or remove the agents' hooks and telemetry settings (Claude Code, Codex).
    Agents {
        #[command(subcommand)]
        cmd: agents::AgentsCmd,
    },
    /// Show one action and its process tree.
    Show {
        /// Action id or unique id prefix/suffix.
        #[arg(value_parser = query::parse_id_prefix)]
        action: String,
        /// Also list shared-library, locale and loader reads.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// The query commands read through the reader role.
pub async fn pool(db: &DbArgs) -> anyhow::Result<sqlx::PgPool> {
    let file = FileConfig::load(&db.config)?;
    let url = config::query_database_url(db.database_url.as_deref(), &file, &db.addr.runtime_dir)?;
    Ok(store::connect_as(&url, store::Role::Reader).await?)
}

/// Exit code when the evidence does not verify (`verify`, `verify --packet`, `--archive`);
/// 1 is for errors.
pub const EXIT_FAILED: i32 = 3;

/// Exit code of `verify --packet` without `--key`: the packet is consistent, but nothing ties it
/// to the host (anyone can sign a packet with a key of their own).
pub const EXIT_UNAUTHENTICATED: i32 = 4;

/// Run the parsed command; returns the process exit code.
pub async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Daemon(args) => Box::pin(crate::daemon::run(args)).await.map(|()| 0),
        Command::Unload { pin_dir, force, addr } => unload(&pin_dir, force, &addr.runtime_dir),
        Command::Run { .. } => unreachable!("run is handled before the runtime starts"),
        Command::Hook { .. } => unreachable!("hook is handled before the runtime starts"),
        Command::Tag { cgroup, agent, label, addr } => {
            let resp = control::request(&addr.runtime_dir, &Request::Tag { cgroup, agent, label })?;
            let Response::Session(s) = resp else { anyhow::bail!("unexpected reply from the daemon: {resp:?}") };
            eprintln!("agentmon: session {} ({})", s.session_id, s.cgroup);
            Ok(0)
        }
        Command::Status { addr, json } => status::run(&addr.runtime_dir, json),
        Command::Sessions { agent, since, db } => {
            let pool = pool(&db).await?;
            query::sessions(&pool, &SessionFilter { agent, since, id_prefix: None }, db.json).await.map(|()| 0)
        }
        Command::Alerts { since, severity, agent, session, rule, limit, db } => {
            let pool = pool(&db).await?;
            let f = store::query::AlertFilter { since, severity, agent, session_prefix: session, rule, limit };
            crate::cli::query::alerts(&pool, &f, db.json).await.map(|()| 0)
        }
        Command::Actions {
            session,
            agent,
            since,
            until,
            grep,
            failed,
            limit,
            path,
            writes,
            denied,
            host,
            port,
            sensitive,
            db,
        } => {
            let pool = pool(&db).await?;
            let f = ActionFilter {
                session_prefix: session,
                id_prefix: None,
                agent,
                since,
                until,
                grep,
                failed,
                limit,
                path_glob: path,
                writes,
                denied,
                host,
                port,
                sensitive,
            };
            query::actions(&pool, &f, db.json).await.map(|()| 0)
        }
        Command::Calls { session, agent, since, verdict, tool, limit, db } => {
            let pool = pool(&db).await?;
            let f = CallFilter { session_prefix: session, agent, since, verdict, tool, limit, action: None };
            query::calls(&pool, &f, db.json).await.map(|()| 0)
        }
        Command::Events { session, kind, limit, db } => {
            let pool = pool(&db).await?;
            query::events(&pool, &session, kind.as_deref(), limit, db.json).await.map(|()| 0)
        }
        Command::Verify(args) => verify::run(&args).await,
        Command::Retention { dry_run, addr, json } => retention::run(&addr.runtime_dir, dry_run, json),
        Command::Export(args) => export::run(&args).await,
        Command::Migrate { database_url, config } => {
            let file = FileConfig::load(&config)?;
            let url = config::daemon_database_url(database_url.as_deref(), &file)?;
            let pool = store::connect(&url).await?;
            store::migrate(&pool).await?;
            eprintln!("agentmon: the schema of {} is up to date", store::redact_url(&url));
            Ok(0)
        }
        Command::Completions { shell } => {
            completions::run(shell);
            Ok(0)
        }
        Command::Man { dir } => man::run(dir.as_deref()).map(|()| 0),
        Command::Agents { cmd } => agents::run(cmd),
        Command::Show { action, all, db } => {
            let pool = pool(&db).await?;
            if query::show(&pool, &action, all, db.json).await.context("querying the action")? {
                Ok(0)
            } else {
                eprintln!("agentmon: no action matches `{action}` (list them with `agentmon actions`)");
                Ok(1)
            }
        }
    }
}

fn unload(pin_dir: &std::path::Path, force: bool, runtime_dir: &std::path::Path) -> anyhow::Result<i32> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("agentmon unload must run as root: it detaches eBPF programs (try `sudo agentmon unload`)");
    }
    let Some(pinned) = crate::ebpf::Probes::pinned(pin_dir)
        .with_context(|| format!("reading the pins under {}", pin_dir.display()))?
    else {
        eprintln!("agentmon: nothing is pinned under {}", pin_dir.display());
        return Ok(0);
    };
    // An agent that is root in its session must not end capture: the programs track it, so they
    // say so (its bpf calls are recorded as tamper events whether or not it uses this command).
    let me = std::process::id();
    if let Some(session) = pinned.tracked_session_of(me, crate::daemon::control::proc_start_ticks(me)) {
        anyhow::bail!(
            "refused: this process is part of an agent session (cgroup id {session}); unload from outside every session"
        );
    }
    let live = pinned.tagged_sessions().len();
    let daemon = control::request(runtime_dir, &Request::Status).is_ok();
    drop(pinned);
    if !force && (live > 0 || daemon) {
        let why =
            if daemon { "a daemon is running (stop it first)".to_owned() } else { format!("{live} sessions are live") };
        eprintln!("agentmon: not unloading: {why}; pass --force to detach anyway (capture stops)");
        return Ok(1);
    }
    // What the rings still hold is gone with them: count it by session and say so.
    let left = crate::ebpf::Probes::pinned(pin_dir).ok().flatten().map(|mut p| p.drain_unread()).unwrap_or_default();
    if !left.is_empty() {
        let total: u64 = left.values().sum();
        let by: Vec<String> = left.iter().map(|(cg, n)| format!("{n} of session cgroup {cg}")).collect();
        eprintln!("agentmon: {total} events still in the rings were never stored and are lost: {}", by.join(", "));
    }
    let n = crate::ebpf::unload(pin_dir).with_context(|| format!("removing the pins under {}", pin_dir.display()))?;
    eprintln!("agentmon: detached {n} program set(s) and removed {}", pin_dir.display());
    Ok(0)
}
