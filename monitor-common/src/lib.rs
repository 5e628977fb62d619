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
}

impl TryFrom<u32> for EventKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            1 => Self::Exec,
            2 => Self::ExecFailed,
            3 => Self::Fork,
            4 => Self::Exit,
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
    pub _pad: u32,
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
}

/// Runtime knobs for the kernel side, set as a global at load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbeConfig {
    /// Ring-buffer backlog (bytes) above which a producer forces a wake-up.
    pub wakeup_bytes: u64,
}

/// Indices into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Events that did not fit in the ring buffer.
    pub const DROPPED: u32 = 0;
    /// Kernel reads that failed (the event was still sent, with what could be read).
    pub const READ_ERRORS: u32 = 1;
    /// Events submitted.
    pub const SENT: u32 = 2;
    pub const LEN: u32 = 4;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C) plain data with explicit padding.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::ProbeConfig {}
}
