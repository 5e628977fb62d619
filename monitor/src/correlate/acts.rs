//! Tamper and hand-off records, and `io_uring` requests: what they store and how they count.

use monitor_common::{nr, tamper, uring};
use serde_json::{json, Value};

use super::resources::{addr_port, family_name, open_access, result_name, syscall_name};
use crate::ebpf::decode::{SockAddr, TamperOp, UringOp};

/// The name of a tamper kind, as stored in `data.tamper`.
pub fn tamper_name(what: u32) -> &'static str {
    match what {
        tamper::SIGNAL_DAEMON => "signal_daemon",
        tamper::BPF => "bpf",
        tamper::NAMESPACE => "namespace",
        tamper::HANDOFF => "handoff",
        tamper::TRACK_FAILED => "track_failed",
        tamper::CHROOT => "chroot",
        tamper::KERNEL_CODE => "kernel_code",
        _ => "unknown",
    }
}

/// The executable and real uid of a live process, read from `/proc` (best effort: the target
/// of a hand-off is usually alive when the event is read, milliseconds later).
pub fn proc_identity(pid: u32) -> (Option<String>, Option<u32>) {
    if pid == 0 {
        return (None, None);
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.display().to_string());
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("Uid:").and_then(|r| r.split_whitespace().next()?.parse().ok()))
    });
    (exe, uid)
}

/// The stored data of a kernel tamper event.
pub fn tamper_data(t: &TamperOp) -> Value {
    let (exe, uid) = proc_identity(t.target);
    let mut v = json!({
        "tamper": tamper_name(t.what),
        "syscall": if t.nr == 0 { "" } else { syscall_name(t.nr) },
        "result": result_name(t.ret),
        "ret": t.ret,
        "target_pid": (t.target != 0).then_some(t.target),
        "target_exe": exe,
        "target_uid": uid,
        "compat": t.compat,
    });
    let detail = match (t.what, t.nr) {
        (tamper::SIGNAL_DAEMON, _) => json!({"signal": t.args[0]}),
        (tamper::BPF, _) => json!({"command": t.args[0] as u32}),
        (_, nr::UNSHARE) => json!({"flags": format!("{:#x}", t.args[0])}),
        (_, nr::SETNS) => json!({"fd": t.args[0] as u32 as i32, "nstype": format!("{:#x}", t.args[1])}),
        (_, nr::MOUNT | nr::KEXEC_LOAD | nr::KEXEC_FILE_LOAD) => json!({"flags": format!("{:#x}", t.args[3])}),
        (_, nr::PTRACE) => json!({"request": t.args[0]}),
        (_, nr::FINIT_MODULE) => json!({"fd": t.args[0] as u32 as i32, "flags": format!("{:#x}", t.args[2])}),
        (_, nr::INIT_MODULE) => json!({"length": t.args[1]}),
        _ => Value::Null,
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("detail".into(), detail);
    }
    v
}

/// The name of an `io_uring` opcode.
pub fn uring_op_name(op: u32) -> String {
    let name = match op {
        0 => "nop",
        uring::READV => "readv",
        uring::WRITEV => "writev",
        3 => "fsync",
        uring::SENDMSG => "sendmsg",
        uring::RECVMSG => "recvmsg",
        uring::ACCEPT => "accept",
        uring::CONNECT => "connect",
        uring::OPENAT => "openat",
        uring::CLOSE => "close",
        uring::STATX => "statx",
        uring::READ => "read",
        uring::WRITE => "write",
        uring::SEND => "send",
        uring::RECV => "recv",
        uring::OPENAT2 => "openat2",
        uring::RENAMEAT => "renameat",
        uring::UNLINKAT => "unlinkat",
        uring::MKDIRAT => "mkdirat",
        uring::SYMLINKAT => "symlinkat",
        uring::LINKAT => "linkat",
        _ => return format!("opcode {op}"),
    };
    name.to_owned()
}

/// What a submission needs remembered until its completion.
#[derive(Debug, Clone)]
pub struct UringPending {
    pub opcode: u32,
    pub path: Option<String>,
    pub path2: Option<String>,
    pub open_flags: u32,
    pub addr: Option<SockAddr>,
    /// A read or write: the path of the file behind its fd, when the submission names it.
    pub fd_path: Option<String>,
}

impl UringPending {
    pub fn of(u: &UringOp) -> Self {
        // A relative new name is resolved against its own directory fd (in the kernel).
        let path2 = if u.opcode == uring::SYMLINKAT {
            u.path2.clone()
        } else {
            u.path2_absolute.clone().or_else(|| u.path2.clone().filter(|p| p.starts_with('/')))
        };
        let fd_op = matches!(
            u.opcode,
            uring::READ | uring::WRITE | uring::READV | uring::WRITEV | uring::READ_FIXED | uring::WRITE_FIXED
        );
        Self {
            opcode: u.opcode,
            path: u.path.as_ref().and_then(|p| p.absolute.clone()),
            path2,
            open_flags: u.open_flags,
            addr: u.addr.clone(),
            fd_path: u.object.clone().filter(|_| fd_op),
        }
    }

    /// The (path, access) pairs a completed request touched, as the equivalent syscall's
    /// would be (see `resources::file_accesses`); `object` is an open's real file.
    pub fn file_accesses(&self, object: Option<&str>) -> Vec<(String, &'static str)> {
        let p = object.map(str::to_owned).or_else(|| self.path.clone());
        let mut out = Vec::new();
        let mut push = |p: &Option<String>, a: &'static str| {
            if let Some(p) = p {
                out.push((p.clone(), a));
            }
        };
        match self.opcode {
            uring::OPENAT | uring::OPENAT2 => push(&p, open_access(u64::from(self.open_flags)).1),
            uring::UNLINKAT => push(&p, "delete"),
            uring::MKDIRAT => push(&p, "mkdir"),
            uring::RENAMEAT => {
                push(&p, "rename_from");
                push(&self.path2, "rename_to");
            }
            uring::LINKAT => {
                push(&p, "link");
                push(&self.path2, "link");
            }
            // symlinkat(target, dfd, linkpath): `path` is the link, `path2` its target (content).
            uring::SYMLINKAT => push(&p, "link"),
            uring::WRITE | uring::WRITEV | uring::WRITE_FIXED => push(&self.fd_path, "write"),
            uring::READ | uring::READV | uring::READ_FIXED => push(&self.fd_path, "read"),
            _ => {}
        }
        out
    }
}

/// The stored data of an `io_uring` event.
pub fn uring_data(u: &UringOp) -> Value {
    let addr = u.addr.as_ref().map(|a| {
        let (addr, port) = addr_port(a);
        json!({"family": family_name(a), "addr": addr, "port": port})
    });
    json!({
        "phase": if u.complete { "complete" } else { "submit" },
        "op": uring_op_name(u.opcode),
        "opcode": u.opcode,
        "req": format!("{:x}", u.req),
        "user_data": u.user_data,
        "fd": u.fd,
        "result": u.complete.then(|| result_name(u.res)),
        "res": u.complete.then_some(u.res),
        "path": u.object.clone().or_else(|| u.path.as_ref().and_then(|p| p.absolute.clone())),
        "path_given": u.path.as_ref().map(|p| &p.given),
        "path2": u.path2_absolute.clone().or_else(|| u.path2.clone()),
        "path2_given": u.path2,
        "fixed_slot": u.fixed_slot,
        "addr_kernel": u.addr_kernel,
        "dfd": u.path.as_ref().map(|_| u.dfd),
        "open_flags": matches!(u.opcode, uring::OPENAT | uring::OPENAT2).then(|| format!("{:#o}", u.open_flags)),
        "object_resolved": u.object.is_some(),
        "addr": addr,
    })
}

/// Why a file access by a session process is tampering, if it is: writing agentmon's own
/// state (pins, state directory, config) or cgroups outside the session, or moving a process
/// into a cgroup outside the session (`cgroup.procs`, `cgroup.threads`).
pub fn protected_access(
    path: &str,
    access: &str,
    protected: &[String],
    cgroup_roots: &[String],
    session_cgroup: &str,
) -> Option<&'static str> {
    if !crate::record::WRITE_ACCESSES.contains(&access) {
        return None;
    }
    let path = &lexical_path(path);
    let under = |root: &str| path == root || path.strip_prefix(root).is_some_and(|r| r.starts_with('/')) || root == "/";
    let in_session = !session_cgroup.is_empty() && under(session_cgroup);
    if cgroup_roots.iter().any(|r| under(r)) && !in_session {
        let leaf = path.rsplit('/').next().unwrap_or("");
        return Some(if matches!(leaf, "cgroup.procs" | "cgroup.threads") { "cgroup_move" } else { "cgroup_write" });
    }
    protected.iter().any(|p| under(p)).then_some("protected_write")
}

/// Where a hand-off can be asked for: what a session process touches to have a privileged
/// service run work for it, outside the session's process tree (and so outside what agentmon
/// records of the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffTarget {
    /// A connect to the unix socket at this path.
    Socket(&'static str),
    /// A connect to a unix socket whose path starts with this.
    SocketPrefix(&'static str),
    /// A stream connect to this port on a loopback or local address.
    LocalPort(u16),
    /// A write-class access to this file, or (ending in `/`) to this directory or anything
    /// under it.
    Path(&'static str),
    /// A write-class access to this directory (ending in `/`), or anything under it, in any
    /// home: it matches where it starts a path's component (`/home/u/.config/systemd/user/x`).
    InHome(&'static str),
    /// A write-class open of another process's memory: `/proc/<pid>/mem`,
    /// `/proc/<pid>/task/<tid>/mem`, where `<pid>` is not a process of the writer's session.
    ProcMem,
}

/// The one table of hand-offs to privileged services: each target and the `service` its
/// `handoff` tamper record names. First match wins, so a narrower entry comes before a wider
/// one (Debian's `/var/spool/cron/atjobs/` is `at`, the rest of `/var/spool/cron/` is `cron`).
pub const HANDOFF_SERVICES: &[(HandoffTarget, &str)] = {
    use HandoffTarget::{InHome, LocalPort, Path, ProcMem, Socket, SocketPrefix};
    &[
        (Socket("/run/dbus/system_bus_socket"), "dbus-system"),
        (Socket("/var/run/dbus/system_bus_socket"), "dbus-system"),
        (Socket("/run/systemd/private"), "systemd"),
        (Socket("/var/run/systemd/private"), "systemd"),
        (SocketPrefix("/run/systemd/io.systemd."), "systemd"),
        (SocketPrefix("/var/run/systemd/io.systemd."), "systemd"),
        (Socket("/run/docker.sock"), "docker"),
        (Socket("/var/run/docker.sock"), "docker"),
        (Socket("/run/containerd/containerd.sock"), "containerd"),
        (Socket("/var/run/containerd/containerd.sock"), "containerd"),
        (Socket("/run/podman/podman.sock"), "podman"),
        (Socket("/var/run/podman/podman.sock"), "podman"),
        (LocalPort(22), "ssh"),
        (Path("/etc/crontab"), "cron"),
        (Path("/etc/anacrontab"), "cron"),
        (Path("/etc/cron.d/"), "cron"),
        (Path("/etc/cron.hourly/"), "cron"),
        (Path("/etc/cron.daily/"), "cron"),
        (Path("/etc/cron.weekly/"), "cron"),
        (Path("/etc/cron.monthly/"), "cron"),
        (Path("/var/spool/cron/atjobs/"), "at"),
        (Path("/var/spool/cron/atspool/"), "at"),
        (Path("/var/spool/cron/"), "cron"),
        (Path("/var/spool/at/"), "at"),
        (Path("/etc/systemd/system/"), "systemd"),
        (Path("/run/systemd/system/"), "systemd"),
        (Path("/etc/systemd/user/"), "systemd"),
        (Path("/usr/lib/systemd/system/"), "systemd"),
        (Path("/lib/systemd/system/"), "systemd"),
        (Path("/usr/local/lib/systemd/system/"), "systemd"),
        (InHome(".config/systemd/user/"), "systemd"),
        (InHome(".local/share/systemd/user/"), "systemd"),
        (ProcMem, "proc_mem"),
    ]
};

/// A hand-off to a privileged service: the `service` of [`HANDOFF_SERVICES`], and for
/// `proc_mem` the process whose memory was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handoff {
    pub service: &'static str,
    pub target_pid: Option<u32>,
}

/// An absolute path with `.`, `..` and repeated `/` taken out, as text: what it names when no
/// symlink is involved. Paths of calls other than opens are as the process gave them (joined
/// to their directory), so `/etc//cron.d/./x` or `/tmp/../etc/cron.d/x` must not pass for
/// another directory. A relative path is returned as it is.
pub fn lexical_path(path: &str) -> String {
    if !path.starts_with('/') {
        return path.to_owned();
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `path` is `dir` (ending in `/`) itself or below it, or exactly the file `dir` names.
fn under_target(path: &str, dir: &str) -> bool {
    match dir.strip_suffix('/') {
        Some(d) => path == d || path.starts_with(dir),
        None => path == dir,
    }
}

/// The pid whose memory a `/proc/<pid>/mem` or `/proc/<pid>/task/<tid>/mem` path names.
fn proc_mem_pid(path: &str) -> Option<u32> {
    let rest = path.strip_prefix("/proc/")?;
    let (pid, what) = rest.split_once('/')?;
    let is_mem = what == "mem"
        || what
            .strip_prefix("task/")
            .and_then(|t| t.split_once('/'))
            .is_some_and(|(tid, m)| m == "mem" && !tid.is_empty() && tid.bytes().all(|b| b.is_ascii_digit()));
    (is_mem && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then(|| pid.parse().ok()).flatten()
}

/// Whether a file access by process `writer` hands work to a privileged service (see
/// [`HANDOFF_SERVICES`]); `in_session` says whether a pid is a process of the writer's
/// session. Only write-class accesses count, whatever their result (a refused attempt is
/// evidence too, as for `protected_write`).
pub fn file_handoff(path: &str, access: &str, writer: u32, in_session: impl Fn(u32) -> bool) -> Option<Handoff> {
    if !crate::record::WRITE_ACCESSES.contains(&access) {
        return None;
    }
    let path = &lexical_path(path);
    HANDOFF_SERVICES.iter().find_map(|(target, service)| {
        let hit = match target {
            HandoffTarget::Path(p) => under_target(path, p),
            HandoffTarget::InHome(d) => {
                let bare = d.trim_end_matches('/');
                path.contains(&format!("/{d}")) || path.ends_with(&format!("/{bare}"))
            }
            HandoffTarget::ProcMem => {
                let pid = proc_mem_pid(path)?;
                return (pid != writer && !in_session(pid)).then_some(Handoff { service, target_pid: Some(pid) });
            }
            _ => false,
        };
        hit.then_some(Handoff { service, target_pid: None })
    })
}

/// Whether a connect to `peer` hands work to a privileged service (see [`HANDOFF_SERVICES`]).
/// `local` is the socket's own address when known: a connect to one of the host's own
/// addresses gets that address as its source, so a peer equal to it is local. `stream` is
/// false only for a socket known to be a datagram one.
pub fn connect_handoff(peer: &SockAddr, local: Option<&SockAddr>, stream: bool) -> Option<Handoff> {
    HANDOFF_SERVICES.iter().find_map(|(target, service)| {
        let hit = match (target, peer) {
            (HandoffTarget::Socket(p), SockAddr::Unix { path }) => path == p,
            (HandoffTarget::SocketPrefix(p), SockAddr::Unix { path }) => path.starts_with(p),
            (HandoffTarget::LocalPort(want), SockAddr::Inet { ip, port }) => {
                let ip = ip.to_canonical();
                let own = matches!(local, Some(SockAddr::Inet { ip: l, .. }) if l.to_canonical() == ip);
                stream && port == want && (ip.is_loopback() || ip.is_unspecified() || own)
            }
            _ => false,
        };
        hit.then_some(Handoff { service, target_pid: None })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_writes_and_cgroup_moves() {
        let prot = vec!["/var/lib/agentmon".to_owned(), "/etc/agentmon".to_owned(), "/sys/fs/bpf/agentmon".to_owned()];
        let cg = vec!["/sys/fs/cgroup".to_owned()];
        let mine = "/sys/fs/cgroup/unified/agentmon/s1";
        assert_eq!(protected_access("/etc/agentmon/agentmon.toml", "write", &prot, &cg, mine), Some("protected_write"));
        assert_eq!(
            protected_access("/etc/agentmon/agentmon.toml", "read", &prot, &cg, mine),
            None,
            "reads are not tampering"
        );
        assert_eq!(protected_access("/etc/agentmonx", "write", &prot, &cg, mine), None, "a sibling is not under it");
        assert_eq!(
            protected_access("/tmp/..//etc/./agentmon/x", "create", &prot, &cg, mine),
            Some("protected_write"),
            "a given path is judged on what it names"
        );
        assert_eq!(
            protected_access("/sys/fs/cgroup/unified/other/cgroup.procs", "write", &prot, &cg, mine),
            Some("cgroup_move")
        );
        assert_eq!(
            protected_access("/sys/fs/cgroup/memory/x/memory.limit_in_bytes", "write", &prot, &cg, mine),
            Some("cgroup_write")
        );
        assert_eq!(
            protected_access(&format!("{mine}/sub/cgroup.procs"), "write", &prot, &cg, mine),
            None,
            "moves inside the session are fine"
        );
        assert_eq!(protected_access("/tmp/x", "delete", &prot, &cg, mine), None);
    }

    #[test]
    fn every_write_target_of_the_handoff_table_is_a_handoff() {
        let none = |_| false;
        for (path, service) in [
            ("/etc/crontab", "cron"),
            ("/etc/anacrontab", "cron"),
            ("/etc/cron.d/job", "cron"),
            ("/etc/cron.hourly/job", "cron"),
            ("/etc/cron.daily/job", "cron"),
            ("/etc/cron.weekly/job", "cron"),
            ("/etc/cron.monthly/job", "cron"),
            ("/var/spool/cron/crontabs/root", "cron"),
            ("/var/spool/cron/root", "cron"),
            ("/var/spool/cron/atjobs/a0001", "at"),
            ("/var/spool/cron/atspool/a0001", "at"),
            ("/var/spool/at/a0001", "at"),
            ("/etc/systemd/system/evil.service", "systemd"),
            ("/etc/systemd/system/multi-user.target.wants/evil.service", "systemd"),
            ("/run/systemd/system/evil.service", "systemd"),
            ("/etc/systemd/user/evil.service", "systemd"),
            ("/usr/lib/systemd/system/evil.service", "systemd"),
            ("/lib/systemd/system/evil.service", "systemd"),
            ("/usr/local/lib/systemd/system/evil.service", "systemd"),
            ("/home/u/.config/systemd/user/evil.service", "systemd"),
            ("/root/.config/systemd/user/default.target.wants/evil.service", "systemd"),
            ("/home/u/.local/share/systemd/user/evil.timer", "systemd"),
            ("/etc/cron.d", "cron"),
            // Given paths are judged on what they name.
            ("/etc//cron.d/./job", "cron"),
            ("/tmp/../etc/cron.d/job", "cron"),
        ] {
            assert_eq!(file_handoff(path, "create", 10, none), Some(Handoff { service, target_pid: None }), "{path}");
        }
        for access in crate::record::WRITE_ACCESSES {
            assert!(file_handoff("/etc/cron.d/job", access, 10, none).is_some(), "{access}");
        }
        for (path, access) in [
            ("/etc/crontab", "read"),
            ("/etc/cron.d/job", "exec"),
            ("/etc/crontab.bak", "write"),
            ("/etc/cron.dx/job", "write"),
            ("/etc/systemd/system.conf", "write"),
            ("/home/u/config/systemd/user/x", "write"),
            ("/home/u/.config/systemd/users/x", "write"),
            ("/etc/cron.d/../hosts", "write"),
            ("/srv/app/x", "write"),
        ] {
            assert_eq!(file_handoff(path, access, 10, none), None, "{path} {access}");
        }
    }

    #[test]
    fn writing_the_memory_of_a_process_outside_the_session_is_a_handoff() {
        let session = |pid| pid == 20;
        let mem = |pid| Some(Handoff { service: "proc_mem", target_pid: Some(pid) });
        assert_eq!(file_handoff("/proc/1/mem", "write", 10, session), mem(1));
        assert_eq!(file_handoff("/proc/1/task/7/mem", "write", 10, session), mem(1));
        assert_eq!(file_handoff("/proc/20/mem", "write", 10, session), None, "a process of the session");
        assert_eq!(file_handoff("/proc/10/mem", "write", 10, |_| false), None, "its own memory");
        assert_eq!(file_handoff("/proc/self/mem", "write", 10, |_| false), None);
        assert_eq!(file_handoff("/proc/1/mem", "read", 10, session), None, "a read hands nothing over");
        assert_eq!(file_handoff("/proc/1/environ", "write", 10, session), None);
        assert_eq!(file_handoff("/proc/1/task/x/mem", "write", 10, session), None);
        assert_eq!(file_handoff("/proc/1/task/7/mem/x", "write", 10, session), None);
    }

    #[test]
    fn connects_to_service_sockets_and_local_ssh_are_handoffs() {
        let unix = |p: &str| SockAddr::Unix { path: p.into() };
        let ip = |s: &str, port| SockAddr::Inet { ip: s.parse().expect("ip"), port };
        let service =
            |peer: &SockAddr, local: Option<&SockAddr>, stream| connect_handoff(peer, local, stream).map(|h| h.service);
        for (path, want) in [
            ("/run/dbus/system_bus_socket", "dbus-system"),
            ("/var/run/dbus/system_bus_socket", "dbus-system"),
            ("/run/systemd/private", "systemd"),
            ("/run/systemd/io.systemd.Manager", "systemd"),
            ("/run/systemd/io.systemd.Hostname", "systemd"),
            ("/run/docker.sock", "docker"),
            ("/var/run/docker.sock", "docker"),
            ("/run/containerd/containerd.sock", "containerd"),
            ("/run/podman/podman.sock", "podman"),
        ] {
            assert_eq!(service(&unix(path), None, true), Some(want), "{path}");
        }
        for path in ["/run/user/1000/bus", "/run/dbus/system_bus_socketx", "@/run/docker.sock", "/tmp/docker.sock"] {
            assert_eq!(service(&unix(path), None, true), None, "{path}");
        }
        assert_eq!(service(&ip("127.0.0.1", 22), None, true), Some("ssh"));
        assert_eq!(service(&ip("127.1.2.3", 22), None, true), Some("ssh"));
        assert_eq!(service(&ip("::1", 22), None, true), Some("ssh"));
        assert_eq!(service(&ip("::ffff:127.0.0.1", 22), None, true), Some("ssh"));
        assert_eq!(service(&ip("0.0.0.0", 22), None, true), Some("ssh"), "the unspecified address is this host");
        let own = ip("10.0.0.5", 41000);
        assert_eq!(service(&ip("10.0.0.5", 22), Some(&own), true), Some("ssh"), "one of the host's addresses");
        assert_eq!(service(&ip("10.0.0.6", 22), Some(&own), true), None, "another host");
        assert_eq!(service(&ip("10.0.0.5", 22), None, true), None, "not known to be local");
        assert_eq!(service(&ip("127.0.0.1", 2222), None, true), None);
        assert_eq!(service(&ip("127.0.0.1", 22), None, false), None, "a datagram socket");
    }

    #[test]
    fn the_handoff_table_names_each_service_the_docs_do() {
        let mut names: Vec<&str> = HANDOFF_SERVICES.iter().map(|(_, s)| *s).collect();
        names.dedup();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names,
            ["at", "containerd", "cron", "dbus-system", "docker", "podman", "proc_mem", "ssh", "systemd"]
        );
    }

    #[test]
    fn lexical_paths() {
        assert_eq!(lexical_path("/a//b/./c/../d/"), "/a/b/d");
        assert_eq!(lexical_path("/../.."), "/");
        assert_eq!(lexical_path("rel/../x"), "rel/../x");
    }

    #[test]
    fn uring_reads_and_writes_name_the_file_behind_their_fd() {
        let w = UringPending {
            opcode: uring::WRITE,
            path: None,
            path2: None,
            open_flags: 0,
            addr: None,
            fd_path: Some("/home/u/.ssh/authorized_keys".into()),
        };
        assert_eq!(w.file_accesses(None), [("/home/u/.ssh/authorized_keys".to_owned(), "write")]);
        for (opcode, access) in
            [(uring::WRITEV, "write"), (uring::WRITE_FIXED, "write"), (uring::READ, "read"), (uring::READV, "read")]
        {
            assert_eq!(UringPending { opcode, ..w.clone() }.file_accesses(None)[0].1, access);
        }
        assert!(UringPending { fd_path: None, ..w.clone() }.file_accesses(None).is_empty(), "an unknown fd");
        assert!(UringPending { opcode: uring::SEND, ..w }.file_accesses(None).is_empty());
    }

    #[test]
    fn uring_accesses_use_the_real_file() {
        let p = UringPending {
            opcode: uring::OPENAT,
            path: Some("/tmp/link".into()),
            path2: None,
            open_flags: 0o101,
            addr: None,
            fd_path: None,
        };
        assert_eq!(p.file_accesses(Some("/tmp/real")), [("/tmp/real".to_owned(), "create")]);
        assert_eq!(p.file_accesses(None), [("/tmp/link".to_owned(), "create")]);
        let r = UringPending {
            opcode: uring::RENAMEAT,
            path: Some("/a".into()),
            path2: Some("/b".into()),
            open_flags: 0,
            addr: None,
            fd_path: None,
        };
        assert_eq!(r.file_accesses(None), [("/a".to_owned(), "rename_from"), ("/b".to_owned(), "rename_to")]);
        assert_eq!(uring_op_name(200), "opcode 200");
    }
}
