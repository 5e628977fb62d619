//! Files and network endpoints: classifying file and network syscalls, summarising them per
//! action (identical accesses collapse into one entry with a count), and DNS parsing.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use monitor_common::nr;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    ebpf::decode::{FileOp, NetOp, SockAddr},
    record::{FileSummary, NetSummary, WRITE_ACCESSES},
};

/// Ordinary summary entries (reads, failed accesses, noise) kept per action (or session);
/// accesses past it are counted under the path [`OTHER_PATHS`] so the counts stay complete.
/// Raw events keep every access.
pub const MAX_DISTINCT: usize = 10_000;
/// The summary path (network: address) that stands for ordinary entries past [`MAX_DISTINCT`].
pub const OTHER_PATHS: &str = "(other paths)";
/// Kept summary entries (see [`Bound::Kept`]) per action (or session). Separate from, and
/// larger than, [`MAX_DISTINCT`]: a flood of failed opens can never push a write out of the
/// summary, while memory stays bounded whatever the agent does.
pub const MAX_KEPT: usize = 4 * MAX_DISTINCT;
/// The summary path that stands for written (kept) file entries past [`MAX_KEPT`]; marked
/// `sensitive` when any entry folded into it was.
pub const OTHER_WRITTEN_PATHS: &str = "(other written paths)";
/// The summary address that stands for kept network entries past [`MAX_KEPT`], likewise.
pub const OTHER_DESTINATIONS: &str = "(other destinations)";

/// Which cap a summary entry counts against, and what it is folded into past it.
///
/// The cap exists to bound memory, not to choose what is shown: an agent that floods the
/// summary with decoys (10 000 failed opens) must not hide what it changed or touched that
/// matters. So only entries that changed nothing and are not sensitive fold early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Reads, failed accesses and noise: past [`MAX_DISTINCT`], into [`OTHER_PATHS`].
    Ordinary,
    /// Writes that took effect, connects and sends to a destination, sensitive resources, and
    /// accesses that raised a tamper or hand-off record: listed up to [`MAX_KEPT`], then
    /// into [`OTHER_WRITTEN_PATHS`] / [`OTHER_DESTINATIONS`], which keep `sensitive`.
    Kept { sensitive: bool },
}

impl Bound {
    /// A file access's bound. A failed write changed nothing, so it folds like a read: were it
    /// kept, failed creates in a missing directory (cheaper than real ones) could fill
    /// [`MAX_KEPT`] ahead of the write that matters.
    pub fn file(path: &str, access: &str, result: &str, sensitive: bool, flagged: bool) -> Self {
        let written = WRITE_ACCESSES.contains(&access) && result == "ok" && !is_noise(path, access);
        if sensitive || flagged || written {
            Self::Kept { sensitive }
        } else {
            Self::Ordinary
        }
    }

    /// A network summary entry's bound: a connect or send to a destination that went ahead
    /// (`EINPROGRESS` is a non-blocking connect under way) is the network's "write".
    pub fn net(n: &NetSummary, sensitive: bool, flagged: bool) -> Self {
        let sent = matches!(n.op.as_str(), "connect" | "send")
            && n.addr.is_some()
            && matches!(n.result.as_str(), "ok" | "EINPROGRESS");
        if sensitive || flagged || sent {
            Self::Kept { sensitive }
        } else {
            Self::Ordinary
        }
    }
}

/// Accumulates summaries in first-seen order, with an index so each access is O(1). Only the
/// summaries are serialised (daemon hand-over); [`Resources::reindex`] rebuilds the index.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Resources {
    files: Vec<FileSummary>,
    #[serde(skip)]
    file_index: HashMap<(String, String, String), usize>,
    /// Entries of `files` that count against [`MAX_KEPT`] (the rest against [`MAX_DISTINCT`]).
    /// Absent in an older daemon's hand-over: its entries then all count as ordinary, which can
    /// only fold ordinary entries sooner.
    #[serde(default)]
    files_kept: usize,
    net: Vec<NetSummary>,
    #[serde(skip)]
    net_index: HashMap<NetKey, usize>,
    #[serde(default)]
    net_kept: usize,
}

type NetKey = (String, String, Option<String>, Option<u16>, Option<String>, String);

/// Whether a new entry of bound `b` is past its cap, given the list's length and kept entries.
fn past_cap(b: Bound, len: usize, kept: usize) -> bool {
    match b {
        Bound::Ordinary => len.saturating_sub(kept) >= MAX_DISTINCT,
        Bound::Kept { .. } => kept >= MAX_KEPT,
    }
}

impl Resources {
    /// Count one file access. A new entry past its cap (see [`Bound`]) is counted under the
    /// fold path instead; a fold entry for kept accesses is `sensitive` once any was.
    pub fn add_file(&mut self, path: &str, access: &str, result: &str, bound: Bound) {
        let mut key = (path.to_owned(), access.to_owned(), result.to_owned());
        let mut folded_sensitive = false;
        if !self.file_index.contains_key(&key) && past_cap(bound, self.files.len(), self.files_kept) {
            let (fold, sensitive) = match bound {
                Bound::Ordinary => (OTHER_PATHS, false),
                Bound::Kept { sensitive } => (OTHER_WRITTEN_PATHS, sensitive),
            };
            fold.clone_into(&mut key.0);
            folded_sensitive = sensitive;
        }
        if let Some(&i) = self.file_index.get(&key) {
            self.files[i].count += 1;
            self.files[i].sensitive |= folded_sensitive;
            return;
        }
        self.files.push(FileSummary {
            noise: is_noise(&key.0, access),
            path: key.0.clone(),
            access: key.1.clone(),
            result: key.2.clone(),
            count: 1,
            sensitive: folded_sensitive,
        });
        self.file_index.insert(key, self.files.len() - 1);
        if matches!(bound, Bound::Kept { .. }) {
            self.files_kept += 1;
        }
    }

    /// Count one network summary entry, bounded as [`Resources::add_file`] (a fold entry has
    /// no port or host).
    pub fn add_net(&mut self, n: &NetSummary, bound: Bound) {
        let mut key = (n.op.clone(), n.family.clone(), n.addr.clone(), n.port, n.host.clone(), n.result.clone());
        let mut folded_sensitive = false;
        if !self.net_index.contains_key(&key) && past_cap(bound, self.net.len(), self.net_kept) {
            let (fold, sensitive) = match bound {
                Bound::Ordinary => (OTHER_PATHS, false),
                Bound::Kept { sensitive } => (OTHER_DESTINATIONS, sensitive),
            };
            key.2 = Some(fold.to_owned());
            key.3 = None;
            key.4 = None;
            folded_sensitive = sensitive;
        }
        if let Some(&i) = self.net_index.get(&key) {
            self.net[i].count += 1;
            self.net[i].sensitive |= folded_sensitive;
            return;
        }
        self.net.push(NetSummary {
            addr: key.2.clone(),
            port: key.3,
            host: key.4.clone(),
            count: 1,
            sensitive: folded_sensitive,
            ..n.clone()
        });
        self.net_index.insert(key, self.net.len() - 1);
        if matches!(bound, Bound::Kept { .. }) {
            self.net_kept += 1;
        }
    }

    pub fn reindex(&mut self) {
        self.file_index = self
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| ((f.path.clone(), f.access.clone(), f.result.clone()), i))
            .collect();
        self.net_index = self
            .net
            .iter()
            .enumerate()
            .map(|(i, n)| {
                ((n.op.clone(), n.family.clone(), n.addr.clone(), n.port, n.host.clone(), n.result.clone()), i)
            })
            .collect();
    }

    pub fn take(&mut self) -> (Vec<FileSummary>, Vec<NetSummary>) {
        self.file_index.clear();
        self.net_index.clear();
        (self.files_kept, self.net_kept) = (0, 0);
        (std::mem::take(&mut self.files), std::mem::take(&mut self.net))
    }
}

/// Noise, stored but folded by default and skipped by `--writes` and the FILES count:
/// - any access to a character device every program touches (`/dev/null`, `/dev/tty`, a
///   terminal, `/dev/urandom`, ...);
/// - reads of shared libraries, locale data and the loader cache.
///
/// `path` must be the resolved path (the kernel's, for opens). A path with a `..` component
/// is never noise: `/usr/lib/../../home/u/.ssh/id_rsa` is not a library.
pub fn is_noise(path: &str, access: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "/lib/",
        "/lib64/",
        "/lib32/",
        "/usr/lib/",
        "/usr/lib64/",
        "/usr/lib32/",
        "/usr/local/lib/",
        "/usr/share/locale/",
        "/usr/share/zoneinfo/",
        "/usr/share/i18n/",
    ];
    const FILES: &[&str] = &[
        "/etc/ld.so.cache",
        "/etc/ld.so.preload",
        "/etc/localtime",
        "/etc/locale.alias",
        "/usr/lib/locale/locale-archive",
    ];
    const DEVICES: &[&str] = &[
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
        "/dev/ptmx",
        "/dev/stdin",
        "/dev/stdout",
        "/dev/stderr",
    ];
    if path.split('/').any(|c| c == "..") {
        return false;
    }
    let terminal =
        path.strip_prefix("/dev/pts/").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if DEVICES.contains(&path) || terminal {
        return true;
    }
    access == "read" && (FILES.contains(&path) || PREFIXES.iter().any(|p| path.starts_with(p)))
}

/// openat2 `how.resolve` flag names.
pub fn resolve_names(resolve: u64) -> Vec<&'static str> {
    [(1, "no_xdev"), (2, "no_magiclinks"), (4, "no_symlinks"), (8, "beneath"), (0x10, "in_root"), (0x20, "cached")]
        .into_iter()
        .filter(|(bit, _)| resolve & bit != 0)
        .map(|(_, n)| n)
        .collect()
}

pub fn result_name(ret: i64) -> String {
    if ret >= 0 {
        "ok".into()
    } else {
        crate::errno::name((-ret) as i32)
    }
}

pub fn syscall_name(n: u64) -> &'static str {
    match n {
        nr::OPEN => "open",
        nr::OPENAT => "openat",
        nr::OPENAT2 => "openat2",
        nr::CREAT => "creat",
        nr::UNLINK => "unlink",
        nr::UNLINKAT => "unlinkat",
        nr::RMDIR => "rmdir",
        nr::RENAME => "rename",
        nr::RENAMEAT => "renameat",
        nr::RENAMEAT2 => "renameat2",
        nr::MKDIR => "mkdir",
        nr::MKDIRAT => "mkdirat",
        nr::LINK => "link",
        nr::LINKAT => "linkat",
        nr::SYMLINK => "symlink",
        nr::SYMLINKAT => "symlinkat",
        nr::CHMOD => "chmod",
        nr::FCHMOD => "fchmod",
        nr::FCHMODAT => "fchmodat",
        nr::FCHMODAT2 => "fchmodat2",
        nr::CHOWN => "chown",
        nr::FCHOWN => "fchown",
        nr::LCHOWN => "lchown",
        nr::FCHOWNAT => "fchownat",
        nr::TRUNCATE => "truncate",
        nr::FTRUNCATE => "ftruncate",
        nr::CONNECT => "connect",
        nr::BIND => "bind",
        nr::LISTEN => "listen",
        nr::ACCEPT => "accept",
        nr::ACCEPT4 => "accept4",
        nr::SENDTO => "sendto",
        nr::SENDMSG => "sendmsg",
        nr::SENDMMSG => "sendmmsg",
        nr::RECVFROM => "recvfrom",
        nr::RECVMSG => "recvmsg",
        nr::PTRACE => "ptrace",
        nr::PIVOT_ROOT => "pivot_root",
        nr::MOUNT => "mount",
        nr::UMOUNT2 => "umount2",
        nr::UNSHARE => "unshare",
        nr::SETNS => "setns",
        nr::PROCESS_VM_WRITEV => "process_vm_writev",
        nr::BPF => "bpf",
        nr::OPEN_TREE => "open_tree",
        nr::MOVE_MOUNT => "move_mount",
        nr::FSMOUNT => "fsmount",
        nr::PIDFD_GETFD => "pidfd_getfd",
        nr::CHROOT => "chroot",
        nr::INIT_MODULE => "init_module",
        nr::FINIT_MODULE => "finit_module",
        nr::KEXEC_LOAD => "kexec_load",
        nr::KEXEC_FILE_LOAD => "kexec_file_load",
        nr::OPEN_BY_HANDLE_AT => "open_by_handle_at",
        nr::SOCKET => "socket",
        _ => "unknown",
    }
}

const O_ACCMODE: u64 = 3;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const O_APPEND: u64 = 0o2000;

/// The open mode words (`read`, `write`, `read-write`, `create`, `truncate`, `append`) and the
/// summary access for open flags.
pub fn open_access(flags: u64) -> (Vec<&'static str>, &'static str) {
    let mut mode = vec![match flags & O_ACCMODE {
        0 => "read",
        1 => "write",
        _ => "read-write",
    }];
    for (bit, name) in [(O_CREAT, "create"), (O_TRUNC, "truncate"), (O_APPEND, "append")] {
        if flags & bit != 0 {
            mode.push(name);
        }
    }
    let access = if flags & O_CREAT != 0 {
        "create"
    } else if flags & O_TRUNC != 0 {
        "truncate"
    } else if flags & O_ACCMODE != 0 || flags & O_APPEND != 0 {
        "write"
    } else {
        "read"
    };
    (mode, access)
}

/// The flags an open took effect with: the access mode and `O_APPEND` from the opened file
/// itself (the kernel's `f_flags`) when known, and `O_CREAT`/`O_TRUNC` (which the file does not
/// keep) from the given flags, only when the file was opened for writing.
pub fn kernel_open_flags(given: u64, obj_flags: Option<u32>) -> u64 {
    let Some(k) = obj_flags.map(u64::from) else { return given };
    let kernel = k & (O_ACCMODE | O_APPEND);
    let writable = kernel & O_ACCMODE != 0;
    kernel | if writable { given & (O_CREAT | O_TRUNC) } else { 0 }
}

/// An open's flags as they took effect, into the raw event's details; returns its access.
fn open_details(op: &FileOp, set: &mut impl FnMut(&str, serde_json::Value)) -> &'static str {
    let a = &op.args;
    let (given, mode) = match op.nr {
        nr::OPEN => (a[1], a[2]),
        nr::OPENAT => (a[2], a[3]),
        nr::OPENAT2 => (op.how_flags, op.how_mode),
        nr::OPEN_BY_HANDLE_AT => (a[2], 0),
        _ => (0o1101, a[1]),
    };
    let flags = kernel_open_flags(given, op.obj_flags);
    if flags & (O_ACCMODE | O_APPEND) != given & (O_ACCMODE | O_APPEND) {
        // The flags in the caller's memory no longer say how the file was opened.
        set("flags_given", json!(format!("{given:#o}")));
    }
    if op.nr == nr::OPEN_BY_HANDLE_AT {
        set("by_handle", json!(true));
    }
    let (words, access) = open_access(flags);
    set("mode", json!(words));
    set("flags", json!(format!("{flags:#o}")));
    if flags & O_CREAT != 0 {
        set("perm", json!(format!("{:04o}", mode & 0o7777)));
    }
    if op.ret >= 0 {
        set("fd", json!(op.ret));
    }
    access
}

/// A file descriptor received over a unix socket (`SCM_RIGHTS`): `ret` is the new fd, `path`
/// the file the kernel installed there, `mode` the access it was opened with.
fn received_details(op: &FileOp, set: &mut impl FnMut(&str, serde_json::Value)) {
    set("scm_rights", json!(true));
    set("fd", json!(op.ret));
    set("socket_fd", json!(op.args[0] as i32));
    if let Some((n, more)) = &op.received {
        set("fds_received", json!(n));
        set("more_fds", json!(more));
    }
    if let Some(f) = op.obj_flags {
        set("mode", json!(open_access(u64::from(f)).0));
    }
}

/// The (path, access) pairs a file syscall touched, and the raw event's details.
pub fn file_accesses(op: &FileOp) -> (Vec<(String, &'static str)>, serde_json::Value) {
    let a = &op.args;
    let path_of = |p: &Option<crate::ebpf::decode::PathArg>| p.as_ref().and_then(|p| p.absolute.clone());
    let arg_path = path_of(&op.path1).or_else(|| op.fd_path.clone());
    // What the kernel touched: for an open, the file behind the new fd; else the argument
    // joined to the directory the kernel resolved it against.
    let p1 = op.object.clone().or_else(|| arg_path.clone());
    let p2 = path_of(&op.path2);
    let mut data = json!({
        "syscall": syscall_name(op.nr),
        "result": result_name(op.ret),
        "ret": op.ret,
        "path": p1,
        "path_given": op.path1.as_ref().map(|p| &p.given),
        "path_truncated": op.path1.as_ref().is_some_and(|p| p.truncated),
        "resolved": op.path1.as_ref().map_or(op.fd_path.is_some(), |p| p.absolute.is_some()),
        "object_resolved": op.object.is_some(),
    });
    let mut set = |k: &str, v: serde_json::Value| {
        if let Some(o) = data.as_object_mut() {
            o.insert(k.into(), v);
        }
    };
    if op.object.is_some() {
        set("path_arg", json!(arg_path));
    }
    path_marks(op, &mut set);
    if op.nr == nr::OPENAT2 {
        set("resolve", json!(resolve_names(op.how_resolve)));
    }
    if op.path2.is_some() {
        set("path2", json!(p2));
        set("path2_given", json!(op.path2.as_ref().map(|p| &p.given)));
        set("path2_truncated", json!(op.path2.as_ref().is_some_and(|p| p.truncated)));
    }
    let mut out = Vec::new();
    let mut push = |p: &Option<String>, access: &'static str| {
        if let Some(p) = p {
            out.push((p.clone(), access));
        }
    };
    match op.nr {
        nr::OPEN | nr::OPENAT | nr::OPENAT2 | nr::CREAT | nr::OPEN_BY_HANDLE_AT => {
            let access = open_details(op, &mut set);
            push(&p1, access);
        }
        nr::UNLINK | nr::UNLINKAT | nr::RMDIR => push(&p1, "delete"),
        nr::RENAME | nr::RENAMEAT | nr::RENAMEAT2 => {
            push(&p1, "rename_from");
            push(&p2, "rename_to");
        }
        nr::MKDIR | nr::MKDIRAT => {
            set("perm", json!(format!("{:04o}", a[if op.nr == nr::MKDIR { 1 } else { 2 }] & 0o7777)));
            push(&p1, "mkdir");
        }
        nr::LINK | nr::LINKAT => {
            push(&p1, "link");
            push(&p2, "link");
        }
        nr::SYMLINK | nr::SYMLINKAT => {
            set("target", json!(op.path2.as_ref().map(|p| &p.given)));
            push(&p1, "link");
        }
        nr::CHMOD | nr::FCHMOD | nr::FCHMODAT | nr::FCHMODAT2 => {
            let mode = a[if matches!(op.nr, nr::FCHMODAT | nr::FCHMODAT2) { 2 } else { 1 }];
            set("perm", json!(format!("{:04o}", mode & 0o7777)));
            push(&p1, "chmod");
        }
        nr::CHOWN | nr::FCHOWN | nr::LCHOWN | nr::FCHOWNAT => {
            let (uid, gid) = if op.nr == nr::FCHOWNAT { (a[2], a[3]) } else { (a[1], a[2]) };
            set("uid", json!(uid as u32 as i32));
            set("gid", json!(gid as u32 as i32));
            push(&p1, "chown");
        }
        nr::TRUNCATE | nr::FTRUNCATE => {
            set("length", json!(a[1] as i64));
            push(&p1, "truncate");
        }
        nr::RECVMSG => {
            received_details(op, &mut set);
            push(&p1, "received");
        }
        _ => {}
    }
    if matches!(op.nr, nr::FCHMOD | nr::FCHOWN | nr::FTRUNCATE) {
        set("fd", json!(a[0] as i32));
    }
    (out, data)
}

/// The marks a file event's paths carry only when set: how the path was resolved, and what
/// came from the kernel's own records (fexit mode): the object, and the name as given.
fn path_marks(op: &FileOp, set: &mut impl FnMut(&str, serde_json::Value)) {
    if op.empty_path {
        set("empty_path", json!(true));
    }
    if op.root_changed {
        set("root_changed", json!(true));
    }
    for (p, key) in [(&op.path1, "path"), (&op.path2, "path2")] {
        let Some(p) = p else { continue };
        if p.kernel {
            set(&format!("{key}_kernel"), json!(true));
        }
        if p.given_kernel {
            set(&format!("{key}_given_kernel"), json!(true));
        }
    }
    if op.compat {
        set("compat", json!(true));
    }
}

pub fn family_name(a: &SockAddr) -> String {
    match a {
        SockAddr::Inet { ip: IpAddr::V4(_), .. } => "ipv4".into(),
        SockAddr::Inet { ip: IpAddr::V6(_), .. } => "ipv6".into(),
        SockAddr::Unix { .. } => "unix".into(),
        SockAddr::Other { family } => family_number_name(*family),
    }
}

/// A socket family's name: `ipv4`, `ipv6`, `unix`, `packet` (`AF_PACKET`), else `family N`.
pub fn family_number_name(family: u16) -> String {
    match family {
        1 => "unix".into(),
        2 => "ipv4".into(),
        10 => "ipv6".into(),
        17 => "packet".into(),
        f => format!("family {f}"),
    }
}

/// (address text, port) of a socket address; `None` address for an unnamed unix socket.
pub fn addr_port(a: &SockAddr) -> (Option<String>, Option<u16>) {
    match a {
        SockAddr::Inet { ip, port } => (Some(ip.to_string()), Some(*port)),
        SockAddr::Unix { path } if path.is_empty() => (None, None),
        SockAddr::Unix { path } => (Some(path.clone()), None),
        SockAddr::Other { .. } => (None, None),
    }
}

/// The summary op of a network event: a send on a stream socket that carries an address or
/// `MSG_FASTOPEN` is a connect (TCP fast open connects without `connect()`).
pub fn net_op_of(n: &NetOp) -> &'static str {
    let send = matches!(n.nr, nr::SENDTO | nr::SENDMSG | nr::SENDMMSG);
    if send && n.sock_type == 1 && (n.fastopen || n.addr.is_some()) {
        "connect"
    } else {
        net_op(n.nr)
    }
}

/// The summary op of a network syscall (`recv` is only kept raw, for DNS answers).
pub fn net_op(n: u64) -> &'static str {
    match n {
        nr::CONNECT => "connect",
        nr::BIND => "bind",
        nr::LISTEN => "listen",
        nr::ACCEPT | nr::ACCEPT4 => "accept",
        nr::SENDTO | nr::SENDMSG | nr::SENDMMSG => "send",
        nr::SOCKET => "socket",
        _ => "recv",
    }
}

/// Which address a network event is about: the peer for connect/send/accept, our own for
/// bind/listen. `known` holds addresses seen earlier on the same (pid, fd).
pub fn net_endpoint(op: &NetOp, known: Option<&SockAddr>) -> Option<SockAddr> {
    let local = op.sock.as_ref().map(|s| s.0.clone());
    let remote = op.sock.as_ref().map(|s| s.1.clone());
    let meaningful = |a: &SockAddr| !matches!(a, SockAddr::Unix { path } if path.is_empty());
    match op.nr {
        nr::BIND => op.addr.clone(),
        // The socket knows the port actually bound (bind may have asked for port 0).
        nr::LISTEN => {
            local.filter(|l| matches!(l, SockAddr::Inet { port, .. } if *port != 0)).or_else(|| known.cloned())
        }
        nr::ACCEPT | nr::ACCEPT4 => {
            op.addr.clone().filter(meaningful).or(remote.filter(meaningful)).or_else(|| known.cloned())
        }
        // connect (and a connecting send on a stream socket): the kernel's peer, read from the
        // socket after the call, not the sockaddr re-read from user memory, which another
        // thread may have rewritten. The given address stands in when the socket has none
        // (a failed connect, a unix socket).
        _ if op.nr == nr::CONNECT
            || (op.sock_type == 1 && matches!(op.nr, nr::SENDTO | nr::SENDMSG | nr::SENDMMSG)) =>
        {
            let peer = remote.filter(|r| matches!(r, SockAddr::Inet { port, .. } if *port != 0));
            // A unix peer: the socket file the kernel reached (fexit mode), not the name given.
            let unix = op.peer_path.as_ref().map(|p| SockAddr::Unix { path: p.clone() });
            peer.or(unix).or(op.addr.clone().filter(meaningful)).or_else(|| known.cloned())
        }
        _ => op
            .addr
            .clone()
            .filter(meaningful)
            .or(remote.filter(|r| meaningful(r) && !matches!(r, SockAddr::Inet { port: 0, .. })))
            .or_else(|| known.cloned()),
    }
}

/// A parsed DNS message: enough to match an answer to its query and follow CNAME chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsMessage {
    /// The transaction id.
    pub id: u16,
    /// The QR bit: a response, not a query.
    pub response: bool,
    pub questions: Vec<String>,
    /// A and AAAA records: (owner name, address).
    pub addrs: Vec<(String, IpAddr)>,
    /// CNAME records: (owner name, canonical name).
    pub cnames: Vec<(String, String)>,
}

const DNS_A: u16 = 1;
const DNS_CNAME: u16 = 5;
const DNS_AAAA: u16 = 28;

/// A DNS message's id, question names, address records and CNAME records, each record with its
/// owner name. `None` when the header or the questions do not parse; answers past the first
/// unparsable record are dropped.
pub fn parse_dns(msg: &[u8]) -> Option<DnsMessage> {
    let u16_at = |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?])) };
    let mut m =
        DnsMessage { id: u16_at(0)?, response: msg.get(2).is_some_and(|b| b & 0x80 != 0), ..DnsMessage::default() };
    let qd = u16_at(4)?;
    let an = u16_at(6)?;
    let mut pos = 12;
    for _ in 0..qd.min(16) {
        let (name, next) = read_name(msg, pos)?;
        m.questions.push(name);
        pos = next + 4;
    }
    for _ in 0..an.min(64) {
        let Some((owner, next)) = read_name(msg, pos) else { break };
        let (Some(typ), Some(len)) = (u16_at(next), u16_at(next + 8)) else { break };
        let start = next + 10;
        let Some(data) = msg.get(start..start + len as usize) else { break };
        match (typ, data.len()) {
            (DNS_A, 4) => m.addrs.push((owner, IpAddr::from(<[u8; 4]>::try_from(data).ok()?))),
            (DNS_AAAA, 16) => m.addrs.push((owner, IpAddr::from(<[u8; 16]>::try_from(data).ok()?))),
            (DNS_CNAME, _) => {
                if let Some((target, _)) = read_name(msg, start) {
                    m.cnames.push((owner, target));
                }
            }
            _ => {}
        }
        pos = start + data.len();
    }
    Some(m)
}

/// A possibly compressed name at `pos`; returns it and the position after it.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            return Some((labels.join("."), end.unwrap_or(pos + 1)));
        }
        if len & 0xc0 == 0xc0 {
            let ptr = ((len & 0x3f) << 8) | *msg.get(pos + 1)? as usize;
            end.get_or_insert(pos + 2);
            pos = ptr;
            continue;
        }
        labels.push(crate::text::escape_bytes(msg.get(pos + 1..pos + 1 + len)?));
        pos += 1 + len;
    }
    None
}

/// Where a received datagram came from: the address `recvfrom`/`recvmsg` returned, else the
/// connected socket's peer. Not the address remembered for the fd, which may be our own.
pub fn recv_source(op: &NetOp) -> Option<SockAddr> {
    let given = op.addr.clone().filter(|a| matches!(a, SockAddr::Inet { .. }));
    given.or_else(|| {
        op.sock.as_ref().map(|s| s.1.clone()).filter(|r| matches!(r, SockAddr::Inet { port, .. } if *port != 0))
    })
}

/// Queries awaiting their answer, per session; the oldest is forgotten past this.
pub const MAX_PENDING_QUERIES: usize = 4096;

/// A DNS query a session process sent: what an answer must match to be believed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DnsQuery {
    id: u16,
    /// The question as sent.
    name: String,
    /// Where it was sent.
    server: SockAddr,
}

/// The resolver cache: addresses a session's processes looked up, to their names.
///
/// Only answers from a resolver the host itself uses (a name server of `/etc/resolv.conf`, on
/// port 53) to the session's own queries are learnt: an agent that asks its own responder and
/// answers itself must not name its connects. Anyone who can reach a UDP port of a
/// session process can send it a well-formed "response"; believing it would let a forger name
/// any connect. So an answer counts only if it carries the transaction id and question of a
/// query the session sent, and comes from the address and port that query went to. A name is
/// learnt only for address records owned by the question or by a CNAME reachable from it in the
/// same response, and always under the question: an answer for `a.test` cannot name
/// `b.test`'s address.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DnsCache {
    names: HashMap<IpAddr, String>,
    #[serde(default)]
    pending: VecDeque<DnsQuery>,
}

/// The name servers of a `resolv.conf` (`nameserver ADDR` lines; a scoped IPv6 address loses
/// its `%scope`).
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()?.split('%').next()?.parse().ok()).flatten()
        })
        .collect()
}

/// Whether a query went to one of the host's resolvers, on the DNS port.
fn is_resolver(server: &SockAddr, resolvers: &[IpAddr]) -> bool {
    match server {
        SockAddr::Inet { ip, port: 53 } => resolvers.iter().any(|r| r.to_canonical() == ip.to_canonical()),
        _ => false,
    }
}

/// Two socket addresses are the same endpoint (an IPv4-mapped IPv6 address is its IPv4 one).
fn same_endpoint(x: &SockAddr, y: &SockAddr) -> bool {
    match (x, y) {
        (SockAddr::Inet { ip: ip_x, port: port_x }, SockAddr::Inet { ip: ip_y, port: port_y }) => {
            port_x == port_y && ip_x.to_canonical() == ip_y.to_canonical()
        }
        _ => false,
    }
}

impl DnsCache {
    /// Note a query a session process sent to `server`. Only single-question queries count:
    /// that is what resolvers send, and what an answer can be matched against.
    pub fn query(&mut self, msg: &DnsMessage, server: &SockAddr) {
        if msg.response || msg.questions.len() != 1 || !matches!(server, SockAddr::Inet { .. }) {
            return;
        }
        if self.pending.len() >= MAX_PENDING_QUERIES {
            self.pending.pop_front();
        }
        self.pending.push_back(DnsQuery { id: msg.id, name: msg.questions[0].clone(), server: server.clone() });
    }

    /// A response a session process received from `source`. When it answers a pending query
    /// (which it consumes), learn its usable addresses and return, for each of `msg.addrs`,
    /// whether it now names connects; `None` when it answers nothing this session asked.
    /// An answer from a server that is not one of `resolvers` consumes its query and names
    /// nothing (`None`): it is kept in the raw event, unverified.
    pub fn answer(&mut self, msg: &DnsMessage, source: Option<&SockAddr>, resolvers: &[IpAddr]) -> Option<Vec<bool>> {
        let source = source?;
        if !msg.response || msg.questions.len() != 1 {
            return None;
        }
        let question = &msg.questions[0];
        let i = self.pending.iter().position(|q| {
            q.id == msg.id && q.name.eq_ignore_ascii_case(question) && same_endpoint(&q.server, source)
        })?;
        let q = self.pending.remove(i)?;
        if !is_resolver(&q.server, resolvers) {
            return None;
        }
        let asked = q.name;
        // Owner names reachable from the question through the response's CNAMEs.
        let mut owners = vec![asked.to_ascii_lowercase()];
        let mut grew = true;
        while grew {
            grew = false;
            for (owner, target) in &msg.cnames {
                let target = target.to_ascii_lowercase();
                if owners.contains(&owner.to_ascii_lowercase()) && !owners.contains(&target) {
                    owners.push(target);
                    grew = true;
                }
            }
        }
        // Bounded: a flood of lookups must not grow the daemon without limit.
        if self.names.len() > 65_536 {
            self.names.clear();
        }
        let used: Vec<bool> = msg.addrs.iter().map(|(owner, _)| owners.contains(&owner.to_ascii_lowercase())).collect();
        for ((_, ip), _) in msg.addrs.iter().zip(&used).filter(|(_, u)| **u) {
            self.names.insert(*ip, asked.clone());
        }
        Some(used)
    }

    pub fn host(&self, a: &SockAddr) -> Option<String> {
        match a {
            SockAddr::Inet { ip, .. } => self.names.get(ip).or_else(|| self.names.get(&ip.to_canonical())).cloned(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_flags_classify() {
        assert_eq!(open_access(0), (vec!["read"], "read"));
        assert_eq!(open_access(1 | O_CREAT | O_TRUNC), (vec!["write", "create", "truncate"], "create"));
        assert_eq!(open_access(2 | O_APPEND), (vec!["read-write", "append"], "write"));
        assert_eq!(open_access(1 | O_TRUNC).1, "truncate");
    }

    #[test]
    fn identical_accesses_collapse() {
        let mut r = Resources::default();
        for _ in 0..1000 {
            r.add_file("/tmp/x", "read", "ok", Bound::Ordinary);
        }
        r.add_file("/tmp/x", "read", "ENOENT", Bound::Ordinary);
        r.add_file("/usr/lib/x86_64-linux-gnu/libc.so.6", "read", "ok", Bound::Ordinary);
        let (files, _) = r.take();
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].count, 1000);
        assert!(!files[0].noise && files[2].noise);
        assert!(!is_noise("/usr/lib/x", "write"), "writes are never folded");
    }

    #[test]
    fn distinct_entries_are_capped_but_counts_stay_complete() {
        let mut r = Resources::default();
        for i in 0..MAX_DISTINCT + 500 {
            r.add_file(&format!("/data/{i}"), "read", "ok", Bound::Ordinary);
        }
        r.add_file("/data/0", "read", "ok", Bound::Ordinary);
        let (files, _) = r.take();
        assert_eq!(files.len(), MAX_DISTINCT + 1);
        assert_eq!(files[0].count, 2, "a path already listed keeps counting");
        let other = files.last().expect("overflow entry");
        assert_eq!((other.path.as_str(), other.count), (OTHER_PATHS, 500));
    }

    #[test]
    fn what_an_entry_is_bounded_by() {
        let kept = |sensitive| Bound::Kept { sensitive };
        assert_eq!(Bound::file("/work/x", "create", "ok", false, false), kept(false), "a write that took effect");
        assert_eq!(Bound::file("/work/x", "create", "ENOENT", false, false), Bound::Ordinary, "a failed write");
        assert_eq!(Bound::file("/dev/null", "write", "ok", false, false), Bound::Ordinary, "noise");
        assert_eq!(Bound::file("/work/x", "read", "ok", false, false), Bound::Ordinary);
        assert_eq!(Bound::file("/home/u/.ssh/id_rsa", "read", "EACCES", true, false), kept(true), "sensitive");
        assert_eq!(Bound::file("/etc/agentmon/x", "write", "EACCES", false, true), kept(false), "tamper");
        let net = |op: &str, addr: Option<&str>, result: &str| NetSummary {
            op: op.into(),
            family: "ipv4".into(),
            addr: addr.map(Into::into),
            port: Some(443),
            host: None,
            result: result.into(),
            count: 1,
            sensitive: false,
        };
        assert_eq!(Bound::net(&net("connect", Some("10.0.0.1"), "EINPROGRESS"), false, false), kept(false));
        assert_eq!(Bound::net(&net("send", Some("10.0.0.1"), "ok"), false, false), kept(false));
        assert_eq!(Bound::net(&net("connect", Some("10.0.0.1"), "ECONNREFUSED"), false, false), Bound::Ordinary);
        assert_eq!(Bound::net(&net("send", None, "ok"), false, false), Bound::Ordinary, "no destination");
        assert_eq!(Bound::net(&net("bind", Some("0.0.0.0"), "ok"), false, false), Bound::Ordinary);
        assert_eq!(Bound::net(&net("connect", Some("/run/docker.sock"), "EACCES"), false, true), kept(false));
    }

    #[test]
    fn a_flood_of_failed_opens_never_folds_a_write_or_a_sensitive_access() {
        let mut r = Resources::default();
        for i in 0..MAX_DISTINCT + 500 {
            r.add_file(&format!("/decoy/{i}"), "read", "ENOENT", Bound::Ordinary);
        }
        r.add_file("/home/u/.ssh/authorized_keys", "write", "ok", Bound::Kept { sensitive: true });
        r.add_file("/work/out.txt", "create", "ok", Bound::Kept { sensitive: false });
        r.add_file("/decoy/late", "read", "ENOENT", Bound::Ordinary);
        let (files, _) = r.take();
        let find = |p: &str| files.iter().find(|f| f.path == p).map(|f| (f.access.as_str(), f.count, f.sensitive));
        assert_eq!(find("/home/u/.ssh/authorized_keys"), Some(("write", 1, false)), "its own entry, marked later");
        assert_eq!(find("/work/out.txt"), Some(("create", 1, false)));
        assert_eq!(find(OTHER_PATHS), Some(("read", 501, false)), "only the reads folded");
        assert_eq!(find(OTHER_WRITTEN_PATHS), None);
    }

    #[test]
    fn kept_entries_past_their_own_cap_fold_visibly_and_stay_sensitive() {
        let mut r = Resources::default();
        for i in 0..MAX_KEPT {
            r.add_file(&format!("/work/{i}"), "create", "ok", Bound::Kept { sensitive: false });
        }
        r.add_file("/work/late", "create", "ok", Bound::Kept { sensitive: false });
        r.add_file("/home/u/.ssh/authorized_keys", "create", "ok", Bound::Kept { sensitive: true });
        r.add_file("/work/0", "create", "ok", Bound::Kept { sensitive: false });
        r.add_file("/etc/x", "read", "ok", Bound::Ordinary);
        let (files, _) = r.take();
        assert_eq!(files.len(), MAX_KEPT + 2, "the kept cap, its fold entry, and the read (own cap)");
        assert_eq!(files[0].count, 2, "a path already listed keeps counting");
        let other = files.iter().find(|f| f.path == OTHER_WRITTEN_PATHS).expect("fold entry");
        assert_eq!((other.access.as_str(), other.count, other.sensitive), ("create", 2, true));
        // The network list is bounded the same way.
        let mut r = Resources::default();
        let connect = |i: usize| NetSummary {
            op: "connect".into(),
            family: "ipv4".into(),
            addr: Some(format!("10.{}.{}.{}", i >> 16, (i >> 8) & 0xff, i & 0xff)),
            port: Some(443),
            host: None,
            result: "ok".into(),
            count: 1,
            sensitive: false,
        };
        for i in 0..MAX_DISTINCT + 10 {
            r.add_net(&NetSummary { result: "ECONNREFUSED".into(), ..connect(i) }, Bound::Ordinary);
        }
        for i in 0..=MAX_KEPT {
            r.add_net(&connect(i), Bound::Kept { sensitive: i == MAX_KEPT });
        }
        let (_, net) = r.take();
        assert_eq!(net.len(), MAX_DISTINCT + 1 + MAX_KEPT + 1);
        let other = net.last().expect("fold entry");
        assert_eq!(
            (other.addr.as_deref(), other.port, other.count, other.sensitive),
            (Some(OTHER_DESTINATIONS), None, 1, true)
        );
    }

    #[test]
    fn a_handed_over_summary_keeps_its_bounds() {
        let mut r = Resources::default();
        r.add_file("/work/x", "create", "ok", Bound::Kept { sensitive: false });
        r.add_file("/work/y", "read", "ok", Bound::Ordinary);
        let mut r: Resources = serde_json::from_str(&serde_json::to_string(&r).expect("ser")).expect("de");
        r.reindex();
        assert_eq!((r.files_kept, r.files.len()), (1, 2));
        r.add_file("/work/x", "create", "ok", Bound::Kept { sensitive: false });
        assert_eq!(r.files[0].count, 2);
        // An older daemon's hand-over has no count of kept entries: all count as ordinary.
        let old: Resources = serde_json::from_str(r#"{"files":[],"net":[]}"#).expect("old state");
        assert_eq!(old.files_kept, 0);
    }

    #[test]
    fn dns_query_and_answer_parse() {
        // Response for svc.test A 127.0.0.2, answer name compressed to the question.
        let m = response(0x1234, "svc.test", &[], &[("svc.test", [127, 0, 0, 2])]);
        let p = parse_dns(&m).expect("parse");
        assert_eq!((p.id, p.response), (0x1234, true));
        assert_eq!(p.questions, ["svc.test"]);
        assert_eq!(p.addrs, [("svc.test".to_owned(), ip("127.0.0.2"))]);
        assert!(parse_dns(&m[..20]).is_none_or(|p| p.addrs.is_empty()));
        assert!(parse_dns(&[1, 2]).is_none());
        // A pointer loop ends, it does not hang.
        let mut bad = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        bad.extend_from_slice(&[0xc0, 12]);
        assert!(parse_dns(&bad).is_none());
        // CNAME records keep their owner and target; address records their own owner.
        let m = response(1, "www.svc.test", &[("www.svc.test", "edge.cdn.test")], &[("edge.cdn.test", [10, 0, 0, 1])]);
        let p = parse_dns(&m).expect("parse");
        assert_eq!(p.cnames, [("www.svc.test".to_owned(), "edge.cdn.test".to_owned())]);
        assert_eq!(p.addrs, [("edge.cdn.test".to_owned(), ip("10.0.0.1"))]);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn name(n: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for l in n.split('.') {
            out.push(u8::try_from(l.len()).expect("label"));
            out.extend_from_slice(l.as_bytes());
        }
        out.push(0);
        out
    }

    fn query(id: u16, q: &str) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend(name(q));
        m.extend_from_slice(&[0, 1, 0, 1]);
        m
    }

    /// A response to `q` with CNAME records then A records, names written out in full.
    fn response(id: u16, q: &str, cnames: &[(&str, &str)], addrs: &[(&str, [u8; 4])]) -> Vec<u8> {
        let mut m = query(id, q);
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = u8::try_from(cnames.len() + addrs.len()).expect("count");
        for (owner, target) in cnames {
            m.extend(name(owner));
            let t = name(target);
            m.extend_from_slice(&[0, 5, 0, 1, 0, 0, 0, 60, 0, u8::try_from(t.len()).expect("len")]);
            m.extend(t);
        }
        for (owner, a) in addrs {
            m.extend(name(owner));
            m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            m.extend_from_slice(a);
        }
        m
    }

    /// The host's resolver in these tests (as `/etc/resolv.conf` would name it).
    const RES: &[IpAddr] = &[IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 53))];

    fn server(port: u16) -> SockAddr {
        SockAddr::Inet { ip: ip("127.0.0.53"), port }
    }

    fn connect_host(c: &DnsCache, a: &str) -> Option<String> {
        c.host(&SockAddr::Inet { ip: ip(a), port: 443 })
    }

    /// A cache that sent `svc.test` (id 7) to 127.0.0.53:53.
    fn asked() -> DnsCache {
        let mut c = DnsCache::default();
        c.query(&parse_dns(&query(7, "svc.test")).expect("query"), &server(53));
        c
    }

    #[test]
    fn an_answer_to_our_query_names_the_address() {
        let mut c = asked();
        let r = parse_dns(&response(7, "SVC.test", &[], &[("svc.test", [10, 0, 0, 1])])).expect("parse");
        assert_eq!(c.answer(&r, Some(&server(53)), RES), Some(vec![true]), "the question matches case-insensitively");
        assert_eq!(connect_host(&c, "10.0.0.1").as_deref(), Some("svc.test"), "named as it was asked");
        // Consumed: the same answer again (a replay) is not believed.
        assert_eq!(c.answer(&r, Some(&server(53)), RES), None);
    }

    #[test]
    fn an_answer_from_a_resolver_the_host_does_not_use_names_nothing() {
        // The agent asks its own responder (127.0.0.2:53) and answers itself, id and question
        // matching: it is not one of the host's resolvers, so nothing is learnt.
        let mut c = DnsCache::default();
        let own = SockAddr::Inet { ip: ip("127.0.0.2"), port: 53 };
        c.query(&parse_dns(&query(7, "api.github.com")).expect("query"), &own);
        let r =
            parse_dns(&response(7, "api.github.com", &[], &[("api.github.com", [203, 0, 113, 66])])).expect("parse");
        assert_eq!(c.answer(&r, Some(&own), RES), None);
        assert_eq!(connect_host(&c, "203.0.113.66"), None);
        assert_eq!(c.answer(&r, Some(&own), &[ip("127.0.0.2")]), None, "the query was consumed");
    }

    #[test]
    fn the_resolvers_are_read_from_resolv_conf() {
        let text = "# comment\nsearch example.test\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver  10.0.0.2 \noptions edns0\nnameserver bogus\n";
        assert_eq!(parse_resolv_conf(text), vec![ip("127.0.0.53"), ip("fe80::1"), ip("10.0.0.2")]);
    }

    #[test]
    fn a_forged_answer_without_a_query_is_ignored() {
        let mut c = DnsCache::default();
        let r = parse_dns(&response(7, "forged.test", &[], &[("forged.test", [127, 0, 0, 9])])).expect("parse");
        assert_eq!(c.answer(&r, Some(&server(53)), RES), None);
        assert_eq!(connect_host(&c, "127.0.0.9"), None);
    }

    #[test]
    fn an_answer_with_the_wrong_id_is_ignored() {
        let mut c = asked();
        let r = parse_dns(&response(8, "svc.test", &[], &[("svc.test", [10, 0, 0, 1])])).expect("parse");
        assert_eq!(c.answer(&r, Some(&server(53)), RES), None);
        assert_eq!(connect_host(&c, "10.0.0.1"), None);
        // The query is still pending: the real answer still counts.
        let r = parse_dns(&response(7, "svc.test", &[], &[("svc.test", [10, 0, 0, 2])])).expect("parse");
        assert_eq!(c.answer(&r, Some(&server(53)), RES), Some(vec![true]));
    }

    #[test]
    fn an_answer_from_another_server_is_ignored() {
        let mut c = asked();
        let r = parse_dns(&response(7, "svc.test", &[], &[("svc.test", [10, 0, 0, 1])])).expect("parse");
        assert_eq!(c.answer(&r, Some(&server(5353)), RES), None, "wrong port");
        assert_eq!(c.answer(&r, Some(&SockAddr::Inet { ip: ip("127.0.0.1"), port: 53 }), RES), None, "wrong address");
        assert_eq!(c.answer(&r, None, RES), None, "unknown source");
        assert_eq!(connect_host(&c, "10.0.0.1"), None);
        // The same server seen through an IPv4-mapped address is the same server.
        assert_eq!(
            c.answer(&r, Some(&SockAddr::Inet { ip: ip("::ffff:127.0.0.53"), port: 53 }), RES),
            Some(vec![true])
        );
    }

    #[test]
    fn an_answer_for_a_name_not_asked_is_ignored() {
        let mut c = asked();
        let r = parse_dns(&response(7, "bank.test", &[], &[("bank.test", [10, 0, 0, 1])])).expect("parse");
        assert_eq!(c.answer(&r, Some(&server(53)), RES), None, "same id and server, other question");
        assert_eq!(connect_host(&c, "10.0.0.1"), None);
        // Right question, but an extra record for another owner: only the asked one counts.
        let r = parse_dns(&response(7, "svc.test", &[], &[("bank.test", [10, 0, 0, 2]), ("svc.test", [10, 0, 0, 3])]))
            .expect("parse");
        assert_eq!(c.answer(&r, Some(&server(53)), RES), Some(vec![false, true]));
        assert_eq!(connect_host(&c, "10.0.0.2"), None);
        assert_eq!(connect_host(&c, "10.0.0.3").as_deref(), Some("svc.test"));
    }

    #[test]
    fn cname_chains_are_followed_by_owner_name() {
        let mut c = DnsCache::default();
        c.query(&parse_dns(&query(9, "www.svc.test")).expect("query"), &server(53));
        let r = parse_dns(&response(
            9,
            "www.svc.test",
            // Out of order, and one CNAME that hangs off nothing asked.
            &[("edge.cdn.test", "Node.CDN.test"), ("www.svc.test", "edge.cdn.test"), ("other.test", "evil.test")],
            &[("node.cdn.test", [10, 0, 0, 1]), ("evil.test", [10, 0, 0, 2])],
        ))
        .expect("parse");
        assert_eq!(c.answer(&r, Some(&server(53)), RES), Some(vec![true, false]));
        assert_eq!(connect_host(&c, "10.0.0.1").as_deref(), Some("www.svc.test"), "labelled with the question");
        assert_eq!(connect_host(&c, "10.0.0.2"), None);
    }

    #[test]
    fn pending_queries_are_bounded_oldest_first() {
        let mut c = DnsCache::default();
        for id in 0..=u16::try_from(MAX_PENDING_QUERIES).expect("fits") {
            c.query(&parse_dns(&query(id, "svc.test")).expect("query"), &server(53));
        }
        assert_eq!(c.pending.len(), MAX_PENDING_QUERIES);
        let answer = |id| parse_dns(&response(id, "svc.test", &[], &[("svc.test", [10, 0, 0, 1])])).expect("parse");
        assert_eq!(c.answer(&answer(0), Some(&server(53)), RES), None, "the oldest was evicted");
        assert!(c.answer(&answer(1), Some(&server(53)), RES).is_some());
        // A response is never taken for a query.
        c.query(&answer(2), &server(53));
        assert_eq!(c.pending.len(), MAX_PENDING_QUERIES - 1);
    }

    #[test]
    fn a_cache_from_an_older_daemon_loads() {
        let c: DnsCache = serde_json::from_str(r#"{"names":{"10.0.0.1":"svc.test"}}"#).expect("old state");
        assert_eq!(connect_host(&c, "10.0.0.1").as_deref(), Some("svc.test"));
        assert!(c.pending.is_empty());
    }
}
