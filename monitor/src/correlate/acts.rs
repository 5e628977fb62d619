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
        (_, nr::MOUNT) => json!({"flags": format!("{:#x}", t.args[3])}),
        (_, nr::PTRACE) => json!({"request": t.args[0]}),
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
        1 => "readv",
        2 => "writev",
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

/// `io_uring` opcodes that read or write an fd's file, besides `uring::READ`/`WRITE` (the
/// kernel's `enum io_uring_op`; not needed by the kernel side, so not in `monitor_common`).
const URING_READV: u32 = 1;
const URING_WRITEV: u32 = 2;
const URING_READ_FIXED: u32 = 4;
const URING_WRITE_FIXED: u32 = 5;

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
        let path2 = u.path2.clone().filter(|p| p.starts_with('/') || u.opcode == uring::SYMLINKAT);
        let fd_op = matches!(
            u.opcode,
            uring::READ | uring::WRITE | URING_READV | URING_WRITEV | URING_READ_FIXED | URING_WRITE_FIXED
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
            uring::WRITE | URING_WRITEV | URING_WRITE_FIXED => push(&self.fd_path, "write"),
            uring::READ | URING_READV | URING_READ_FIXED => push(&self.fd_path, "read"),
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
        "path2": u.path2,
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
    let under = |root: &str| path == root || path.strip_prefix(root).is_some_and(|r| r.starts_with('/')) || root == "/";
    let in_session = !session_cgroup.is_empty() && under(session_cgroup);
    if cgroup_roots.iter().any(|r| under(r)) && !in_session {
        let leaf = path.rsplit('/').next().unwrap_or("");
        return Some(if matches!(leaf, "cgroup.procs" | "cgroup.threads") { "cgroup_move" } else { "cgroup_write" });
    }
    protected.iter().any(|p| under(p)).then_some("protected_write")
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
            [(URING_WRITEV, "write"), (URING_WRITE_FIXED, "write"), (uring::READ, "read"), (URING_READV, "read")]
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
