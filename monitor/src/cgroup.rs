//! cgroup v2 helpers: finding the mount, creating session cgroups, moving processes.

use std::{
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
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

/// The cgroup2 path of a process relative to the cgroup2 mount (the `0::` line).
pub fn proc_cgroup(pid: u32) -> io::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 entry"))
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
        let pure = "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(parse_cgroup2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        let spaced = "30 24 0:26 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_cgroup2_mount(spaced), Some(PathBuf::from("/mnt/my cg")));
        assert_eq!(parse_cgroup2_mount("36 35 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"), None);
    }
}
