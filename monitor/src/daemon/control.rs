//! The control socket's server side: accept connections, check the peer, pass one request to
//! the daemon's main loop and write its one-line reply (the client is `crate::control`).

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{bail, Context as _};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::warn;

use crate::control::{Request, Response, MAX_CONNECTIONS_PER_UID};

/// A request from a control connection, with the peer's credentials.
pub struct Command {
    pub req: Request,
    pub peer_pid: u32,
    pub peer_uid: u32,
    /// The peer's start time (clock ticks) when it connected, so a pid reused since then is
    /// never moved into a session.
    pub peer_start: Option<u64>,
    pub reply: oneshot::Sender<Response>,
}

/// A process's start time in clock ticks, from `/proc/<pid>/stat`.
pub fn proc_start_ticks(pid: u32) -> Option<u64> {
    procfs::process::Process::new(pid as i32).ok()?.stat().ok().map(|s| s.starttime)
}

pub fn group_gid(name: &str) -> Option<u32> {
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

fn set_mode(path: &Path, mode: u32, gid: Option<u32>) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(())
}

pub fn bind_socket(runtime_dir: &Path, gid: Option<u32>) -> anyhow::Result<UnixListener> {
    std::fs::create_dir_all(runtime_dir).with_context(|| format!("creating runtime dir {}", runtime_dir.display()))?;
    std::fs::set_permissions(runtime_dir, std::fs::Permissions::from_mode(0o755))?;
    let path = crate::control::socket_path(runtime_dir);
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        bail!(
            "another agentmon daemon is already serving {}; stop it or use a different --runtime-dir",
            path.display()
        );
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    set_mode(&path, 0o660, gid)?;
    Ok(listener)
}

/// Control connections served at once; more wait in the listen backlog until one finishes.
pub const MAX_CONNECTIONS: usize = 64;

/// Connections refused because their uid held [`MAX_CONNECTIONS_PER_UID`] already.
#[derive(Default)]
pub struct ControlStats {
    pub busy: AtomicU64,
}

/// Connections open per uid.
type PerUid = Arc<Mutex<HashMap<u32, usize>>>;

/// One uid's place among the open connections, given back when the connection ends.
struct UidSlot {
    uid: u32,
    open: PerUid,
}

impl UidSlot {
    /// A place for `uid`, unless it holds [`MAX_CONNECTIONS_PER_UID`] already.
    fn take(open: &PerUid, uid: u32) -> Option<Self> {
        let mut m = open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(uid).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_UID {
            return None;
        }
        *n += 1;
        Some(Self { uid, open: open.clone() })
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut m = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.uid);
            }
        }
    }
}

/// The one-line refusal of a connection over its uid's share.
pub fn busy_message(uid: u32) -> String {
    format!(
        "uid {uid} already holds {MAX_CONNECTIONS_PER_UID} connections to the control socket, the most one user may; \
         wait for them to finish and try again"
    )
}

pub async fn serve(
    listener: UnixListener,
    tx: mpsc::Sender<Command>,
    allowed_gid: Option<u32>,
    stats: Arc<ControlStats>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let per_uid: PerUid = Arc::default();
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        // Take a slot before accepting: at the cap, clients queue in the kernel's backlog
        // instead of costing the daemon an fd and a task each.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS...: the error repeats until something is freed, so
                // back off instead of spinning, and say so at most once a minute.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_mins(1)) {
                    warn!(error = %e, "control socket accept failed; retrying every 100 ms");
                    last_warning = Some(std::time::Instant::now());
                }
                drop(slot);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // One uid holds at most its share of the slots, so one user (a member of the group
        // that holds connections open without a request) cannot stall everyone else's. The
        // refusal is written without waiting and the slot freed at once: a refused client
        // costs no task and no time.
        let Ok(uid) = stream.peer_cred().map(|c| c.uid()) else { continue };
        let Some(uid_slot) = UidSlot::take(&per_uid, uid) else {
            stats.busy.fetch_add(1, Ordering::Relaxed);
            let resp = Response::Error { message: busy_message(uid), busy: true };
            if let Ok(mut line) = serde_json::to_string(&resp) {
                line.push('\n');
                let _ = stream.try_write(line.as_bytes());
            }
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_conn(stream, tx, allowed_gid).await {
                warn!(error = %e, "control connection failed");
            }
            drop(uid_slot);
            drop(slot);
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
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
        .await
        .map_err(|_| anyhow::anyhow!("control request timed out"))??;
    let resp = if peer_allowed(cred.uid(), pid, cred.gid(), allowed_gid) {
        match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let (reply, rx) = oneshot::channel();
                tx.send(Command { req, peer_pid: pid, peer_uid: cred.uid(), peer_start, reply }).await?;
                rx.await?
            }
            Err(e) => Response::error(format!("bad request: {e}")),
        }
    } else {
        Response::error(format!(
            "uid {} may not use agentmon: only root and members of the daemon's group may start sessions",
            cred.uid()
        ))
    };
    let mut out = serde_json::to_string(&resp)?;
    out.push('\n');
    wr.write_all(out.as_bytes()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_always_allowed_and_others_need_the_group() {
        assert!(peer_allowed(0, 1, 0, None));
        assert!(!peer_allowed(1000, 1, 1000, None));
        assert!(peer_allowed(1000, 1, 4242, Some(4242)));
        assert!(!peer_allowed(1000, u32::MAX, 1000, Some(4242)));
    }

    #[test]
    fn one_uid_holds_at_most_its_share_and_gets_it_back() {
        let open: PerUid = Arc::default();
        let mut held: Vec<UidSlot> =
            (0..MAX_CONNECTIONS_PER_UID).map(|_| UidSlot::take(&open, 1000).expect("slot")).collect();
        assert!(UidSlot::take(&open, 1000).is_none(), "over the share");
        let other = UidSlot::take(&open, 1001).expect("another uid is served");
        let root = UidSlot::take(&open, 0).expect("root is served");
        drop(held.pop());
        let again = UidSlot::take(&open, 1000).expect("a slot given back is free again");
        drop((again, other, root));
        assert_eq!(open.lock().expect("map").get(&1000), Some(&(MAX_CONNECTIONS_PER_UID - 1)));
        drop(held);
        assert!(open.lock().expect("map").is_empty(), "every slot given back");
        assert!(!open.lock().expect("map").contains_key(&1001), "an idle uid leaves no entry");
    }
}
