//! The control socket's server side: accept connections, check the peer, pass one request to
//! the daemon's main loop and write its one-line reply (the client is `crate::control`).

use std::{os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use anyhow::{bail, Context as _};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::warn;

use crate::control::{Request, Response};

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

pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Command>, allowed_gid: Option<u32>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
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
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_conn(stream, tx, allowed_gid).await {
                warn!(error = %e, "control connection failed");
            }
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
            Err(e) => Response::Error { message: format!("bad request: {e}") },
        }
    } else {
        Response::Error {
            message: format!(
                "uid {} may not use agentmon: only root and members of the daemon's group may start sessions",
                cred.uid()
            ),
        }
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
}
