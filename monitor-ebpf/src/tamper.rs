//! Tamper and hand-off events: a session process signalling the daemon, calling `bpf()`,
//! changing namespaces, mounts or its root, loading code into the kernel (modules, kexec), or
//! reaching into a process outside its session.
//! (Writes to agentmon's own files and cgroup moves are seen as file events and flagged by the
//! daemon, which knows its paths.)

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use monitor_common::{nr, tamper, EventClass, EventKind, PendingSyscall, TamperEvent, COMPAT};

use crate::{
    maps::{current_session, current_tgid_pid, emit, fill_header, kread, kread_ptr, DAEMON, OFFSETS, TRACKED},
    vfs::fd_file,
};

/// `signal_generate(int sig, struct kernel_siginfo *info, struct task_struct *task, int group,
/// int result)`: every signal the kernel generates, with its real target, whichever syscall
/// (kill, tkill, tgkill, `pidfd_send_signal`, sigqueue) sent it.
#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate(ctx: RawTracePointContext) -> i32 {
    let Some(&daemon) = DAEMON.get(0) else { return 0 };
    if daemon == 0 {
        return 0;
    }
    let off = OFFSETS.load();
    let target: *const u8 = ctx.arg(2);
    if kread::<u32>(target, off.task_tgid) != daemon {
        return 0;
    }
    let (tgid, _) = current_tgid_pid();
    if tgid == daemon {
        return 0;
    }
    let Some(session) = current_session(tgid) else { return 0 };
    let sig: u64 = ctx.arg(0);
    let result: u64 = ctx.arg(4);
    let mut ev = TamperEvent::default();
    fill_header(&mut ev.hdr, EventKind::Tamper as u32, session);
    ev.what = tamper::SIGNAL_DAEMON;
    ev.target = daemon;
    ev.args[0] = sig & 0xffff_ffff;
    ev.ret = i64::from(result as u32 as i32);
    emit(&ev, session, EventClass::Lifecycle);
    0
}

/// Whether `tgid` is tracked in `session`.
#[inline(always)]
fn in_session(tgid: u32, session: u64) -> bool {
    // SAFETY: plain map lookup.
    unsafe { TRACKED.get(&tgid) }.is_some_and(|t| t.session & !monitor_common::TRACKED_SEEDED == session)
}

/// The pid number behind a pidfd of the current task (0 if it is not one).
#[inline(always)]
fn pidfd_target(fd: i32) -> u32 {
    let off = OFFSETS.load();
    let file = fd_file(fd);
    if file.is_null() {
        return 0;
    }
    // pidfs (6.9+) keeps the `struct pid` in the inode; older kernels in `private_data`.
    let mut pid = kread_ptr(kread_ptr(file, off.file_inode), off.inode_private);
    if pid.is_null() {
        pid = kread_ptr(file, off.file_private_data);
    }
    kread::<u32>(pid, off.pid_nr)
}

/// A finished tamper syscall (from `sys_exit_tracked` or the compat exit). A BPF subprogram of
/// its own, to keep the exit programs' frames within the 512-byte combined stack limit (see
/// `file::on_file_exit`). Returns u32::MAX when a pidfd's target could not be read (the event
/// is still sent, with target 0), which the caller counts as a read error; else the `what`
/// sent, or 0 when the call was no hand-off.
#[inline(never)]
pub fn on_exit(p: &PendingSyscall, ret: i64, session: u64, compat: bool) -> u32 {
    let mut ev = TamperEvent::default();
    fill_header(&mut ev.hdr, EventKind::Tamper as u32, session);
    ev.nr = p.nr as u32;
    ev.ret = ret;
    ev.args = p.args;
    ev.flags = if compat { COMPAT } else { 0 };
    match p.nr {
        nr::BPF => ev.what = tamper::BPF,
        nr::CHROOT => ev.what = tamper::CHROOT,
        nr::INIT_MODULE | nr::FINIT_MODULE | nr::KEXEC_LOAD | nr::KEXEC_FILE_LOAD => ev.what = tamper::KERNEL_CODE,
        nr::PTRACE | nr::PROCESS_VM_WRITEV | nr::PIDFD_GETFD => {
            ev.what = tamper::HANDOFF;
            ev.target = match p.nr {
                // PTRACE_TRACEME (0) names no target: the tracer is the parent, in the session.
                nr::PTRACE if p.args[0] == 0 => return 0,
                nr::PTRACE => p.args[1] as u32,
                nr::PROCESS_VM_WRITEV => p.args[0] as u32,
                _ => pidfd_target(p.args[0] as u32 as i32),
            };
            if in_session(ev.target, session) {
                // Work inside the session is captured anyway: not a hand-off.
                return 0;
            }
        }
        _ => ev.what = tamper::NAMESPACE,
    }
    emit(&ev, session, EventClass::Lifecycle);
    if ev.target == 0 && p.nr == nr::PIDFD_GETFD {
        u32::MAX
    } else {
        ev.what
    }
}
