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
/// Set in the id of a session started by an exe rule (no cgroup of its own): the id is this bit,
/// the matched process's start time in clock ticks shifted past the pid, and its tgid. Unique
/// for the boot, and never a cgroup id (inode numbers stay far below 2^62).
pub const EXE_SESSION: u64 = 1 << 62;
/// The session id the kernel gives a process matched by an exe rule.
pub const fn exe_session_id(tgid: u32, start_ticks: u64) -> u64 {
    EXE_SESSION | ((start_ticks & ((1 << 40) - 1)) << 22) | (tgid as u64 & ((1 << 22) - 1))
}
/// A `TAGGED` value: a session cgroup the daemon registered.
pub const TAG_SESSION: u64 = 1;
/// A `TAGGED` value: a cgroup created while cgroup rules are on, captured from its first
/// instant until the daemon has matched its path against the rules (then it becomes
/// [`TAG_SESSION`] or is removed).
pub const TAG_PENDING: u64 = 2;
/// Bits of the `RULES` switch: exe rules exist (`EXE_RULES` holds their paths).
pub const RULES_EXE: u32 = 1;
/// Bits of the `RULES` switch: cgroup or unit rules exist (new cgroups are held as pending).
pub const RULES_CGROUP: u32 = 2;
/// Bytes of a path in `EXE_RULES` (zero-padded key).
pub const RULE_PATH_MAX: usize = 256;

/// An `EXE_RULES` key: an executable or script path, zero-padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RulePath {
    pub path: [u8; RULE_PATH_MAX],
}
impl Default for RulePath {
    fn default() -> Self {
        Self { path: [0; RULE_PATH_MAX] }
    }
}
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
    /// An act against agentmon or a hand-off to an unmonitored process: [`TamperEvent`].
    Tamper = 7,
    /// An `io_uring` submission or completion: [`IoUringEvent`].
    IoUring = 8,
    /// A cgroup was created while cgroup rules are on: [`CgroupEvent`].
    Cgroup = 9,
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
            7 => Self::Tamper,
            8 => Self::IoUring,
            9 => Self::Cgroup,
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
/// This exec matched an exe rule and starts a new session (`hdr.session_cgroup` is its id).
pub const EXEC_SESSION_START: u32 = 16;
/// `exe` holds the executed file's path, walked to the real root (`bprm->file`).
pub const EXEC_EXE_RESOLVED: u32 = 32;
/// Failed execs (fexit mode): `filename` is the kernel's copy of the name asked for (the first
/// `struct filename` the exec opened), not the caller's memory re-read at exit.
pub const EXEC_NAME_KERNEL: u32 = 64;

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
    /// Bytes of `exe` used: the file the kernel executed (`bprm->file`), components leaf first,
    /// whatever name it was given by (`/dev/fd/3` for fexecve, a symlink, a relative name).
    pub exe_len: u32,
    /// Explicit padding, always zero.
    pub pad: u32,
    pub filename: [u8; FILENAME_MAX],
    pub cwd: [u8; CWD_MAX + COMPONENT_MAX],
    pub exe: [u8; CWD_MAX + COMPONENT_MAX],
    pub argv: [u8; ARGV_MAX],
}
/// Bytes of an [`ExecEvent`] before its `argv` tail.
pub const EXEC_FIXED_LEN: usize = core::mem::offset_of!(ExecEvent, argv);
const _: () = assert!(EXEC_FIXED_LEN == 48 + 40 + FILENAME_MAX + 2 * (CWD_MAX + COMPONENT_MAX));
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
/// File descriptors read per `recvmsg` that receives them (`SCM_RIGHTS`): the first is named
/// (its file), the next four are listed by number, all are counted.
pub const SCM_FDS_MAX: usize = 5;

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
/// File events (successful opens): the path of the file the kernel actually opened, read from
/// the new fd, follows the given path's bytes directly (at `path1 + path1_len`), `dir1_len` bytes
/// long. `io_uring` completions: it is in `path`, `dir_len` bytes long.
pub const OBJ_PATH: u32 = 512;
/// File, network and tamper events: the syscall came through the 32-bit compat entry
/// (`int 0x80`); `nr` is the 64-bit twin's number.
pub const COMPAT: u32 = 1024;
/// Network events: a send with `MSG_FASTOPEN` (on TCP it connects).
pub const NET_FASTOPEN: u32 = 2048;
/// A relative or empty path whose directory is the fd's file itself (`AT_EMPTY_PATH` with "").
pub const EMPTY_PATH: u32 = 4096;
/// Network events: `addr` is the kernel's own copy of the destination (from the cgroup
/// `connect`/`sendmsg` hooks, which see the address the kernel will use), not user memory.
pub const NET_ADDR_KERNEL: u32 = 8192;
/// File events: the absolute path was resolved against a changed root (`chroot`): `dir1`/`dir2`
/// hold the process's root, from the real root, and the path is relative to it.
pub const ROOT_CHANGED: u32 = 16384;
/// File events (successful opens): `obj_flags`/`obj_mode` hold the opened file's own flags.
pub const OBJ_FLAGS: u32 = 32768;
/// `io_uring` completions: the open went into a registered-file slot (`fd` holds the slot);
/// its result is not an fd, and the file is the one named at submission.
pub const URING_FIXED_SLOT: u32 = 65536;
/// File events: fds a `recvmsg` received (`SCM_RIGHTS`): `ret` is the first (its file in the
/// object path and `obj_flags`), `how_flags` how many came, `how_mode`/`how_resolve` the next
/// four fd numbers (two `i32` per word, low half first; -1 for none).
pub const SCM_FDS: u32 = 131_072;
/// File events (fexit mode): `dir1`/`dir2` hold the whole path of the object the kernel acted
/// on (from its `security_path_*` hook, leaf first like a directory walk), not the directory of
/// a relative path; `path1`/`path2` hold the path as given.
pub const KPATH1: u32 = 262_144;
pub const KPATH2: u32 = 524_288;
/// File events (fexit mode): `path1`/`path2` are the kernel's own copy of the name the caller
/// passed (from the VFS function's `struct filename`, copied before the kernel used it), not
/// the caller's memory re-read at exit.
pub const KNAME1: u32 = 1_048_576;
pub const KNAME2: u32 = 2_097_152;
/// Network events (fexit mode): a unix stream connect reached a listening socket bound to a
/// file, and `payload` holds that file's path (leaf first, like a directory walk,
/// `payload_len` bytes), from the kernel's `security_unix_stream_connect` hook: the socket
/// connected to, whatever name (relative, through a symlink) the caller gave.
pub const NET_PEER_PATH: u32 = 4_194_304;

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
    /// For openat2: `how.flags`, `how.mode` and `how.resolve`.
    pub how_flags: u64,
    pub how_mode: u64,
    pub how_resolve: u64,
    /// Successful opens: the opened file's own `f_flags` (its access mode and `O_APPEND`, as
    /// the kernel opened it; `O_CREAT`/`O_TRUNC` are not kept there). 0 otherwise.
    pub obj_flags: u32,
    /// Successful opens: the opened file's `f_mode` (`FMODE_READ` 1, `FMODE_WRITE` 2).
    pub obj_mode: u32,
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
const _: () = assert!(FILE_PATH1_OFF == 48 + 16 + 48 + 24 + 8 + 16);
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
    /// `socket()`: its protocol argument (low 16 bits); 0 otherwise.
    pub proto: u16,
    pub sk_laddr: [u8; 16],
    pub sk_raddr: [u8; 16],
    pub addr: [u8; SOCKADDR_CAP],
    pub payload: [u8; PAYLOAD_CAP],
}
const _: () = assert!(core::mem::size_of::<NetEvent>() == 48 + 32 + 8 + 32 + SOCKADDR_CAP + PAYLOAD_CAP);

/// What a [`TamperEvent`] reports.
pub mod tamper {
    /// A session process sent a signal to the daemon (`target` = daemon tgid, `arg` = signal).
    pub const SIGNAL_DAEMON: u32 = 1;
    /// `bpf()` (`arg` = command).
    pub const BPF: u32 = 2;
    /// `unshare`, `setns`, `mount`, `umount2`, `pivot_root`, `open_tree`, `move_mount`, `fsmount` (`nr` says which).
    pub const NAMESPACE: u32 = 3;
    /// `ptrace`, `process_vm_writev` or `pidfd_getfd` on a process outside the session (`target`).
    pub const HANDOFF: u32 = 4;
    /// A process of the session could not be tracked: the tracked-process map was full
    /// (`target` = the untracked tgid). The session's record is incomplete from here on.
    pub const TRACK_FAILED: u32 = 5;
    /// `chroot`: the process's view of `/` changed (paths it names are recorded from the real root).
    pub const CHROOT: u32 = 6;
    /// `init_module`, `finit_module`, `kexec_load`, `kexec_file_load`: loading code into the kernel.
    pub const KERNEL_CODE: u32 = 7;
}

/// An act against agentmon, or a hand-off of work to an unmonitored process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TamperEvent {
    pub hdr: EventHeader,
    /// A [`tamper`] constant.
    pub what: u32,
    /// The syscall (64-bit numbering), 0 when none.
    pub nr: u32,
    pub ret: i64,
    pub args: [u64; 6],
    /// The process acted on (tgid), 0 when none.
    pub target: u32,
    /// [`COMPAT`].
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<TamperEvent>() == 48 + 16 + 48 + 8);

/// `IoUringEvent::phase`.
pub const URING_SUBMIT: u32 = 0;
pub const URING_COMPLETE: u32 = 1;

/// An `io_uring` request of a session process: one at submission (operation, fd, the path the
/// kernel copied in, the address) and one at completion (result; for an open, the opened
/// file's real path in `dir`, flagged [`OBJ_PATH`]). `req` pairs them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IoUringEvent {
    pub hdr: EventHeader,
    pub phase: u32,
    pub opcode: u32,
    /// The kernel's request pointer: an opaque id pairing submission and completion.
    pub req: u64,
    pub user_data: u64,
    pub res: i64,
    pub fd: i32,
    /// The directory fd of a path operation (`AT_FDCWD` = -100).
    pub dfd: i32,
    /// [`DIR1_RESOLVED`], [`DIR1_TRUNCATED`], [`PATH1_TRUNCATED`], [`PATH2_TRUNCATED`],
    /// [`OBJ_PATH`], [`NET_ADDR_GIVEN`].
    pub flags: u32,
    pub addr_len: u32,
    pub path_len: u32,
    pub path2_len: u32,
    pub dir_len: u32,
    /// An open's `how.flags` (the `O_*` bits all fit in 32).
    pub open_flags: u32,
    /// The second path's directory fd (rename, link) and its resolved directory's length.
    pub dfd2: i32,
    pub dir2_len: u32,
    /// An open into a registered-file slot: the slot + 1 (`io_open.file_slot`), else 0.
    pub file_slot: u32,
    /// Explicit padding, always zero.
    pub pad: u32,
    pub addr: [u8; SOCKADDR_CAP],
    pub path: [u8; PATH_CAP],
    pub path2: [u8; PATH_CAP],
    pub dir: [u8; DIR_CAP],
    pub dir2: [u8; DIR_CAP],
}
pub const URING_PATH_OFF: usize = core::mem::offset_of!(IoUringEvent, path);
pub const URING_PATH2_OFF: usize = core::mem::offset_of!(IoUringEvent, path2);
pub const URING_DIR_OFF: usize = core::mem::offset_of!(IoUringEvent, dir);
pub const URING_DIR2_OFF: usize = core::mem::offset_of!(IoUringEvent, dir2);
const _: () = assert!(URING_PATH_OFF == 48 + 80 + SOCKADDR_CAP);
const _: () = assert!(core::mem::size_of::<IoUringEvent>() == URING_DIR2_OFF + DIR_CAP);

/// `io_uring` opcodes (`enum io_uring_op`) with a path or an address.
pub mod uring {
    pub const READV: u32 = 1;
    pub const WRITEV: u32 = 2;
    pub const READ_FIXED: u32 = 4;
    pub const WRITE_FIXED: u32 = 5;
    pub const SENDMSG: u32 = 9;
    pub const RECVMSG: u32 = 10;
    pub const ACCEPT: u32 = 13;
    pub const CONNECT: u32 = 16;
    pub const OPENAT: u32 = 18;
    pub const CLOSE: u32 = 19;
    pub const STATX: u32 = 21;
    pub const READ: u32 = 22;
    pub const WRITE: u32 = 23;
    pub const SEND: u32 = 26;
    pub const RECV: u32 = 27;
    pub const OPENAT2: u32 = 28;
    pub const RENAMEAT: u32 = 35;
    pub const UNLINKAT: u32 = 36;
    pub const MKDIRAT: u32 = 37;
    pub const SYMLINKAT: u32 = 38;
    pub const LINKAT: u32 = 39;
}

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
    // Tamper and hand-off syscalls.
    pub const PTRACE: u64 = 101;
    pub const PIVOT_ROOT: u64 = 155;
    pub const MOUNT: u64 = 165;
    pub const UMOUNT2: u64 = 166;
    pub const UNSHARE: u64 = 272;
    pub const SETNS: u64 = 308;
    pub const PROCESS_VM_WRITEV: u64 = 311;
    pub const BPF: u64 = 321;
    pub const OPEN_TREE: u64 = 428;
    pub const MOVE_MOUNT: u64 = 429;
    pub const FSMOUNT: u64 = 432;
    pub const PIDFD_GETFD: u64 = 438;
    pub const CHROOT: u64 = 161;
    pub const INIT_MODULE: u64 = 175;
    pub const FINIT_MODULE: u64 = 313;
    pub const KEXEC_LOAD: u64 = 246;
    pub const KEXEC_FILE_LOAD: u64 = 320;
    pub const OPEN_BY_HANDLE_AT: u64 = 304;
    pub const SOCKET: u64 = 41;
    /// Set in a pending syscall's `nr` when it came through the compat (`int 0x80`) entry.
    pub const COMPAT_BIT: u64 = 1 << 32;

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
            // open_by_handle_at(mount_fd, handle, flags) has no path at all: the file comes from
            // the returned fd (a failed call names only the mount fd's file).
            FCHMOD | FCHOWN | FTRUNCATE | OPEN_BY_HANDLE_AT => (-1, -1, -1, -1, 0),
            _ => return None,
        })
    }

    pub const fn is_net(nr: u64) -> bool {
        matches!(
            nr,
            CONNECT | ACCEPT | SENDTO | RECVFROM | SENDMSG | SENDMMSG | RECVMSG | BIND | LISTEN | ACCEPT4 | SOCKET
        )
    }

    pub const fn is_tamper(nr: u64) -> bool {
        matches!(
            nr,
            PTRACE
                | PIVOT_ROOT
                | MOUNT
                | UMOUNT2
                | UNSHARE
                | SETNS
                | PROCESS_VM_WRITEV
                | BPF
                | OPEN_TREE
                | MOVE_MOUNT
                | FSMOUNT
                | PIDFD_GETFD
                | CHROOT
                | INIT_MODULE
                | FINIT_MODULE
                | KEXEC_LOAD
                | KEXEC_FILE_LOAD
        )
    }

    /// The 64-bit twin of an i386 syscall number, for the syscalls agentmon captures. The
    /// arguments keep their order; `socketcall` (102) is unpacked separately.
    pub const fn from_compat(nr32: u64) -> Option<u64> {
        Some(match nr32 {
            5 => OPEN,
            8 => CREAT,
            9 => LINK,
            10 => UNLINK,
            15 => CHMOD,
            16 | 198 => LCHOWN,
            21 => MOUNT,
            26 => PTRACE,
            38 => RENAME,
            39 => MKDIR,
            40 => RMDIR,
            52 => UMOUNT2,
            83 => SYMLINK,
            92 | 193 => TRUNCATE,
            93 | 194 => FTRUNCATE,
            94 => FCHMOD,
            95 | 207 => FCHOWN,
            182 | 212 => CHOWN,
            217 => PIVOT_ROOT,
            61 => CHROOT,
            128 => INIT_MODULE,
            283 => KEXEC_LOAD,
            342 => OPEN_BY_HANDLE_AT,
            350 => FINIT_MODULE,
            359 => SOCKET,
            295 => OPENAT,
            296 => MKDIRAT,
            298 => FCHOWNAT,
            301 => UNLINKAT,
            302 => RENAMEAT,
            303 => LINKAT,
            304 => SYMLINKAT,
            306 => FCHMODAT,
            310 => UNSHARE,
            346 => SETNS,
            347 => PROCESS_VM_WRITEV,
            353 => RENAMEAT2,
            357 => BPF,
            361 => BIND,
            362 => CONNECT,
            363 => LISTEN,
            364 => ACCEPT4,
            369 => SENDTO,
            370 => SENDMSG,
            371 => RECVFROM,
            372 => RECVMSG,
            345 => SENDMMSG,
            428 => OPEN_TREE,
            429 => MOVE_MOUNT,
            432 => FSMOUNT,
            437 => OPENAT2,
            438 => PIDFD_GETFD,
            452 => FCHMODAT2,
            _ => return None,
        })
    }

    /// i386 `socketcall` call numbers to 64-bit syscalls (args are then read from user memory).
    pub const fn from_socketcall(call: u64) -> Option<u64> {
        Some(match call {
            1 => SOCKET,
            2 => BIND,
            3 => CONNECT,
            4 => LISTEN,
            5 => ACCEPT,
            11 => SENDTO,
            12 => RECVFROM,
            16 => SENDMSG,
            17 => RECVMSG,
            18 => ACCEPT4,
            20 => SENDMMSG,
            _ => return None,
        })
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
    /// `task_struct.thread_info.status` (x86: `TS_COMPAT` marks an `int 0x80` syscall).
    pub task_ti_status: u32,
    /// `pt_regs` bx, cx, dx, si, di, bp: the i386 syscall arguments 0..5.
    pub regs_args: [u32; 6],
    /// `struct pid`: `numbers[0].nr` (a pidfd's `private_data` is a `struct pid *`).
    pub pid_nr: u32,
    /// `io_kiocb.opcode` and `io_kiocb.cqe.fd` (the sqe's fd).
    pub kiocb_opcode: u32,
    pub kiocb_fd: u32,
    /// `io_kiocb.flags` (bit 0, `REQ_F_FIXED_FILE`: the fd is a registered-file index).
    pub kiocb_flags: u32,
    /// `struct filename.name` (the kernel's copy of a user path).
    pub filename_name: u32,
    /// Per-operation data at the start of an `io_kiocb`: (dfd, filename) for open, unlink,
    /// mkdir, statx; (old dfd, old path, new dfd, new path) for rename and link; the user
    /// sockaddr and its length for connect. 0 when the kernel's BTF lacks the struct.
    pub uring_open: [u32; 2],
    pub uring_unlink: [u32; 2],
    pub uring_mkdir: [u32; 2],
    pub uring_statx: [u32; 2],
    pub uring_rename: [u32; 4],
    pub uring_link: [u32; 4],
    pub uring_connect: [u32; 2],
    /// `io_open.how` (its first member is `flags`).
    pub uring_open_how: u32,
    /// `file.f_inode` and `inode.i_private` (pidfs keeps a pidfd's `struct pid` there).
    pub file_inode: u32,
    pub inode_private: u32,
    /// `task_struct.signal` and `signal_struct.live` (an `atomic_t`): the threads of the group
    /// still alive. At `sched_process_exit` it is 0 once the group is dead, on every kernel;
    /// the tracepoint's own `group_dead` argument exists only since 6.16.
    pub task_signal: u32,
    pub signal_live: u32,
    /// `file.f_flags` and `file.f_mode`: how the kernel opened a file.
    pub file_f_flags: u32,
    pub file_f_mode: u32,
    /// `linux_binprm.file`: the file being executed.
    pub bprm_file: u32,
    /// `fs_struct.root` (a `struct path`): the process's `/`.
    pub fs_root: u32,
    /// `io_open.file_slot`: a registered-file slot + 1, or 0 (0 when the BTF lacks it).
    pub uring_open_slot: u32,
    /// `pt_regs` di, si, dx, r10, r8, r9: the `x86_64` syscall arguments 0..5 (fexit capture).
    pub regs_args64: [u32; 6],
    /// `pt_regs.orig_ax`: the number of the syscall in progress (path hooks, fexit mode).
    pub regs_orig_ax: u32,
    /// `msghdr.msg_name`, `msghdr.msg_namelen`: a send's destination, the kernel's copy.
    pub msghdr_name: u32,
    pub msghdr_namelen: u32,
    /// `unix_sock.path`: the file a unix socket is bound to (0 when the BTF lacks it).
    pub unix_sock_path: u32,
}

/// Bytes of a cgroup path in a [`CgroupEvent`].
pub const CGROUP_PATH_MAX: usize = 512;

/// A cgroup created on the cgroup2 hierarchy while cgroup rules are on. It was tagged
/// [`TAG_PENDING`] in the same instant; the daemon decides.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupEvent {
    pub hdr: EventHeader,
    /// The new cgroup's id (its inode number in the cgroup2 mount).
    pub id: u64,
    pub level: u32,
    /// Bytes of `path` used; the path is relative to the cgroup2 root, starting with `/`.
    pub path_len: u32,
    pub path: [u8; CGROUP_PATH_MAX],
}
const _: () = assert!(core::mem::size_of::<CgroupEvent>() == 48 + 16 + CGROUP_PATH_MAX);

/// Runtime knobs for the kernel side, set as a global at load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbeConfig {
    /// File/network ring backlog (bytes) above which a producer forces a wake-up.
    pub wakeup_bytes: u64,
    /// The same for the lifecycle ring.
    pub lifecycle_wakeup_bytes: u64,
}

/// A `TRACKED` value: the session, and the tracked process's start time in clock ticks
/// (`/proc/<pid>/stat` field 22, 100 per second), so a stale entry is never taken for a new
/// process that reuses the pid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tracked {
    /// Session cgroup id, with [`TRACKED_SEEDED`] when the daemon seeded it.
    pub session: u64,
    pub start_ticks: u64,
}

/// Nanoseconds per `/proc` clock tick (`USER_HZ` = 100 on every Linux architecture agentmon runs on).
pub const NS_PER_TICK: u64 = 10_000_000;

/// A `VERDICT` cache value: the session a cgroup is in (0 = none), and the tag generation it was
/// computed under. A "none" computed before the latest tag is recomputed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub session: u64,
    pub generation: u64,
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
    /// Tracked entries found stale (their pid now belongs to another process) and removed.
    pub const STALE_TRACKED: u32 = 6;
    /// New cgroups that could not be held pending for the cgroup rules (session map full).
    pub const TAG_FAILURES: u32 = 7;
    pub const LEN: u32 = 8;
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
    unsafe impl aya::Pod for super::RulePath {}
    unsafe impl aya::Pod for super::PendingSyscall {}
    unsafe impl aya::Pod for super::SessionLoss {}
    unsafe impl aya::Pod for super::Tracked {}
    unsafe impl aya::Pod for super::Verdict {}
}
