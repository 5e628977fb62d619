//! A small reader for kernel BTF (`/sys/kernel/btf/vmlinux`) that resolves struct member
//! offsets. The eBPF side has no CO-RE, so the daemon resolves the offsets it needs at start-up
//! and passes them in as a global (`monitor_common::KernelOffsets`).

use std::collections::HashMap;

use monitor_common::KernelOffsets;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source}; agentmon needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF has no member {member} in struct {strukt}")]
    NoMember { strukt: String, member: String },
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name: String,
    /// Referenced type for typedef/const/volatile/...; unused otherwise.
    refers_to: u32,
    members: Vec<Member>,
}

/// Parsed kernel BTF: enough to look up struct member offsets.
pub struct Btf {
    types: Vec<Type>,
    structs: HashMap<String, u32>,
    /// Function name -> its prototype's type id, from the first `FUNC` of that name (the one
    /// a load by name attaches against).
    functions: HashMap<String, u32>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).map_err(|source| BtfError::Read { path: path.into(), source })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed("bad magic (big-endian BTF is not supported)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_sec = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?;
        let name = |off: u32| -> String {
            let Some(tail) = strings.get(off as usize..) else {
                return String::new();
            };
            let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
            String::from_utf8_lossy(&tail[..end]).into_owned()
        };

        // Type id 0 is `void`.
        let mut types = vec![Type { kind: 0, name: String::new(), refers_to: 0, members: vec![] }];
        let mut structs = HashMap::new();
        let mut functions = HashMap::new();
        let mut p = 0usize;
        while p + 12 <= types_sec.len() {
            let name_off = u32_at(types_sec, p)?;
            let info = u32_at(types_sec, p + 4)?;
            let size_or_type = u32_at(types_sec, p + 8)?;
            p += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut t = Type { kind, name: name(name_off), refers_to: size_or_type, members: vec![] };
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => p += 4,
                KIND_ARRAY => p += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = p + i * 12;
                        let off = u32_at(types_sec, m + 8)?;
                        t.members.push(Member {
                            name: name(u32_at(types_sec, m)?),
                            type_id: u32_at(types_sec, m + 4)?,
                            bit_offset: if kind_flag { off & 0x00ff_ffff } else { off },
                        });
                    }
                    p += vlen * 12;
                }
                KIND_ENUM | KIND_FUNC_PROTO => p += vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => p += vlen * 12,
                _ => {}
            }
            if kind == KIND_STRUCT && !t.name.is_empty() {
                structs.entry(t.name.clone()).or_insert(types.len() as u32);
            }
            if kind == KIND_FUNC {
                functions.entry(t.name.clone()).or_insert(t.refers_to);
            }
            types.push(t);
        }
        if p != types_sec.len() {
            return Err(BtfError::Malformed("type section does not parse to its end"));
        }
        Ok(Self { types, structs, functions })
    }

    /// Whether the kernel has a function of this name (one fexit can attach to).
    pub fn has_function(&self, name: &str) -> bool {
        self.functions.contains_key(name)
    }

    /// The BTF id of the prototype of the first function of this name: programs tail-calling
    /// each other must have been loaded against functions of one prototype.
    pub fn function_proto(&self, name: &str) -> Option<u32> {
        self.functions.get(name).copied()
    }

    /// Skip typedef/const/volatile/restrict/type-tag wrappers.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.refers_to;
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Byte offset of `member` in `t`, searching anonymous struct/union members recursively.
    fn find_in(&self, t: &Type, member: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            if m.name == member {
                return Some(m.bit_offset / 8);
            }
        }
        for m in t.members.iter().filter(|m| m.name.is_empty()) {
            if let Some(inner) = self.resolve(m.type_id) {
                if let Some(off) = self.find_in(inner, member, depth + 1) {
                    return Some(m.bit_offset / 8 + off);
                }
            }
        }
        None
    }

    /// Offset of the first of `members` (alternative names for renamed fields) in `strukt`.
    pub fn offset(&self, strukt: &str, members: &[&str]) -> Result<u32, BtfError> {
        let id = self.structs.get(strukt).ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        let t = &self.types[*id as usize];
        members
            .iter()
            .find_map(|m| self.find_in(t, m, 0))
            .ok_or_else(|| BtfError::NoMember { strukt: strukt.into(), member: members.join("|") })
    }

    /// Resolve every offset the probes need.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let name = self.offset("dentry", &["d_name"])? + self.offset("qstr", &["name"])?;
        Ok(KernelOffsets {
            task_tgid: self.offset("task_struct", &["tgid"])?,
            task_pid: self.offset("task_struct", &["pid"])?,
            task_real_parent: self.offset("task_struct", &["real_parent"])?,
            task_group_leader: self.offset("task_struct", &["group_leader"])?,
            task_start_boottime: self.offset("task_struct", &["start_boottime", "real_start_time"])?,
            task_mm: self.offset("task_struct", &["mm"])?,
            task_fs: self.offset("task_struct", &["fs"])?,
            task_exit_code: self.offset("task_struct", &["exit_code"])?,
            mm_arg_start: self.offset("mm_struct", &["arg_start"])?,
            mm_arg_end: self.offset("mm_struct", &["arg_end"])?,
            fs_pwd: self.offset("fs_struct", &["pwd"])?,
            path_mnt: self.offset("path", &["mnt"])?,
            path_dentry: self.offset("path", &["dentry"])?,
            dentry_parent: self.offset("dentry", &["d_parent"])?,
            dentry_name: name,
            mount_mnt: self.offset("mount", &["mnt"])?,
            mount_parent: self.offset("mount", &["mnt_parent"])?,
            mount_mountpoint: self.offset("mount", &["mnt_mountpoint"])?,
            vfsmount_root: self.offset("vfsmount", &["mnt_root"])?,
            bprm_filename: self.offset("linux_binprm", &["filename"])?,
            task_files: self.offset("task_struct", &["files"])?,
            files_fdt: self.offset("files_struct", &["fdt"])?,
            fdtable_fd: self.offset("fdtable", &["fd"])?,
            fdtable_max_fds: self.offset("fdtable", &["max_fds"])?,
            file_path: self.offset("file", &["f_path", "__f_path"])?,
            file_private_data: self.offset("file", &["private_data"])?,
            socket_type: self.offset("socket", &["type"])?,
            socket_sk: self.offset("socket", &["sk"])?,
            skc_family: self.offset("sock_common", &["skc_family"])?,
            skc_num: self.offset("sock_common", &["skc_num"])?,
            skc_dport: self.offset("sock_common", &["skc_dport"])?,
            skc_daddr: self.offset("sock_common", &["skc_daddr"])?,
            skc_rcv_saddr: self.offset("sock_common", &["skc_rcv_saddr"])?,
            skc_v6_daddr: self.offset("sock_common", &["skc_v6_daddr"])?,
            skc_v6_rcv_saddr: self.offset("sock_common", &["skc_v6_rcv_saddr"])?,
            // x86-only (compat capture); 0 elsewhere turns it off.
            task_ti_status: self
                .optional("task_struct", "thread_info")
                .and_then(|t| Some(t + self.optional("thread_info", "status")?))
                .unwrap_or(0),
            regs_args: ["bx", "cx", "dx", "si", "di", "bp"].map(|r| self.optional("pt_regs", r).unwrap_or(0)),
            pid_nr: self.offset("pid", &["numbers"])? + self.offset("upid", &["nr"])?,
            kiocb_opcode: self.optional("io_kiocb", "opcode").unwrap_or(0),
            kiocb_flags: self.optional("io_kiocb", "flags").unwrap_or(0),
            kiocb_fd: self
                .optional("io_kiocb", "cqe")
                .and_then(|c| Some(c + self.optional("io_cqe", "fd")?))
                .unwrap_or(0),
            filename_name: self.optional("filename", "name").unwrap_or(0),
            uring_open: self.uring_fields("io_open", &["dfd", "filename"]),
            uring_unlink: self.uring_fields("io_unlink", &["dfd", "filename"]),
            uring_mkdir: self.uring_fields("io_mkdir", &["dfd", "filename"]),
            uring_statx: self.uring_fields("io_statx", &["dfd", "filename"]),
            uring_rename: self.uring_fields("io_rename", &["old_dfd", "oldpath", "new_dfd", "newpath"]),
            uring_link: self.uring_fields("io_link", &["old_dfd", "oldpath", "new_dfd", "newpath"]),
            uring_connect: self.uring_fields("io_connect", &["addr", "addr_len"]),
            uring_open_how: self.optional("io_open", "how").unwrap_or(0),
            file_inode: self.offset("file", &["f_inode"])?,
            inode_private: self.offset("inode", &["i_private"])?,
            task_signal: self.offset("task_struct", &["signal"])?,
            signal_live: self.offset("signal_struct", &["live"])?,
            file_f_flags: self.offset("file", &["f_flags"])?,
            file_f_mode: self.offset("file", &["f_mode"])?,
            bprm_file: self.offset("linux_binprm", &["file"])?,
            fs_root: self.offset("fs_struct", &["root"])?,
            uring_open_slot: self.optional("io_open", "file_slot").unwrap_or(0),
            regs_args64: ["di", "si", "dx", "r10", "r8", "r9"].map(|r| self.optional("pt_regs", r).unwrap_or(0)),
            regs_orig_ax: self.optional("pt_regs", "orig_ax").unwrap_or(0),
            msghdr_name: self.offset("msghdr", &["msg_name"])?,
            msghdr_namelen: self.offset("msghdr", &["msg_namelen"])?,
            unix_sock_path: self.optional("unix_sock", "path").unwrap_or(0),
        })
    }

    fn optional(&self, strukt: &str, member: &str) -> Option<u32> {
        self.offset(strukt, &[member]).ok()
    }

    /// Offsets of an `io_uring` operation's fields (the struct sits at the start of `io_kiocb`);
    /// all zero when any is missing, which turns that operation's path capture off.
    fn uring_fields<const N: usize>(&self, strukt: &str, members: &[&str; N]) -> [u32; N] {
        let found: Option<Vec<u32>> = members.iter().map(|m| self.optional(strukt, m)).collect();
        found.and_then(|v| v.try_into().ok()).unwrap_or([0; N])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a tiny BTF blob: int, struct inner { a, b }, struct outer { x; <anon inner> }.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0inner\0a\0b\0outer\0x\0".to_vec();
        let s = |n: &str| -> u32 {
            let pos = strings.windows(n.len() + 1).position(|w| &w[..n.len()] == n.as_bytes() && w[n.len()] == 0);
            pos.map_or(0, |p| p as u32)
        };
        let mut t = Vec::new();
        let mut push = |v: u32| t.extend_from_slice(&v.to_le_bytes());
        // [1] int
        push(s("int"));
        push(KIND_INT << 24);
        push(4);
        push(32);
        // [2] struct inner { int a @0; int b @64 bits }
        push(s("inner"));
        push((KIND_STRUCT << 24) | 2);
        push(16);
        push(s("a"));
        push(1);
        push(0);
        push(s("b"));
        push(1);
        push(64);
        // [3] struct outer { int x @0; struct inner (anon) @ 128 bits }
        push(s("outer"));
        push((KIND_STRUCT << 24) | 2);
        push(32);
        push(s("x"));
        push(1);
        push(0);
        push(0);
        push(2);
        push(128);
        let mut out = Vec::new();
        let hdr = [0xeb9f_u32 | (1 << 16), 24, 0, t.len() as u32, t.len() as u32, strings.len() as u32];
        out.extend_from_slice(&hdr[0].to_le_bytes()[..2]);
        out.push(1);
        out.push(0);
        for v in &hdr[1..] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&t);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let btf = Btf::parse(&blob()).expect("parse");
        assert_eq!(btf.offset("inner", &["b"]).expect("b"), 8);
        assert_eq!(btf.offset("outer", &["x"]).expect("x"), 0);
        assert_eq!(btf.offset("outer", &["b"]).expect("anon b"), 16 + 8);
        assert_eq!(btf.offset("outer", &["nope", "a"]).expect("fallback name"), 16);
        assert!(matches!(btf.offset("outer", &["zz"]), Err(BtfError::NoMember { .. })));
        assert!(matches!(btf.offset("missing", &["a"]), Err(BtfError::NoStruct(_))));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, definitely not").is_err());
        let mut b = blob();
        b.truncate(30);
        assert!(Btf::parse(&b).is_err());
    }

    #[test]
    fn running_kernel_offsets_resolve() {
        // Reading vmlinux BTF needs no privilege; skip with a reason where the file is absent.
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: /sys/kernel/btf/vmlinux not readable");
            return;
        };
        let off = btf.kernel_offsets().expect("offsets");
        assert!(off.task_tgid > 0 && off.mm_arg_end == off.mm_arg_start + 8);
    }
}
