//! Kernel-function capture (fexit), where the kernel allows it: one program per syscall
//! function (`__x64_sys_<name>`, and `__ia32_sys_<name>`/`__ia32_compat_sys_<name>` for the
//! 32-bit entry), which the daemon attaches by name after probing. It replaces every syscall
//! tracepoint and the raw `sys_enter`/`sys_exit` pair, so a process outside every session pays
//! nothing for a syscall agentmon does not hook, and only the hooked function's own callers pay
//! for the program's early return.
//!
//! Each program reads the arguments from the saved user registers (`struct pt_regs`, which the
//! caller cannot change during the call) and the result, and hands them to the same
//! [`crate::file::finish_with`] the tracepoint path uses, so both modes record the same events
//! (but the fds a `recvmsg` received: see there).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::fexit,
    programs::FExitContext,
};
use monitor_common::{nr, PendingSyscall};

use crate::{
    file::finish_with,
    maps::{current_session, current_tgid_pid, kread, OFFSETS},
    process::{exec_result, EXEC_ARGS},
};

/// A finished 64-bit syscall `nr`: `fexit` of `__x64_sys_*(const struct pt_regs *regs)`, whose
/// context holds the regs pointer and then the return value.
#[inline(always)]
fn on_exit64(ctx: &FExitContext, nr: u64) -> i32 {
    let (tgid, _) = current_tgid_pid();
    let Some(session) = current_session(tgid) else { return 0 };
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let off = OFFSETS.load();
    let mut p = PendingSyscall { nr, args: [0; 6] };
    for i in 0..6 {
        p.args[i] = kread::<u64>(regs, off.regs_args64[i]);
    }
    finish_with(&p, ret, session, false);
    0
}

/// A finished 32-bit syscall (its 64-bit twin's `nr`): registers bx, cx, dx, si, di, bp.
#[inline(always)]
fn on_exit32(ctx: &FExitContext, nr: u64) -> i32 {
    let (tgid, _) = current_tgid_pid();
    let Some(session) = current_session(tgid) else { return 0 };
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let off = OFFSETS.load();
    let mut p = PendingSyscall { nr: nr | nr::COMPAT_BIT, args: [0; 6] };
    for i in 0..6 {
        p.args[i] = u64::from(kread::<u32>(regs, off.regs_args[i]));
    }
    finish_with(&p, ret, session, false);
    0
}

/// `socketcall(call, u32 *args)`: the i386 socket entry; the arguments live in user memory.
#[fexit]
pub fn fx32_socketcall(ctx: FExitContext) -> i32 {
    let (tgid, _) = current_tgid_pid();
    let Some(session) = current_session(tgid) else { return 0 };
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let off = OFFSETS.load();
    let call = u64::from(kread::<u32>(regs, off.regs_args[0]));
    let base = u64::from(kread::<u32>(regs, off.regs_args[1]));
    let Some(native) = nr::from_socketcall(call) else { return 0 };
    let mut p = PendingSyscall { nr: native | nr::COMPAT_BIT, args: [0; 6] };
    for i in 0..6 {
        // SAFETY: the helper checks the user address.
        p.args[i] = u64::from(unsafe { bpf_probe_read_user((base + 4 * i as u64) as *const u32) }.unwrap_or(0));
    }
    finish_with(&p, ret, session, false);
    0
}

/// A failed exec (a successful one is `sched_process_exec`): the name is still in the caller's
/// memory, which a failed exec did not replace.
#[inline(always)]
fn on_exec_exit(ctx: &FExitContext, name_reg: usize, compat: bool) -> i32 {
    let ret: i64 = ctx.arg(1);
    if ret >= 0 {
        return 0;
    }
    let (tgid, _) = current_tgid_pid();
    if current_session(tgid).is_none() {
        return 0;
    }
    let regs: *const u8 = ctx.arg(0);
    let off = OFFSETS.load();
    let name = if compat {
        u64::from(kread::<u32>(regs, off.regs_args[name_reg & 7]))
    } else {
        kread::<u64>(regs, off.regs_args64[name_reg & 7])
    };
    let _ = EXEC_ARGS.insert(&bpf_get_current_pid_tgid(), &name, 0);
    exec_result(ret);
    0
}

#[fexit]
pub fn fx_execve(ctx: FExitContext) -> i32 {
    on_exec_exit(&ctx, 0, false)
}

#[fexit]
pub fn fx_execveat(ctx: FExitContext) -> i32 {
    on_exec_exit(&ctx, 1, false)
}

#[fexit]
pub fn fx32_execve(ctx: FExitContext) -> i32 {
    on_exec_exit(&ctx, 0, true)
}

#[fexit]
pub fn fx32_execveat(ctx: FExitContext) -> i32 {
    on_exec_exit(&ctx, 1, true)
}

/// One program per (syscall, entry): `fx_<name>` for 64-bit, `fx32_<name>` for 32-bit. The
/// daemon's table (`FEXIT_SYSCALLS` in monitor/src/ebpf/mod.rs) lists the same names.
macro_rules! fexit_syscalls {
    ($( $name:ident, $name32:ident => $nr:ident ),* $(,)?) => { $(
        #[fexit]
        pub fn $name(ctx: FExitContext) -> i32 {
            on_exit64(&ctx, nr::$nr)
        }
        #[fexit]
        pub fn $name32(ctx: FExitContext) -> i32 {
            on_exit32(&ctx, nr::$nr)
        }
    )* };
}

fexit_syscalls! {
    fx_open, fx32_open => OPEN,
    fx_openat, fx32_openat => OPENAT,
    fx_openat2, fx32_openat2 => OPENAT2,
    fx_creat, fx32_creat => CREAT,
    fx_open_by_handle_at, fx32_open_by_handle_at => OPEN_BY_HANDLE_AT,
    fx_unlink, fx32_unlink => UNLINK,
    fx_unlinkat, fx32_unlinkat => UNLINKAT,
    fx_rmdir, fx32_rmdir => RMDIR,
    fx_rename, fx32_rename => RENAME,
    fx_renameat, fx32_renameat => RENAMEAT,
    fx_renameat2, fx32_renameat2 => RENAMEAT2,
    fx_mkdir, fx32_mkdir => MKDIR,
    fx_mkdirat, fx32_mkdirat => MKDIRAT,
    fx_link, fx32_link => LINK,
    fx_linkat, fx32_linkat => LINKAT,
    fx_symlink, fx32_symlink => SYMLINK,
    fx_symlinkat, fx32_symlinkat => SYMLINKAT,
    fx_chmod, fx32_chmod => CHMOD,
    fx_fchmod, fx32_fchmod => FCHMOD,
    fx_fchmodat, fx32_fchmodat => FCHMODAT,
    fx_fchmodat2, fx32_fchmodat2 => FCHMODAT2,
    fx_chown, fx32_chown => CHOWN,
    fx_fchown, fx32_fchown => FCHOWN,
    fx_lchown, fx32_lchown => LCHOWN,
    fx_fchownat, fx32_fchownat => FCHOWNAT,
    fx_truncate, fx32_truncate => TRUNCATE,
    fx_ftruncate, fx32_ftruncate => FTRUNCATE,
    fx_socket, fx32_socket => SOCKET,
    fx_connect, fx32_connect => CONNECT,
    fx_bind, fx32_bind => BIND,
    fx_listen, fx32_listen => LISTEN,
    fx_accept, fx32_accept => ACCEPT,
    fx_accept4, fx32_accept4 => ACCEPT4,
    fx_sendto, fx32_sendto => SENDTO,
    fx_sendmsg, fx32_sendmsg => SENDMSG,
    fx_sendmmsg, fx32_sendmmsg => SENDMMSG,
    fx_recvfrom, fx32_recvfrom => RECVFROM,
    fx_recvmsg, fx32_recvmsg => RECVMSG,
    fx_unshare, fx32_unshare => UNSHARE,
    fx_setns, fx32_setns => SETNS,
    fx_mount, fx32_mount => MOUNT,
    fx_umount, fx32_umount => UMOUNT2,
    fx_pivot_root, fx32_pivot_root => PIVOT_ROOT,
    fx_open_tree, fx32_open_tree => OPEN_TREE,
    fx_move_mount, fx32_move_mount => MOVE_MOUNT,
    fx_fsmount, fx32_fsmount => FSMOUNT,
    fx_bpf, fx32_bpf => BPF,
    fx_ptrace, fx32_ptrace => PTRACE,
    fx_process_vm_writev, fx32_process_vm_writev => PROCESS_VM_WRITEV,
    fx_pidfd_getfd, fx32_pidfd_getfd => PIDFD_GETFD,
    fx_chroot, fx32_chroot => CHROOT,
    fx_init_module, fx32_init_module => INIT_MODULE,
    fx_finit_module, fx32_finit_module => FINIT_MODULE,
    fx_kexec_load, fx32_kexec_load => KEXEC_LOAD,
    fx_kexec_file_load, fx32_kexec_file_load => KEXEC_FILE_LOAD,
}
