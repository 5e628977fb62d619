//! 32-bit syscalls (`int 0x80`, sysenter) of session processes. They do not fire the
//! `syscalls/sys_enter_*` tracepoints, so the raw `sys_enter`/`sys_exit` tracepoints catch them:
//! the programs return at once unless the current syscall is a compat one (`TS_COMPAT` in
//! `thread_info.status`), then map the i386 number to its 64-bit twin and hand the call to the
//! same exit path as the 64-bit probes, flagged `compat`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_user},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use monitor_common::{nr, PendingSyscall};

use crate::{
    file::{finish, PENDING},
    maps::{current_session, current_tgid_pid, kread, OFFSETS},
    process::{exec_result, EXEC_ARGS},
};

/// x86 `TS_COMPAT`.
const TS_COMPAT: u32 = 0x0002;
const SOCKETCALL: u64 = 102;
const EXECVE32: u64 = 11;
const EXECVEAT32: u64 = 358;

#[inline(always)]
fn in_compat_syscall() -> bool {
    let task = unsafe { bpf_get_current_task() } as *const u8;
    kread::<u32>(task, OFFSETS.load().task_ti_status) & TS_COMPAT != 0
}

/// `sys_enter(struct pt_regs *regs, long id)`.
// `inline(always)`: aya's macro calls the body and ignores its result, so LLVM drops the body's
// return value; as a separate BPF subprogram it could then leave a stack pointer in r0, which
// the verifier rejects. Inlined, the program returns the macro's literal 0.
#[raw_tracepoint(tracepoint = "sys_enter")]
#[inline(always)]
pub fn compat_sys_enter(ctx: RawTracePointContext) -> i32 {
    on_enter(&ctx);
    0
}

#[inline(always)]
fn on_enter(ctx: &RawTracePointContext) {
    if !in_compat_syscall() {
        return;
    }
    // The session first: looked up after the syscall number is known, its loop over the
    // cgroup's ancestors was verified once per syscall (each a different constant), past the
    // 6.1 verifier's 1M-instruction budget.
    let (tgid, _) = current_tgid_pid();
    if current_session(tgid).is_none() {
        return;
    }
    let id: u64 = ctx.arg(1);
    let regs: *const u8 = ctx.arg(0);
    let off = OFFSETS.load();
    let mut args = [0u64; 6];
    for i in 0..6 {
        args[i] = u64::from(kread::<u32>(regs, off.regs_args[i]));
    }
    let native = if id == SOCKETCALL {
        // socketcall(call, u32 *args): the arguments live in user memory.
        let Some(n) = nr::from_socketcall(args[0]) else { return };
        let base = args[1];
        for i in 0..6 {
            // SAFETY: the helper checks the user address.
            args[i] = u64::from(unsafe { bpf_probe_read_user((base + 4 * i as u64) as *const u32) }.unwrap_or(0));
        }
        n
    } else if id == EXECVE32 || id == EXECVEAT32 {
        let name = if id == EXECVE32 { args[0] } else { args[1] };
        let _ = EXEC_ARGS.insert(&bpf_get_current_pid_tgid(), &name, 0);
        return;
    } else {
        let Some(n) = nr::from_compat(id) else { return };
        n
    };
    let p = PendingSyscall { nr: native | nr::COMPAT_BIT, args };
    let _ = PENDING.insert(&bpf_get_current_pid_tgid(), &p, 0);
}

/// `sys_exit(struct pt_regs *regs, long ret)`.
#[raw_tracepoint(tracepoint = "sys_exit")]
#[inline(always)]
pub fn compat_sys_exit(ctx: RawTracePointContext) -> i32 {
    on_exit(&ctx);
    0
}

#[inline(always)]
fn on_exit(ctx: &RawTracePointContext) {
    if !in_compat_syscall() {
        return;
    }
    let ret: i64 = ctx.arg(1);
    let key = bpf_get_current_pid_tgid();
    // SAFETY: plain map lookup; the value is copied out before removal.
    let Some(p) = (unsafe { PENDING.get(&key) }).copied() else {
        exec_result(ret, core::ptr::null());
        return;
    };
    if p.nr & nr::COMPAT_BIT == 0 {
        return;
    }
    let _ = PENDING.remove(&key);
    let (tgid, _) = current_tgid_pid();
    if let Some(session) = current_session(tgid) {
        finish(&p, ret, session);
    }
}
