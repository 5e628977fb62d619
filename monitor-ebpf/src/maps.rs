//! Maps shared by all probes, the in-kernel session filter, and event emission.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_smp_processor_id,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel, generated::bpf_get_current_ancestor_cgroup_id,
    },
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    Global,
};
use monitor_common::{
    counter, tamper, EventClass, EventHeader, EventKind, ExecEvent, KernelOffsets, ProbeConfig, SessionLoss,
    TamperEvent, Tracked, Verdict, CGROUP_DEPTH_MAX, NS_PER_TICK, TRACKED_SEEDED,
};

/// `v & mask`, kept even where LLVM can prove it redundant. The verifiers of 6.1 and 6.12 do
/// not carry a bound checked on one register over to the copy spilled to the stack and loaded
/// again in a loop, so a bound LLVM dropped the mask for is unknown to them; the volatile read
/// hides the value from LLVM, and the mask is emitted right before the access.
#[inline(always)]
pub fn masked(v: usize, mask: usize) -> usize {
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&v) & mask }
}

/// Kernel struct offsets, filled in by the daemon from BTF.
#[unsafe(no_mangle)]
pub static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
    task_tgid: 0,
    task_pid: 0,
    task_real_parent: 0,
    task_group_leader: 0,
    task_start_boottime: 0,
    task_mm: 0,
    task_fs: 0,
    task_exit_code: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    fs_pwd: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_parent: 0,
    dentry_name: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    vfsmount_root: 0,
    bprm_filename: 0,
    task_files: 0,
    files_fdt: 0,
    fdtable_fd: 0,
    fdtable_max_fds: 0,
    file_path: 0,
    file_private_data: 0,
    socket_type: 0,
    socket_sk: 0,
    skc_family: 0,
    skc_num: 0,
    skc_dport: 0,
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    task_ti_status: 0,
    regs_args: [0; 6],
    pid_nr: 0,
    kiocb_opcode: 0,
    kiocb_fd: 0,
    kiocb_flags: 0,
    filename_name: 0,
    uring_open: [0; 2],
    uring_unlink: [0; 2],
    uring_mkdir: [0; 2],
    uring_statx: [0; 2],
    uring_rename: [0; 4],
    uring_link: [0; 4],
    uring_connect: [0; 2],
    uring_open_how: 0,
    file_inode: 0,
    inode_private: 0,
    task_signal: 0,
    signal_live: 0,
    file_f_flags: 0,
    file_f_mode: 0,
    bprm_file: 0,
    fs_root: 0,
    uring_open_slot: 0,
    regs_args64: [0; 6],
    regs_orig_ax: 0,
    msghdr_name: 0,
    msghdr_namelen: 0,
    unix_sock_path: 0,
});

#[unsafe(no_mangle)]
pub static CONFIG: Global<ProbeConfig> =
    Global::new(ProbeConfig { wakeup_bytes: 1 << 20, lifecycle_wakeup_bytes: 1 << 18 });

// Every map is pinned by the daemon (under its pin directory), so programs keep capturing
// into them while no daemon runs, and the next daemon reads on from where the last stopped.

/// File and network events, kernel to daemon. Its size is set by the daemon at load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 24, 0);

/// exec, exec_failed, fork and exit: a ring of their own, so a file storm cannot crowd them out.
#[map]
pub static LIFECYCLE: RingBuf = RingBuf::with_byte_size(1 << 23, 0);

/// Session cgroups: cgroup id -> 1. Written by the daemon.
#[map]
pub static TAGGED: HashMap<u64, u64> = HashMap::with_max_entries(4096, 0);

/// Tracked processes: tgid -> (session cgroup id, start time). Carried forward on fork, so a
/// process that leaves its cgroup stays tracked; removed when the whole process exits. An entry
/// whose start time is not the current process's is stale (a reused pid) and is dropped.
/// Its size is set by the daemon at load.
#[map]
pub static TRACKED: HashMap<u32, Tracked> = HashMap::with_max_entries(65536, 0);

/// Cache of the ancestry walk: cgroup id -> (session cgroup id or 0, tag generation).
#[map]
pub static VERDICT: LruHashMap<u64, Verdict> = LruHashMap::with_max_entries(8192, 0);

/// The tag generation: the daemon bumps it after every tag, so a "not tagged" verdict computed
/// while a tag was being added is never trusted after it.
#[map]
pub static GENERATION: Array<u64> = Array::with_max_entries(1, 0);

/// The running daemon's tgid (written by the daemon), so a signal to it is seen as tampering.
#[map]
pub static DAEMON: Array<u32> = Array::with_max_entries(1, 0);

/// Events lost per session cgroup (ring buffer full), by class, per CPU so no atomics are
/// needed. It outlives daemons (pinned), so losses while no daemon runs are charged too.
#[map]
pub static SESSION_LOST: PerCpuHashMap<u64, SessionLoss> = PerCpuHashMap::with_max_entries(4096, 0);

/// Tracked processes per session cgroup, as this CPU's share (+1 when a process is tracked here,
/// -1 when one exits here); the sum over CPUs, plus the daemon's `SESSION_SEEDED`, is the
/// number of live tracked processes, which the daemon checks before it ends a session.
#[map]
pub static SESSION_PROCS: PerCpuHashMap<u64, i64> = PerCpuHashMap::with_max_entries(4096, 0);

/// Per-CPU counters, indexed by `monitor_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

/// Scratch space for the one event too large for the stack.
#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *p += 1 };
    }
}

/// Start time of the current process (its thread-group leader), in `/proc` clock ticks.
#[inline(always)]
pub fn current_start_ticks() -> u64 {
    let off = OFFSETS.load();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let leader = kread_ptr(task, off.task_group_leader);
    kread::<u64>(leader, off.task_start_boottime) / NS_PER_TICK
}

/// The tracked entry of `tgid`, if it belongs to the current process; a stale entry (the pid
/// was reused after an exit that was never seen) is removed.
#[inline(always)]
pub fn tracked_current(tgid: u32) -> Option<u64> {
    // SAFETY: plain map lookup; the value is copied.
    let t = *unsafe { TRACKED.get(&tgid) }?;
    if t.start_ticks == current_start_ticks() {
        return Some(t.session & !TRACKED_SEEDED);
    }
    if TRACKED.remove(&tgid).is_ok() {
        count(counter::STALE_TRACKED);
        if t.session & TRACKED_SEEDED == 0 {
            add_session_procs(t.session, -1);
        }
    }
    None
}

/// The session of the current task's cgroup (walking its ancestry once per cgroup and tag
/// generation), or 0.
#[inline(always)]
fn cgroup_session() -> u64 {
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let generation = GENERATION.get(0).copied().unwrap_or(0);
    // SAFETY: plain map lookup.
    if let Some(v) = unsafe { VERDICT.get(&cgroup) } {
        // A session verdict holds while its cgroup is tagged: one cached by a walk that raced
        // the daemon's untag (a released pending cgroup) must not outlive the tag.
        if (v.session == 0 && v.generation == generation)
            || (v.session != 0 && unsafe { TAGGED.get(&v.session) }.is_some())
        {
            return v.session;
        }
    }
    let mut found = 0u64;
    for level in 0..CGROUP_DEPTH_MAX {
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 {
            break;
        }
        if unsafe { TAGGED.get(&id) }.is_some() {
            found = id;
            break;
        }
    }
    let _ = VERDICT.insert(&cgroup, &Verdict { session: found, generation }, 0);
    found
}

/// The session (tagged cgroup id) the current process belongs to, or `None` for everything
/// else on the host. Cheap for untagged processes: three map lookups once the cache is warm.
/// A process found in a tagged cgroup is added to the tracked set.
#[inline(always)]
pub fn current_session(tgid: u32) -> Option<u64> {
    if let Some(s) = tracked_current(tgid) {
        return Some(s);
    }
    let session = cgroup_session();
    if session == 0 {
        return None;
    }
    track(tgid, session, current_start_ticks());
    Some(session)
}

/// Like [`current_session`], but never adds to the tracked set (the exit path must not
/// re-insert a process that is going away).
#[inline(always)]
pub fn current_session_peek(tgid: u32) -> Option<u64> {
    if let Some(s) = tracked_current(tgid) {
        return Some(s);
    }
    let session = cgroup_session();
    (session != 0).then_some(session)
}

/// Add a process to the tracked set, counting it in its session's live processes when it is
/// new. A failure (map full) is counted and reported as a tamper event: the session is
/// incomplete from here on.
#[inline(always)]
pub fn track(tgid: u32, session: u64, start_ticks: u64) {
    if TRACKED.insert(&tgid, &Tracked { session, start_ticks }, BPF_NOEXIST as u64).is_ok() {
        add_session_procs(session, 1);
    } else if unsafe { TRACKED.get(&tgid) }.is_none() {
        count(counter::TRACK_FAILURES);
        // Built in the ring, not on the stack: this is inlined into every program that finds a
        // session, and 120 bytes of event would count against each one's 512-byte stack.
        let (ring, flags) = ring_for(EventClass::Lifecycle);
        let Some(mut entry) = ring.reserve::<TamperEvent>(0) else {
            record_drop(session, EventClass::Lifecycle);
            return;
        };
        let ev = entry.as_mut_ptr();
        // SAFETY: `ev` points at a reserved, exclusively owned ring-buffer slot.
        unsafe {
            core::ptr::write_bytes(ev, 0, 1);
            fill_header(&mut (*ev).hdr, EventKind::Tamper as u32, session);
            (*ev).what = tamper::TRACK_FAILED;
            (*ev).target = tgid;
        }
        entry.submit(flags);
        count(counter::SENT);
    }
}

/// A whole process exited: forget it and take it off its session's live count.
#[inline(always)]
pub fn untrack(tgid: u32) -> bool {
    // SAFETY: plain map lookup; the value is copied before removal.
    if let Some(&value) = unsafe { TRACKED.get(&tgid) } {
        // The map's delete is atomic: of threads racing here, one removes the entry.
        if TRACKED.remove(&tgid).is_ok() {
            // Processes the daemon seeded from /proc were never counted here (the daemon knows them).
            if value.session & TRACKED_SEEDED == 0 {
                add_session_procs(value.session, -1);
            }
            return true;
        }
    }
    false
}

#[inline(always)]
fn add_session_procs(session: u64, delta: i64) {
    let _ = SESSION_PROCS.insert(&session, &0, BPF_NOEXIST as u64);
    if let Some(p) = SESSION_PROCS.get_ptr_mut(&session) {
        // SAFETY: this CPU's slot of a live map value.
        unsafe { *p += delta };
    }
}

#[inline(always)]
pub fn current_tgid_pid() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

/// Read a kernel value at `base + off`; zero on failure (counted).
#[inline(always)]
pub fn kread<T: Copy + Default>(base: *const u8, off: u32) -> T {
    if base.is_null() {
        return T::default();
    }
    // SAFETY: bpf_probe_read_kernel checks the address.
    match unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>()) } {
        Ok(v) => v,
        Err(_) => {
            count(counter::READ_ERRORS);
            T::default()
        }
    }
}

#[inline(always)]
pub fn kread_ptr(base: *const u8, off: u32) -> *const u8 {
    kread::<u64>(base, off) as *const u8
}

/// Fill the common header for the current task.
#[inline(always)]
pub fn fill_header(hdr: &mut EventHeader, kind: u32, session: u64) {
    let off = OFFSETS.load();
    let (tgid, pid) = current_tgid_pid();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let leader = kread_ptr(task, off.task_group_leader);
    hdr.kind = kind;
    hdr.cpu = unsafe { bpf_get_smp_processor_id() };
    hdr.ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    hdr.session_cgroup = session;
    hdr.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    hdr.tgid = tgid;
    hdr.pid = pid;
    hdr.start_ns = kread::<u64>(leader, off.task_start_boottime);
}

/// Ring-buffer flags: no wake-up per event, except once the backlog passes the threshold.
#[inline(always)]
fn wake_flags(ring: &RingBuf, threshold: u64) -> u64 {
    if ring.query(BPF_RB_AVAIL_DATA as u64) >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// The ring of an event class and its wake-up flags.
#[inline(always)]
pub fn ring_for(class: EventClass) -> (&'static RingBuf, u64) {
    let cfg = CONFIG.load();
    match class {
        EventClass::Lifecycle => (&LIFECYCLE, wake_flags(&LIFECYCLE, cfg.lifecycle_wakeup_bytes)),
        EventClass::File | EventClass::Net => (&EVENTS, wake_flags(&EVENTS, cfg.wakeup_bytes)),
    }
}

/// Count an event that did not fit, globally and for its session, by class.
#[inline(always)]
pub fn record_drop(session: u64, class: EventClass) {
    count(class.drop_counter());
    let _ = SESSION_LOST.insert(&session, &SessionLoss::default(), BPF_NOEXIST as u64);
    if let Some(p) = SESSION_LOST.get_ptr_mut(&session) {
        // SAFETY: this CPU's slot of a live map value.
        unsafe {
            match class {
                EventClass::Lifecycle => (*p).lifecycle += 1,
                EventClass::File => (*p).file += 1,
                EventClass::Net => (*p).net += 1,
            }
        }
    }
}

/// Send `len` bytes starting at `data`.
#[inline(always)]
pub fn emit_bytes(data: &[u8], session: u64, class: EventClass) {
    let (ring, flags) = ring_for(class);
    if ring.output::<[u8]>(data, flags).is_ok() {
        count(counter::SENT);
    } else {
        record_drop(session, class);
    }
}

/// Send a fixed-size event.
#[inline(always)]
pub fn emit<T: Copy>(event: &T, session: u64, class: EventClass) {
    let (ring, flags) = ring_for(class);
    if ring.output::<T>(event, flags).is_ok() {
        count(counter::SENT);
    } else {
        record_drop(session, class);
    }
}
