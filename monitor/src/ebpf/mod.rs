//! Loading and attaching the kernel programs, and access to their maps.

pub mod btf;
pub mod decode;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
    programs::{links::CgroupAttachMode, links::FdLink, CgroupSockAddr, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use monitor_common::{
    counter, KernelOffsets, ProbeConfig, RulePath, SessionLoss, Tracked, Verdict, RULES_CGROUP, RULES_EXE,
    RULE_PATH_MAX, TAG_SESSION, TRACKED_SEEDED,
};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("this kernel ({release}) has no {missing}: agentmon needs Linux 5.17 or later")]
    Unsupported { missing: &'static str, release: String },
    #[error("this kernel has no tracepoint {category}:{names}")]
    NoTracepoint { category: &'static str, names: String },
    #[error("loading/attaching program {name} failed: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("pinning {name} in bpffs failed: {message}")]
    Pin { name: &'static str, message: String },
}

/// The embedded eBPF object, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

/// (program, kind, category, tracepoint) for everything we attach.
const PROGRAMS: &[(&str, Kind)] = &[
    ("sched_process_exec", Kind::Raw("sched_process_exec")),
    ("sched_process_fork", Kind::Raw("sched_process_fork")),
    ("sched_process_exit", Kind::Raw("sched_process_exit")),
    ("sys_enter_execve", Kind::Syscall("sys_enter_execve")),
    ("sys_enter_execveat", Kind::Syscall("sys_enter_execveat")),
    ("sys_exit_execve", Kind::Syscall("sys_exit_execve")),
    ("sys_exit_execveat", Kind::Syscall("sys_exit_execveat")),
    ("signal_generate", Kind::Raw("signal_generate")),
    // Named io_uring_submit_sqe before 6.4, with the same leading fields (ctx, req, user_data,
    // opcode) the program reads.
    ("io_uring_submit_req", Kind::Category("io_uring", &["io_uring_submit_req", "io_uring_submit_sqe"])),
    ("io_uring_complete", Kind::Category("io_uring", &["io_uring_complete"])),
    ("cgroup_mkdir", Kind::Category("cgroup", &["cgroup_mkdir"])),
];

/// 32-bit (`int 0x80`) syscalls: raw `sys_enter`/`sys_exit` programs that return at once for
/// 64-bit syscalls. Attached unless `capture_compat = false`.
const COMPAT_PROGRAMS: &[(&str, Kind)] =
    &[("compat_sys_enter", Kind::Raw("sys_enter")), ("compat_sys_exit", Kind::Raw("sys_exit"))];

/// File and network syscalls: each `sys_enter_<name>` runs `sys_enter_tracked`, each
/// `sys_exit_<name>` runs `sys_exit_tracked`. Only these syscalls pay for a program.
pub const RESOURCE_SYSCALLS: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "creat",
    "unlink",
    "unlinkat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "truncate",
    "ftruncate",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "recvfrom",
    "recvmsg",
    // Tamper and hand-off: namespaces, mounts, bpf(), and reaching into other processes.
    // umount2(2)'s tracepoints are named sys_enter_umount/sys_exit_umount on x86-64.
    "unshare",
    "setns",
    "mount",
    "umount",
    "pivot_root",
    "open_tree",
    "move_mount",
    "fsmount",
    "bpf",
    "ptrace",
    "process_vm_writev",
    "pidfd_getfd",
    "chroot",
    "init_module",
    "finit_module",
    "kexec_load",
    "kexec_file_load",
    "open_by_handle_at",
    "socket",
];

#[derive(Clone, Copy)]
enum Kind {
    Raw(&'static str),
    Syscall(&'static str),
    /// A classic tracepoint outside `syscalls`: (category, its names, newest first: the first
    /// one this kernel has is attached).
    Category(&'static str, &'static [&'static str]),
}

impl Kind {
    /// The kind as `status` counts it.
    const fn label(self) -> &'static str {
        match self {
            Kind::Raw(_) => "raw_tracepoint",
            Kind::Syscall(_) => "syscall_tracepoint",
            Kind::Category(..) => "tracepoint",
        }
    }
}

/// Attached programs by kind of hook, from their names in [`Probes::attached`]: `raw_tp/…`,
/// `tracepoint/<category>/…` when loaded, `<program>-<tracepoint>` pin names when adopted.
pub fn probe_kinds(attached: &[String]) -> std::collections::BTreeMap<String, u64> {
    let mut kinds = std::collections::BTreeMap::new();
    for name in attached {
        let kind = if name.starts_with("raw_tp/") {
            "raw_tracepoint"
        } else if name.starts_with("tracepoint/syscalls/") {
            "syscall_tracepoint"
        } else if name.starts_with("tracepoint/") {
            "tracepoint"
        } else if name.starts_with("fexit/") || name.starts_with("fx") {
            "fexit"
        } else if name.starts_with("fentry/") || name.starts_with("kp_") || name.starts_with("kn_") {
            "fentry"
        } else if name.starts_with("cgroup/") || name.starts_with("kaddr_") {
            "cgroup"
        } else {
            let program = name.split_once('-').map_or(name.as_str(), |(p, _)| p);
            match PROGRAMS.iter().chain(COMPAT_PROGRAMS).find(|(p, _)| *p == program) {
                Some((_, kind)) => kind.label(),
                // sys_enter_tracked, sys_exit_tracked: one program on many syscall tracepoints.
                None if program.starts_with("sys_") => "syscall_tracepoint",
                None => "other",
            }
        };
        *kinds.entry(kind.to_owned()).or_default() += 1;
    }
    kinds
}

/// `BPF_NOEXIST`: insert only when the key is absent.
const BPF_NOEXIST: u64 = 1;

/// Maps the daemon uses, pinned as `<pin dir>/<version>/<NAME>`.
const PINNED_MAPS: &[&str] = &[
    "EVENTS",
    "LIFECYCLE",
    "TAGGED",
    "TRACKED",
    "VERDICT",
    "GENERATION",
    "DAEMON",
    "SESSION_LOST",
    "SESSION_PROCS",
    // Held by its pin: a prog array loses its entries when no file refers to it, and the
    // attached stubs outlive the daemon that loaded them.
    "FX_HANDLER",
    "FX_HANDLER_B",
    "COUNTERS",
    "RULES",
    "EXE_RULES",
];

/// The programs' identity: a hash of the embedded object and of the choices that change what
/// is attached, so a daemon adopts only programs built and attached the way it would, and
/// replaces any other.
pub fn object_version(opts: &ProbeOptions) -> String {
    // FNV-1a: stable across builds and Rust versions (std's hasher is not).
    let h = OBJECT.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    let compat = if opts.compat { "" } else { "-nocompat" };
    let fexit = if opts.fexit { "-fexit" } else { "" };
    format!("v{h:016x}-t{}{compat}{fexit}", opts.max_tracked)
}

/// How the daemon came by its programs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attachment {
    /// None were pinned: loaded, attached and pinned now.
    Loaded,
    /// The same programs were already pinned and capturing: adopted with their maps and rings.
    Adopted,
    /// Other programs (another build) were pinned: the new ones were attached first, then the
    /// old ones detached, so there was no gap.
    Replaced { old_version: String },
}

/// Ring sizes and where pins live.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub pin_dir: PathBuf,
    pub ring_bytes: u32,
    pub lifecycle_ring_bytes: u32,
    /// Capture 32-bit (`int 0x80`) syscalls (raw `sys_enter`/`sys_exit` programs, or fexit
    /// programs on the `__ia32_*` functions).
    pub compat: bool,
    /// Try fexit programs on the syscall functions first (see [`attach_fexit`]).
    pub fexit: bool,
    /// Size of the tracked-process map.
    pub max_tracked: u32,
    /// Session rules the kernel applies, written before the programs attach.
    pub rules: KernelRules,
}

/// What the kernel needs of the session rules: exe paths (each with its rule's index) and
/// whether any cgroup or unit rule exists (new cgroups are then held pending).
#[derive(Debug, Clone, Default)]
pub struct KernelRules {
    pub exe_paths: Vec<(String, u32)>,
    pub cgroups: bool,
}

/// The attached programs' maps, as the daemon uses them. Programs stay attached through their
/// pinned links whether or not a daemon runs.
pub struct Probes {
    pub attached: Vec<String>,
    pub attachment: Attachment,
    pub version: String,
    /// `<pin dir>/<version>`.
    pub pin_path: PathBuf,
    lifecycle: Option<RingBuf<MapData>>,
    events: Option<RingBuf<MapData>>,
    /// The replaced programs' rings, still to be drained (events before `replaced_at_ns`).
    pub replaced_rings: Vec<RingBuf<MapData>>,
    pub replaced_at_ns: u64,
    replaced_dir: Option<PathBuf>,
    tagged: HashMap<MapData, u64, u64>,
    tracked: HashMap<MapData, u32, Tracked>,
    /// An LRU hash in the kernel; aya's `HashMap` handles both kinds.
    verdict: HashMap<MapData, u64, Verdict>,
    generation: Array<MapData, u64>,
    daemon: Array<MapData, u32>,
    session_lost: PerCpuHashMap<MapData, u64, SessionLoss>,
    session_procs: PerCpuHashMap<MapData, u64, i64>,
    counters: PerCpuArray<MapData, u64>,
    rules: Array<MapData, u32>,
    exe_rules: HashMap<MapData, RulePath, u32>,
}

/// Kernel-side counters summed over CPUs.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct KernelCounters {
    pub sent: u64,
    pub dropped_lifecycle: u64,
    pub dropped_file: u64,
    pub dropped_net: u64,
    pub read_errors: u64,
    pub track_failures: u64,
    pub stale_tracked: u64,
    pub tag_failures: u64,
}

impl KernelCounters {
    pub fn dropped(&self) -> u64 {
        self.dropped_lifecycle + self.dropped_file + self.dropped_net
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
    T::try_from(map).map_err(|source| ProbeError::Map { name, source })
}

fn open_pinned<T>(dir: &Path, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = MapData::from_pin(dir.join(name))
        .and_then(aya::maps::Map::from_map_data)
        .map_err(|source| ProbeError::Map { name, source })?;
    T::try_from(map).map_err(|source| ProbeError::Map { name, source })
}

fn pin_err(name: &'static str, e: impl std::fmt::Display) -> ProbeError {
    ProbeError::Pin { name, message: e.to_string() }
}

/// Link pins in a version directory: `link-<program>-<tracepoint>` (bpffs refuses dots in names).
fn link_pins(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("link-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Version directories under the pin dir.
fn pinned_versions(pin_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(pin_dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('v')))
                .collect()
        })
        .unwrap_or_default()
}

/// Remove a version directory's pins, links first, so its programs detach.
fn remove_pins(dir: &Path) -> std::io::Result<()> {
    for l in link_pins(dir) {
        std::fs::remove_file(dir.join(l))?;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            std::fs::remove_file(e.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

fn boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Probes {
    /// Adopt the pinned programs when they are this build's; otherwise load, attach and pin
    /// this build's programs, and then detach any other pinned ones.
    pub fn open(opts: &ProbeOptions) -> Result<Self, ProbeError> {
        preflight()?;
        let version = object_version(opts);
        let dir = opts.pin_dir.join(&version);
        std::fs::create_dir_all(&opts.pin_dir).map_err(|e| pin_err("pin dir", e))?;
        let links = link_pins(&dir);
        if !links.is_empty() && PINNED_MAPS.iter().all(|m| dir.join(m).exists()) {
            let mut probes = Self::from_pins(&dir, version, &links, Attachment::Adopted)?;
            probes.set_rules(&opts.rules)?;
            return Ok(probes);
        }
        if dir.exists() {
            // A load that did not finish: start over.
            remove_pins(&dir).map_err(|e| pin_err("stale pins", e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| pin_err("pin dir", e))?;
        // A load or attach that fails leaves nothing of its own pinned (attached programs
        // writing into rings nobody reads); the programs it was to replace keep capturing.
        Self::load_new(opts, &dir, version).inspect_err(|_| {
            if let Err(e) = remove_pins(&dir) {
                tracing::warn!(pins = %dir.display(), error = %e, "could not remove the pins of the failed load");
            }
        })
    }

    /// Load, attach and pin this build's programs in `dir`, taking over from any other pinned
    /// version.
    fn load_new(opts: &ProbeOptions, dir: &Path, version: String) -> Result<Self, ProbeError> {
        let old: Vec<PathBuf> = pinned_versions(&opts.pin_dir).into_iter().filter(|p| p != dir).collect();
        let kernel_btf = btf::Btf::from_sys_fs()?;
        let mut ebpf = Self::load_object(opts, dir, &kernel_btf)?;
        // Carry the sessions over before the new programs attach, so they filter the same way.
        let mut unreadable = Vec::new();
        let old_probes: Vec<Self> = old.iter().filter_map(|d| {
            let name = d.file_name()?.to_string_lossy().into_owned();
            Self::from_pins(d, name, &link_pins(d), Attachment::Adopted)
                .map_err(|e| {
                    tracing::warn!(pins = %d.display(), error = %e, "cannot open the replaced programs' maps (an older map layout): their sessions are re-seeded from the handoff and /proc");
                    unreadable.push(d.clone());
                })
                .ok()
        }).collect();
        let mut probes = Self::from_loaded(&mut ebpf, dir, version)?;
        for o in &old_probes {
            probes.copy_state_from(o);
        }
        probes.set_rules(&opts.rules)?;
        probes.attached = attach_all(&mut ebpf, dir, opts.compat, opts.fexit.then_some(&kernel_btf))?;
        // Programs whose maps this build cannot read are detached now that the new ones run,
        // so nothing is captured twice.
        for d in &unreadable {
            let _ = remove_pins(d);
        }
        drop(ebpf);
        // Every old program ran before this instant and every new one after it: the daemon
        // takes older events from the old rings and newer ones from the new rings, once each.
        let replaced_at_ns = boot_ns();
        if let Some(mut o) = old_probes.into_iter().next() {
            // Both sets capture now. Take over what the old programs learnt while the new ones
            // were being attached, then detach the old ones.
            probes.copy_state_from(&o);
            probes.drop_tracked_not_in(&o);
            probes.recount_session_procs();
            for d in &old {
                for l in link_pins(d) {
                    let _ = std::fs::remove_file(d.join(l));
                }
            }
            probes.attachment = Attachment::Replaced { old_version: o.version.clone() };
            probes.replaced_at_ns = replaced_at_ns;
            probes.replaced_dir = Some(o.pin_path.clone());
            probes.replaced_rings.extend(o.lifecycle.take());
            probes.replaced_rings.extend(o.events.take());
            for d in old.iter().skip(1) {
                let _ = remove_pins(d);
            }
        }
        Ok(probes)
    }

    fn load_object(opts: &ProbeOptions, dir: &Path, kernel_btf: &btf::Btf) -> Result<Ebpf, ProbeError> {
        let offsets: KernelOffsets = kernel_btf.kernel_offsets()?;
        let config = ProbeConfig {
            wakeup_bytes: u64::from(opts.ring_bytes / 8),
            lifecycle_wakeup_bytes: u64::from(opts.lifecycle_ring_bytes / 8),
        };
        let pins: Vec<(&str, PathBuf)> = PINNED_MAPS.iter().map(|m| (*m, dir.join(m))).collect();
        let mut loader = EbpfLoader::new();
        loader
            .override_global("OFFSETS", &offsets, true)
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", opts.ring_bytes)
            .map_max_entries("LIFECYCLE", opts.lifecycle_ring_bytes)
            .map_max_entries("TRACKED", opts.max_tracked);
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        loader.load(OBJECT).map_err(ProbeError::Load)
    }

    fn from_loaded(ebpf: &mut Ebpf, dir: &Path, version: String) -> Result<Self, ProbeError> {
        Ok(Self {
            lifecycle: Some(take(ebpf, "LIFECYCLE")?),
            events: Some(take(ebpf, "EVENTS")?),
            tagged: take(ebpf, "TAGGED")?,
            tracked: take(ebpf, "TRACKED")?,
            verdict: take(ebpf, "VERDICT")?,
            generation: take(ebpf, "GENERATION")?,
            daemon: take(ebpf, "DAEMON")?,
            session_lost: take(ebpf, "SESSION_LOST")?,
            session_procs: take(ebpf, "SESSION_PROCS")?,
            counters: take(ebpf, "COUNTERS")?,
            rules: take(ebpf, "RULES")?,
            exe_rules: take(ebpf, "EXE_RULES")?,
            attached: Vec::new(),
            attachment: Attachment::Loaded,
            version,
            pin_path: dir.to_owned(),
            replaced_rings: Vec::new(),
            replaced_at_ns: 0,
            replaced_dir: None,
        })
    }

    fn from_pins(dir: &Path, version: String, links: &[String], attachment: Attachment) -> Result<Self, ProbeError> {
        Ok(Self {
            lifecycle: Some(open_pinned(dir, "LIFECYCLE")?),
            events: Some(open_pinned(dir, "EVENTS")?),
            tagged: open_pinned(dir, "TAGGED")?,
            tracked: open_pinned(dir, "TRACKED")?,
            verdict: open_pinned(dir, "VERDICT")?,
            generation: open_pinned(dir, "GENERATION")?,
            daemon: open_pinned(dir, "DAEMON")?,
            session_lost: open_pinned(dir, "SESSION_LOST")?,
            session_procs: open_pinned(dir, "SESSION_PROCS")?,
            counters: open_pinned(dir, "COUNTERS")?,
            rules: open_pinned(dir, "RULES")?,
            exe_rules: open_pinned(dir, "EXE_RULES")?,
            attached: links.iter().filter_map(|l| l.strip_prefix("link-")).map(str::to_owned).collect(),
            attachment,
            version,
            pin_path: dir.to_owned(),
            replaced_rings: Vec::new(),
            replaced_at_ns: 0,
            replaced_dir: None,
        })
    }

    /// Sessions, tracked processes and loss counts from the programs being replaced (the live
    /// process counts are recounted after: see `recount_session_procs`).
    fn copy_state_from(&mut self, old: &Self) {
        for (k, v) in old.tagged.iter().filter_map(Result::ok) {
            let _ = self.tagged.insert(k, v, 0);
        }
        for (k, v) in old.tracked.iter().filter_map(Result::ok) {
            let _ = self.tracked.insert(k, v, BPF_NOEXIST);
        }
        for (k, v) in old.session_lost.iter().filter_map(Result::ok) {
            let _ = self.session_lost.insert(k, v, 0);
        }
    }

    /// Forget tracked processes the old programs no longer track: they exited before this
    /// set's exit probe was attached, so no exit will ever remove them.
    fn drop_tracked_not_in(&mut self, old: &Self) {
        let stale: Vec<u32> =
            self.tracked.keys().filter_map(Result::ok).filter(|k| old.tracked.get(k, 0).is_err()).collect();
        for k in stale {
            let _ = self.tracked.remove(&k);
        }
    }

    /// Set each session's kernel count of live processes from the tracked set (after a
    /// replacement merged two programs' state). Written to one CPU's slot, the others zeroed.
    fn recount_session_procs(&mut self) {
        let mut counts: std::collections::HashMap<u64, i64> = std::collections::HashMap::new();
        for (_, v) in self.tracked.iter().filter_map(Result::ok) {
            if v.session & TRACKED_SEEDED == 0 {
                *counts.entry(v.session).or_default() += 1;
            }
        }
        let cpus = aya::util::nr_cpus().unwrap_or(1);
        let mut sessions: Vec<u64> = self.tagged.keys().filter_map(Result::ok).collect();
        // Sessions started by exe rules have no tagged cgroup.
        sessions.extend(counts.keys().filter(|s| **s & monitor_common::EXE_SESSION != 0));
        for session in sessions {
            let mut per_cpu = vec![0i64; cpus];
            per_cpu[0] = counts.get(&session).copied().unwrap_or(0);
            let set = aya::maps::PerCpuValues::try_from(per_cpu)
                .map_err(|e| e.to_string())
                .and_then(|v| self.session_procs.insert(session, v, 0).map_err(|e| e.to_string()));
            if let Err(e) = set {
                tracing::warn!(error = %e, session, "could not set the session's process count");
            }
        }
    }

    /// The old programs' rings are drained: remove what is left of their pins.
    pub fn finish_replacement(&mut self) {
        self.replaced_rings.clear();
        if let Some(d) = self.replaced_dir.take() {
            if let Err(e) = remove_pins(&d) {
                tracing::warn!(pins = %d.display(), error = %e, "could not remove the replaced programs' pins");
            }
        }
    }

    /// The rings, for the daemon's reader (once): lifecycle, then file and network.
    pub fn take_rings(&mut self) -> Option<(RingBuf<MapData>, RingBuf<MapData>)> {
        Some((self.lifecycle.take()?, self.events.take()?))
    }

    /// Read the rings to their end and count the events still in them, by session cgroup id
    /// (0: undecodable). For `unload --force`, which destroys the rings: what no daemon will
    /// ever store is counted and said, never dropped silently.
    pub fn drain_unread(&mut self) -> std::collections::BTreeMap<u64, u64> {
        let mut left = std::collections::BTreeMap::new();
        for ring in [self.lifecycle.as_mut(), self.events.as_mut()].into_iter().flatten() {
            while let Some(item) = ring.next() {
                let session = decode::decode(&item).map_or(0, |e| e.header().session_cgroup);
                *left.entry(session).or_insert(0) += 1;
            }
        }
        left
    }

    /// Start capturing a cgroup and everything below it. The tag generation is bumped after
    /// the insert, so a "not tagged" verdict a program computed while the tag was being added
    /// is recomputed on its next use: no race leaves the cgroup cached as untagged.
    pub fn tag(&mut self, cgroup_id: u64) -> Result<(), ProbeError> {
        self.tagged.insert(cgroup_id, TAG_SESSION, 0).map_err(|source| ProbeError::Map { name: "TAGGED", source })?;
        let generation = self.generation.get(&0, 0).unwrap_or(0);
        self.generation
            .set(0, generation.wrapping_add(1), 0)
            .map_err(|source| ProbeError::Map { name: "GENERATION", source })
    }

    /// Write the session rules the kernel applies: the exe paths (replacing any earlier set)
    /// and the switches. Paths longer than the key are refused.
    pub fn set_rules(&mut self, rules: &KernelRules) -> Result<(), ProbeError> {
        let map_err = |name, source| ProbeError::Map { name, source };
        let mut keys = Vec::new();
        for (path, index) in &rules.exe_paths {
            let mut key = RulePath::default();
            let b = path.as_bytes();
            if b.len() >= RULE_PATH_MAX {
                return Err(ProbeError::Pin {
                    name: "EXE_RULES",
                    message: format!("exe rule path {path} is longer than {} bytes", RULE_PATH_MAX - 1),
                });
            }
            key.path[..b.len()].copy_from_slice(b);
            self.exe_rules.insert(key, index, 0).map_err(|e| map_err("EXE_RULES", e))?;
            keys.push(key);
        }
        let stale: Vec<RulePath> = self.exe_rules.keys().filter_map(Result::ok).filter(|k| !keys.contains(k)).collect();
        for k in stale {
            let _ = self.exe_rules.remove(&k);
        }
        let bits =
            if rules.exe_paths.is_empty() { 0 } else { RULES_EXE } | if rules.cgroups { RULES_CGROUP } else { 0 };
        self.rules.set(0, bits, 0).map_err(|e| map_err("RULES", e))
    }

    /// Cgroups the kernel holds pending for the cgroup rules (created while no daemon decided).
    pub fn pending_cgroups(&self) -> Vec<u64> {
        self.tagged
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| *v == monitor_common::TAG_PENDING)
            .map(|(k, _)| k)
            .collect()
    }

    /// Tell the programs which process is the daemon (signals to it are tamper events).
    pub fn set_daemon(&mut self, tgid: u32) -> Result<(), ProbeError> {
        self.daemon.set(0, tgid, 0).map_err(|source| ProbeError::Map { name: "DAEMON", source })
    }

    /// Track a process that was already running when its session was adopted. It is marked
    /// seeded, so the kernel does not count it (the daemon knows it). A process the kernel
    /// already tracks is left as it is. `start_ticks` is its `/proc` start time, so the entry
    /// never outlives the process into a reused pid.
    pub fn track(&mut self, tgid: u32, session_cgroup: u64, start_ticks: u64) -> Result<(), ProbeError> {
        match self.tracked.insert(tgid, Tracked { session: session_cgroup | TRACKED_SEEDED, start_ticks }, BPF_NOEXIST)
        {
            Ok(()) => Ok(()),
            Err(_) if self.tracked.get(&tgid, 0).is_ok() => Ok(()),
            Err(source) => Err(ProbeError::Map { name: "TRACKED", source }),
        }
    }

    /// The processes the kernel tracks in a session.
    pub fn tracked_pids(&self, session: u64) -> Vec<u32> {
        self.tracked
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.session & !TRACKED_SEEDED == session)
            .map(|(k, _)| k)
            .collect()
    }

    /// The session a process is tracked in, if any.
    pub fn tracked_session(&self, tgid: u32) -> Option<u64> {
        self.tracked.get(&tgid, 0).ok().map(|v| v.session & !TRACKED_SEEDED)
    }

    /// The session a process is tracked in, if that entry is the process itself: a `start`
    /// (its `/proc` start time, when known) that differs means the pid was reused.
    pub fn tracked_session_of(&self, tgid: u32, start: Option<u64>) -> Option<u64> {
        let v = self.tracked.get(&tgid, 0).ok()?;
        (start.is_none_or(|s| s == v.start_ticks)).then_some(v.session & !TRACKED_SEEDED)
    }

    /// Processes of a session the kernel tracks that the daemon did not seed. A session must
    /// not end while this is above zero.
    pub fn kernel_live(&self, cgroup_id: u64) -> i64 {
        self.session_procs.get(&cgroup_id, 0).map_or(0, |v| v.iter().sum())
    }

    /// Stop capturing a session; returns what it lost in the kernel.
    pub fn untag(&mut self, cgroup_id: u64) -> SessionLoss {
        let _ = self.tagged.remove(&cgroup_id);
        let stale: Vec<u64> = self
            .verdict
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.session == cgroup_id)
            .map(|(k, _)| k)
            .collect();
        for k in stale {
            let _ = self.verdict.remove(&k);
        }
        // Its tracked processes too: no entry of an ended session may outlive it.
        let procs: Vec<u32> = self
            .tracked
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.session & !TRACKED_SEEDED == cgroup_id)
            .map(|(k, _)| k)
            .collect();
        for k in procs {
            let _ = self.tracked.remove(&k);
        }
        let lost = self.session_lost(cgroup_id);
        let _ = self.session_lost.remove(&cgroup_id);
        let _ = self.session_procs.remove(&cgroup_id);
        lost
    }

    /// Tagged session cgroups (for `unload`).
    pub fn tagged_sessions(&self) -> Vec<u64> {
        self.tagged.keys().filter_map(Result::ok).collect()
    }

    pub fn session_lost(&self, cgroup_id: u64) -> SessionLoss {
        self.session_lost.get(&cgroup_id, 0).map_or_else(
            |_| SessionLoss::default(),
            |v| {
                v.iter().fold(SessionLoss::default(), |a, b| SessionLoss {
                    lifecycle: a.lifecycle + b.lifecycle,
                    file: a.file + b.file,
                    net: a.net + b.net,
                })
            },
        )
    }

    pub fn counters(&self) -> KernelCounters {
        let sum = |i: u32| self.counters.get(&i, 0).map_or(0, |v| v.iter().sum());
        KernelCounters {
            sent: sum(counter::SENT),
            dropped_lifecycle: sum(counter::DROPPED_LIFECYCLE),
            dropped_file: sum(counter::DROPPED_FILE),
            dropped_net: sum(counter::DROPPED_NET),
            read_errors: sum(counter::READ_ERRORS),
            track_failures: sum(counter::TRACK_FAILURES),
            stale_tracked: sum(counter::STALE_TRACKED),
            tag_failures: sum(counter::TAG_FAILURES),
        }
    }

    /// The pinned programs' sessions, without loading anything (for `unload`).
    pub fn pinned(pin_dir: &Path) -> Result<Option<Self>, ProbeError> {
        let Some(dir) = pinned_versions(pin_dir).into_iter().next() else { return Ok(None) };
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let links = link_pins(&dir);
        Self::from_pins(&dir, name, &links, Attachment::Adopted).map(Some)
    }
}

/// Detach every pinned program and remove every pin under `pin_dir`.
pub fn unload(pin_dir: &Path) -> std::io::Result<usize> {
    let versions = pinned_versions(pin_dir);
    for d in &versions {
        remove_pins(d)?;
    }
    if pin_dir.exists() {
        std::fs::remove_dir(pin_dir)?;
    }
    Ok(versions.len())
}

/// Attach every program and pin its links as `<dir>/link.<program>.<tracepoint>`.
/// `fexit`: the kernel's BTF, when fexit is to be tried (see [`attach_fexit`]).
fn attach_all(ebpf: &mut Ebpf, dir: &Path, compat: bool, fexit: Option<&btf::Btf>) -> Result<Vec<String>, ProbeError> {
    let mut attached = Vec::new();
    let pin = |link: FdLink, prog: &'static str, tp: &str| -> Result<(), ProbeError> {
        link.pin(dir.join(format!("link-{prog}-{tp}"))).map(drop).map_err(|e| pin_err(prog, e))
    };
    // The kernel's functions where it allows fexit; else (this development VM, a kernel with
    // function tracing locked) the syscall tracepoints below.
    let fexit = match fexit {
        Some(functions) => attach_fexit(ebpf, functions, compat, &mut attached, &pin)?,
        None => false,
    };
    let compat_programs = if compat && !fexit { COMPAT_PROGRAMS } else { &[] };
    // io_uring capture is optional: a kernel without io_uring (CONFIG_IO_URING=n), or whose
    // records are laid out otherwise (before 6.0), has it off, as `status` shows.
    let uring = PROGRAMS.iter().all(|(prog, kind)| match *kind {
        Kind::Category(cat @ "io_uring", names) => usable_tracepoint(prog, cat, names).is_some(),
        _ => true,
    });
    if !uring {
        tracing::warn!(
            "no io_uring tracepoints this build can read on this kernel: io_uring operations are not captured"
        );
    }
    for (name, kind) in PROGRAMS.iter().chain(compat_programs) {
        if fexit && matches!(kind, Kind::Syscall(_)) {
            continue;
        }
        let prog = ebpf
            .program_mut(name)
            .ok_or(ProbeError::Program { name, source: aya::programs::ProgramError::UnexpectedProgramType })?;
        // (category, tracepoint); raw tracepoints have no category.
        let (cat, tp) = match *kind {
            Kind::Raw(tp) => ("", tp),
            Kind::Syscall(tp) => ("syscalls", tp),
            Kind::Category(cat, names) => {
                if cat == "io_uring" && !uring {
                    continue;
                }
                let tp = usable_tracepoint(name, cat, names).ok_or_else(|| ProbeError::NoTracepoint {
                    category: cat,
                    names: format!("{} with the fields {:?}", names.join(" or "), record_fields(name)),
                })?;
                (cat, tp)
            }
        };
        let link: FdLink = if cat.is_empty() {
            let p = <&mut RawTracePoint>::try_from(prog).map_err(|source| ProbeError::Program { name, source })?;
            p.load().map_err(|source| ProbeError::Program { name, source })?;
            let id = p.attach(tp).map_err(|source| ProbeError::Program { name, source })?;
            p.take_link(id).map_err(|source| ProbeError::Program { name, source })?.into()
        } else {
            let p = <&mut TracePoint>::try_from(prog).map_err(|source| ProbeError::Program { name, source })?;
            p.load().map_err(|source| ProbeError::Program { name, source })?;
            let id = p.attach(cat, tp).map_err(|source| ProbeError::Program { name, source })?;
            let l = p.take_link(id).map_err(|source| ProbeError::Program { name, source })?;
            l.try_into().map_err(|e| pin_err(name, e))?
        };
        pin(link, name, tp)?;
        attached.push(if cat.is_empty() { format!("raw_tp/{tp}") } else { format!("tracepoint/{cat}/{tp}") });
    }
    attach_cgroup_hooks(ebpf, &mut attached, &pin);
    if fexit {
        return Ok(attached);
    }
    for (prog_name, phase) in [("sys_enter_tracked", "sys_enter_"), ("sys_exit_tracked", "sys_exit_")] {
        let prog: &mut TracePoint = ebpf
            .program_mut(prog_name)
            .ok_or(ProbeError::Program { name: prog_name, source: aya::programs::ProgramError::UnexpectedProgramType })?
            .try_into()
            .map_err(|source| ProbeError::Program { name: prog_name, source })?;
        prog.load().map_err(|source| ProbeError::Program { name: prog_name, source })?;
        for sc in RESOURCE_SYSCALLS {
            let tp = format!("{phase}{sc}");
            match prog.attach("syscalls", &tp) {
                Ok(id) => {
                    let l = prog.take_link(id).map_err(|source| ProbeError::Program { name: prog_name, source })?;
                    pin(l.try_into().map_err(|e| pin_err(prog_name, e))?, prog_name, &tp)?;
                    attached.push(format!("tracepoint/syscalls/{tp}"));
                }
                // Newer syscalls (openat2, fchmodat2) may not exist on older kernels.
                Err(e) if tracefs_event("syscalls", &tp) => {
                    return Err(ProbeError::Program { name: prog_name, source: e });
                }
                Err(_) => tracing::warn!(tracepoint = %tp, "syscall tracepoint missing on this kernel; not captured"),
            }
        }
    }
    Ok(attached)
}

/// Attach `fx_<syscall>` to `__x64_sys_<syscall>` (and `fx32_<syscall>` to the 32-bit entry's
/// function) for every hooked syscall, plus the exec and `socketcall` ones. Each syscall stub
/// tail-calls a shared handler, one per BTF prototype of the functions (see `FX_HANDLER` in
/// monitor-ebpf/src/fexit.rs): the stubs of a function of the second prototype are the `fxb`
/// ones. The first handler's load is the probe: when the kernel refuses it (no BTF for tracing,
/// function tracing locked, no fexit), nothing was attached and the caller falls back to
/// tracepoints. Returns whether the fexit path is in use. A syscall this kernel lacks, or whose
/// program it refuses, is skipped, as `status` shows and the log says.
fn attach_fexit(
    ebpf: &mut Ebpf,
    functions: &btf::Btf,
    compat: bool,
    attached: &mut Vec<String>,
    pin: &dyn Fn(FdLink, &'static str, &str) -> Result<(), ProbeError>,
) -> Result<bool, ProbeError> {
    use aya::Btf;
    // aya's own BTF, to load fexit programs against (ours only reads offsets and names).
    let Ok(btf) = Btf::from_sys_fs() else {
        tracing::info!("no kernel BTF for fexit; capturing syscalls at their tracepoints");
        return Ok(false);
    };
    // (program prefix, syscall, target function, whether its stub tail-calls a handler).
    let mut targets: Vec<(&str, &str, String, bool)> = Vec::new();
    for sc in RESOURCE_SYSCALLS.iter().chain(&["execve", "execveat"]) {
        targets.push(("fx", sc, format!("__x64_sys_{sc}"), !sc.starts_with("execve")));
    }
    if compat {
        for sc in RESOURCE_SYSCALLS.iter().chain(&["execve", "execveat", "socketcall"]) {
            let f = [format!("__ia32_compat_sys_{sc}"), format!("__ia32_sys_{sc}")]
                .into_iter()
                .find(|f| functions.has_function(f));
            targets.push(("fx32", sc, f.unwrap_or_else(|| format!("__ia32_sys_{sc}")), !sc.starts_with("execve")));
        }
        for (sc, f) in COMPAT_ONLY {
            targets.push(("fx32", sc, (*f).to_string(), true));
        }
    }
    let started = Instant::now();
    let mut load = FexitLoad::default();
    // The handlers, by prototype: (prototype's BTF id, loaded), in the order first met.
    let mut handlers: Vec<(u32, bool)> = Vec::new();
    for (prefix, sc, func, tail_calls) in targets {
        let Some(proto) = functions.function_proto(&func) else {
            tracing::warn!(function = %func, "no such kernel function (the syscall is missing on this kernel); not captured");
            continue;
        };
        let mut group = 0;
        if tail_calls {
            group = match handlers.iter().position(|(p, _)| *p == proto) {
                Some(g) => g,
                None if handlers.len() < FEXIT_HANDLERS.len() => {
                    let (handler, map) = FEXIT_HANDLERS[handlers.len()];
                    let loaded = match load.handler(ebpf, &btf, handler, map, &func) {
                        Ok(()) => true,
                        // The first program the kernel sees is the probe.
                        Err(e) if handlers.is_empty() => {
                            tracing::info!(error = %e, "the kernel refuses fexit; capturing syscalls at their tracepoints");
                            return Ok(false);
                        }
                        Err(e) => {
                            tracing::warn!(function = %func, error = %e, "fexit handler refused for this prototype; its syscalls are not captured");
                            false
                        }
                    };
                    handlers.push((proto, loaded));
                    handlers.len() - 1
                }
                None => {
                    tracing::warn!(function = %func, "a third BTF prototype for the syscall functions; not captured");
                    continue;
                }
            };
            if !handlers[group].1 {
                continue;
            }
        }
        let b = if group == 1 { "b" } else { "" };
        let name: &'static str = Box::leak(format!("{}{b}{}_{sc}", &prefix[..2], &prefix[2..]).into_boxed_str());
        match load.stub(ebpf, &btf, name, &func) {
            Ok(link) => {
                pin(link, name, &func)?;
                attached.push(format!("fexit/{func}"));
            }
            // One function refused: that syscall is not captured, and `status` lists it as
            // missing; the rest capture on.
            Err(e) => tracing::warn!(function = %func, error = %e, "fexit refused for this function; not captured"),
        }
    }
    // Loading is not attaching: a kernel that verifies the programs but refuses the
    // trampolines attached no stub, and then the tracepoints must capture instead.
    if !attached.iter().any(|a| a.starts_with("fexit/") && !a.contains("execve")) {
        tracing::info!("the kernel refuses to attach fexit; capturing syscalls at their tracepoints");
        return Ok(false);
    }
    attach_path_hooks(ebpf, &btf, &mut load, attached, pin)?;
    load.heaviest.sort_unstable_by(|a, b| b.cmp(a));
    load.heaviest.truncate(3);
    tracing::info!(
        attached = attached.iter().filter(|a| a.starts_with("fexit/")).count(),
        prototypes = handlers.len(),
        seconds = started.elapsed().as_secs_f64(),
        verifier_seconds = load.verify.as_secs_f64(),
        attach_seconds = load.attach.as_secs_f64(),
        verified_instructions = load.insns,
        heaviest = ?load.heaviest,
        "fexit programs loaded"
    );
    Ok(true)
}

/// (program, kernel function): the fentry programs that take the objects of path operations
/// from the kernel's own hooks (monitor-ebpf/src/kpath.rs), in the fexit mode.
pub const PATH_HOOKS: &[(&str, &str)] = &[
    ("kp_unlink", "security_path_unlink"),
    ("kp_rmdir", "security_path_rmdir"),
    ("kp_mkdir", "security_path_mkdir"),
    ("kp_symlink", "security_path_symlink"),
    ("kp_chmod", "security_path_chmod"),
    ("kp_chown", "security_path_chown"),
    ("kp_truncate", "security_path_truncate"),
    ("kp_rename", "security_path_rename"),
    ("kp_link", "security_path_link"),
    // Not paths: a raw or packet socket's send destination, the kernel's copy (net.rs), and
    // the socket file a unix stream connect reached.
    ("kp_sendmsg", "security_socket_sendmsg"),
    ("kp_unix_connect", "security_unix_stream_connect"),
    // The names as given, as the kernel copied them (`KNAMES`): the VFS functions the
    // syscalls pass their `struct filename` to.
    ("kn_open", "do_filp_open"),
    ("kn_unlink", "do_unlinkat"),
    ("kn_rmdir", "do_rmdir"),
    ("kn_mkdir", "do_mkdirat"),
    ("kn_symlink", "do_symlinkat"),
    ("kn_rename", "do_renameat2"),
    ("kn_link", "do_linkat"),
];

/// Attach [`PATH_HOOKS`]. One the kernel lacks (`CONFIG_SECURITY_PATH` off) or refuses leaves
/// its operations' paths read from user memory, as `status` says.
fn attach_path_hooks(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    load: &mut FexitLoad,
    attached: &mut Vec<String>,
    pin: &dyn Fn(FdLink, &'static str, &str) -> Result<(), ProbeError>,
) -> Result<(), ProbeError> {
    for &(name, func) in PATH_HOOKS {
        let result = (|| -> Result<FdLink, ProbeError> {
            let p: &mut aya::programs::FEntry = ebpf
                .program_mut(name)
                .ok_or(ProbeError::Program { name, source: aya::programs::ProgramError::UnexpectedProgramType })?
                .try_into()
                .map_err(|source| ProbeError::Program { name, source })?;
            let t = Instant::now();
            p.load(func, btf).map_err(|source| ProbeError::Program { name, source })?;
            load.verify += t.elapsed();
            let verified = p.info().ok().and_then(|i| i.verified_instruction_count()).unwrap_or(0);
            load.insns += u64::from(verified);
            load.heaviest.push((verified, name));
            let t = Instant::now();
            let id = p.attach().map_err(|source| ProbeError::Program { name, source })?;
            load.attach += t.elapsed();
            Ok(p.take_link(id).map_err(|source| ProbeError::Program { name, source })?.into())
        })();
        match result {
            Ok(link) => {
                pin(link, name, func)?;
                attached.push(format!("fentry/{func}"));
            }
            Err(e) => {
                tracing::warn!(function = %func, error = %e, "path hook refused; these paths are read from user memory");
            }
        }
    }
    Ok(())
}

/// (program suffix, function): 32-bit syscall functions with no 64-bit twin, recorded as the
/// twin's syscall: i386's 16-bit-uid chowns and its 64-bit-length truncates.
const COMPAT_ONLY: &[(&str, &str)] = &[
    ("chown16", "__ia32_sys_chown16"),
    ("lchown16", "__ia32_sys_lchown16"),
    ("fchown16", "__ia32_sys_fchown16"),
    ("truncate64", "__ia32_sys_ia32_truncate64"),
    ("ftruncate64", "__ia32_sys_ia32_ftruncate64"),
];

/// The shared handlers and their tail-call slots, one per BTF prototype of the syscall
/// functions, in the order the prototypes are met.
const FEXIT_HANDLERS: [(&str, &str); 2] = [("fx_handler", "FX_HANDLER"), ("fx_handler_b", "FX_HANDLER_B")];

/// What the fexit start cost, per phase: the verifier (load) and the trampoline (attach), and
/// the instructions the verifier walked, so a slow start says where its time went.
#[derive(Default)]
struct FexitLoad {
    verify: Duration,
    attach: Duration,
    insns: u64,
    heaviest: Vec<(u32, &'static str)>,
}

impl FexitLoad {
    fn load<'a>(
        &mut self,
        ebpf: &'a mut Ebpf,
        btf: &aya::Btf,
        name: &'static str,
        func: &str,
    ) -> Result<&'a mut aya::programs::FExit, ProbeError> {
        // A program missing from the object is this build's fault, never the kernel's.
        let p: &mut aya::programs::FExit = ebpf
            .program_mut(name)
            .ok_or(ProbeError::Program { name, source: aya::programs::ProgramError::UnexpectedProgramType })?
            .try_into()
            .map_err(|source| ProbeError::Program { name, source })?;
        let t = Instant::now();
        p.load(func, btf).map_err(|source| ProbeError::Program { name, source })?;
        self.verify += t.elapsed();
        let verified = p.info().ok().and_then(|i| i.verified_instruction_count()).unwrap_or(0);
        self.insns += u64::from(verified);
        self.heaviest.push((verified, name));
        Ok(p)
    }

    /// Load a handler against `func` (never attached) and put it in `map`'s slot.
    fn handler(
        &mut self,
        ebpf: &mut Ebpf,
        btf: &aya::Btf,
        name: &'static str,
        map: &'static str,
        func: &str,
    ) -> Result<(), ProbeError> {
        let fd = self
            .load(ebpf, btf, name, func)?
            .fd()
            .and_then(|fd| fd.try_clone().map_err(aya::programs::ProgramError::IOError))
            .map_err(|source| ProbeError::Program { name, source })?;
        let mut slot: ProgramArray<_> = ebpf
            .map_mut(map)
            .ok_or(ProbeError::MissingMap(map))?
            .try_into()
            .map_err(|source| ProbeError::Map { name: map, source })?;
        slot.set(0, &fd, 0).map_err(|source| ProbeError::Map { name: map, source })
    }

    /// Load and attach a stub on `func`.
    fn stub(&mut self, ebpf: &mut Ebpf, btf: &aya::Btf, name: &'static str, func: &str) -> Result<FdLink, ProbeError> {
        let p = self.load(ebpf, btf, name, func)?;
        let t = Instant::now();
        let id = p.attach().map_err(|source| ProbeError::Program { name, source })?;
        self.attach += t.elapsed();
        Ok(p.take_link(id).map_err(|source| ProbeError::Program { name, source })?.into())
    }
}

/// The cgroup `connect4/6` and `sendmsg4/6` programs, on the cgroup2 root (they run for every
/// descendant, next to any other program there: a cgroup link is always one of many, and the
/// kernel refuses `BPF_F_ALLOW_MULTI` on a link, so the mode passed is the default): they see each destination as the kernel will
/// use it. Without them (no cgroup2, an attach refused) destinations are read from the caller's
/// memory at the syscall's exit, as `status` says.
pub const CGROUP_PROGRAMS: &[&str] =
    &["kaddr_connect4", "kaddr_connect6", "kaddr_sendmsg4", "kaddr_sendmsg6", "kaddr_bind4", "kaddr_bind6"];

fn attach_cgroup_hooks(
    ebpf: &mut Ebpf,
    attached: &mut Vec<String>,
    pin: &dyn Fn(FdLink, &'static str, &str) -> Result<(), ProbeError>,
) {
    let root = match crate::cgroup::cgroup2_mount().and_then(std::fs::File::open) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "no cgroup2 root to attach the destination hooks to; destinations are read from user memory");
            return;
        }
    };
    for name in CGROUP_PROGRAMS {
        let result = (|| -> Result<(), ProbeError> {
            let prog: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(ProbeError::Program { name, source: aya::programs::ProgramError::UnexpectedProgramType })?
                .try_into()
                .map_err(|source| ProbeError::Program { name, source })?;
            prog.load().map_err(|source| ProbeError::Program { name, source })?;
            let id =
                prog.attach(&root, CgroupAttachMode::Single).map_err(|source| ProbeError::Program { name, source })?;
            let link = prog.take_link(id).map_err(|source| ProbeError::Program { name, source })?;
            pin(link.try_into().map_err(|e| pin_err(name, e))?, name, "cgroup")
        })();
        match result {
            Ok(()) => attached.push(format!("cgroup/{name}")),
            Err(e) => {
                tracing::warn!(program = name, error = %e, "destination hook not attached; destinations are read from user memory");
            }
        }
    }
}

/// What every program needs from the kernel, checked before anything is loaded, so that an
/// old kernel gets one line naming what it lacks instead of a verifier log.
fn preflight() -> Result<(), ProbeError> {
    use aya::{maps::MapType, programs::ProgramType, sys};
    let release = || {
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "unknown".into(), |r| r.trim().to_owned())
    };
    let needs: [(&'static str, bool); 4] = [
        ("BPF ring buffer (Linux 5.8)", sys::is_map_supported(MapType::RingBuf).unwrap_or(true)),
        (
            "BPF raw tracepoint programs (Linux 4.17)",
            sys::is_program_supported(ProgramType::RawTracePoint).unwrap_or(true),
        ),
        ("BPF LRU hash map (Linux 4.10)", sys::is_map_supported(MapType::LruHash).unwrap_or(true)),
        // The path walks are bpf_loop callbacks.
        (
            "bpf_loop helper (Linux 5.17)",
            sys::is_helper_supported(ProgramType::TracePoint, sys::BpfHelper::BPF_FUNC_loop).unwrap_or(true),
        ),
    ];
    match needs.into_iter().find(|(_, ok)| !ok) {
        Some((missing, _)) => Err(ProbeError::Unsupported { missing, release: release() }),
        None => Ok(()),
    }
}

/// The first of `names` (newest first) this kernel has as `category/name`, if its record has
/// the fields `program` reads where it reads them.
fn usable_tracepoint(program: &str, category: &str, names: &[&'static str]) -> Option<&'static str> {
    names
        .iter()
        .copied()
        .find(|tp| tracefs_event(category, tp))
        .filter(|tp| record_layout_matches(category, tp, record_fields(program)))
}

/// The record fields (name, byte offset) a classic tracepoint program reads at fixed offsets.
fn record_fields(program: &str) -> &'static [(&'static str, u32)] {
    match program {
        "io_uring_submit_req" => &[("req", 16), ("user_data", 24), ("opcode", 32)],
        "io_uring_complete" => &[("req", 16), ("user_data", 24), ("res", 32)],
        "cgroup_mkdir" => &[("root", 8), ("level", 12), ("id", 16), ("path", 24)],
        _ => &[],
    }
}

/// Whether the kernel's record of `category/name` has each of `fields` at its offset (from
/// the tracepoint's `format` file).
fn record_layout_matches(category: &str, name: &str, fields: &[(&str, u32)]) -> bool {
    let format = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|t| std::fs::read_to_string(format!("{t}/events/{category}/{name}/format")).ok())
        .unwrap_or_default();
    let offsets = format_offsets(&format);
    fields.iter().all(|(f, off)| offsets.get(*f) == Some(off))
}

/// Field name -> offset, from a tracefs `format` file (`field:u64 id;\toffset:16;\tsize:8;…`).
fn format_offsets(format: &str) -> std::collections::HashMap<String, u32> {
    format
        .lines()
        .filter_map(|l| {
            let decl = l.trim().strip_prefix("field:")?.split(';').next()?;
            let name = decl.split_whitespace().last()?.split('[').next()?;
            let off = l.split("offset:").nth(1)?.split(';').next()?.trim().parse().ok()?;
            Some((name.to_owned(), off))
        })
        .collect()
}

/// Whether this kernel has the classic tracepoint `category/name`.
fn tracefs_event(category: &str, name: &str) -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|t| Path::new(&format!("{t}/events/{category}/{name}")).exists())
}

/// One way of capturing something whose hook differs between kernels, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapturePath {
    /// What is captured: `process exit`, `io_uring submissions`, `32-bit syscalls`, or
    /// `syscall <name>`.
    pub what: String,
    /// `primary` (the preferred hook), `fallback` (an older kernel's hook, same data), `off`
    /// (turned off by the configuration) or `missing` (this kernel has no such hook: not captured).
    pub state: String,
    /// The hook in use, and why.
    pub how: String,
}

/// Which hook captures what, on this kernel, from the attached programs (loaded or adopted:
/// both forms of [`Probes::attached`] end with the tracepoint's name).
pub fn capture_paths(attached: &[String]) -> Vec<CapturePath> {
    let has = |tp: &str| attached.iter().any(|a| a.ends_with(&format!("/{tp}")) || a.ends_with(&format!("-{tp}")));
    let path =
        |what: &str, state: &str, how: &str| CapturePath { what: what.into(), state: state.into(), how: how.into() };
    let mut paths = vec![path(
        "process exit",
        "primary",
        "raw_tp/sched_process_exit; the group's end from signal->live (the tracepoint's group_dead argument exists only since 6.16)",
    )];
    paths.push(if has("io_uring_submit_req") {
        path("io_uring submissions", "primary", "tracepoint/io_uring/io_uring_submit_req")
    } else if has("io_uring_submit_sqe") {
        path("io_uring submissions", "fallback", "tracepoint/io_uring/io_uring_submit_sqe (its name before 6.4, same fields)")
    } else {
        path(
            "io_uring submissions",
            "missing",
            "no io_uring tracepoints with the record layout of 6.0 and later (io_uring off, or an older kernel): io_uring operations are not captured",
        )
    });
    paths.push(if CGROUP_PROGRAMS.iter().all(|p| attached.iter().any(|a| a.contains(p))) {
        path(
            "network destinations",
            "primary",
            "cgroup connect4/6, sendmsg4/6 and bind4/6 on the cgroup2 root: the kernel's own copy",
        )
    } else {
        path(
            "network destinations",
            "fallback",
            "cgroup hooks not attached: destinations of unconnected sends are read from the caller's memory",
        )
    });
    let fexit = attached.iter().any(|a| a.contains("__x64_sys_"));
    paths.push(if fexit {
        path("syscalls", "primary", "fexit on the kernel's syscall functions (__x64_sys_*): no syscall tracepoint and no raw sys_enter program, so other processes' syscalls pay nothing")
    } else {
        path("syscalls", "fallback", "syscall tracepoints (the kernel refused fexit, or capture_fexit = false: the log says which): every syscall on the host takes the tracepoint slow path")
    });
    let hooked = |f: &str| attached.iter().any(|a| a.ends_with(f));
    paths.push(if hooked("security_socket_sendmsg") {
        path(
            "raw and packet send destinations",
            "primary",
            "the kernel's copy of the sockaddr, from its security_socket_sendmsg hook (fentry)",
        )
    } else {
        path(
            "raw and packet send destinations",
            "fallback",
            "read from the caller's memory at the syscall's exit (the hook needs the fexit mode)",
        )
    });
    paths.push(if hooked("security_unix_stream_connect") {
        path("unix socket peers", "primary", "the socket file a unix stream connect reached, from the kernel's security_unix_stream_connect hook (fentry): a relative or symlinked name cannot hide a service socket")
    } else {
        path("unix socket peers", "fallback", "the socket path as the caller gave it, re-read from its memory at exit (the hook needs the fexit mode)")
    });
    let all = |prefix: &str| PATH_HOOKS.iter().filter(|(_, f)| f.starts_with(prefix)).all(|(_, f)| hooked(f));
    paths.push(if fexit && all("security_path_") {
        path("path operations", "primary", "the objects from the kernel's security_path_* hooks (fentry): unlink, rmdir, mkdir, symlink, rename, link, chmod, chown and truncate name what the kernel acted on")
    } else {
        path("path operations", "fallback", "paths of unlink, rename, chmod and the like re-read from user memory at the syscall's exit, joined to the directory the kernel resolved (the hooks need the fexit mode and CONFIG_SECURITY_PATH)")
    });
    paths.push(if fexit && all("do_") {
        path("names as given", "primary", "the kernel's copy of the names passed to open, unlink, rmdir, mkdir, symlink, rename and link (fentry on do_filp_open, do_unlinkat and the like), failed calls included")
    } else {
        path("names as given", "fallback", "names re-read from the caller's memory at the syscall's exit (the kernel's copies need the fexit mode: the log names any function refused)")
    });
    paths.push(if fexit && attached.iter().any(|a| a.contains("__ia32_")) {
        path("32-bit syscalls", "primary", "fexit on the kernel's __ia32_* syscall functions (int 0x80)")
    } else if has("sys_enter") {
        path("32-bit syscalls", "primary", "raw_tp/sys_enter and raw_tp/sys_exit (int 0x80)")
    } else {
        path("32-bit syscalls", "off", "capture_compat = false")
    });
    for sc in RESOURCE_SYSCALLS {
        let hooked = if fexit { has(&format!("__x64_sys_{sc}")) } else { has(&format!("sys_enter_{sc}")) };
        if !hooked {
            let why = if fexit {
                "not captured: the kernel has no such function, or it refused the fexit program (the daemon's log says which)"
            } else {
                "this kernel has no such system call (no syscalls tracepoint): nothing to capture"
            };
            paths.push(path(&format!("syscall {sc}"), "missing", why));
        }
    }
    paths
}

/// Mount tracefs and bpffs where they are missing (the syscall tracepoints need tracefs).
pub fn ensure_mounts() -> std::io::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mounted = |fstype: &str, dir: &str| {
        mounts.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.get(4) == Some(&dir) && l.split(" - ").nth(1).is_some_and(|t| t.starts_with(fstype))
        })
    };
    for (fstype, dir) in [("tracefs", "/sys/kernel/tracing"), ("bpf", "/sys/fs/bpf")] {
        if !mounted(fstype, dir) && Path::new(dir).exists() {
            let status = std::process::Command::new("mount").args(["-t", fstype, fstype, dir]).status()?;
            if !status.success() {
                return Err(std::io::Error::other(format!("mount -t {fstype} {dir} failed")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_of<'a>(paths: &'a [CapturePath], what: &str) -> Option<&'a str> {
        paths.iter().find(|p| p.what == what).map(|p| p.state.as_str())
    }

    #[test]
    fn capture_paths_name_fallbacks_and_missing_syscalls() {
        // As loaded on a 6.18 kernel: every hook, the newest names.
        let mut loaded: Vec<String> = [
            "raw_tp/sched_process_exit",
            "tracepoint/io_uring/io_uring_submit_req",
            "raw_tp/sys_enter",
            "raw_tp/sys_exit",
        ]
        .map(str::to_owned)
        .to_vec();
        loaded.extend(RESOURCE_SYSCALLS.iter().map(|s| format!("tracepoint/syscalls/sys_enter_{s}")));
        loaded.extend(CGROUP_PROGRAMS.iter().map(|p| format!("cgroup/{p}")));
        let paths = capture_paths(&loaded);
        assert!(
            paths.iter().all(|p| p.state == "primary"
                || [
                    "syscalls",
                    "path operations",
                    "raw and packet send destinations",
                    "names as given",
                    "unix socket peers"
                ]
                .contains(&p.what.as_str())),
            "{paths:?}"
        );
        assert_eq!(state_of(&paths, "syscalls"), Some("fallback"));
        assert_eq!(state_of(&paths, "path operations"), Some("fallback"));

        // As loaded where fexit attaches: no syscall tracepoint at all, and none is missing.
        let mut fx: Vec<String> = vec!["raw_tp/sched_process_exit".into(), "fexit/__ia32_compat_sys_openat".into()];
        fx.extend(RESOURCE_SYSCALLS.iter().map(|s| format!("fexit/__x64_sys_{s}")));
        let paths = capture_paths(&fx);
        assert_eq!(state_of(&paths, "path operations"), Some("fallback"), "without the path hooks");
        assert_eq!(state_of(&paths, "names as given"), Some("fallback"), "without the name hooks");
        // Adopted from pins (`<program>-<function>`), the path hooks all there.
        fx.extend(PATH_HOOKS.iter().map(|(p, f)| format!("{p}-{f}")));
        let paths = capture_paths(&fx);
        assert_eq!(state_of(&paths, "path operations"), Some("primary"));
        assert_eq!(state_of(&paths, "names as given"), Some("primary"));
        assert_eq!(state_of(&paths, "unix socket peers"), Some("primary"));
        assert_eq!(state_of(&paths, "raw and packet send destinations"), Some("primary"));
        assert_eq!(state_of(&paths, "syscalls"), Some("primary"));
        assert_eq!(state_of(&paths, "32-bit syscalls"), Some("primary"));
        assert!(!paths.iter().any(|p| p.what.starts_with("syscall ")), "{paths:?}");

        // No io_uring tracepoint attached at all.
        let paths = capture_paths(&loaded[..1]);
        assert_eq!(state_of(&paths, "io_uring submissions"), Some("missing"));

        // As adopted from pins on a 6.1 kernel: the old io_uring name, no fchmodat2, no compat.
        let mut adopted: Vec<String> =
            vec!["sched_process_exit-sched_process_exit".into(), "io_uring_submit_req-io_uring_submit_sqe".into()];
        adopted.extend(
            RESOURCE_SYSCALLS.iter().filter(|s| **s != "fchmodat2").map(|s| format!("sys_enter_tracked-sys_enter_{s}")),
        );
        let paths = capture_paths(&adopted);
        assert_eq!(state_of(&paths, "io_uring submissions"), Some("fallback"));
        assert_eq!(state_of(&paths, "32-bit syscalls"), Some("off"));
        assert_eq!(state_of(&paths, "syscall fchmodat2"), Some("missing"));
        // `open` is not taken for present because `openat` is.
        assert_eq!(state_of(&paths, "syscall open"), None);
        assert_eq!(paths.iter().filter(|p| p.state == "missing").count(), 1, "{paths:?}");
    }

    #[test]
    fn format_files_give_field_offsets() {
        let f = "name: cgroup_mkdir\nID: 500\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                 \tfield:int root;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:int level;\toffset:12;\tsize:4;\tsigned:1;\n\
                 \tfield:u64 id;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:__data_loc char[] path;\toffset:24;\tsize:4;\tsigned:0;\n\
                 \tfield:char comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\nprint fmt: \"root=%d\"\n";
        let o = format_offsets(f);
        assert_eq!((o["root"], o["level"], o["id"], o["path"], o["comm"]), (8, 12, 16, 24, 28));
        assert_eq!(o.len(), 6);
    }

    #[test]
    fn this_kernels_records_match_what_the_programs_read() {
        // Only where tracefs is mounted (root, or after `cargo xtask setup`).
        if !Path::new("/sys/kernel/tracing/events/cgroup").exists() {
            eprintln!("skipped: tracefs is not mounted or not readable");
            return;
        }
        assert!(record_layout_matches("cgroup", "cgroup_mkdir", record_fields("cgroup_mkdir")));
        assert!(!record_layout_matches("cgroup", "cgroup_mkdir", &[("id", 8)]));
    }
}
