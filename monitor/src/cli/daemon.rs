//! `agentmon daemon`: load the probes, read and correlate events, store them, serve the
//! control socket.

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, RingBuf};
use chrono::Utc;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    io::unix::AsyncFd,
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    cgroup,
    config::{self, FileConfig},
    control::{LiveSession, Request, Response, SessionStarted, Status},
    correlate::{Clock, Correlator, Output, SessionInfo, SessionStart},
    ebpf::{Probes, decode},
    procscan, store,
};

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// PostgreSQL URL (else DATABASE_URL, else database_url in the config file).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// cgroup under which session cgroups are created [default: <cgroup2 mount>/agentmon].
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<PathBuf>,
    /// Directory for the control socket.
    #[arg(long, env = "AGENTMON_RUNTIME_DIR", default_value = config::DEFAULT_RUNTIME_DIR, value_name = "DIR")]
    pub runtime_dir: PathBuf,
    /// Group whose members may start sessions [default: agentmon, if it exists].
    #[arg(long)]
    pub group: Option<String>,
    /// Ring-buffer size in MiB (a power of two).
    #[arg(long, default_value_t = 64, value_parser = ring_size)]
    pub ring_buffer_mb: u32,
    /// Records that may wait in memory for the database; beyond it raw events are shed and
    /// counted in the session's events_lost (actions and sessions are always kept).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_backlog: u64,
    /// Config file.
    #[arg(long, default_value = config::CONFIG_PATH)]
    pub config: PathBuf,
}

fn ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("`{s}` is not a number of MiB"))?;
    if n == 0 || !n.is_power_of_two() || n > 1024 {
        return Err(format!("{n} MiB: the ring buffer must be a power of two between 1 and 1024 MiB"));
    }
    Ok(n)
}

/// A request from a control connection, with the peer's credentials.
struct Command {
    req: Request,
    peer_pid: u32,
    peer_uid: u32,
    /// The peer's start time (clock ticks) when it connected, so a pid reused since then is
    /// never moved into a session.
    peer_start: Option<u64>,
    reply: oneshot::Sender<Response>,
}

/// A process's start time in clock ticks, from `/proc/<pid>/stat`.
fn proc_start_ticks(pid: u32) -> Option<u64> {
    procfs::process::Process::new(pid as i32).ok()?.stat().ok().map(|s| s.starttime)
}

/// What the daemon remembers about a session beyond the correlator.
struct SessionMeta {
    path: PathBuf,
    /// Created by us (`run`), so we remove the cgroup when the session ends.
    owned: bool,
}

struct Daemon {
    probes: Probes,
    correlator: Correlator,
    writer: store::Writer,
    host: String,
    cgroup_mount: PathBuf,
    cgroup_root: PathBuf,
    sessions: HashMap<u64, SessionMeta>,
    /// Raw events shed per session cgroup while the database backlog was full.
    shed: HashMap<u64, u64>,
    decode_errors: u64,
    started_at: chrono::DateTime<Utc>,
}

fn clock() -> anyhow::Result<Clock> {
    let now = |id| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid pointer to a timespec.
        unsafe { libc::clock_gettime(id, &raw mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    let boot_unix_ns = now(libc::CLOCK_REALTIME) - now(libc::CLOCK_BOOTTIME);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").context("reading boot id")?;
    let boot_tag = u32::from_str_radix(&boot_id.replace('-', "")[..8], 16).unwrap_or(0);
    Ok(Clock { boot_unix_ns, ns_per_tick: 1_000_000_000 / hz, boot_tag })
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "unknown".into(), |h| h.trim().to_owned())
}

fn group_gid(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam returns a pointer to static storage or null.
    let g = unsafe { libc::getgrnam(cname.as_ptr()) };
    // SAFETY: non-null pointer from getgrnam.
    (!g.is_null()).then(|| unsafe { (*g).gr_gid })
}

/// Root, or a member (primary or supplementary) of the allowed group.
fn peer_allowed(uid: u32, pid: u32, gid: u32, allowed: Option<u32>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(allowed) = allowed else { return false };
    if gid == allowed {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(allowed)))
    })
}

fn valid_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 128 || s.chars().any(char::is_control) {
        return Err(format!("{what} must be 1-128 printable characters"));
    }
    Ok(())
}

/// A session's agent name and optional label.
fn valid_session_names(agent: &str, label: Option<&str>) -> Result<(), String> {
    valid_name("agent", agent)?;
    label.map_or(Ok(()), |l| valid_name("label", l))
}

pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("agentmon daemon must run as root: it loads eBPF programs and manages cgroups (try `sudo agentmon daemon`)");
    }
    let file = FileConfig::load(&args.config)?;
    let url = config::daemon_database_url(args.database_url.as_deref(), &file)?;
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("this kernel has no BTF (/sys/kernel/btf/vmlinux is missing); agentmon needs a kernel built with CONFIG_DEBUG_INFO_BTF=y");
    }
    info!(database = %store::redact_url(&url), "connecting to the database");
    let pool = store::connect(&url).await?;
    store::migrate(&pool).await?;

    let cgroup_mount = cgroup::cgroup2_mount()?;
    let cgroup_root = args.cgroup_root.clone().unwrap_or_else(|| cgroup_mount.join("agentmon"));
    if !cgroup_root.starts_with(&cgroup_mount) {
        bail!("--cgroup-root {} is not under the cgroup2 mount {}", cgroup_root.display(), cgroup_mount.display());
    }
    std::fs::create_dir_all(&cgroup_root).with_context(|| format!("creating cgroup root {}", cgroup_root.display()))?;
    crate::ebpf::ensure_mounts().context("mounting tracefs/bpffs")?;
    raise_memlock();

    let ring_bytes = args.ring_buffer_mb * 1024 * 1024;
    let mut probes = Probes::load(ring_bytes).context("loading the eBPF programs")?;
    let ring = probes.take_events().context("event ring buffer missing")?;
    info!(probes = ?probes.attached, ring_mb = args.ring_buffer_mb, "probes attached");

    let host = hostname();
    let (writer, writer_task) = store::Writer::spawn(pool.clone(), host.clone(), args.max_backlog);
    let mut daemon = Daemon {
        probes,
        correlator: Correlator::new(clock()?),
        writer,
        host,
        cgroup_mount,
        cgroup_root,
        sessions: HashMap::new(),
        shed: HashMap::new(),
        decode_errors: 0,
        started_at: Utc::now(),
    };
    daemon.readopt(&pool).await?;

    let group = args.group.clone().or(file.group.clone()).unwrap_or_else(|| "agentmon".into());
    let allowed_gid = group_gid(&group);
    if (args.group.is_some() || file.group.is_some()) && allowed_gid.is_none() {
        bail!("group `{group}` (from --group or the config file) does not exist: create it with `groupadd {group}` or name another");
    }
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(64);
    let listener = bind_socket(&args.runtime_dir, allowed_gid)?;
    write_private(&args.runtime_dir.join(config::DATABASE_URL_FILE), &url)?;
    tokio::spawn(serve(listener, cmd_tx, allowed_gid));
    info!(socket = %crate::control::socket_path(&args.runtime_dir).display(), "capturing");

    let result = daemon.main_loop(ring, cmd_rx).await;

    let _ = std::fs::remove_file(crate::control::socket_path(&args.runtime_dir));
    let _ = std::fs::remove_file(args.runtime_dir.join(config::DATABASE_URL_FILE));
    let backlog = daemon.writer.backlog.clone();
    drop(daemon);
    info!("flushing records to the database");
    if tokio::time::timeout(Duration::from_secs(15), writer_task).await.is_err() {
        let n = backlog.load(std::sync::atomic::Ordering::Relaxed);
        warn!(records = n, "database unreachable at shutdown: {n} records were not stored");
    }
    result
}

fn raise_memlock() {
    let r = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: valid rlimit pointer. Not needed on 6.x kernels (memcg accounting), kept for older ones.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const r) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK");
    }
}

/// Write a root-only file, created with its final mode (the URL may carry a password, and
/// monitored users must not get write access to the evidence through it).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32, gid: Option<u32>) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(())
}

fn bind_socket(runtime_dir: &Path, gid: Option<u32>) -> anyhow::Result<UnixListener> {
    std::fs::create_dir_all(runtime_dir).with_context(|| format!("creating runtime dir {}", runtime_dir.display()))?;
    std::fs::set_permissions(runtime_dir, std::fs::Permissions::from_mode(0o755))?;
    let path = crate::control::socket_path(runtime_dir);
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        bail!("another agentmon daemon is already serving {}; stop it or use a different --runtime-dir", path.display());
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    set_mode(&path, 0o660, gid)?;
    Ok(listener)
}

async fn serve(listener: UnixListener, tx: mpsc::Sender<Command>, allowed_gid: Option<u32>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_conn(stream, tx, allowed_gid).await {
                warn!(error = %e, "control connection failed");
            }
        });
    }
}

async fn handle_conn(stream: UnixStream, tx: mpsc::Sender<Command>, allowed_gid: Option<u32>) -> anyhow::Result<()> {
    let cred = stream.peer_cred()?;
    let pid = cred.pid().unwrap_or(0) as u32;
    let peer_start = proc_start_ticks(pid);
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    // One short request line, promptly: a client cannot hold a connection open or send
    // unbounded data.
    let mut reader = BufReader::new(rd.take(64 * 1024));
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await.map_err(|_| anyhow::anyhow!("control request timed out"))??;
    let resp = if peer_allowed(cred.uid(), pid, cred.gid(), allowed_gid) {
        match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let (reply, rx) = oneshot::channel();
                tx.send(Command { req, peer_pid: pid, peer_uid: cred.uid(), peer_start, reply }).await?;
                rx.await?
            }
            Err(e) => Response::Error { message: format!("bad request: {e}") },
        }
    } else {
        Response::Error { message: format!("uid {} may not use agentmon: only root and members of the daemon's group may start sessions", cred.uid()) }
    };
    let mut out = serde_json::to_string(&resp)?;
    out.push('\n');
    wr.write_all(out.as_bytes()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

impl Daemon {
    async fn main_loop(&mut self, ring: RingBuf<MapData>, mut cmds: mpsc::Receiver<Command>) -> anyhow::Result<()> {
        // SAFETY: the ring buffer owns its fd and outlives the registration (both live in `ring`).
        let mut ring = unsafe { AsyncFd::register(ring) }.map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
        // Producers skip wake-ups below a backlog threshold, so also drain on a timer.
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    self.drain(guard.get_inner_mut());
                    guard.clear_ready();
                }
                _ = tick.tick() => self.drain(ring.get_mut()),
                Some(cmd) = cmds.recv() => {
                    // Drain first so a session's earlier events are handled before new state.
                    self.drain(ring.get_mut());
                    let resp = self.command(cmd.req, cmd.peer_pid, cmd.peer_uid, cmd.peer_start);
                    let _ = cmd.reply.send(resp);
                }
                () = &mut shutdown => {
                    info!("shutting down");
                    self.drain(ring.get_mut());
                    return Ok(());
                }
            }
        }
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            match decode::decode(&item) {
                Ok(ev) => {
                    drop(item);
                    let session = ev.header().session_cgroup;
                    for out in self.correlator.handle(&ev) {
                        self.emit_for(session, out);
                    }
                }
                Err(e) => {
                    self.decode_errors += 1;
                    warn!(error = %e, "undecodable event skipped");
                }
            }
        }
    }

    /// Queue a record; a session end also releases the session's kernel state.
    fn emit(&mut self, out: Output) {
        let mut out = out;
        if let Output::SessionEnd(end) = &mut out {
            end.events_lost = self.probes.untag(end.cgroup_id) + self.shed.remove(&end.cgroup_id).unwrap_or(0);
            if let Some(meta) = self.sessions.remove(&end.cgroup_id) {
                if meta.owned {
                    if let Err(e) = cgroup::remove_tree(&meta.path) {
                        warn!(cgroup = %meta.path.display(), error = %e, "could not remove session cgroup");
                    }
                }
            }
            info!(session = %end.session_id, actions = end.actions, lost = end.events_lost, "session ended");
        }
        self.writer.send(out);
    }

    /// Queue one correlated record, counting a shed raw event against its session.
    fn emit_for(&mut self, session_cgroup: u64, out: Output) {
        if matches!(out, Output::SessionEnd(_)) {
            return self.emit(out);
        }
        if !self.writer.send(out) {
            *self.shed.entry(session_cgroup).or_default() += 1;
        }
    }

    fn command(&mut self, req: Request, peer_pid: u32, peer_uid: u32, peer_start: Option<u64>) -> Response {
        let r = match req {
            Request::Status => Ok(Response::Status(Box::new(self.status()))),
            Request::StartSession { agent, label } => self.start_session(&agent, label, peer_pid, peer_uid, peer_start),
            Request::Tag { cgroup, agent, label } => {
                if peer_uid == 0 {
                    self.tag(&cgroup, &agent, label, peer_uid)
                } else {
                    Err("only root may tag an existing cgroup".into())
                }
            }
        };
        r.unwrap_or_else(|message| Response::Error { message })
    }

    fn status(&self) -> Status {
        let k = self.probes.counters();
        let st = self.correlator.stats;
        Status {
            capturing: true,
            pid: std::process::id(),
            host: self.host.clone(),
            started_at: self.started_at,
            probes: self.probes.attached.clone(),
            sessions: self
                .correlator
                .live_sessions()
                .into_iter()
                .map(|(id, agent, cgroup_id, root_pid, processes)| LiveSession {
                    id,
                    agent,
                    cgroup_id,
                    root_pid,
                    processes,
                    events_lost: self.probes.session_lost(cgroup_id) + self.shed.get(&cgroup_id).copied().unwrap_or(0),
                })
                .collect(),
            events_read: st.events + st.unattributed + self.decode_errors,
            events_dropped: k.dropped,
            decode_errors: self.decode_errors,
            unattributed: st.unattributed,
            kernel_read_errors: k.read_errors,
            db_backlog: self.writer.backlog.load(std::sync::atomic::Ordering::Relaxed),
            db_write_failures: self.writer.failures.load(std::sync::atomic::Ordering::Relaxed),
            db_events_shed: self.writer.shed.load(std::sync::atomic::Ordering::Relaxed),
            db_records_rejected: self.writer.rejected.load(std::sync::atomic::Ordering::Relaxed),
            track_failures: k.track_failures,
            actions_written: st.actions_written,
            sessions_ended: st.sessions_ended,
        }
    }

    /// Register a session for a cgroup: kernel filter, correlator, database.
    fn register(&mut self, id: Uuid, path: &Path, agent: &str, label: Option<String>, uid: u32, source: &'static str) -> Result<u64, String> {
        let cgroup_id = cgroup::cgroup_id(path).map_err(|e| format!("cgroup {}: {e}", path.display()))?;
        if self.sessions.contains_key(&cgroup_id) {
            return Err(format!("cgroup {} is already a session", path.display()));
        }
        self.probes.tag(cgroup_id).map_err(|e| e.to_string())?;
        self.correlator.start_session(SessionInfo { id, cgroup_id, agent: agent.to_owned(), events_before: 0, actions_before: 0 });
        self.sessions.insert(cgroup_id, SessionMeta { path: path.to_owned(), owned: source == "run" });
        self.writer.send(Output::SessionStart(SessionStart {
            id,
            agent: agent.to_owned(),
            label,
            cgroup: path.display().to_string(),
            cgroup_id,
            uid,
            source,
            started_at: Utc::now(),
        }));
        Ok(cgroup_id)
    }

    fn start_session(&mut self, agent: &str, label: Option<String>, pid: u32, uid: u32, start: Option<u64>) -> Result<Response, String> {
        valid_session_names(agent, label.as_deref())?;
        if pid == 0 || start.is_none() || proc_start_ticks(pid) != start {
            return Err("the process that asked is gone (or its pid was reused); nothing was moved".into());
        }
        if let Some(session) = self.probes.tracked_session(pid) {
            return Err(format!("this process is already inside a session (cgroup id {session}); nested sessions are not supported"));
        }
        let id = Uuid::now_v7();
        let dir = self.cgroup_root.join(id.to_string());
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let cgroup_id = match self.register(id, &dir, agent, label, uid, "run") {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e);
            }
        };
        if let Err(e) = cgroup::move_pid(&dir, pid) {
            // Nothing ran in the session: end it at once so the record is complete.
            for out in self.correlator.end_session(cgroup_id, Utc::now()) {
                self.emit(out);
            }
            return Err(format!("moving pid {pid} into {}: {e}", dir.display()));
        }
        info!(session = %id, agent, pid, uid, "session started");
        Ok(Response::Session(SessionStarted { session_id: id, cgroup: dir.display().to_string() }))
    }

    fn tag(&mut self, cgroup_arg: &str, agent: &str, label: Option<String>, uid: u32) -> Result<Response, String> {
        valid_session_names(agent, label.as_deref())?;
        let p = Path::new(cgroup_arg);
        let dir = if p.starts_with(&self.cgroup_mount) { p.to_owned() } else { self.cgroup_mount.join(p.strip_prefix("/").unwrap_or(p)) };
        if !dir.join("cgroup.procs").exists() {
            return Err(format!("{} is not a cgroup2 directory (paths are relative to {})", dir.display(), self.cgroup_mount.display()));
        }
        let id = Uuid::now_v7();
        let cgroup_id = self.register(id, &dir, agent, label, uid, "tag")?;
        self.seed(cgroup_id, &dir);
        info!(session = %id, agent, cgroup = %dir.display(), "cgroup tagged");
        Ok(Response::Session(SessionStarted { session_id: id, cgroup: dir.display().to_string() }))
    }

    /// Adopt the processes already running in a session cgroup.
    fn seed(&mut self, cgroup_id: u64, dir: &Path) {
        let pids = cgroup::procs_recursive(dir).unwrap_or_default();
        let seeds: Vec<_> = pids.into_iter().filter_map(procscan::seed_process).collect();
        for s in &seeds {
            if let Err(e) = self.probes.track(s.tgid, cgroup_id) {
                warn!(pid = s.tgid, error = %e, "could not track process");
            }
        }
        self.correlator.seed(cgroup_id, seeds);
    }

    /// Sessions left open by an earlier daemon on this host: continue those whose cgroup
    /// still has processes, close the others.
    async fn readopt(&mut self, pool: &sqlx::PgPool) -> anyhow::Result<()> {
        let rows: Vec<(Uuid, String, String, i64, String, i64, i64)> = sqlx::query_as(
            "SELECT s.id, s.agent, s.cgroup, s.cgroup_id, s.source, \
               COALESCE((SELECT max(seq) FROM events e WHERE e.session_id = s.id), 0), \
               (SELECT count(*) FROM actions a WHERE a.session_id = s.id) FROM sessions s \
             WHERE s.host = $1 AND NOT EXISTS (SELECT 1 FROM session_ends e WHERE e.session_id = s.id)",
        )
        .bind(&self.host)
        .fetch_all(pool)
        .await?;
        for (id, agent, path, cgroup_id, source, events_before, actions_before) in rows {
            let dir = PathBuf::from(&path);
            let alive = cgroup::cgroup_id(&dir).ok() == Some(cgroup_id as u64)
                && cgroup::procs_recursive(&dir).is_ok_and(|p| !p.is_empty());
            if alive {
                let cgroup_id = cgroup_id as u64;
                self.probes.tag(cgroup_id)?;
                self.correlator.start_session(SessionInfo {
                    id,
                    cgroup_id,
                    agent,
                    events_before: events_before as u64,
                    actions_before: actions_before as u64,
                });
                self.sessions.insert(cgroup_id, SessionMeta { path: dir.clone(), owned: source == "run" });
                self.seed(cgroup_id, &dir);
                info!(session = %id, "re-adopted a running session");
            } else {
                sqlx::query(
                    "INSERT INTO session_ends (session_id, host, ended_at, root_pid, root_exec_id, root_argv, actions, events, events_lost) \
                     SELECT $1, $2, now(), NULL, NULL, ARRAY[]::text[], \
                       (SELECT count(*) FROM actions WHERE session_id = $1), (SELECT count(*) FROM events WHERE session_id = $1), 0 \
                     ON CONFLICT (session_id) DO NOTHING",
                )
                .bind(id)
                .bind(&self.host)
                .execute(pool)
                .await?;
                if source == "run" && dir.starts_with(&self.cgroup_root) {
                    let _ = cgroup::remove_tree(&dir);
                }
                info!(session = %id, "closed a session that ended while no daemon was running");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_size_is_validated() {
        assert_eq!(ring_size("64"), Ok(64));
        assert!(ring_size("48").is_err());
        assert!(ring_size("0").is_err());
        assert!(ring_size("big").is_err());
    }

    #[test]
    fn names_are_validated() {
        assert!(valid_name("agent", "claude-code").is_ok());
        assert!(valid_name("agent", "").is_err());
        assert!(valid_name("agent", "a\nb").is_err());
    }

    #[test]
    fn root_is_always_allowed_and_others_need_the_group() {
        assert!(peer_allowed(0, 1, 0, None));
        assert!(!peer_allowed(1000, 1, 1000, None));
        assert!(peer_allowed(1000, 1, 4242, Some(4242)));
        assert!(!peer_allowed(1000, u32::MAX, 1000, Some(4242)));
    }
}
