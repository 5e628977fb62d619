//! Defensive decoding of ring-buffer records into [`Event`]s. The kernel's bytes are never
//! trusted: the kind is checked, every length is bounded by the record, and structs are read
//! unaligned. A bad record is an error to count, never a panic.

use std::mem::size_of;

use monitor_common::{
    ARGV_MAX, COMPONENT_MAX, CWD_MAX, EXEC_ARGV_TRUNCATED, EXEC_CWD_MISSING, EXEC_CWD_TRUNCATED,
    EXEC_FILENAME_TRUNCATED, EXEC_FIXED_LEN, EXIT_GROUP_DEAD, EventHeader, EventKind, ExecEvent,
    ExecFailedEvent, ExitEvent, FILENAME_MAX, FORK_THREAD, ForkEvent,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub hdr: Header,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub filename: String,
    pub filename_truncated: bool,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub argv_full_len: u32,
    /// `None` when the kernel could not read it.
    pub cwd: Option<String>,
    pub cwd_truncated: bool,
}

impl Event {
    pub fn header(&self) -> &Header {
        match self {
            Event::Exec(e) => &e.hdr,
            Event::ExecFailed { hdr, .. } | Event::Fork { hdr, .. } | Event::Exit { hdr, .. } => hdr,
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

fn bounded<'a>(buf: &'a [u8], len: u32, field: &'static str) -> Result<&'a [u8], DecodeError> {
    buf.get(..len as usize)
        .ok_or(DecodeError::BadLength { field, len: len as usize, max: buf.len() })
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

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let raw: EventHeader = read(bytes, "header")?;
    let kind = EventKind::try_from(raw.kind).map_err(DecodeError::UnknownKind)?;
    let hdr = header(&raw, kind);
    Ok(match kind {
        EventKind::Exec => {
            if bytes.len() < EXEC_FIXED_LEN {
                return Err(DecodeError::Short { what: "exec event", len: bytes.len(), need: EXEC_FIXED_LEN });
            }
            // Read the fixed part only: the argv tail is as long as the record says.
            let mut full = [0u8; size_of::<ExecEvent>()];
            let n = bytes.len().min(full.len());
            full[..n].copy_from_slice(&bytes[..n]);
            let ev: ExecEvent = read(&full, "exec event")?;
            let tail = &bytes[EXEC_FIXED_LEN..];
            if ev.argv_len as usize > tail.len() || ev.argv_len as usize > ARGV_MAX {
                return Err(DecodeError::BadLength { field: "argv", len: ev.argv_len as usize, max: tail.len() });
            }
            let filename = bounded(&ev.filename, ev.filename_len, "filename")?;
            let cwd = bounded(&ev.cwd[..CWD_MAX + COMPONENT_MAX], ev.cwd_len, "cwd")?;
            Event::Exec(Exec {
                hdr,
                ppid: ev.ppid,
                uid: ev.uid,
                gid: ev.gid,
                filename: escape_bytes(filename),
                filename_truncated: ev.flags & EXEC_FILENAME_TRUNCATED != 0,
                argv: split_argv(&tail[..ev.argv_len as usize]),
                argv_truncated: ev.flags & EXEC_ARGV_TRUNCATED != 0,
                argv_full_len: ev.argv_full_len,
                cwd: (ev.flags & EXEC_CWD_MISSING == 0).then(|| cwd_path(cwd)),
                cwd_truncated: ev.flags & EXEC_CWD_TRUNCATED != 0,
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
        EventHeader { kind: kind as u32, tgid, pid: tgid, session_cgroup: 7, ts_ns: 1_000, start_ns: 500, ..Default::default() }
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
        let mut ev: ExecEvent = read(&{ let mut f = b.clone(); f.resize(size_of::<ExecEvent>(), 0); f }, "x").expect("read");
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
        // Records shorter than their struct.
        assert!(matches!(decode(&[1, 0, 0]), Err(DecodeError::Short { .. })));
        let fork = bytes_of(&ForkEvent { hdr: hdr(EventKind::Fork, 1), ..Default::default() });
        assert!(matches!(decode(&fork[..60]), Err(DecodeError::Short { .. })));
        let exec_short = exec(1, b"", b"", b"");
        assert!(matches!(decode(&exec_short[..100]), Err(DecodeError::Short { .. })));
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
        let f = bytes_of(&ForkEvent { hdr: hdr(EventKind::Fork, 5), child_tgid: 5, child_pid: 6, flags: FORK_THREAD, ..Default::default() });
        assert!(matches!(decode(&f), Ok(Event::Fork { thread: true, child_pid: 6, .. })));
        let x = bytes_of(&ExitEvent { hdr: hdr(EventKind::Exit, 5), exit_code: 0x300, flags: EXIT_GROUP_DEAD });
        assert!(matches!(decode(&x), Ok(Event::Exit { status: 0x300, group_dead: true, .. })));
    }
}
