//! The agent's account coming in: the intake socket's server (reports from `agentmon hook`),
//! and who sent a report as the kernel knows it, for both channels (hooks, and the OTLP
//! receiver's TCP connections, in `otlp.rs`).
//!
//! The sender of a hook report is the socket's peer (`SO_PEERCRED`; with `SO_PEERPIDFD`, where
//! the kernel has it, checked still alive after its start time is read, so a reused pid cannot
//! pass). The sender of an OpenTelemetry request is the process holding the client end of its
//! TCP connection (`/proc/net/tcp*` gives the socket's inode, the session's processes' fd tables
//! give its owner). Either way the main loop then looks the process up in its own tracking.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::intake::{Header, MAX_HEADER, MAX_INPUT};

/// One hook report, with its sender as the kernel knows it.
pub struct HookReport {
    pub pid: u32,
    pub uid: u32,
    /// The sender's start time (clock ticks), read while it was provably alive.
    pub start: Option<u64>,
    /// The identity was checked through a pidfd.
    pub pidfd: bool,
    pub header: Header,
    pub input: Vec<u8>,
    /// When the daemon received it.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The main loop's answer to the sender (`ok`, or why not).
    pub reply: oneshot::Sender<String>,
}

/// Counters for `status`.
#[derive(Default)]
pub struct IntakeStats {
    pub connections: AtomicU64,
    /// Connections that sent no complete report in time, or a bad header.
    pub bad: AtomicU64,
    /// Reports refused because the main loop's queue was full.
    pub busy: AtomicU64,
}

/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// A connection must deliver its report within this.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

pub fn bind(runtime_dir: &Path) -> anyhow::Result<UnixListener> {
    let path = crate::intake::socket_path(runtime_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    // Any user may deliver a report; the socket can do nothing else.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, tx: mpsc::Sender<HookReport>, stats: Arc<IntakeStats>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let Ok((stream, _)) = listener.accept().await else {
            drop(slot);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let (tx, stats) = (tx.clone(), stats.clone());
        tokio::spawn(async move {
            if handle(stream, &tx, &stats).await.is_err() {
                stats.bad.fetch_add(1, Ordering::Relaxed);
            }
            drop(slot);
        });
    }
}

/// The peer's pidfd (`SO_PEERPIDFD`, Linux 6.5+), when the kernel has it.
fn peer_pidfd(stream: &UnixStream) -> Option<OwnedFd> {
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid socket fd, out pointers to a c_int and its length.
    let r = unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, SO_PEERPIDFD, (&raw mut fd).cast(), &raw mut len)
    };
    // SAFETY: on success the kernel gave us a new fd that we now own.
    (r == 0 && fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process behind a pidfd is still alive (signal 0 through the pidfd).
fn pidfd_alive(fd: &OwnedFd) -> bool {
    // SAFETY: pidfd_send_signal with signal 0 and no siginfo only checks.
    unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), 0, std::ptr::null::<u8>(), 0) == 0 }
}

async fn handle(stream: UnixStream, tx: &mpsc::Sender<HookReport>, stats: &IntakeStats) -> anyhow::Result<()> {
    let cred = stream.peer_cred()?;
    let pid = cred.pid().unwrap_or(0) as u32;
    let pidfd = peer_pidfd(&stream);
    let start = super::control::proc_start_ticks(pid);
    // With a pidfd: the start time read above is the peer's only if the peer is still alive
    // now (a pidfd never follows a reused pid).
    let start = match &pidfd {
        Some(fd) if !pidfd_alive(fd) => None,
        _ => start,
    };
    let (rd, mut wr) = stream.into_split();
    let mut reader = BufReader::new(rd.take((MAX_HEADER + MAX_INPUT + 1) as u64));
    let read = async {
        let mut line = String::new();
        (&mut reader).take(MAX_HEADER as u64).read_line(&mut line).await?;
        let mut input = Vec::new();
        reader.read_to_end(&mut input).await?;
        anyhow::Ok((line, input))
    };
    let (line, mut input) =
        tokio::time::timeout(READ_TIMEOUT, read).await.map_err(|_| anyhow::anyhow!("intake read timed out"))??;
    let Ok(header) = serde_json::from_str::<Header>(&line) else {
        let _ = wr.write_all(b"bad header: expected agentmon hook's protocol line\n").await;
        anyhow::bail!("bad header");
    };
    let cut = header.cut || input.len() > MAX_INPUT;
    input.truncate(MAX_INPUT);
    let (reply, answer) = oneshot::channel();
    let report = HookReport {
        pid,
        uid: cred.uid(),
        start,
        pidfd: pidfd.is_some(),
        header: Header { cut, ..header },
        input,
        at: chrono::Utc::now(),
        reply,
    };
    if tx.try_send(report).is_err() {
        stats.busy.fetch_add(1, Ordering::Relaxed);
        let _ = wr.write_all(b"busy: the daemon's intake queue is full\n").await;
        return Ok(());
    }
    let text = tokio::time::timeout(READ_TIMEOUT, answer).await.ok().and_then(Result::ok).unwrap_or_default();
    let _ = wr.write_all(format!("{text}\n").as_bytes()).await;
    Ok(())
}

/// The inode of the TCP socket whose local end is `peer` and remote end `local` (the client's
/// end of a connection to the receiver), from `/proc/net/tcp` and `tcp6`.
pub fn tcp_inode(peer: std::net::SocketAddr, local: std::net::SocketAddr) -> Option<u64> {
    let files: &[&str] = if peer.is_ipv4() { &["/proc/net/tcp", "/proc/net/tcp6"] } else { &["/proc/net/tcp6"] };
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        if let Some(i) = find_inode(&text, peer, local) {
            return Some(i);
        }
    }
    None
}

/// `/proc/net/tcp*` hex form of an address and port (`0100007F:1F90`; v4-mapped in `tcp6`).
fn hex_addr(a: std::net::SocketAddr, v6_table: bool) -> String {
    let ip = match (a.ip(), v6_table) {
        (std::net::IpAddr::V4(v4), false) => format!("{:08X}", u32::from_ne_bytes(v4.octets())),
        (std::net::IpAddr::V4(v4), true) => words(&v4.to_ipv6_mapped().octets()),
        (std::net::IpAddr::V6(v6), _) => words(&v6.octets()),
    };
    format!("{ip}:{:04X}", a.port())
}

fn words(o: &[u8; 16]) -> String {
    use std::fmt::Write as _;
    o.chunks(4).fold(String::with_capacity(32), |mut s, c| {
        let _ = write!(s, "{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
        s
    })
}

fn find_inode(text: &str, peer: std::net::SocketAddr, local: std::net::SocketAddr) -> Option<u64> {
    let v6 = text.lines().nth(1).is_some_and(|l| l.split_whitespace().nth(1).is_some_and(|a| a.len() > 13));
    let (want_l, want_r) = (hex_addr(peer, v6), hex_addr(local, v6));
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == want_l && f[2] == want_r).then(|| f[9].parse().ok()).flatten()
    })
}

/// Which of `pids` holds the socket with this inode.
pub fn socket_owner(inode: u64, pids: impl IntoIterator<Item = u32>) -> Option<u32> {
    let target = format!("socket:[{inode}]");
    pids.into_iter().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
            d.filter_map(Result::ok)
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == target.as_str()))
        })
    })
}

/// Which process on the host holds the socket with this inode (every process's fd table).
pub fn socket_owner_any(inode: u64) -> Option<u32> {
    let pids = std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
    socket_owner(inode, pids)
}

/// The endpoints (`addr:port`) an agent's environment names for its API and telemetry, read
/// from `/proc/<pid>/environ` (what it was started with), so its own traffic is not undeclared.
pub fn agent_endpoints(pid: u32) -> Vec<String> {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { return Vec::new() };
    let keys = [
        "ANTHROPIC_BASE_URL",
        "OPENAI_BASE_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    ];
    let mut out = Vec::new();
    let (mut home, mut codex_home) = (None, None);
    for kv in env.split(|b| *b == 0) {
        let kv = String::from_utf8_lossy(kv);
        let Some((k, v)) = kv.split_once('=') else { continue };
        if keys.contains(&k) {
            out.extend(url_endpoints(v));
        }
        match k {
            "HOME" => home = Some(v.to_owned()),
            "CODEX_HOME" => codex_home = Some(v.to_owned()),
            _ => {}
        }
    }
    // Codex names its model provider's address in its config file, not its environment.
    let codex = codex_home.or_else(|| home.map(|h| format!("{h}/.codex")));
    if let Some(text) = codex.and_then(|d| read_small(&format!("{d}/config.toml"))) {
        out.extend(codex_endpoints(&text));
    }
    out
}

/// A small regular file (not through a symlink), at most 256 KiB.
fn read_small(path: &str) -> Option<String> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(256 << 10).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The addresses of a Codex config's model providers (`model_providers.<name>.base_url`) and
/// base URL overrides.
pub fn codex_endpoints(config: &str) -> Vec<String> {
    let Ok(v) = config.parse::<toml::Table>() else { return Vec::new() };
    let mut urls: Vec<String> =
        ["openai_base_url", "chatgpt_base_url"].iter().filter_map(|k| v.get(*k)?.as_str().map(str::to_owned)).collect();
    if let Some(p) = v.get("model_providers").and_then(toml::Value::as_table) {
        urls.extend(p.values().filter_map(|p| p.get("base_url")?.as_str().map(str::to_owned)));
    }
    urls.iter().flat_map(|u| url_endpoints(u)).collect()
}

/// `http://host:port/...` → `addr:port` for each address the host names literally
/// (`localhost` is both loopbacks).
pub fn url_endpoints(url: &str) -> Vec<String> {
    let Ok(u) = url::Url::parse(url) else { return Vec::new() };
    let Some(port) = u.port_or_known_default() else { return Vec::new() };
    match u.host() {
        Some(url::Host::Ipv4(a)) => vec![format!("{a}:{port}")],
        Some(url::Host::Ipv6(a)) => vec![format!("{a}:{port}")],
        Some(url::Host::Domain("localhost")) => vec![format!("127.0.0.1:{port}"), format!("::1:{port}")],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_are_found_by_both_ends() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:C350 0100007F:10DE 01 00000000:00000000 00:00000000 00000000     0        0 424242 1 0000000000000000 20 4 30 10 -1\n";
        let peer: std::net::SocketAddr = "127.0.0.1:50000".parse().expect("addr");
        let local: std::net::SocketAddr = "127.0.0.1:4318".parse().expect("addr");
        assert_eq!(find_inode(text, peer, local), Some(424_242));
        assert_eq!(find_inode(text, local, peer), None, "the other end is another socket");
    }

    #[test]
    fn codex_provider_endpoints() {
        let c = "model_provider = \"mock\"\n[model_providers.mock]\nbase_url = \"http://127.0.0.1:43899/v1\"\n";
        assert_eq!(codex_endpoints(c), ["127.0.0.1:43899"]);
        assert!(codex_endpoints("not toml [").is_empty());
    }

    #[test]
    fn endpoints_from_urls() {
        assert_eq!(url_endpoints("http://127.0.0.1:8080/x"), ["127.0.0.1:8080"]);
        assert_eq!(url_endpoints("http://localhost:4318"), ["127.0.0.1:4318", "::1:4318"]);
        assert_eq!(url_endpoints("https://api.example.com"), Vec::<String>::new());
        assert_eq!(url_endpoints("not a url"), Vec::<String>::new());
    }
}
