//! cgroup v2 helpers: finding the mount, creating session cgroups, moving processes.

use std::{
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Component, Path, PathBuf},
};

/// The cgroup2 mount point, from `/proc/self/mountinfo` (`/sys/fs/cgroup/unified` on hybrid
/// hosts, `/sys/fs/cgroup` on pure v2 hosts).
pub fn cgroup2_mount() -> io::Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    parse_cgroup2_mount(&info).ok_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "no cgroup2 filesystem is mounted (see /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`")
    })
}

pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if !right.starts_with("cgroup2 ") {
            return None;
        }
        left.split(' ').nth(4).map(|p| PathBuf::from(unescape_mount(p)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount(p: &str) -> String {
    p.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// The cgroup id the kernel reports (`bpf_get_current_cgroup_id`) is the directory's inode.
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}

/// Move a whole process into a cgroup.
pub fn move_pid(dir: &Path, pid: u32) -> io::Result<()> {
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
}

/// Every process in `dir` and its descendants.
pub fn procs_recursive(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut top = true;
    while let Some(d) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        // A sub-cgroup may vanish while we scan; only the top one must exist.
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if top => return Err(e),
            Err(_) => continue,
        };
        top = false;
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    Ok(out)
}

/// Every cgroup directory below `mount` (the mount itself excluded), parents first.
pub fn walk(mount: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![mount.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(entry.path());
                stack.push(entry.path());
            }
        }
    }
    out
}

/// The cgroup directory a process is in, under `mount` (the mount itself for the root cgroup).
pub fn path_of_pid(mount: &Path, pid: u32) -> io::Result<PathBuf> {
    let rel = proc_cgroup(pid)?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

/// The cgroup2 path of a process relative to the cgroup2 mount (the `0::` line).
pub fn proc_cgroup(pid: u32) -> io::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 entry"))
}

/// Where `run` creates a session cgroup for `pid`: under the cgroup `pid` is in, so every limit
/// of that cgroup and its ancestors (a systemd unit's `MemoryMax=`, `IPAddressDeny=`, ...) keeps
/// applying to the session, since cgroup v2 limits are hierarchical. A process in the root
/// cgroup has no limits to keep: its sessions go under `default_root`.
pub fn session_parent(mount: &Path, default_root: &Path, pid: u32) -> io::Result<PathBuf> {
    let rel = proc_cgroup(pid)?;
    cgroup_dir(mount, &rel).map(|d| d.unwrap_or_else(|| default_root.to_path_buf()))
}

/// The directory of a `0::` cgroup path under `mount`; `None` for the root cgroup. Refuses paths
/// that are not plain absolute paths (`..`, a ` (deleted)` cgroup that is gone).
fn cgroup_dir(mount: &Path, rel: &str) -> io::Result<Option<PathBuf>> {
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("cgroup {rel:?}: {why}"));
    let rel = Path::new(rel);
    if !rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::RootDir | Component::Normal(_))) {
        return Err(invalid("not a plain absolute path"));
    }
    let Ok(tail) = rel.strip_prefix("/") else { return Err(invalid("not absolute")) };
    if tail.as_os_str().is_empty() {
        return Ok(None);
    }
    let dir = mount.join(tail);
    if !dir.join("cgroup.procs").exists() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} is not a cgroup2 directory", dir.display())));
    }
    Ok(Some(dir))
}

/// A pidfd: a handle on one process that, unlike its pid, can never come to mean another.
pub struct PidFd(OwnedFd);

impl PidFd {
    pub fn open(pid: u32) -> io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd =
            unsafe { libc::syscall(libc::SYS_pidfd_open, libc::pid_t::try_from(pid).map_err(io::Error::other)?, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(io::Error::other)?;
        // SAFETY: the kernel just gave us this fd, and nothing else owns it.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Whether the process has not been reaped yet (signal 0 checks without sending). While
    /// it has not, its pid cannot have been given to another process.
    pub fn alive(&self) -> bool {
        // SAFETY: a valid pidfd, signal 0, no siginfo, no flags.
        unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.0.as_raw_fd(), 0, std::ptr::null::<libc::siginfo_t>(), 0)
                == 0
        }
    }
}

/// Remove a session cgroup directory and any empty sub-cgroups under it.
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    std::fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_pure_v2_mounts() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_cgroup2_mount(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let pure =
            "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(parse_cgroup2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        let spaced = "30 24 0:26 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_cgroup2_mount(spaced), Some(PathBuf::from("/mnt/my cg")));
        assert_eq!(parse_cgroup2_mount("36 35 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"), None);
    }

    #[test]
    fn session_parent_is_the_callers_cgroup_unless_root() {
        let mount = std::env::temp_dir().join(format!("agentmon-cgtest-{}", std::process::id()));
        let unit = mount.join("system.slice/agent.service");
        std::fs::create_dir_all(&unit).expect("dirs");
        std::fs::write(unit.join("cgroup.procs"), "").expect("procs");
        assert_eq!(cgroup_dir(&mount, "/").expect("root"), None, "the root cgroup: the daemon's cgroup root");
        assert_eq!(cgroup_dir(&mount, "/system.slice/agent.service").expect("unit"), Some(unit.clone()));
        assert!(cgroup_dir(&mount, "/system.slice/../../etc").is_err(), "no walking out of the mount");
        assert!(cgroup_dir(&mount, "system.slice").is_err(), "relative");
        assert!(cgroup_dir(&mount, "/system.slice/gone.service (deleted)").is_err(), "a cgroup that is gone");
        std::fs::remove_dir_all(&mount).expect("cleanup");
    }

    #[test]
    fn a_pidfd_sees_its_process_die() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let fd = PidFd::open(child.id()).expect("pidfd_open");
        assert!(fd.alive());
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert!(!fd.alive(), "a reaped process is gone, whatever now has its pid");
        assert!(PidFd::open(u32::MAX).is_err());
    }
}
