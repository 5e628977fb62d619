//! Kernel-function capture (fexit), where the kernel allows it: one program per syscall
//! function (`__x64_sys_<name>`, and `__ia32_sys_<name>`/`__ia32_compat_sys_<name>` for the
//! 32-bit entry), which the daemon attaches by name after probing. It replaces every syscall
//! tracepoint and the raw `sys_enter`/`sys_exit` pair, so a process outside every session pays
//! nothing for a syscall agentmon does not hook, and only the hooked function's own callers pay
//! for the program's early return.
//!
//! Each per-function program is a stub: for a process in a session it reads the arguments from
//! the saved user registers (`struct pt_regs`, which the caller cannot change during the call)
//! and tail-calls [`fx_handler`], which is loaded and verified once. (Each program carrying its
//! own copy of the file or network handler made the verifier check it about 55 times over:
//! minutes of start under emulation.) The handler takes the result and hands both to the same
//! [`crate::file::finish`] the tracepoint path uses, so both modes record the same events.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{fexit, map},
    maps::{PerCpuArray, ProgramArray},
    programs::FExitContext,
};
use monitor_common::{nr, EventClass, PendingSyscall};

use crate::{
    file::finish_with,
    kpath::{is_own, KernelPaths, KNAMES, KPATHS, NAME_ABSENT},
    maps::{current_session, current_tgid_pid, kread, record_drop, OFFSETS},
    process::{exec_result, EXEC_ARGS},
};

/// Slot 0: [`fx_handler`], which the daemon loads first and puts here. A tail call needs the
/// two programs to be attached to functions of one BTF prototype, and a kernel's BTF can have
/// two for the syscall functions: `long (const struct pt_regs *regs)`, and the same with the
/// parameter named `__unused`, from the `sys_ni` stubs, whose entry comes first for some
/// syscalls (Debian 6.1: the socket calls, `bpf`, module loads). So there are two of each: the
/// daemon sorts the functions by prototype and loads the `fxb_` stubs, with [`FX_HANDLER_B`]
/// and [`fx_handler_b`], for the second.
#[map]
pub static FX_HANDLER: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Slot 0: [`fx_handler_b`], for the stubs attached to functions of the second prototype.
#[map]
pub static FX_HANDLER_B: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// What a stub hands [`fx_handler`]: the syscall (its number with [`nr::COMPAT_BIT`] for the
/// 32-bit entry, and its arguments) and the session. Per CPU: a tail call runs on the same
/// CPU, in the same run.
#[derive(Clone, Copy)]
#[repr(C)]
struct FxCall {
    p: PendingSyscall,
    session: u64,
}

#[map]
static FX_CALL: PerCpuArray<FxCall> = PerCpuArray::with_max_entries(1, 0);

/// Hand a finished syscall of a process in `session` to [`fx_handler`]. A tail call that fails
/// (no handler in the slot) loses the event, counted like an event that did not fit in the
/// ring.
#[inline(always)]
fn hand_off(ctx: &FExitContext, p: PendingSyscall, session: u64, handler: &ProgramArray) -> i32 {
    let Some(call) = FX_CALL.get_ptr_mut(0) else { return 0 };
    // SAFETY: per-CPU slot, read by the handler this same run.
    unsafe { *call = FxCall { p, session } };
    // SAFETY: the handler is a fexit program of the same prototype (`long (const struct pt_regs *)`).
    let _ = unsafe { handler.tail_call(ctx, 0) };
    let class = if nr::is_net(p.nr & !nr::COMPAT_BIT) { EventClass::Net } else { EventClass::File };
    record_drop(session, class);
    0
}

/// A finished 64-bit syscall `nr`: `fexit` of `__x64_sys_*(const struct pt_regs *regs)`, whose
/// context holds the regs pointer and then the return value. Arguments: di, si, dx, r10, r8, r9.
#[inline(always)]
fn on_exit64(ctx: &FExitContext, nr: u64, handler: &ProgramArray) -> i32 {
    let (tgid, _) = current_tgid_pid();
    let Some(session) = current_session(tgid) else { return 0 };
    let regs: *const u8 = ctx.arg(0);
    let off = OFFSETS.load();
    let mut p = PendingSyscall { nr, args: [0; 6] };
    for i in 0..6 {
        p.args[i] = kread::<u64>(regs, off.regs_args64[i]);
    }
    hand_off(ctx, p, session, handler)
}

/// A finished 32-bit syscall (its 64-bit twin's `nr`): registers bx, cx, dx, si, di, bp.
#[inline(always)]
fn on_exit32(ctx: &FExitContext, nr: u64, handler: &ProgramArray) -> i32 {
    let (tgid, _) = current_tgid_pid();
    let Some(session) = current_session(tgid) else { return 0 };
    let regs: *const u8 = ctx.arg(0);
    let off = OFFSETS.load();
    let mut p = PendingSyscall { nr: nr | nr::COMPAT_BIT, args: [0; 6] };
    for i in 0..6 {
        p.args[i] = u64::from(kread::<u32>(regs, off.regs_args[i]));
    }
    hand_off(ctx, p, session, handler)
}

/// The shared end of every syscall stub: the same event as the tracepoint path. Loaded against
/// one syscall function and never attached itself.
#[inline(always)]
fn handle(ctx: &FExitContext) -> i32 {
    // SAFETY: per-CPU slot, written by the stub this same run.
    let Some(call) = FX_CALL.get(0).copied() else { return 0 };
    let ret: i64 = ctx.arg(1);
    // The paths the kernel's hooks saw during this call (`kpath.rs`), if they are this
    // syscall's: an entry left by another (an io_uring operation inside `io_uring_enter`) is
    // dropped unused.
    let key = bpf_get_current_pid_tgid();
    let mut kp: *const KernelPaths = core::ptr::null();
    let found = KPATHS.get_ptr(&key);
    if let Some(k) = found {
        // SAFETY: a map value, alive for this run.
        if is_own(unsafe { (*k).orig_ax }, call.p.nr & !nr::COMPAT_BIT, call.p.nr & nr::COMPAT_BIT != 0) {
            kp = k;
        }
    }
    finish_with(&call.p, ret, call.session, kp);
    if found.is_some() {
        let _ = KPATHS.remove(&key);
    }
    // The names the VFS function copied (`kpath::KNAMES`), taken by `finish_with` if they were
    // this call's: gone either way, so a later call cannot take them.
    let _ = KNAMES.remove(&key);
    0
}

#[fexit]
pub fn fx_handler(ctx: FExitContext) -> i32 {
    handle(&ctx)
}

#[fexit]
pub fn fx_handler_b(ctx: FExitContext) -> i32 {
    handle(&ctx)
}

/// `socketcall(call, u32 *args)`: the i386 socket entry; the arguments live in user memory.
#[inline(always)]
fn socketcall(ctx: &FExitContext, handler: &ProgramArray) -> i32 {
    let (tgid, _) = current_tgid_pid();
    let Some(session) = current_session(tgid) else { return 0 };
    let regs: *const u8 = ctx.arg(0);
    let off = OFFSETS.load();
    let call = u64::from(kread::<u32>(regs, off.regs_args[0]));
    let base = u64::from(kread::<u32>(regs, off.regs_args[1]));
    let Some(native) = nr::from_socketcall(call) else { return 0 };
    let mut p = PendingSyscall { nr: native | nr::COMPAT_BIT, args: [0; 6] };
    for i in 0..6 {
        // SAFETY: the helper checks the user address.
        p.args[i] = u64::from(unsafe { bpf_probe_read_user((base + 4 * i as u64) as *const u32) }.unwrap_or(0));
    }
    hand_off(ctx, p, session, handler)
}

#[fexit]
pub fn fx32_socketcall(ctx: FExitContext) -> i32 {
    socketcall(&ctx, &FX_HANDLER)
}

#[fexit]
pub fn fxb32_socketcall(ctx: FExitContext) -> i32 {
    socketcall(&ctx, &FX_HANDLER_B)
}

/// A failed exec (a successful one is `sched_process_exec`): named by the kernel's copy of the
/// name the exec opened first (`kpath::KNAMES`), else by the caller's memory, which a failed
/// exec did not replace.
#[inline(always)]
fn on_exec_exit(ctx: &FExitContext, name_reg: usize, compat: bool) -> i32 {
    let ret: i64 = ctx.arg(1);
    let key = bpf_get_current_pid_tgid();
    if ret >= 0 {
        let _ = KNAMES.remove(&key);
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
    let _ = EXEC_ARGS.insert(&key, &name, 0);
    // execve or execveat, as `pt_regs.orig_ax` numbers it for this entry.
    let own = match (compat, name_reg) {
        (false, 0) => 59,
        (false, _) => 322,
        (true, 0) => 11,
        (true, _) => 358,
    };
    let mut kname: *const u8 = core::ptr::null();
    if let Some(k) = KNAMES.get_ptr(&key) {
        // SAFETY: a map value, alive for this run.
        let k = unsafe { &*k };
        if k.orig_ax == own && k.len[0] != NAME_ABSENT {
            kname = k.buf[0].as_ptr();
        }
    }
    exec_result(ret, kname);
    let _ = KNAMES.remove(&key);
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

/// One stub per (syscall, entry, prototype): `fx_<name>` for 64-bit, `fx32_<name>` for
/// 32-bit, and `fxb_`/`fxb32_` for functions of the second prototype (see [`FX_HANDLER`]). The
/// daemon's table (`RESOURCE_SYSCALLS` in monitor/src/ebpf/mod.rs) lists the same names.
macro_rules! fexit_syscalls {
    ($( $name:ident, $name32:ident, $name_b:ident, $name32_b:ident => $nr:ident ),* $(,)?) => { $(
        #[fexit]
        pub fn $name(ctx: FExitContext) -> i32 {
            on_exit64(&ctx, nr::$nr, &FX_HANDLER)
        }
        #[fexit]
        pub fn $name32(ctx: FExitContext) -> i32 {
            on_exit32(&ctx, nr::$nr, &FX_HANDLER)
        }
        #[fexit]
        pub fn $name_b(ctx: FExitContext) -> i32 {
            on_exit64(&ctx, nr::$nr, &FX_HANDLER_B)
        }
        #[fexit]
        pub fn $name32_b(ctx: FExitContext) -> i32 {
            on_exit32(&ctx, nr::$nr, &FX_HANDLER_B)
        }
    )* };
}

fexit_syscalls! {
    fx_open, fx32_open, fxb_open, fxb32_open => OPEN,
    fx_openat, fx32_openat, fxb_openat, fxb32_openat => OPENAT,
    fx_openat2, fx32_openat2, fxb_openat2, fxb32_openat2 => OPENAT2,
    fx_creat, fx32_creat, fxb_creat, fxb32_creat => CREAT,
    fx_open_by_handle_at, fx32_open_by_handle_at, fxb_open_by_handle_at, fxb32_open_by_handle_at => OPEN_BY_HANDLE_AT,
    fx_unlink, fx32_unlink, fxb_unlink, fxb32_unlink => UNLINK,
    fx_unlinkat, fx32_unlinkat, fxb_unlinkat, fxb32_unlinkat => UNLINKAT,
    fx_rmdir, fx32_rmdir, fxb_rmdir, fxb32_rmdir => RMDIR,
    fx_rename, fx32_rename, fxb_rename, fxb32_rename => RENAME,
    fx_renameat, fx32_renameat, fxb_renameat, fxb32_renameat => RENAMEAT,
    fx_renameat2, fx32_renameat2, fxb_renameat2, fxb32_renameat2 => RENAMEAT2,
    fx_mkdir, fx32_mkdir, fxb_mkdir, fxb32_mkdir => MKDIR,
    fx_mkdirat, fx32_mkdirat, fxb_mkdirat, fxb32_mkdirat => MKDIRAT,
    fx_link, fx32_link, fxb_link, fxb32_link => LINK,
    fx_linkat, fx32_linkat, fxb_linkat, fxb32_linkat => LINKAT,
    fx_symlink, fx32_symlink, fxb_symlink, fxb32_symlink => SYMLINK,
    fx_symlinkat, fx32_symlinkat, fxb_symlinkat, fxb32_symlinkat => SYMLINKAT,
    fx_chmod, fx32_chmod, fxb_chmod, fxb32_chmod => CHMOD,
    fx_fchmod, fx32_fchmod, fxb_fchmod, fxb32_fchmod => FCHMOD,
    fx_fchmodat, fx32_fchmodat, fxb_fchmodat, fxb32_fchmodat => FCHMODAT,
    fx_fchmodat2, fx32_fchmodat2, fxb_fchmodat2, fxb32_fchmodat2 => FCHMODAT2,
    fx_chown, fx32_chown, fxb_chown, fxb32_chown => CHOWN,
    fx_fchown, fx32_fchown, fxb_fchown, fxb32_fchown => FCHOWN,
    fx_lchown, fx32_lchown, fxb_lchown, fxb32_lchown => LCHOWN,
    fx_fchownat, fx32_fchownat, fxb_fchownat, fxb32_fchownat => FCHOWNAT,
    fx_truncate, fx32_truncate, fxb_truncate, fxb32_truncate => TRUNCATE,
    fx_ftruncate, fx32_ftruncate, fxb_ftruncate, fxb32_ftruncate => FTRUNCATE,
    fx_socket, fx32_socket, fxb_socket, fxb32_socket => SOCKET,
    fx_connect, fx32_connect, fxb_connect, fxb32_connect => CONNECT,
    fx_bind, fx32_bind, fxb_bind, fxb32_bind => BIND,
    fx_listen, fx32_listen, fxb_listen, fxb32_listen => LISTEN,
    fx_accept, fx32_accept, fxb_accept, fxb32_accept => ACCEPT,
    fx_accept4, fx32_accept4, fxb_accept4, fxb32_accept4 => ACCEPT4,
    fx_sendto, fx32_sendto, fxb_sendto, fxb32_sendto => SENDTO,
    fx_sendmsg, fx32_sendmsg, fxb_sendmsg, fxb32_sendmsg => SENDMSG,
    fx_sendmmsg, fx32_sendmmsg, fxb_sendmmsg, fxb32_sendmmsg => SENDMMSG,
    fx_recvfrom, fx32_recvfrom, fxb_recvfrom, fxb32_recvfrom => RECVFROM,
    fx_recvmsg, fx32_recvmsg, fxb_recvmsg, fxb32_recvmsg => RECVMSG,
    fx_unshare, fx32_unshare, fxb_unshare, fxb32_unshare => UNSHARE,
    fx_setns, fx32_setns, fxb_setns, fxb32_setns => SETNS,
    fx_mount, fx32_mount, fxb_mount, fxb32_mount => MOUNT,
    fx_umount, fx32_umount, fxb_umount, fxb32_umount => UMOUNT2,
    fx_pivot_root, fx32_pivot_root, fxb_pivot_root, fxb32_pivot_root => PIVOT_ROOT,
    fx_open_tree, fx32_open_tree, fxb_open_tree, fxb32_open_tree => OPEN_TREE,
    fx_move_mount, fx32_move_mount, fxb_move_mount, fxb32_move_mount => MOVE_MOUNT,
    fx_fsmount, fx32_fsmount, fxb_fsmount, fxb32_fsmount => FSMOUNT,
    fx_bpf, fx32_bpf, fxb_bpf, fxb32_bpf => BPF,
    fx_ptrace, fx32_ptrace, fxb_ptrace, fxb32_ptrace => PTRACE,
    fx_process_vm_writev, fx32_process_vm_writev, fxb_process_vm_writev, fxb32_process_vm_writev => PROCESS_VM_WRITEV,
    fx_pidfd_getfd, fx32_pidfd_getfd, fxb_pidfd_getfd, fxb32_pidfd_getfd => PIDFD_GETFD,
    fx_chroot, fx32_chroot, fxb_chroot, fxb32_chroot => CHROOT,
    fx_init_module, fx32_init_module, fxb_init_module, fxb32_init_module => INIT_MODULE,
    fx_finit_module, fx32_finit_module, fxb_finit_module, fxb32_finit_module => FINIT_MODULE,
    fx_kexec_load, fx32_kexec_load, fxb_kexec_load, fxb32_kexec_load => KEXEC_LOAD,
    fx_kexec_file_load, fx32_kexec_file_load, fxb_kexec_file_load, fxb32_kexec_file_load => KEXEC_FILE_LOAD,
}

/// The 32-bit entries that have no 64-bit twin function: i386's 16-bit-uid chowns and its
/// 64-bit-length truncates (`COMPAT_ONLY` in monitor/src/ebpf/mod.rs).
macro_rules! fexit_compat_only {
    ($( $name32:ident, $name32_b:ident => $nr:ident ),* $(,)?) => { $(
        #[fexit]
        pub fn $name32(ctx: FExitContext) -> i32 {
            on_exit32(&ctx, nr::$nr, &FX_HANDLER)
        }
        #[fexit]
        pub fn $name32_b(ctx: FExitContext) -> i32 {
            on_exit32(&ctx, nr::$nr, &FX_HANDLER_B)
        }
    )* };
}

fexit_compat_only! {
    fx32_chown16, fxb32_chown16 => CHOWN,
    fx32_lchown16, fxb32_lchown16 => LCHOWN,
    fx32_fchown16, fxb32_fchown16 => FCHOWN,
    fx32_truncate64, fxb32_truncate64 => TRUNCATE,
    fx32_ftruncate64, fxb32_ftruncate64 => FTRUNCATE,
}
