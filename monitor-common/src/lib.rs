//! Wire types shared by the eBPF programs (`monitor-ebpf`) and the daemon (`monitor`).
//!
//! Every event starts with an [`EventHeader`]; the header's `kind` says which struct follows.
//! All structs are `#[repr(C)]`, use fixed-width integers and explicit padding, and have their
//! size pinned by a compile-time assertion so both sides agree byte for byte.
#![no_std]

/// Bytes of argv captured per exec (a power of two, so the kernel side can mask lengths).
pub const ARGV_MAX: usize = 16384;
/// Bytes of the executed file name captured per exec or failed exec.
pub const FILENAME_MAX: usize = 512;
/// Bytes of cwd components captured per exec (a power of two).
pub const CWD_MAX: usize = 4096;
/// Longest single path component read by the cwd walk (Linux `NAME_MAX` + NUL).
pub const COMPONENT_MAX: usize = 256;
/// Deepest cwd walked in the kernel; deeper paths are flagged truncated.
pub const CWD_DEPTH_MAX: u32 = 64;
/// Set in a `TRACKED` value (beside the session cgroup id, an inode number well below 2^63) when
/// the daemon seeded the process from `/proc`: such a process is not in the kernel's per-session
/// count, because the daemon already knows it.
pub const TRACKED_SEEDED: u64 = 1 << 63;
/// Deepest cgroup ancestry searched for a tagged cgroup.
pub const CGROUP_DEPTH_MAX: i32 = 16;

/// What follows the header.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 1,
    ExecFailed = 2,
    Fork = 3,
    Exit = 4,
    File = 5,
    Net = 6,
}

impl TryFrom<u32> for EventKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            1 => Self::Exec,
            2 => Self::ExecFailed,
            3 => Self::Fork,
            4 => Self::Exit,
            5 => Self::File,
            6 => Self::Net,
            other => return Err(other),
        })
    }
}

/// First bytes of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u32,
    /// CPU the event was produced on.
    pub cpu: u32,
    /// `bpf_ktime_get_boot_ns()` at the event.
    pub ts_ns: u64,
    /// The tagged (session) cgroup this process belongs to.
    pub session_cgroup: u64,
    /// The cgroup the task is in right now (differs from `session_cgroup` after an escape).
    pub cgroup_id: u64,
    /// Process id (kernel tgid).
    pub tgid: u32,
    /// Thread id (kernel pid).
    pub pid: u32,
    /// Start time of the thread-group leader, ns since boot; with `tgid` the stable process key.
    pub start_ns: u64,
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 48);

/// `ExecEvent::flags` bits.
pub const EXEC_ARGV_TRUNCATED: u32 = 1;
pub const EXEC_CWD_TRUNCATED: u32 = 2;
pub const EXEC_FILENAME_TRUNCATED: u32 = 4;
/// The cwd could not be read at all.
pub const EXEC_CWD_MISSING: u32 = 8;

/// A successful exec (`sched_process_exec`). Sent with only `argv_len` bytes of `argv`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub hdr: EventHeader,
    /// Parent process id (`real_parent->tgid`).
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub flags: u32,
    /// Bytes of argv captured in `argv` (NUL-separated).
    pub argv_len: u32,
    /// Length of the process's whole argv area, so truncation is visible.
    pub argv_full_len: u32,
    /// Bytes of `filename` used (without the NUL).
    pub filename_len: u32,
    /// Bytes of `cwd` used: NUL-terminated components, leaf first.
    pub cwd_len: u32,
    pub filename: [u8; FILENAME_MAX],
    pub cwd: [u8; CWD_MAX + COMPONENT_MAX],
    pub argv: [u8; ARGV_MAX],
}
/// Bytes of an [`ExecEvent`] before its `argv` tail.
pub const EXEC_FIXED_LEN: usize = core::mem::offset_of!(ExecEvent, argv);
const _: () = assert!(EXEC_FIXED_LEN == 48 + 32 + FILENAME_MAX + CWD_MAX + COMPONENT_MAX);
const _: () = assert!(core::mem::size_of::<ExecEvent>() == EXEC_FIXED_LEN + ARGV_MAX);

/// A failed `execve`/`execveat` (`sys_exit_execve*` with a negative return).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecFailedEvent {
    pub hdr: EventHeader,
    /// Positive errno.
    pub errno: i32,
    pub uid: u32,
    pub filename_len: u32,
    /// `EXEC_FILENAME_TRUNCATED` when the name did not fit.
    pub flags: u32,
    pub filename: [u8; FILENAME_MAX],
}
const _: () = assert!(core::mem::size_of::<ExecFailedEvent>() == 48 + 16 + FILENAME_MAX);

/// `ForkEvent::flags`: the new task is a thread, not a process.
pub const FORK_THREAD: u32 = 1;

/// A fork/clone (`sched_process_fork`); the header describes the parent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkEvent {
    pub hdr: EventHeader,
    pub child_tgid: u32,
    pub child_pid: u32,
    /// Start time of the child's thread-group leader, ns since boot.
    pub child_start_ns: u64,
    pub flags: u32,
    /// Explicit padding, always zero.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<ForkEvent>() == 48 + 24);

/// `ExitEvent::flags`: the whole process ended (last thread of the group).
pub const EXIT_GROUP_DEAD: u32 = 1;

/// A task exit (`sched_process_exit`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitEvent {
    pub hdr: EventHeader,
    /// Raw wait status (`task->exit_code`): `code << 8` or the signal number.
    pub exit_code: u32,
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<ExitEvent>() == 48 + 8);

/// Bytes of a user path captured per file event (Linux `PATH_MAX`).
pub const PATH_CAP: usize = 4096;
/// Bytes of a directory resolved in the kernel for a relative path (components, leaf first).
pub const DIR_CAP: usize = CWD_MAX + COMPONENT_MAX;
/// Bytes of socket address captured (`sockaddr_un` is 110).
pub const SOCKADDR_CAP: usize = 128;
/// Bytes of UDP payload captured for DNS (port 53) traffic.
pub const PAYLOAD_CAP: usize = 512;

/// `FileEvent::flags` / `NetEvent::flags` bits.
pub const PATH1_TRUNCATED: u32 = 1;
pub const PATH2_TRUNCATED: u32 = 2;
/// `dir1`/`dir2` hold the directory a relative path is relative to (resolved in the kernel).
pub const DIR1_RESOLVED: u32 = 4;
pub const DIR2_RESOLVED: u32 = 8;
pub const DIR1_TRUNCATED: u32 = 16;
pub const DIR2_TRUNCATED: u32 = 32;
/// `dir1` holds the path of the file behind the fd (fchmod, fchown, ftruncate).
pub const FD_PATH: u32 = 64;
/// The socket's own addresses were read from the kernel (`sk_*` fields are valid).
pub const NET_SOCK_KNOWN: u32 = 128;
/// `addr` holds the address the caller passed (or the kernel returned, for accept/recvfrom).
pub const NET_ADDR_GIVEN: u32 = 256;

/// A file syscall's result (`sys_exit_*`), with the arguments saved at `sys_enter_*`.
/// Sent up to the last used byte.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileEvent {
    pub hdr: EventHeader,
    /// The `x86_64` syscall number.
    pub nr: u32,
    pub flags: u32,
    /// Syscall return value (negative errno on failure).
    pub ret: i64,
    /// The raw syscall arguments.
    pub args: [u64; 6],
    /// For openat2: `how.flags` and `how.mode`.
    pub how_flags: u64,
    pub how_mode: u64,
    pub path1_len: u32,
    pub dir1_len: u32,
    pub path2_len: u32,
    pub dir2_len: u32,
    pub path1: [u8; PATH_CAP],
    pub dir1: [u8; DIR_CAP],
    pub path2: [u8; PATH_CAP],
    pub dir2: [u8; DIR_CAP],
}
pub const FILE_PATH1_OFF: usize = core::mem::offset_of!(FileEvent, path1);
pub const FILE_DIR1_OFF: usize = core::mem::offset_of!(FileEvent, dir1);
pub const FILE_PATH2_OFF: usize = core::mem::offset_of!(FileEvent, path2);
pub const FILE_DIR2_OFF: usize = core::mem::offset_of!(FileEvent, dir2);
const _: () = assert!(FILE_PATH1_OFF == 48 + 16 + 48 + 16 + 16);
const _: () = assert!(core::mem::size_of::<FileEvent>() == FILE_DIR2_OFF + DIR_CAP);

/// A network syscall's result.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NetEvent {
    pub hdr: EventHeader,
    pub nr: u32,
    pub flags: u32,
    pub ret: i64,
    pub fd: i32,
    /// `SOCK_STREAM` = 1, `SOCK_DGRAM` = 2, 0 when unknown.
    pub sock_type: u32,
    pub addr_len: u32,
    pub payload_len: u32,
    /// From the socket: family, local and remote ports (host order) and addresses.
    pub sk_family: u16,
    pub sk_lport: u16,
    pub sk_rport: u16,
    /// Explicit padding, always zero.
    pub pad: u16,
    pub sk_laddr: [u8; 16],
    pub sk_raddr: [u8; 16],
    pub addr: [u8; SOCKADDR_CAP],
    pub payload: [u8; PAYLOAD_CAP],
}
const _: () = assert!(core::mem::size_of::<NetEvent>() == 48 + 32 + 8 + 32 + SOCKADDR_CAP + PAYLOAD_CAP);

/// In-flight syscall of a tracked thread, saved at `sys_enter_*`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PendingSyscall {
    pub nr: u64,
    pub args: [u64; 6],
}

/// `x86_64` syscall numbers the file and network probes handle.
pub mod nr {
    pub const OPEN: u64 = 2;
    pub const CONNECT: u64 = 42;
    pub const ACCEPT: u64 = 43;
    pub const SENDTO: u64 = 44;
    pub const RECVFROM: u64 = 45;
    pub const SENDMSG: u64 = 46;
    pub const RECVMSG: u64 = 47;
    pub const BIND: u64 = 49;
    pub const LISTEN: u64 = 50;
    pub const TRUNCATE: u64 = 76;
    pub const FTRUNCATE: u64 = 77;
    pub const RENAME: u64 = 82;
    pub const MKDIR: u64 = 83;
    pub const RMDIR: u64 = 84;
    pub const CREAT: u64 = 85;
    pub const LINK: u64 = 86;
    pub const UNLINK: u64 = 87;
    pub const SYMLINK: u64 = 88;
    pub const CHMOD: u64 = 90;
    pub const FCHMOD: u64 = 91;
    pub const CHOWN: u64 = 92;
    pub const FCHOWN: u64 = 93;
    pub const LCHOWN: u64 = 94;
    pub const OPENAT: u64 = 257;
    pub const MKDIRAT: u64 = 258;
    pub const FCHOWNAT: u64 = 260;
    pub const UNLINKAT: u64 = 263;
    pub const RENAMEAT: u64 = 264;
    pub const LINKAT: u64 = 265;
    pub const SYMLINKAT: u64 = 266;
    pub const FCHMODAT: u64 = 268;
    pub const ACCEPT4: u64 = 288;
    pub const SENDMMSG: u64 = 307;
    pub const RENAMEAT2: u64 = 316;
    pub const OPENAT2: u64 = 437;
    pub const FCHMODAT2: u64 = 452;

    /// Where a file syscall's paths are: (path1 arg, dirfd1 arg, path2 arg, dirfd2 arg, fd arg),
    /// each an argument index or -1. A dirfd of -1 means relative to the cwd.
    pub const fn file_layout(nr: u64) -> Option<(i8, i8, i8, i8, i8)> {
        Some(match nr {
            OPEN | CREAT | UNLINK | RMDIR | MKDIR | CHMOD | CHOWN | LCHOWN | TRUNCATE => (0, -1, -1, -1, -1),
            OPENAT | OPENAT2 | UNLINKAT | MKDIRAT | FCHMODAT | FCHMODAT2 | FCHOWNAT => (1, 0, -1, -1, -1),
            RENAME | LINK => (0, -1, 1, -1, -1),
            RENAMEAT | RENAMEAT2 | LINKAT => (1, 0, 3, 2, -1),
            // symlink(target, linkpath): the target is content, captured but not resolved (-2).
            SYMLINK => (1, -1, 0, -2, -1),
            SYMLINKAT => (2, 1, 0, -2, -1),
            FCHMOD | FCHOWN | FTRUNCATE => (-1, -1, -1, -1, 0),
            _ => return None,
        })
    }

    pub const fn is_net(nr: u64) -> bool {
        matches!(nr, CONNECT | ACCEPT | SENDTO | RECVFROM | SENDMSG | SENDMMSG | RECVMSG | BIND | LISTEN | ACCEPT4)
    }
}

/// Kernel struct member offsets resolved from BTF by the daemon and set as a global at load.
/// The kernel side reads task and mm fields at these offsets, so it needs no CO-RE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_start_boottime: u32,
    pub task_mm: u32,
    pub task_fs: u32,
    pub task_exit_code: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// `fs_struct.pwd` (a `struct path`).
    pub fs_pwd: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_parent: u32,
    /// `dentry.d_name.name` (offset of `d_name` plus offset of `name` in `struct qstr`).
    pub dentry_name: u32,
    /// `mount.mnt` (the embedded `struct vfsmount`).
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub vfsmount_root: u32,
    pub bprm_filename: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_path: u32,
    pub file_private_data: u32,
    pub socket_type: u32,
    pub socket_sk: u32,
    pub skc_family: u32,
    pub skc_num: u32,
    pub skc_dport: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
}

/// Runtime knobs for the kernel side, set as a global at load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbeConfig {
    /// File/network ring backlog (bytes) above which a producer forces a wake-up.
    pub wakeup_bytes: u64,
    /// The same for the lifecycle ring.
    pub lifecycle_wakeup_bytes: u64,
}

/// Indices into the per-CPU `COUNTERS` array.
pub mod counter {
    /// exec, `exec_failed`, fork and exit events that did not fit in the lifecycle ring.
    pub const DROPPED_LIFECYCLE: u32 = 0;
    /// Kernel reads that failed (the event was still sent, with what could be read).
    pub const READ_ERRORS: u32 = 1;
    /// Events submitted (both rings).
    pub const SENT: u32 = 2;
    /// Processes that could not be added to the tracked set (map full).
    pub const TRACK_FAILURES: u32 = 3;
    /// File events that did not fit in the file/network ring.
    pub const DROPPED_FILE: u32 = 4;
    /// Network events that did not fit in the file/network ring.
    pub const DROPPED_NET: u32 = 5;
    pub const LEN: u32 = 6;
}

/// Which ring an event goes to, and which drop counter it is charged to when it does not fit.
/// Lifecycle events have a ring of their own, so a file or network storm cannot crowd out a
/// fork or an exit.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventClass {
    Lifecycle = 0,
    File = 1,
    Net = 2,
}

impl EventClass {
    pub const fn drop_counter(self) -> u32 {
        match self {
            Self::Lifecycle => counter::DROPPED_LIFECYCLE,
            Self::File => counter::DROPPED_FILE,
            Self::Net => counter::DROPPED_NET,
        }
    }
}

/// Per-CPU, per-session loss counters (`SESSION_LOST` values), by [`EventClass`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionLoss {
    pub lifecycle: u64,
    pub file: u64,
    pub net: u64,
}
const _: () = assert!(core::mem::size_of::<SessionLoss>() == 24);

impl SessionLoss {
    pub const fn total(&self) -> u64 {
        self.lifecycle + self.file + self.net
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C) plain data with explicit padding.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::ProbeConfig {}
    unsafe impl aya::Pod for super::PendingSyscall {}
    unsafe impl aya::Pod for super::SessionLoss {}
}
