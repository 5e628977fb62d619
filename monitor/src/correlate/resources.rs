//! Files and network endpoints: classifying file and network syscalls, summarising them per
//! action (identical accesses collapse into one entry with a count), and DNS parsing.

use std::{collections::HashMap, net::IpAddr};

use monitor_common::nr;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ebpf::decode::{FileOp, NetOp, SockAddr};

/// One summary entry of an action's (or the agent's) file accesses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileSummary {
    pub path: String,
    /// read, write, create, delete, `rename_from`, `rename_to`, mkdir, link, chmod, chown, truncate, exec.
    pub access: String,
    /// `ok`, or the errno name.
    pub result: String,
    pub count: u64,
    /// A shared library, locale or loader file read: folded away in human output by default.
    pub noise: bool,
}

/// One summary entry of an action's (or the agent's) network use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetSummary {
    /// connect, bind, listen, accept or send.
    pub op: String,
    /// ipv4, ipv6, unix or `family <n>`.
    pub family: String,
    pub addr: Option<String>,
    pub port: Option<u16>,
    /// The DNS name the address was resolved from, when a tagged process looked it up.
    pub host: Option<String>,
    pub result: String,
    pub count: u64,
}

/// Distinct summary entries kept per action (or session); accesses past it are counted under
/// the path [`OTHER_PATHS`] so the counts stay complete. Raw events keep every access.
pub const MAX_DISTINCT: usize = 10_000;
/// The summary path that stands for paths past [`MAX_DISTINCT`].
pub const OTHER_PATHS: &str = "(other paths)";

/// Accumulates summaries in first-seen order, with an index so each access is O(1). Only the
/// summaries are serialised (daemon hand-over); [`Resources::reindex`] rebuilds the index.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Resources {
    files: Vec<FileSummary>,
    #[serde(skip)]
    file_index: HashMap<(String, String, String), usize>,
    net: Vec<NetSummary>,
    #[serde(skip)]
    net_index: HashMap<NetKey, usize>,
}

type NetKey = (String, String, Option<String>, Option<u16>, Option<String>, String);

impl Resources {
    pub fn add_file(&mut self, path: &str, access: &str, result: &str) {
        let mut key = (path.to_owned(), access.to_owned(), result.to_owned());
        if !self.file_index.contains_key(&key) && self.files.len() >= MAX_DISTINCT {
            key.0 = OTHER_PATHS.to_owned();
        }
        if let Some(&i) = self.file_index.get(&key) {
            self.files[i].count += 1;
            return;
        }
        self.files.push(FileSummary {
            noise: is_noise(&key.0, access),
            path: key.0.clone(),
            access: key.1.clone(),
            result: key.2.clone(),
            count: 1,
        });
        self.file_index.insert(key, self.files.len() - 1);
    }

    pub fn add_net(&mut self, n: &NetSummary) {
        let mut key = (n.op.clone(), n.family.clone(), n.addr.clone(), n.port, n.host.clone(), n.result.clone());
        if !self.net_index.contains_key(&key) && self.net.len() >= MAX_DISTINCT {
            key.2 = Some(OTHER_PATHS.to_owned());
            key.3 = None;
            key.4 = None;
        }
        if let Some(&i) = self.net_index.get(&key) {
            self.net[i].count += 1;
            return;
        }
        self.net.push(NetSummary { addr: key.2.clone(), port: key.3, host: key.4.clone(), count: 1, ..n.clone() });
        self.net_index.insert(key, self.net.len() - 1);
    }

    pub fn reindex(&mut self) {
        self.file_index = self.files.iter().enumerate().map(|(i, f)| ((f.path.clone(), f.access.clone(), f.result.clone()), i)).collect();
        self.net_index =
            self.net.iter().enumerate().map(|(i, n)| ((n.op.clone(), n.family.clone(), n.addr.clone(), n.port, n.host.clone(), n.result.clone()), i)).collect();
    }

    pub fn take(&mut self) -> (Vec<FileSummary>, Vec<NetSummary>) {
        self.file_index.clear();
        self.net_index.clear();
        (std::mem::take(&mut self.files), std::mem::take(&mut self.net))
    }
}

/// Accesses that modify something (`--writes`).
pub const WRITE_ACCESSES: &[&str] =
    &["write", "create", "delete", "rename_from", "rename_to", "mkdir", "link", "chmod", "chown", "truncate"];

/// Noise, stored but folded by default and skipped by `--writes` and the FILES count:
/// - any access to a character device every program touches (`/dev/null`, `/dev/tty`, a
///   terminal, `/dev/urandom`, ...);
/// - reads of shared libraries, locale data and the loader cache.
///
/// `path` must be the resolved path (the kernel's, for opens). A path with a `..` component
/// is never noise: `/usr/lib/../../home/u/.ssh/id_rsa` is not a library.
pub fn is_noise(path: &str, access: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "/lib/", "/lib64/", "/lib32/", "/usr/lib/", "/usr/lib64/", "/usr/lib32/", "/usr/local/lib/",
        "/usr/share/locale/", "/usr/share/zoneinfo/", "/usr/share/i18n/",
    ];
    const FILES: &[&str] = &["/etc/ld.so.cache", "/etc/ld.so.preload", "/etc/localtime", "/etc/locale.alias", "/usr/lib/locale/locale-archive"];
    const DEVICES: &[&str] = &[
        "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/stdin",
        "/dev/stdout", "/dev/stderr",
    ];
    if path.split('/').any(|c| c == "..") {
        return false;
    }
    let terminal = path.strip_prefix("/dev/pts/").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
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
    if ret >= 0 { "ok".into() } else { crate::errno::name((-ret) as i32) }
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
    if op.empty_path {
        set("empty_path", json!(true));
    }
    if op.compat {
        set("compat", json!(true));
    }
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
        nr::OPEN | nr::OPENAT | nr::OPENAT2 | nr::CREAT => {
            let (flags, mode) = match op.nr {
                nr::OPEN => (a[1], a[2]),
                nr::OPENAT => (a[2], a[3]),
                nr::OPENAT2 => (op.how_flags, op.how_mode),
                _ => (0o1101, a[1]),
            };
            let (words, access) = open_access(flags);
            set("mode", json!(words));
            set("flags", json!(format!("{flags:#o}")));
            if flags & O_CREAT != 0 {
                set("perm", json!(format!("{:04o}", mode & 0o7777)));
            }
            if op.ret >= 0 {
                set("fd", json!(op.ret));
            }
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
        _ => {}
    }
    if matches!(op.nr, nr::FCHMOD | nr::FCHOWN | nr::FTRUNCATE) {
        set("fd", json!(a[0] as i32));
    }
    (out, data)
}

pub fn family_name(a: &SockAddr) -> String {
    match a {
        SockAddr::Inet { ip: IpAddr::V4(_), .. } => "ipv4".into(),
        SockAddr::Inet { ip: IpAddr::V6(_), .. } => "ipv6".into(),
        SockAddr::Unix { .. } => "unix".into(),
        SockAddr::Other { family } => format!("family {family}"),
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
    if send && n.sock_type == 1 && (n.fastopen || n.addr.is_some()) { "connect" } else { net_op(n.nr) }
}

/// The summary op of a network syscall (`recv` is only kept raw, for DNS answers).
pub fn net_op(n: u64) -> &'static str {
    match n {
        nr::CONNECT => "connect",
        nr::BIND => "bind",
        nr::LISTEN => "listen",
        nr::ACCEPT | nr::ACCEPT4 => "accept",
        nr::SENDTO | nr::SENDMSG | nr::SENDMMSG => "send",
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
        nr::LISTEN => local.filter(|l| matches!(l, SockAddr::Inet { port, .. } if *port != 0)).or_else(|| known.cloned()),
        nr::ACCEPT | nr::ACCEPT4 => op.addr.clone().filter(meaningful).or(remote.filter(meaningful)).or_else(|| known.cloned()),
        // connect (and a connecting send on a stream socket): the kernel's peer, read from the
        // socket after the call, not the sockaddr re-read from user memory, which another
        // thread may have rewritten. The given address stands in when the socket has none
        // (a failed connect, a unix socket).
        _ if op.nr == nr::CONNECT || (op.sock_type == 1 && matches!(op.nr, nr::SENDTO | nr::SENDMSG | nr::SENDMMSG)) => {
            let peer = remote.filter(|r| matches!(r, SockAddr::Inet { port, .. } if *port != 0));
            peer.or(op.addr.clone().filter(meaningful)).or_else(|| known.cloned())
        }
        _ => op.addr.clone().filter(meaningful).or(remote.filter(|r| meaningful(r) && !matches!(r, SockAddr::Inet { port: 0, .. }))).or_else(|| known.cloned()),
    }
}

/// Whether a DNS message is a response (QR bit), the only kind whose answers are believed.
pub fn is_dns_response(msg: &[u8]) -> bool {
    msg.get(2).is_some_and(|b| b & 0x80 != 0)
}

/// A DNS message's question names and (name, address) answers (A and AAAA).
pub fn parse_dns(msg: &[u8]) -> Option<(Vec<String>, Vec<(String, IpAddr)>)> {
    let u16_at = |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?])) };
    let qd = u16_at(4)?;
    let an = u16_at(6)?;
    let mut pos = 12;
    let mut questions = Vec::new();
    for _ in 0..qd.min(16) {
        let (name, next) = read_name(msg, pos)?;
        questions.push(name);
        pos = next + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..an.min(64) {
        let (_, next) = read_name(msg, pos)?;
        let typ = u16_at(next)?;
        let len = u16_at(next + 8)? as usize;
        let data = msg.get(next + 10..next + 10 + len)?;
        let name = questions.first().cloned().unwrap_or_default();
        match (typ, len) {
            (1, 4) => answers.push((name, IpAddr::from(<[u8; 4]>::try_from(data).ok()?))),
            (28, 16) => answers.push((name, IpAddr::from(<[u8; 16]>::try_from(data).ok()?))),
            _ => {}
        }
        pos = next + 10 + len;
    }
    Some((questions, answers))
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

/// The resolver cache: addresses tagged processes looked up, to their names.
#[derive(Debug, Default)]
#[derive(Serialize, Deserialize)]
pub struct DnsCache {
    names: HashMap<IpAddr, String>,
}

impl DnsCache {
    pub fn learn(&mut self, answers: &[(String, IpAddr)]) {
        // Bounded: a flood of lookups must not grow the daemon without limit.
        if self.names.len() > 65_536 {
            self.names.clear();
        }
        for (name, ip) in answers {
            self.names.insert(*ip, name.clone());
        }
    }

    pub fn host(&self, a: &SockAddr) -> Option<String> {
        match a {
            SockAddr::Inet { ip, .. } => self.names.get(ip).cloned(),
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
            r.add_file("/tmp/x", "read", "ok");
        }
        r.add_file("/tmp/x", "read", "ENOENT");
        r.add_file("/usr/lib/x86_64-linux-gnu/libc.so.6", "read", "ok");
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
            r.add_file(&format!("/data/{i}"), "read", "ok");
        }
        r.add_file("/data/0", "read", "ok");
        let (files, _) = r.take();
        assert_eq!(files.len(), MAX_DISTINCT + 1);
        assert_eq!(files[0].count, 2, "a path already listed keeps counting");
        let other = files.last().expect("overflow entry");
        assert_eq!((other.path.as_str(), other.count), (OTHER_PATHS, 500));
    }

    #[test]
    fn dns_query_and_answer_parse() {
        // Response for svc.test A 127.0.0.2, answer name compressed to the question.
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03svc\x04test\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 2]);
        let (q, a) = parse_dns(&m).expect("parse");
        assert_eq!(q, ["svc.test"]);
        assert_eq!(a, [("svc.test".to_owned(), "127.0.0.2".parse().expect("ip"))]);
        assert!(parse_dns(&m[..20]).is_none_or(|(_, a)| a.is_empty()));
        assert!(parse_dns(&[1, 2]).is_none());
        // A pointer loop ends, it does not hang.
        let mut bad = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        bad.extend_from_slice(&[0xc0, 12]);
        assert!(parse_dns(&bad).is_none());
    }
}
