//! Session rules decided in the kernel, before the process they concern can run anything.
//!
//! - exe rules: an untracked process that execs a listed program (by the file name it was
//!   executed as, or, for an interpreter, by its first argument) starts a new session at that
//!   instant; its descendants inherit it through the tracked set, wherever they move.
//! - cgroup and unit rules: every cgroup created on the cgroup2 hierarchy is tagged pending in
//!   the same instant and announced with a `Cgroup` event; the daemon matches its path against
//!   the globs and keeps it as a session or removes it.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_task,
        generated::{bpf_probe_read_kernel_str, bpf_probe_read_user_str},
    },
    macros::{map, tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext as _,
};
use monitor_common::{
    exe_session_id, CgroupEvent, EventClass, EventKind, RulePath, CGROUP_PATH_MAX, RULES_CGROUP, RULES_EXE,
    RULE_PATH_MAX, TAG_PENDING,
};

use crate::maps::{
    count, current_start_ticks, fill_header, kread, kread_ptr, record_drop, ring_for, track, untrack, OFFSETS, TAGGED,
};

/// Which kinds of rules exist ([`RULES_EXE`], [`RULES_CGROUP`] bits). Written by the daemon.
#[map]
pub static RULES: Array<u32> = Array::with_max_entries(1, 0);

/// exe rule paths (zero-padded) -> rule index. Written by the daemon.
#[map]
pub static EXE_RULES: HashMap<RulePath, u32> = HashMap::with_max_entries(1024, 0);

/// The key being looked up (too large for the stack next to an exec's other state).
#[map]
static RULE_KEY: PerCpuArray<RulePath> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn rules() -> u32 {
    RULES.get(0).copied().unwrap_or(0)
}

/// Zero the key, read a string into it with `read`, and look it up.
#[inline(always)]
fn lookup(key: *mut RulePath, read: impl FnOnce(*mut u8) -> i64) -> Option<i64> {
    let words = key.cast::<u64>();
    for i in 0..RULE_PATH_MAX / 8 {
        // SAFETY: `key` is this CPU's scratch slot, `i` stays within it.
        unsafe { *words.add(i) = 0 };
    }
    // SAFETY: as above.
    let n = read(unsafe { (*key).path.as_mut_ptr() });
    // SAFETY: plain map lookup with a fully initialised key.
    unsafe { EXE_RULES.get(&*key) }.map(|_| n)
}

/// The session an untracked process starts by exec'ing a program named in an exe rule, if it
/// does: the file it was executed as (a script keeps its own name here, whatever interpreter
/// its `#!` line names), else its first argument (`python3 /usr/local/bin/aider`).
#[inline(always)]
pub fn exe_rule_session(ctx: &RawTracePointContext, tgid: u32, held_pending: bool) -> Option<u64> {
    if rules() & RULES_EXE == 0 {
        return None;
    }
    let key = RULE_KEY.get_ptr_mut(0)?;
    let off = OFFSETS.load();
    // TP_PROTO(task, old_pid, bprm)
    let bprm: *const u8 = ctx.arg(2);
    let name = kread_ptr(bprm, off.bprm_filename);
    // SAFETY: the helper bounds the read by the destination size.
    let by_name =
        lookup(key, |dst| unsafe { bpf_probe_read_kernel_str(dst.cast(), RULE_PATH_MAX as u32, name.cast()) });
    if by_name.is_none() {
        let task = unsafe { bpf_get_current_task() } as *const u8;
        let mm = kread_ptr(task, off.task_mm);
        let start = kread::<u64>(mm, off.mm_arg_start);
        let end = kread::<u64>(mm, off.mm_arg_end);
        // argv[0]'s length, read into the key (overwritten below).
        // SAFETY: as above; the source is the new program's own argument area.
        let n0 = unsafe {
            bpf_probe_read_user_str((*key).path.as_mut_ptr().cast(), RULE_PATH_MAX as u32, start as *const _)
        };
        if n0 <= 0 || start + n0 as u64 >= end {
            return None;
        }
        let arg1 = start + n0 as u64;
        // SAFETY: as above.
        lookup(key, |dst| unsafe { bpf_probe_read_user_str(dst.cast(), RULE_PATH_MAX as u32, arg1 as *const _) })?;
    }
    let start_ticks = current_start_ticks();
    let session = exe_session_id(tgid, start_ticks);
    if held_pending {
        // Out of the pending cgroup's count and into the new session's.
        untrack(tgid);
    }
    track(tgid, session, start_ticks);
    Some(session)
}

/// Whether a session id is a cgroup held pending for the cgroup rules (not yet decided).
#[inline(always)]
pub fn pending(session: u64) -> bool {
    // SAFETY: plain map lookup; the value is copied.
    unsafe { TAGGED.get(&session) }.is_some_and(|v| *v == TAG_PENDING)
}

/// Field offsets in the `cgroup/cgroup_mkdir` record.
const MKDIR_ROOT: usize = 8;
const MKDIR_LEVEL: usize = 12;
const MKDIR_ID: usize = 16;
const MKDIR_PATH: usize = 24;

/// A new cgroup while cgroup rules are on: tag it pending before anything can run in it, and
/// tell the daemon its path.
#[tracepoint]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    if rules() & RULES_CGROUP == 0 {
        return 0;
    }
    // SAFETY: reads within the tracepoint record.
    let (Ok(root), Ok(level), Ok(id), Ok(loc)) = (
        unsafe { ctx.read_at::<i32>(MKDIR_ROOT) },
        unsafe { ctx.read_at::<i32>(MKDIR_LEVEL) },
        unsafe { ctx.read_at::<u64>(MKDIR_ID) },
        unsafe { ctx.read_at::<u32>(MKDIR_PATH) },
    ) else {
        return 0;
    };
    // Hierarchy 0 is cgroup2; the v1 hierarchies do not decide sessions.
    if root != 0 {
        return 0;
    }
    if TAGGED.insert(&id, &TAG_PENDING, BPF_NOEXIST as u64).is_err() {
        // The map is full: the daemon still sees the event and tags the cgroup late, and
        // reports the count (`tag_failures`).
        count(monitor_common::counter::TAG_FAILURES);
    }
    let (ring, flags) = ring_for(EventClass::Lifecycle);
    let Some(mut entry) = ring.reserve::<CgroupEvent>(0) else {
        record_drop(id, EventClass::Lifecycle);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned ring-buffer slot; the path is read
    // from the record's data_loc (offset in the low 16 bits), bounded by the field size.
    unsafe {
        fill_header(&mut (*ev).hdr, EventKind::Cgroup as u32, id);
        (*ev).id = id;
        (*ev).level = level as u32;
        let src = ctx.as_ptr().cast::<u8>().wrapping_add((loc & 0xffff) as usize);
        let n = bpf_probe_read_kernel_str((*ev).path.as_mut_ptr().cast(), CGROUP_PATH_MAX as u32, src.cast());
        (*ev).path_len = if n > 0 { (n - 1) as u32 } else { 0 };
    }
    entry.submit(flags);
    count(monitor_common::counter::SENT);
    0
}
