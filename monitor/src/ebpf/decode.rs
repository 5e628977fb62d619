//! Defensive decoding of ring-buffer records into [`Event`]s. The kernel's bytes are never
//! trusted: the kind is checked, every length is bounded by the record, and structs are read
//! unaligned. A bad record is an error to count, never a panic.

use std::mem::size_of;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use monitor_common::{
    CgroupEvent, EventHeader, EventKind, ExecEvent, ExecFailedEvent, ExitEvent, FileEvent, ForkEvent, IoUringEvent,
    NetEvent, TamperEvent, ARGV_MAX, COMPAT, COMPONENT_MAX, CWD_MAX, DIR1_RESOLVED, DIR1_TRUNCATED, DIR2_RESOLVED,
    DIR2_TRUNCATED, DIR_CAP, EMPTY_PATH, EXEC_ARGV_TRUNCATED, EXEC_CWD_MISSING, EXEC_CWD_TRUNCATED, EXEC_EXE_RESOLVED,
    EXEC_FILENAME_TRUNCATED, EXEC_FIXED_LEN, EXEC_NAME_KERNEL, EXEC_SESSION_START, EXIT_GROUP_DEAD, FD_PATH,
    FILENAME_MAX, FILE_DIR1_OFF, FILE_DIR2_OFF, FILE_PATH1_OFF, FILE_PATH2_OFF, FORK_THREAD, KNAME1, KNAME2, KPATH1,
    KPATH2, NET_ADDR_GIVEN, NET_ADDR_KERNEL, NET_FASTOPEN, NET_PEER_PATH, NET_SOCK_KNOWN, OBJ_FLAGS, OBJ_PATH,
    PATH1_TRUNCATED, PATH2_TRUNCATED, PATH_CAP, PAYLOAD_CAP, ROOT_CHANGED, SCM_FDS, SOCKADDR_CAP, URING_DIR2_OFF,
    URING_DIR_OFF, URING_PATH2_OFF, URING_PATH_OFF, URING_SUBMIT,
};

use crate::text::{escape_bytes, split_argv};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its {need}-byte {what}")]
    Short { what: &'static str, len: usize, need: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("{field} length {len} exceeds its {max}-byte buffer")]
    BadLength { field: &'static str, len: usize, max: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: EventKind,
    pub cpu: u32,
    pub ts_ns: u64,
    pub session_cgroup: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub pid: u32,
    pub start_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Exec(Exec),
    ExecFailed {
        hdr: Header,
        errno: i32,
        uid: u32,
        filename: String,
        filename_truncated: bool,
        /// `filename` is the kernel's copy of the name (fexit mode), not the caller's memory.
        filename_kernel: bool,
    },
    Fork {
        hdr: Header,
        child_tgid: u32,
        child_pid: u32,
        child_start_ns: u64,
        thread: bool,
    },
    Exit {
        hdr: Header,
        /// Raw wait status.
        status: u32,
        group_dead: bool,
    },
    File(FileOp),
    Net(NetOp),
    Tamper(TamperOp),
    IoUring(UringOp),
    Cgroup(CgroupOp),
}

/// A tamper or hand-off act (see `monitor_common::tamper`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TamperOp {
    pub hdr: Header,
    pub what: u32,
    pub nr: u64,
    pub ret: i64,
    pub args: [u64; 6],
    pub target: u32,
    pub compat: bool,
}

/// An `io_uring` submission (`complete == false`) or completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringOp {
    pub hdr: Header,
    pub complete: bool,
    pub opcode: u32,
    pub req: u64,
    pub user_data: u64,
    pub res: i64,
    pub fd: i32,
    pub dfd: i32,
    pub open_flags: u32,
    /// The path the kernel copied in (submission), resolved against `dfd` when relative.
    pub path: Option<PathArg>,
    /// A second path (rename and link: the new name; symlink: the target, as content).
    pub path2: Option<String>,
    /// The second path resolved against its own directory fd (rename and link), when relative.
    pub path2_absolute: Option<String>,
    pub addr: Option<SockAddr>,
    /// `addr` is the kernel's own copy of the destination (cgroup hooks).
    pub addr_kernel: bool,
    /// Completion of an open: the path of the file the kernel opened.
    pub object: Option<String>,
    /// An open into a registered-file slot: the slot (its result is not an fd).
    pub fixed_slot: Option<u32>,
}

/// A path argument as the process gave it, and where it points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathArg {
    /// As passed to the syscall (escaped).
    pub given: String,
    pub truncated: bool,
    /// The absolute path: `given` if absolute, else joined to the directory the kernel
    /// resolved (the cwd or the dirfd's path). `None` when that directory could not be read.
    pub absolute: Option<String>,
    /// `absolute` is the object the kernel acted on, walked from the dentry its
    /// `security_path_*` hook saw (fexit mode), not `given` re-read from user memory and joined.
    pub kernel: bool,
    /// `given` is the kernel's own copy of the name (fexit mode: the VFS function's
    /// `struct filename`), not the caller's memory re-read at exit.
    pub given_kernel: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOp {
    pub hdr: Header,
    pub nr: u64,
    pub ret: i64,
    pub args: [u64; 6],
    pub how_flags: u64,
    pub how_mode: u64,
    pub path1: Option<PathArg>,
    pub path2: Option<PathArg>,
    /// For fchmod/fchown/ftruncate: the path of the file behind the fd.
    pub fd_path: Option<String>,
    /// openat2's `how.resolve`.
    pub how_resolve: u64,
    /// A successful open: the path of the file the kernel actually opened (from the new fd).
    pub object: Option<String>,
    /// The path argument was "" (with `AT_EMPTY_PATH` the dirfd's file itself is the object).
    pub empty_path: bool,
    /// A successful open: the opened file's own `f_flags` (how the kernel opened it).
    pub obj_flags: Option<u32>,
    /// The process had a changed root (`chroot`): absolute paths were resolved against it.
    pub root_changed: bool,
    /// Made through the 32-bit compat entry.
    pub compat: bool,
    /// A `recvmsg` that received fds (`SCM_RIGHTS`): how many, and the fd numbers after the
    /// first (`ret`, whose file is `object`), up to four.
    pub received: Option<(u64, Vec<i32>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SockAddr {
    Inet {
        ip: IpAddr,
        port: u16,
    },
    /// A path, or an abstract name shown as `@name`.
    Unix {
        path: String,
    },
    Other {
        family: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOp {
    pub hdr: Header,
    pub nr: u64,
    pub ret: i64,
    pub fd: i32,
    /// 1 stream, 2 datagram, 0 unknown.
    pub sock_type: u32,
    /// The address the caller passed (connect, bind, sendto) or got back (accept, recvfrom).
    pub addr: Option<SockAddr>,
    /// From the socket: (local, remote).
    pub sock: Option<(SockAddr, SockAddr)>,
    /// UDP payload to or from port 53.
    pub payload: Vec<u8>,
    pub compat: bool,
    /// A send with `MSG_FASTOPEN`.
    pub fastopen: bool,
    /// `addr` is the kernel's own copy of the destination (cgroup hooks), not user memory.
    pub addr_kernel: bool,
    /// `socket()` of a raw or packet socket: (family, protocol).
    pub created: Option<(u16, u16)>,
    /// A unix connect's peer as the kernel found it (fexit mode): the file the listening
    /// socket is bound to, whatever path the caller gave.
    pub peer_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(clippy::struct_excessive_bools, reason = "independent flags of the kernel's record, each a JSON field")]
pub struct Exec {
    pub hdr: Header,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub filename: String,
    pub filename_truncated: bool,
    /// The file the kernel executed (`bprm->file`), from the real root: what `filename` named,
    /// whatever name that was (`/dev/fd/3`, a symlink, a path inside a chroot). `None` when the
    /// walk did not reach the root.
    pub exe: Option<String>,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub argv_full_len: u32,
    /// `None` when the kernel could not read it.
    pub cwd: Option<String>,
    pub cwd_truncated: bool,
    /// This exec matched an exe rule and started the session `hdr.session_cgroup`.
    pub session_start: bool,
}

/// A cgroup created while cgroup rules are on, held pending by the kernel (`hdr.session_cgroup`
/// is its own id) until the daemon matches its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupOp {
    pub hdr: Header,
    pub id: u64,
    pub level: u32,
    /// Relative to the cgroup2 root, starting with `/`.
    pub path: String,
}

impl Event {
    pub fn header(&self) -> &Header {
        match self {
            Event::Exec(e) => &e.hdr,
            Event::ExecFailed { hdr, .. } | Event::Fork { hdr, .. } | Event::Exit { hdr, .. } => hdr,
            Event::File(f) => &f.hdr,
            Event::Net(n) => &n.hdr,
            Event::Tamper(t) => &t.hdr,
            Event::IoUring(u) => &u.hdr,
            Event::Cgroup(c) => &c.hdr,
        }
    }
}

fn read<T: Copy>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short { what, len: bytes.len(), need: size_of::<T>() });
    }
    // SAFETY: length checked above; T is a repr(C) plain-data wire struct.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// A wire struct sent only up to its last used byte: at least `min` bytes must be there; the
/// rest reads as zero.
fn read_prefix<T: Copy>(bytes: &[u8], min: usize, what: &'static str) -> Result<T, DecodeError> {
    if bytes.len() < min {
        return Err(DecodeError::Short { what, len: bytes.len(), need: min });
    }
    let mut full = vec![0u8; size_of::<T>()];
    let n = bytes.len().min(full.len());
    full[..n].copy_from_slice(&bytes[..n]);
    read(&full, what)
}

/// A variable-length field at `off` of a record: it must lie within its `cap` and within what
/// was sent.
fn field_of<'a>(
    bytes: &'a [u8],
    off: usize,
    cap: usize,
    len: u32,
    name: &'static str,
) -> Result<&'a [u8], DecodeError> {
    if len == 0 {
        return Ok(&[]);
    }
    if len as usize > cap || off + len as usize > bytes.len() {
        return Err(DecodeError::BadLength {
            field: name,
            len: len as usize,
            max: cap.min(bytes.len().saturating_sub(off)),
        });
    }
    Ok(&bytes[off..off + len as usize])
}

fn bounded<'a>(buf: &'a [u8], len: u32, field: &'static str) -> Result<&'a [u8], DecodeError> {
    buf.get(..len as usize).ok_or(DecodeError::BadLength { field, len: len as usize, max: buf.len() })
}

/// Turn a cwd buffer (components leaf first, each NUL-terminated) into an absolute path.
fn cwd_path(buf: &[u8]) -> String {
    let mut parts: Vec<&[u8]> = buf.split(|&b| b == 0).filter(|c| !c.is_empty()).collect();
    parts.reverse();
    let mut path = String::new();
    for p in parts {
        path.push('/');
        path.push_str(&escape_bytes(p));
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

fn header(raw: &EventHeader, kind: EventKind) -> Header {
    Header {
        kind,
        cpu: raw.cpu,
        ts_ns: raw.ts_ns,
        session_cgroup: raw.session_cgroup,
        cgroup_id: raw.cgroup_id,
        tgid: raw.tgid,
        pid: raw.pid,
        start_ns: raw.start_ns,
    }
}

/// Join a kernel-resolved directory and a relative path; `.` components are dropped, `..` kept
/// (the kernel may have crossed a symlink, so it is not ours to collapse).
pub fn join_path(dir: &str, rel: &str) -> String {
    let mut out = dir.trim_end_matches('/').to_owned();
    for part in rel.split('/').filter(|p| !p.is_empty() && *p != ".") {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// A path as given, and its absolute form: joined to `dir` when relative, or when absolute in
/// a changed root (`dir` is then that root, walked from the real one).
fn path_arg(path: &[u8], truncated: bool, dir: Option<&[u8]>) -> PathArg {
    let given = escape_bytes(path);
    let absolute = match dir {
        Some(d) if path.first() != Some(&b'/') || !d.is_empty() => Some(join_path(&cwd_path(d), &given)),
        _ if path.first() == Some(&b'/') => Some(given.clone()),
        _ => None,
    };
    PathArg { given, truncated, absolute, kernel: false, given_kernel: false }
}

/// Parse a `struct sockaddr` as the kernel or the caller wrote it.
pub fn parse_sockaddr(b: &[u8]) -> Option<SockAddr> {
    let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]);
    Some(match family {
        1 => {
            let rest = &b[2..];
            if rest.first() == Some(&0) {
                let name = &rest[1..];
                SockAddr::Unix { path: format!("@{}", escape_bytes(name.split(|&c| c == 0).next().unwrap_or(name))) }
            } else {
                let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
                SockAddr::Unix { path: escape_bytes(&rest[..end]) }
            }
        }
        2 => {
            let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
            let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            SockAddr::Inet { ip: IpAddr::V4(Ipv4Addr::from(ip)), port }
        }
        10 => {
            let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
            let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            SockAddr::Inet { ip: inet6(ip), port }
        }
        f => SockAddr::Other { family: f },
    })
}

/// IPv6, with v4-mapped addresses shown as IPv4.
fn inet6(ip: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(ip);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

fn sock_side(family: u16, addr: [u8; 16], port: u16) -> SockAddr {
    match family {
        2 => SockAddr::Inet { ip: IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])), port },
        10 => SockAddr::Inet { ip: inet6(addr), port },
        1 => SockAddr::Unix { path: String::new() },
        f => SockAddr::Other { family: f },
    }
}

fn decode_file(hdr: Header, bytes: &[u8]) -> Result<Event, DecodeError> {
    let ev: FileEvent = read_prefix(bytes, FILE_PATH1_OFF, "file event")?;
    let field = |off, cap, len, name| field_of(bytes, off, cap, len, name);
    let p1 = field(FILE_PATH1_OFF, PATH_CAP, ev.path1_len, "path1")?;
    // A successful open: the real path follows the given one directly, `dir1_len` long.
    let obj = ev.flags & OBJ_PATH != 0;
    let obj_bytes = if obj { field(FILE_PATH1_OFF + p1.len(), DIR_CAP, ev.dir1_len, "object")? } else { &[] };
    let d1 = if obj { &[][..] } else { field(FILE_DIR1_OFF, DIR_CAP, ev.dir1_len, "dir1")? };
    let p2 = field(FILE_PATH2_OFF, PATH_CAP, ev.path2_len, "path2")?;
    let d2 = field(FILE_DIR2_OFF, DIR_CAP, ev.dir2_len, "dir2")?;
    let dir = |bit: u32, trunc: u32, d: &[u8]| -> Option<Vec<u8>> {
        (ev.flags & bit != 0 && ev.flags & trunc == 0).then(|| d.to_vec())
    };
    let fd_path = (ev.flags & FD_PATH != 0 && ev.flags & DIR1_TRUNCATED == 0).then(|| cwd_path(d1));
    let has_path1 = monitor_common::nr::file_layout(u64::from(ev.nr)).is_some_and(|l| l.0 >= 0);
    // The kernel's own object (fexit mode, `KPATH*`): the whole path, walked from its dentry.
    let kernel = |p: &[u8], trunc: u32, d: &[u8]| PathArg {
        given: escape_bytes(p),
        truncated: ev.flags & trunc != 0,
        absolute: Some(cwd_path(d)),
        kernel: true,
        given_kernel: false,
    };
    let path1 = has_path1.then(|| {
        let arg = if ev.flags & KPATH1 != 0 {
            kernel(p1, PATH1_TRUNCATED, d1)
        } else {
            path_arg(p1, ev.flags & PATH1_TRUNCATED != 0, dir(DIR1_RESOLVED, DIR1_TRUNCATED, d1).as_deref())
        };
        PathArg { given_kernel: ev.flags & KNAME1 != 0, ..arg }
    });
    let object = obj.then(|| cwd_path(obj_bytes));
    let path2 = (ev.path2_len > 0 && object.is_none()).then(|| {
        let arg = if ev.flags & KPATH2 != 0 {
            kernel(p2, PATH2_TRUNCATED, d2)
        } else {
            path_arg(p2, ev.flags & PATH2_TRUNCATED != 0, dir(DIR2_RESOLVED, DIR2_TRUNCATED, d2).as_deref())
        };
        PathArg { given_kernel: ev.flags & KNAME2 != 0, ..arg }
    });
    Ok(Event::File(FileOp {
        hdr,
        nr: u64::from(ev.nr),
        ret: ev.ret,
        args: ev.args,
        how_flags: ev.how_flags,
        how_mode: ev.how_mode,
        path1,
        path2,
        fd_path,
        how_resolve: ev.how_resolve,
        object,
        empty_path: ev.flags & EMPTY_PATH != 0,
        obj_flags: (ev.flags & OBJ_FLAGS != 0).then_some(ev.obj_flags),
        root_changed: ev.flags & ROOT_CHANGED != 0,
        compat: ev.flags & COMPAT != 0,
        received: (ev.flags & SCM_FDS != 0).then(|| {
            let words = [ev.how_mode, ev.how_resolve];
            let more = words.iter().flat_map(|w| [*w as u32 as i32, (*w >> 32) as u32 as i32]);
            let listed = ev.how_flags.saturating_sub(1).min(4) as usize;
            (ev.how_flags, more.take(listed).collect())
        }),
    }))
}

fn decode_tamper(hdr: Header, bytes: &[u8]) -> Result<Event, DecodeError> {
    let ev: TamperEvent = read(bytes, "tamper event")?;
    Ok(Event::Tamper(TamperOp {
        hdr,
        what: ev.what,
        nr: u64::from(ev.nr),
        ret: ev.ret,
        args: ev.args,
        target: ev.target,
        compat: ev.flags & COMPAT != 0,
    }))
}

fn decode_uring(hdr: Header, bytes: &[u8]) -> Result<Event, DecodeError> {
    let ev: IoUringEvent = read_prefix(bytes, URING_PATH_OFF, "io_uring event")?;
    let field = |off, cap, len, name| field_of(bytes, off, cap, len, name);
    if ev.addr_len as usize > SOCKADDR_CAP {
        return Err(DecodeError::BadLength { field: "addr", len: ev.addr_len as usize, max: SOCKADDR_CAP });
    }
    let obj = ev.flags & OBJ_PATH != 0;
    // A completed open: the real path is in `path`, `dir_len` long.
    let p = field(
        URING_PATH_OFF,
        if obj { DIR_CAP } else { PATH_CAP },
        if obj { ev.dir_len } else { ev.path_len },
        "path",
    )?;
    let p2 = field(URING_PATH2_OFF, PATH_CAP, ev.path2_len, "path2")?;
    let d = if obj { &[][..] } else { field(URING_DIR_OFF, DIR_CAP, ev.dir_len, "dir")? };
    let d2 = field(URING_DIR2_OFF, DIR_CAP, ev.dir2_len, "dir2")?;
    let complete = ev.phase != URING_SUBMIT;
    let path2_absolute = (ev.path2_len > 0).then(|| {
        let dir2 = (ev.flags & DIR2_RESOLVED != 0 && ev.flags & DIR2_TRUNCATED == 0).then_some(d2);
        path_arg(p2, ev.flags & PATH2_TRUNCATED != 0, dir2).absolute
    });
    let has_path = !complete && (ev.path_len > 0 || ev.flags & DIR1_RESOLVED != 0);
    let dir = (ev.flags & DIR1_RESOLVED != 0 && ev.flags & DIR1_TRUNCATED == 0).then_some(d);
    Ok(Event::IoUring(UringOp {
        hdr,
        complete,
        opcode: ev.opcode,
        req: ev.req,
        user_data: ev.user_data,
        res: ev.res,
        fd: ev.fd,
        dfd: ev.dfd,
        open_flags: ev.open_flags,
        path: has_path.then(|| path_arg(p, ev.flags & PATH1_TRUNCATED != 0, dir)),
        path2: (ev.path2_len > 0).then(|| escape_bytes(p2)),
        path2_absolute: path2_absolute.flatten(),
        addr: (ev.flags & NET_ADDR_GIVEN != 0).then(|| parse_sockaddr(&ev.addr[..ev.addr_len as usize])).flatten(),
        addr_kernel: ev.flags & NET_ADDR_KERNEL != 0,
        object: obj.then(|| cwd_path(p)),
        fixed_slot: (ev.file_slot != 0).then(|| ev.file_slot - 1),
    }))
}

fn decode_net(hdr: Header, bytes: &[u8]) -> Result<Event, DecodeError> {
    let ev: NetEvent = read(bytes, "net event")?;
    if ev.addr_len as usize > SOCKADDR_CAP {
        return Err(DecodeError::BadLength { field: "addr", len: ev.addr_len as usize, max: SOCKADDR_CAP });
    }
    if ev.payload_len as usize > PAYLOAD_CAP {
        return Err(DecodeError::BadLength { field: "payload", len: ev.payload_len as usize, max: PAYLOAD_CAP });
    }
    let addr = (ev.flags & NET_ADDR_GIVEN != 0).then(|| parse_sockaddr(&ev.addr[..ev.addr_len as usize])).flatten();
    let sock = (ev.flags & NET_SOCK_KNOWN != 0).then(|| {
        (sock_side(ev.sk_family, ev.sk_laddr, ev.sk_lport), sock_side(ev.sk_family, ev.sk_raddr, ev.sk_rport))
    });
    let peer = ev.flags & NET_PEER_PATH != 0;
    let payload = &ev.payload[..ev.payload_len as usize];
    Ok(Event::Net(NetOp {
        hdr,
        nr: u64::from(ev.nr),
        ret: ev.ret,
        fd: ev.fd,
        sock_type: ev.sock_type,
        addr,
        sock,
        payload: if peer { Vec::new() } else { payload.to_vec() },
        peer_path: peer.then(|| cwd_path(payload)),
        compat: ev.flags & COMPAT != 0,
        fastopen: ev.flags & NET_FASTOPEN != 0,
        addr_kernel: ev.flags & NET_ADDR_KERNEL != 0,
        created: (u64::from(ev.nr) == monitor_common::nr::SOCKET).then_some((ev.sk_family, ev.proto)),
    }))
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let raw: EventHeader = read(bytes, "header")?;
    let kind = EventKind::try_from(raw.kind).map_err(DecodeError::UnknownKind)?;
    let hdr = header(&raw, kind);
    Ok(match kind {
        EventKind::Exec => {
            // The fixed part must be there: the argv tail is as long as the record says.
            let ev: ExecEvent = read_prefix(bytes, EXEC_FIXED_LEN, "exec event")?;
            let tail = &bytes[EXEC_FIXED_LEN..];
            if ev.argv_len as usize > tail.len() || ev.argv_len as usize > ARGV_MAX {
                return Err(DecodeError::BadLength { field: "argv", len: ev.argv_len as usize, max: tail.len() });
            }
            let filename = bounded(&ev.filename, ev.filename_len, "filename")?;
            let cwd = bounded(&ev.cwd[..CWD_MAX + COMPONENT_MAX], ev.cwd_len, "cwd")?;
            let exe = bounded(&ev.exe[..CWD_MAX + COMPONENT_MAX], ev.exe_len, "exe")?;
            Event::Exec(Exec {
                hdr,
                ppid: ev.ppid,
                uid: ev.uid,
                gid: ev.gid,
                filename: escape_bytes(filename),
                filename_truncated: ev.flags & EXEC_FILENAME_TRUNCATED != 0,
                exe: (ev.flags & EXEC_EXE_RESOLVED != 0).then(|| cwd_path(exe)),
                argv: split_argv(&tail[..ev.argv_len as usize]),
                argv_truncated: ev.flags & EXEC_ARGV_TRUNCATED != 0,
                argv_full_len: ev.argv_full_len,
                cwd: (ev.flags & EXEC_CWD_MISSING == 0).then(|| cwd_path(cwd)),
                cwd_truncated: ev.flags & EXEC_CWD_TRUNCATED != 0,
                session_start: ev.flags & EXEC_SESSION_START != 0,
            })
        }
        EventKind::ExecFailed => {
            let ev: ExecFailedEvent = read(bytes, "exec-failed event")?;
            let filename = bounded(&ev.filename[..FILENAME_MAX], ev.filename_len, "filename")?;
            Event::ExecFailed {
                hdr,
                errno: ev.errno,
                uid: ev.uid,
                filename: escape_bytes(filename),
                filename_truncated: ev.flags & EXEC_FILENAME_TRUNCATED != 0,
                filename_kernel: ev.flags & EXEC_NAME_KERNEL != 0,
            }
        }
        EventKind::Fork => {
            let ev: ForkEvent = read(bytes, "fork event")?;
            Event::Fork {
                hdr,
                child_tgid: ev.child_tgid,
                child_pid: ev.child_pid,
                child_start_ns: ev.child_start_ns,
                thread: ev.flags & FORK_THREAD != 0,
            }
        }
        EventKind::Exit => {
            let ev: ExitEvent = read(bytes, "exit event")?;
            Event::Exit { hdr, status: ev.exit_code, group_dead: ev.flags & EXIT_GROUP_DEAD != 0 }
        }
        EventKind::File => return decode_file(hdr, bytes),
        EventKind::Net => return decode_net(hdr, bytes),
        EventKind::Tamper => return decode_tamper(hdr, bytes),
        EventKind::IoUring => return decode_uring(hdr, bytes),
        EventKind::Cgroup => {
            let ev: CgroupEvent = read(bytes, "cgroup event")?;
            let path = bounded(&ev.path, ev.path_len, "cgroup path")?;
            Event::Cgroup(CgroupOp {
                hdr,
                id: ev.id,
                level: ev.level,
                path: String::from_utf8_lossy(path).into_owned(),
            })
        }
    })
}

/// Byte images of wire structs, for tests here and in `correlate`.
#[cfg(test)]
pub(crate) mod wire {
    use super::*;

    pub fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is a repr(C) plain-data wire struct.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    pub fn hdr(kind: EventKind, tgid: u32) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            tgid,
            pid: tgid,
            session_cgroup: 7,
            ts_ns: 1_000,
            start_ns: 500,
            ..Default::default()
        }
    }

    /// An exec record as the kernel sends it: fixed part plus `argv` bytes.
    pub fn exec(tgid: u32, argv: &[u8], cwd_leaf_first: &[u8], filename: &[u8]) -> Vec<u8> {
        // SAFETY: all-zero is a valid ExecEvent.
        let mut ev: ExecEvent = unsafe { std::mem::zeroed() };
        ev.hdr = hdr(EventKind::Exec, tgid);
        ev.filename[..filename.len()].copy_from_slice(filename);
        ev.filename_len = filename.len() as u32;
        ev.cwd[..cwd_leaf_first.len()].copy_from_slice(cwd_leaf_first);
        ev.cwd_len = cwd_leaf_first.len() as u32;
        ev.argv[..argv.len()].copy_from_slice(argv);
        ev.argv_len = argv.len() as u32;
        ev.argv_full_len = argv.len() as u32;
        let mut b = bytes_of(&ev);
        b.truncate(EXEC_FIXED_LEN + argv.len());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::wire::*;
    use super::*;

    #[test]
    fn exec_round_trip() {
        let b = exec(42, b"/bin/echo\0a\0b c\0", b"sub\0tmp\0", b"/bin/echo");
        let Event::Exec(e) = decode(&b).expect("decode") else { panic!("not exec") };
        assert_eq!(e.hdr.tgid, 42);
        assert_eq!(e.argv, ["/bin/echo", "a", "b c"]);
        assert_eq!(e.cwd.as_deref(), Some("/tmp/sub"));
        assert_eq!(e.filename, "/bin/echo");
        assert!(!e.argv_truncated);
    }

    #[test]
    fn root_cwd_and_missing_cwd() {
        let b = exec(1, b"x\0", b"", b"x");
        let Event::Exec(e) = decode(&b).expect("decode") else { panic!() };
        assert_eq!(e.cwd.as_deref(), Some("/"));
        let mut ev: ExecEvent = read(
            &{
                let mut f = b.clone();
                f.resize(size_of::<ExecEvent>(), 0);
                f
            },
            "x",
        )
        .expect("read");
        ev.flags = EXEC_CWD_MISSING | EXEC_ARGV_TRUNCATED;
        let mut b2 = bytes_of(&ev);
        b2.truncate(EXEC_FIXED_LEN + 2);
        let Event::Exec(e) = decode(&b2).expect("decode") else { panic!() };
        assert_eq!(e.cwd, None);
        assert!(e.argv_truncated);
    }

    #[test]
    fn rejects_bad_lengths() {
        // argv_len claims more than the record holds.
        let mut b = exec(1, b"abc\0", b"", b"x");
        b.truncate(b.len() - 2);
        assert!(matches!(decode(&b), Err(DecodeError::BadLength { field: "argv", .. })));
        // filename_len past its buffer.
        let mut ev: ExecFailedEvent = unsafe { std::mem::zeroed() };
        ev.hdr = hdr(EventKind::ExecFailed, 3);
        ev.filename_len = FILENAME_MAX as u32 + 1;
        assert!(matches!(decode(&bytes_of(&ev)), Err(DecodeError::BadLength { field: "filename", .. })));
        // A failed exec named by the kernel's copy (fexit mode).
        ev.filename[..4].copy_from_slice(b"AAAA");
        ev.filename_len = 4;
        ev.flags = EXEC_NAME_KERNEL;
        let Ok(Event::ExecFailed { filename, filename_kernel, .. }) = decode(&bytes_of(&ev)) else { panic!("decode") };
        assert_eq!((filename.as_str(), filename_kernel), ("AAAA", true));
        // Records shorter than their struct.
        assert!(matches!(decode(&[1, 0, 0]), Err(DecodeError::Short { .. })));
        let fork = bytes_of(&ForkEvent { hdr: hdr(EventKind::Fork, 1), ..Default::default() });
        assert!(matches!(decode(&fork[..60]), Err(DecodeError::Short { .. })));
        let exec_short = exec(1, b"", b"", b"");
        assert!(matches!(decode(&exec_short[..100]), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn sockaddrs_parse() {
        let mut v4 = vec![2, 0, 0x1f, 0x90, 127, 0, 0, 1];
        v4.resize(16, 0);
        assert_eq!(parse_sockaddr(&v4), Some(SockAddr::Inet { ip: "127.0.0.1".parse().expect("ip"), port: 8080 }));
        let mut mapped = vec![10, 0, 0, 80, 0, 0, 0, 0];
        mapped.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]);
        assert_eq!(
            parse_sockaddr(&mapped),
            Some(SockAddr::Inet { ip: "10.1.2.3".parse().expect("ip"), port: 80 }),
            "v4-mapped shown as IPv4"
        );
        let mut v6 = vec![10, 0, 0, 53, 0, 0, 0, 0];
        v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(parse_sockaddr(&v6), Some(SockAddr::Inet { ip: "::1".parse().expect("ip"), port: 53 }));
        assert_eq!(parse_sockaddr(b"\x01\x00/run/x.sock\0junk"), Some(SockAddr::Unix { path: "/run/x.sock".into() }));
        assert_eq!(parse_sockaddr(b"\x01\x00\0abstract"), Some(SockAddr::Unix { path: "@abstract".into() }));
        assert_eq!(parse_sockaddr(&[2, 0, 1]), None, "short");
        assert_eq!(parse_sockaddr(&[16, 0]), Some(SockAddr::Other { family: 16 }));
    }

    #[test]
    fn file_event_paths_resolve_or_say_they_did_not() {
        let mut ev: FileEvent = unsafe { std::mem::zeroed() };
        ev.hdr = hdr(EventKind::File, 9);
        ev.nr = monitor_common::nr::OPENAT as u32;
        ev.ret = 3;
        ev.path1[..5].copy_from_slice(b"a/b.c");
        ev.path1_len = 5;
        ev.dir1[..9].copy_from_slice(b"sub\0work\0");
        ev.dir1_len = 9;
        ev.flags = monitor_common::DIR1_RESOLVED;
        let mut b = bytes_of(&ev);
        b.truncate(FILE_DIR1_OFF + 9);
        let Ok(Event::File(f)) = decode(&b) else { panic!("decode") };
        let p = f.path1.expect("path1");
        assert_eq!((p.given.as_str(), p.absolute.as_deref()), ("a/b.c", Some("/work/sub/a/b.c")));
        // The directory walk did not finish: no absolute path, rather than a guess.
        ev.flags |= monitor_common::DIR1_TRUNCATED;
        let mut b = bytes_of(&ev);
        b.truncate(FILE_DIR1_OFF + 9);
        let Ok(Event::File(f)) = decode(&b) else { panic!("decode") };
        assert_eq!(f.path1.expect("path1").absolute, None);
        // A length past what was sent is rejected.
        b.truncate(FILE_DIR1_OFF + 4);
        assert!(matches!(decode(&b), Err(DecodeError::BadLength { field: "dir1", .. })));
        assert_eq!(join_path("/a/b", "./c//d"), "/a/b/c/d");
        assert_eq!(join_path("/", "x"), "/x");
    }

    #[test]
    fn a_successful_open_carries_the_real_file_right_after_the_given_path() {
        let mut ev: FileEvent = unsafe { std::mem::zeroed() };
        ev.hdr = hdr(EventKind::File, 9);
        ev.nr = monitor_common::nr::OPENAT as u32;
        ev.ret = 3;
        ev.path1[..4].copy_from_slice(b"link");
        ev.path1_len = 4;
        ev.path1[4..14].copy_from_slice(b"real\0work\0");
        ev.dir1_len = 10;
        ev.flags = OBJ_PATH;
        let mut b = bytes_of(&ev);
        b.truncate(FILE_PATH1_OFF + 14);
        let Ok(Event::File(f)) = decode(&b) else { panic!("decode") };
        assert_eq!(f.object.as_deref(), Some("/work/real"));
        assert_eq!(f.path1.expect("path1").given, "link");
        b.truncate(FILE_PATH1_OFF + 10);
        assert!(matches!(decode(&b), Err(DecodeError::BadLength { field: "object", .. })));
    }

    #[test]
    fn the_kernels_paths_name_a_rename_whatever_its_arguments_say_by_exit() {
        // A rename whose given names were rewritten during the call: the kernel's hook saw
        // /work/real (leaf first in dir1) and /work/new (in dir2).
        let mut ev: FileEvent = unsafe { std::mem::zeroed() };
        ev.hdr = hdr(EventKind::File, 9);
        ev.nr = monitor_common::nr::RENAME as u32;
        ev.path1[..5].copy_from_slice(b"decoy");
        ev.path1_len = 5;
        ev.dir1[..10].copy_from_slice(b"real\0work\0");
        ev.dir1_len = 10;
        ev.path2[..2].copy_from_slice(b"zz");
        ev.path2_len = 2;
        ev.dir2[..9].copy_from_slice(b"new\0work\0");
        ev.dir2_len = 9;
        ev.flags = KPATH1 | KPATH2;
        let mut b = bytes_of(&ev);
        b.truncate(FILE_DIR2_OFF + 9);
        let Ok(Event::File(f)) = decode(&b) else { panic!("decode") };
        let (p1, p2) = (f.path1.expect("path1"), f.path2.expect("path2"));
        assert_eq!((p1.given.as_str(), p1.absolute.as_deref(), p1.kernel), ("decoy", Some("/work/real"), true));
        assert_eq!((p2.given.as_str(), p2.absolute.as_deref(), p2.kernel), ("zz", Some("/work/new"), true));
        // Without the flags the same bytes are directories the given names are joined to.
        ev.flags = DIR1_RESOLVED | DIR2_RESOLVED;
        let mut b = bytes_of(&ev);
        b.truncate(FILE_DIR2_OFF + 9);
        let Ok(Event::File(f)) = decode(&b) else { panic!("decode") };
        let p1 = f.path1.expect("path1");
        assert_eq!((p1.absolute.as_deref(), p1.kernel), (Some("/work/real/decoy"), false));
    }

    #[test]
    fn a_failed_unlinks_name_is_marked_as_the_kernels_copy() {
        // fexit mode, a failed unlink (no security_path hook ran): the name is the kernel's copy
        // (KNAME1), joined to the cwd the kernel walked; a rename's second name (KNAME2) too.
        let mut ev: FileEvent = unsafe { std::mem::zeroed() };
        ev.hdr = hdr(EventKind::File, 9);
        ev.nr = monitor_common::nr::UNLINK as u32;
        ev.ret = -2;
        ev.path1[..4].copy_from_slice(b"AAAA");
        ev.path1_len = 4;
        ev.dir1[..5].copy_from_slice(b"work\0");
        ev.dir1_len = 5;
        ev.flags = DIR1_RESOLVED | KNAME1;
        let mut b = bytes_of(&ev);
        b.truncate(FILE_DIR1_OFF + 5);
        let Ok(Event::File(f)) = decode(&b) else { panic!("decode") };
        let p1 = f.path1.expect("path1");
        assert_eq!((p1.absolute.as_deref(), p1.kernel, p1.given_kernel), (Some("/work/AAAA"), false, true));
        ev.flags = DIR1_RESOLVED;
        let mut b = bytes_of(&ev);
        b.truncate(FILE_DIR1_OFF + 5);
        let Ok(Event::File(f)) = decode(&b) else { panic!("decode") };
        assert!(!f.path1.expect("path1").given_kernel, "without the flag: the caller's memory");
        ev.nr = monitor_common::nr::RENAME as u32;
        ev.path2[..2].copy_from_slice(b"zz");
        ev.path2_len = 2;
        ev.flags = KPATH1 | KNAME1 | KNAME2;
        let mut b = bytes_of(&ev);
        b.truncate(FILE_PATH2_OFF + 2);
        let Ok(Event::File(f)) = decode(&b) else { panic!("decode") };
        let (p1, p2) = (f.path1.expect("path1"), f.path2.expect("path2"));
        assert!(p1.kernel && p1.given_kernel && !p2.kernel && p2.given_kernel, "{p1:?} {p2:?}");
    }

    #[test]
    fn received_fds_carry_the_first_file_the_count_and_the_next_numbers() {
        let mut ev: FileEvent = unsafe { std::mem::zeroed() };
        ev.hdr = hdr(EventKind::File, 9);
        ev.nr = monitor_common::nr::RECVMSG as u32;
        ev.ret = 5;
        ev.path1[..10].copy_from_slice(b"key\0.ssh\0\0");
        ev.dir1_len = 9;
        ev.flags = OBJ_PATH | OBJ_FLAGS | SCM_FDS;
        ev.how_flags = 7;
        ev.how_mode = 6 | (7 << 32);
        ev.how_resolve = 8 | (u64::from(u32::MAX) << 32);
        let b = bytes_of(&ev);
        let Ok(Event::File(f)) = decode(&b[..FILE_PATH1_OFF + 9]) else { panic!("decode") };
        assert_eq!((f.object.as_deref(), f.path1.is_none(), f.ret), (Some("/.ssh/key"), true, 5));
        // Seven came: the four after the first are listed; the rest only counted.
        assert_eq!(f.received, Some((7, vec![6, 7, 8, -1])));
        ev.how_flags = 2;
        let b = bytes_of(&ev);
        let Ok(Event::File(f)) = decode(&b[..FILE_PATH1_OFF + 9]) else { panic!("decode") };
        assert_eq!(f.received, Some((2, vec![6])));
        let (accesses, data) = crate::correlate::resources::file_accesses(&f);
        assert_eq!(accesses, [("/.ssh/key".to_owned(), "received")]);
        assert_eq!((data["fds_received"].clone(), data["more_fds"].clone()), (2.into(), serde_json::json!([6])));
        assert_eq!((data["scm_rights"].clone(), data["fd"].clone()), (true.into(), 5.into()));
    }

    #[test]
    fn tamper_and_io_uring_events_decode() {
        let t = TamperEvent {
            hdr: hdr(EventKind::Tamper, 4),
            what: monitor_common::tamper::HANDOFF,
            nr: 101,
            ret: 0,
            args: [16, 77, 0, 0, 0, 0],
            target: 77,
            flags: COMPAT,
        };
        let Ok(Event::Tamper(op)) = decode(&bytes_of(&t)) else { panic!("tamper") };
        assert_eq!((op.what, op.nr, op.target, op.compat), (monitor_common::tamper::HANDOFF, 101, 77, true));
        // SAFETY: all-zero is a valid IoUringEvent.
        let mut u: IoUringEvent = unsafe { std::mem::zeroed() };
        u.hdr = hdr(EventKind::IoUring, 4);
        u.opcode = monitor_common::uring::OPENAT;
        u.req = 0xabc;
        u.path[..5].copy_from_slice(b"x.txt");
        u.path_len = 5;
        u.dir[..5].copy_from_slice(b"tmp\0\0");
        u.dir_len = 4;
        u.flags = DIR1_RESOLVED;
        let mut b = bytes_of(&u);
        b.truncate(URING_DIR_OFF + 4);
        let Ok(Event::IoUring(op)) = decode(&b) else { panic!("io_uring") };
        assert!(!op.complete);
        assert_eq!(op.path.expect("path").absolute.as_deref(), Some("/tmp/x.txt"));
        // A completion of an open: the real file.
        // A path length past the record is rejected, not trusted.
        b.truncate(URING_DIR_OFF + 2);
        assert!(matches!(decode(&b), Err(DecodeError::BadLength { field: "dir", .. })));
        // A completion of an open: the real file, in `path`.
        u.phase = monitor_common::URING_COMPLETE;
        u.path_len = 0;
        u.path[..4].copy_from_slice(b"tmp\0");
        u.dir_len = 4;
        u.flags = OBJ_PATH;
        u.res = 5;
        let mut b = bytes_of(&u);
        b.truncate(URING_PATH_OFF + 4);
        let Ok(Event::IoUring(op)) = decode(&b) else { panic!("io_uring") };
        assert_eq!((op.complete, op.res, op.object.as_deref()), (true, 5, Some("/tmp")));
    }

    #[test]
    fn compat_numbers_map_to_their_64_bit_twins() {
        use monitor_common::nr;
        assert_eq!(nr::from_compat(5), Some(nr::OPEN));
        assert_eq!(nr::from_compat(295), Some(nr::OPENAT));
        assert_eq!(nr::from_compat(362), Some(nr::CONNECT));
        assert_eq!(nr::from_compat(357), Some(nr::BPF));
        assert_eq!(nr::from_compat(20), None, "getpid is not captured");
        assert_eq!(nr::from_socketcall(3), Some(nr::CONNECT));
        assert_eq!(nr::from_socketcall(1), Some(nr::SOCKET), "socket(): raw and packet sockets are recorded");
        assert_eq!(nr::from_socketcall(9), None, "send() names no destination");
        assert_eq!(nr::from_compat(61), Some(nr::CHROOT));
        assert_eq!(nr::from_compat(350), Some(nr::FINIT_MODULE));
    }

    #[test]
    fn rejects_unknown_kind() {
        let mut h = hdr(EventKind::Exit, 1);
        h.kind = 99;
        let mut b = bytes_of(&ExitEvent { hdr: h, ..Default::default() });
        assert_eq!(decode(&b), Err(DecodeError::UnknownKind(99)));
        h.kind = 0;
        b = bytes_of(&ExitEvent { hdr: h, ..Default::default() });
        assert_eq!(decode(&b), Err(DecodeError::UnknownKind(0)));
    }

    #[test]
    fn fork_and_exit_flags() {
        let f = bytes_of(&ForkEvent {
            hdr: hdr(EventKind::Fork, 5),
            child_tgid: 5,
            child_pid: 6,
            flags: FORK_THREAD,
            ..Default::default()
        });
        assert!(matches!(decode(&f), Ok(Event::Fork { thread: true, child_pid: 6, .. })));
        let x = bytes_of(&ExitEvent { hdr: hdr(EventKind::Exit, 5), exit_code: 0x300, flags: EXIT_GROUP_DEAD });
        assert!(matches!(decode(&x), Ok(Event::Exit { status: 0x300, group_dead: true, .. })));
    }

    #[test]
    fn rule_events_decode() {
        // An exec that starts a session by an exe rule.
        let mut b = exec(9, b"/opt/agent\0", b"", b"/opt/agent");
        let mut ev: ExecEvent = read(
            &{
                let mut f = b.clone();
                f.resize(size_of::<ExecEvent>(), 0);
                f
            },
            "x",
        )
        .expect("read");
        ev.flags = EXEC_SESSION_START;
        ev.hdr.session_cgroup = monitor_common::exe_session_id(9, 1234);
        let tail = b.split_off(EXEC_FIXED_LEN);
        let mut b2 = bytes_of(&ev);
        b2.truncate(EXEC_FIXED_LEN);
        b2.extend(tail);
        let Event::Exec(e) = decode(&b2).expect("decode") else { panic!("exec") };
        assert!(e.session_start);
        assert_eq!(e.hdr.session_cgroup & monitor_common::EXE_SESSION, monitor_common::EXE_SESSION);
        assert_ne!(
            monitor_common::exe_session_id(9, 1234),
            monitor_common::exe_session_id(9, 1235),
            "a reused pid gets another id"
        );
        // A new cgroup held pending.
        // SAFETY: all-zero is a valid CgroupEvent.
        let mut c: CgroupEvent = unsafe { std::mem::zeroed() };
        c.hdr = hdr(EventKind::Cgroup, 1);
        c.id = 4242;
        c.level = 2;
        c.path[..12].copy_from_slice(b"/a.slice/b.s");
        c.path_len = 12;
        let Event::Cgroup(op) = decode(&bytes_of(&c)).expect("decode") else { panic!("cgroup") };
        assert_eq!((op.id, op.level, op.path.as_str()), (4242, 2, "/a.slice/b.s"));
        c.path_len = monitor_common::CGROUP_PATH_MAX as u32 + 1;
        assert!(matches!(decode(&bytes_of(&c)), Err(DecodeError::BadLength { .. })));
    }
}
