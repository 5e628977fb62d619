//! Process lifecycle probes: exec (with argv, filename and cwd), failed exec, fork, exit.

use aya_ebpf::{
    helpers::{
        bpf_get_current_task, bpf_get_current_uid_gid,
        generated::{bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::LruHashMap,
    programs::{RawTracePointContext, TracePointContext},
};
use monitor_common::{
    counter, EventClass, EventKind, ExecEvent, ExecFailedEvent, ExitEvent, ForkEvent, ARGV_MAX, EXEC_ARGV_TRUNCATED,
    EXEC_CWD_MISSING, EXEC_CWD_TRUNCATED, EXEC_EXE_RESOLVED, EXEC_FILENAME_TRUNCATED, EXEC_FIXED_LEN, EXEC_NAME_KERNEL,
    EXEC_SESSION_START, EXIT_GROUP_DEAD, FILENAME_MAX, FORK_THREAD, NS_PER_TICK,
};

use crate::{
    maps::{
        count, current_session, current_session_peek, current_tgid_pid, emit, emit_bytes, fill_header, kread,
        kread_ptr, record_drop, ring_for, track, tracked_current, untrack, EXEC_SCRATCH, OFFSETS,
    },
    vfs::{walk_cwd, walk_struct_path},
};

/// In-flight execve/execveat of tracked threads: pid_tgid -> user pointer to the file name.
#[map]
pub static EXEC_ARGS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(8192, 0);

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    let (tgid, _) = current_tgid_pid();
    let found = current_session(tgid);
    // A process held only by a pending cgroup (not yet matched against the cgroup rules) may
    // still start an exe session: if the cgroup is then released, it must not take the agent
    // out of recording with it.
    if let Some(session) = found.filter(|s| !crate::rules::pending(*s)) {
        on_exec(&ctx, session, 0);
    } else if let Some(session) = crate::rules::exe_rule_session(&ctx, tgid, found.is_some()) {
        on_exec(&ctx, session, EXEC_SESSION_START);
    } else if let Some(session) = found {
        on_exec(&ctx, session, 0);
    }
    0
}

#[inline(always)]
fn on_exec(ctx: &RawTracePointContext, session: u64, flags: u32) {
    let Some(ev) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, exclusively ours for the duration of this program.
    let ev: &mut ExecEvent = unsafe { &mut *ev };
    let off = OFFSETS.load();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    fill_header(&mut ev.hdr, EventKind::Exec as u32, session);
    ev.ppid = kread::<u32>(kread_ptr(task, off.task_real_parent), off.task_tgid);
    let ugid = bpf_get_current_uid_gid();
    ev.uid = ugid as u32;
    ev.gid = (ugid >> 32) as u32;
    ev.flags = flags;

    // File name from the binprm (TP_PROTO: task, old_pid, bprm).
    let bprm: *const u8 = ctx.arg(2);
    let name = kread_ptr(bprm, off.bprm_filename);
    let n = unsafe { bpf_probe_read_kernel_str(ev.filename.as_mut_ptr().cast(), FILENAME_MAX as u32, name.cast()) };
    ev.filename_len = if n > 0 { (n - 1) as u32 } else { 0 };
    if n as usize >= FILENAME_MAX {
        ev.flags |= EXEC_FILENAME_TRUNCATED;
    }
    // The file the kernel executed: the name above is only what it was given (`/dev/fd/3` for
    // fexecve, `/dev/fd/4/nc` for execveat on a dirfd, a symlink).
    ev.exe_len = 0;
    ev.pad = 0;
    let file = kread_ptr(bprm, off.bprm_file);
    if !file.is_null() {
        let (en, complete) = walk_struct_path(file.wrapping_add(off.file_path as usize), ev.exe.as_mut_ptr());
        if complete {
            ev.exe_len = en;
            ev.flags |= EXEC_EXE_RESOLVED;
        }
    }

    // argv: one read of mm->arg_start..arg_end.
    let mm = kread_ptr(task, off.task_mm);
    let start = kread::<u64>(mm, off.mm_arg_start);
    let end = kread::<u64>(mm, off.mm_arg_end);
    let full = end.saturating_sub(start);
    ev.argv_full_len = full as u32;
    let mut len = full;
    if len > (ARGV_MAX - 1) as u64 {
        len = (ARGV_MAX - 1) as u64;
        ev.flags |= EXEC_ARGV_TRUNCATED;
    }
    len &= (ARGV_MAX - 1) as u64;
    let r = unsafe { bpf_probe_read_user(ev.argv.as_mut_ptr().cast(), len as u32, start as *const _) };
    if r < 0 {
        count(counter::READ_ERRORS);
        len = 0;
    }
    ev.argv_len = len as u32;

    read_cwd(ev);

    let total = EXEC_FIXED_LEN + (len as usize & (ARGV_MAX - 1));
    // SAFETY: `total` <= size_of::<ExecEvent>().
    let bytes = unsafe { core::slice::from_raw_parts((ev as *const ExecEvent).cast::<u8>(), total) };
    emit_bytes(bytes, session, EventClass::Lifecycle);
}

/// The cwd, leaf-first components; userspace reverses them.
#[inline(always)]
fn read_cwd(ev: &mut ExecEvent) {
    let off = OFFSETS.load();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    if kread_ptr(task, off.task_fs).is_null() {
        ev.flags |= EXEC_CWD_MISSING;
        ev.cwd_len = 0;
        return;
    }
    let (len, complete) = walk_cwd(ev.cwd.as_mut_ptr());
    if !complete {
        ev.flags |= EXEC_CWD_TRUNCATED;
    }
    ev.cwd_len = len;
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let (tgid, _) = current_tgid_pid();
    if let Some(session) = current_session(tgid) {
        on_fork(&ctx, tgid, session);
    }
    0
}

#[inline(always)]
fn on_fork(ctx: &RawTracePointContext, tgid: u32, session: u64) {
    let off = OFFSETS.load();
    let child: *const u8 = ctx.arg(1);
    let mut ev = ForkEvent::default();
    fill_header(&mut ev.hdr, EventKind::Fork as u32, session);
    ev.child_tgid = kread::<u32>(child, off.task_tgid);
    ev.child_pid = kread::<u32>(child, off.task_pid);
    if ev.child_tgid == tgid {
        ev.flags = FORK_THREAD;
        ev.child_start_ns = ev.hdr.start_ns;
    } else {
        ev.child_start_ns = kread::<u64>(child, off.task_start_boottime);
        track(ev.child_tgid, session, ev.child_start_ns / NS_PER_TICK);
    }
    emit(&ev, session, EventClass::Lifecycle);
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(_ctx: RawTracePointContext) -> i32 {
    let (tgid, _) = current_tgid_pid();
    // Peek only: an exiting process must never be (re-)added to the tracked set.
    let was_tracked = tracked_current(tgid).is_some();
    if let Some(session) = current_session_peek(tgid) {
        let off = OFFSETS.load();
        let task = unsafe { bpf_get_current_task() } as *const u8;
        // The group is dead once `signal->live` is 0: do_exit() decrements it before this
        // tracepoint on every kernel. (The tracepoint's own `group_dead` argument exists only
        // since 6.16, and a raw tracepoint program that reads an argument the kernel's
        // prototype lacks is refused at attach: only `ctx.arg(0)` exists everywhere.)
        let signal = kread_ptr(task, off.task_signal);
        let live = if signal.is_null() { 1 } else { kread::<u32>(signal, off.signal_live) };
        let mut ev = ExitEvent::default();
        fill_header(&mut ev.hdr, EventKind::Exit as u32, session);
        ev.exit_code = kread::<u32>(task, off.task_exit_code);
        // Threads exiting together can each read `live` at 0 (each decremented it before this
        // point): the one whose removal from the tracked set succeeds reports the group's
        // death, once. A process found by its cgroup alone was never in the set.
        if live == 0 && (untrack(tgid) || !was_tracked) {
            ev.flags = EXIT_GROUP_DEAD;
        }
        emit(&ev, session, EventClass::Lifecycle);
    }
    0
}

/// Field offsets in the `syscalls/sys_enter_*` and `sys_exit_*` records (after the 8-byte
/// common header and the 8-byte syscall number).
const ARG0: usize = 16;
const ARG1: usize = 24;
const RET: usize = 16;

#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    remember_exec(&ctx, ARG0)
}

#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    remember_exec(&ctx, ARG1)
}

#[inline(always)]
fn remember_exec(ctx: &TracePointContext, filename_at: usize) -> u32 {
    let (tgid, _) = current_tgid_pid();
    if current_session(tgid).is_some() {
        // SAFETY: reads within the tracepoint record.
        if let Ok(name) = unsafe { ctx.read_at::<u64>(filename_at) } {
            let _ = EXEC_ARGS.insert(&aya_ebpf::helpers::bpf_get_current_pid_tgid(), &name, 0);
        }
    }
    0
}

#[tracepoint]
pub fn sys_exit_execve(ctx: TracePointContext) -> u32 {
    exec_result(unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(0), core::ptr::null())
}

#[tracepoint]
pub fn sys_exit_execveat(ctx: TracePointContext) -> u32 {
    exec_result(unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(0), core::ptr::null())
}

/// A finished execve/execveat of the current thread (64-bit or compat): a failure is an event,
/// named by `kname` (the kernel's copy, fexit mode) when not null, else by the caller's memory.
#[inline(always)]
pub fn exec_result(ret: i64, kname: *const u8) -> u32 {
    let key = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    // SAFETY: plain map lookup.
    let Some(&name) = (unsafe { EXEC_ARGS.get(&key) }) else {
        return 0;
    };
    let _ = EXEC_ARGS.remove(&key);
    if ret >= 0 {
        return 0;
    }
    let (tgid, _) = current_tgid_pid();
    let Some(session) = current_session(tgid) else {
        return 0;
    };
    let (ring, flags) = ring_for(EventClass::Lifecycle);
    let Some(mut entry) = ring.reserve::<ExecFailedEvent>(0) else {
        record_drop(session, EventClass::Lifecycle);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned ring-buffer slot.
    unsafe {
        fill_header(&mut (*ev).hdr, EventKind::ExecFailed as u32, session);
        (*ev).errno = (-ret) as i32;
        (*ev).uid = bpf_get_current_uid_gid() as u32;
        (*ev).flags = 0;
        let n = if kname.is_null() {
            bpf_probe_read_user_str((*ev).filename.as_mut_ptr().cast(), FILENAME_MAX as u32, name as *const _)
        } else {
            (*ev).flags |= EXEC_NAME_KERNEL;
            bpf_probe_read_kernel_str((*ev).filename.as_mut_ptr().cast(), FILENAME_MAX as u32, kname.cast())
        };
        (*ev).filename_len = if n > 0 { (n - 1) as u32 } else { 0 };
        if n as usize >= FILENAME_MAX {
            (*ev).flags |= EXEC_FILENAME_TRUNCATED;
        }
    }
    entry.submit(flags);
    count(counter::SENT);
    0
}
