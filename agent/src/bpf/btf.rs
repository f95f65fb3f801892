//! Offsets of struct members in the running kernel, from its BTF
//! (`/sys/kernel/btf/vmlinux`). The lineage programs are raw tracepoints
//! (whose links can be pinned) and read a few fields of `task_struct` and
//! `cgroup` at offsets that differ between kernel builds; aya-ebpf has no
//! CO-RE relocations, so the daemon finds them here and hands them over in
//! `GUARD_CFG`.
//!
//! Only what that needs: walk the type section, find a struct by name, find
//! a member by name (looking into anonymous struct and union members).

use std::collections::HashMap;

/// Errors reading the kernel's BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("struct `{0}` has no member `{1}` in the kernel's BTF")]
    NoMember(String, String),
    #[error("{0}.{1} is a bitfield or beyond 64 KiB; it cannot be read by offset")]
    BadOffset(String, String),
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Member {
    name: u32,
    ty: u32,
    /// In bits; with the kind flag set, the low 24 bits.
    offset: u32,
}

struct Type {
    name: u32,
    kind: u32,
    /// The referenced type of typedefs and qualifiers (size for others).
    next: u32,
    kind_flag: bool,
    members: Vec<Member>,
}

/// The kernel's types, as far as structs and unions go.
pub struct KernelBtf {
    strings: Vec<u8>,
    /// Index = type id (0 is void).
    types: Vec<Type>,
    structs: HashMap<String, u32>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl KernelBtf {
    pub fn load() -> Result<Self, BtfError> {
        let path = "/sys/kernel/btf/vmlinux";
        let raw = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&raw)
    }

    pub fn parse(raw: &[u8]) -> Result<Self, BtfError> {
        if raw.len() < 24 || raw[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(raw, 4)? as usize;
        let (type_off, type_len) = (u32_at(raw, 8)? as usize, u32_at(raw, 12)? as usize);
        let (str_off, str_len) = (u32_at(raw, 16)? as usize, u32_at(raw, 20)? as usize);
        let section = |off: usize, len: usize| {
            raw.get(hdr_len + off..hdr_len + off + len)
                .ok_or(BtfError::Malformed("section out of bounds"))
        };
        let types_raw = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?.to_vec();
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            next: 0,
            kind_flag: false,
            members: Vec::new(),
        }];
        let mut at = 0;
        while at < types_raw.len() {
            let name = u32_at(types_raw, at)?;
            let info = u32_at(types_raw, at + 4)?;
            let next = u32_at(types_raw, at + 8)?;
            let (vlen, kind) = ((info & 0xffff) as usize, (info >> 24) & 0x1f);
            at += 12;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        members.push(Member {
                            name: u32_at(types_raw, m)?,
                            ty: u32_at(types_raw, m + 4)?,
                            offset: u32_at(types_raw, m + 8)?,
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                _ => 0,
            };
            at += extra;
            types.push(Type {
                name,
                kind,
                next,
                kind_flag: info >> 31 == 1,
                members,
            });
        }
        let mut btf = Self {
            strings,
            types,
            structs: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 {
                let name = btf.name(t.name).to_string();
                btf.structs.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Byte offset of `member` in `struct name`.
    pub fn offset_of(&self, name: &str, member: &str) -> Result<u16, BtfError> {
        let id = *self
            .structs
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.into()))?;
        let bits = self
            .find(id, member, 0)
            .ok_or_else(|| BtfError::NoMember(name.into(), member.into()))?;
        if bits % 8 != 0 {
            return Err(BtfError::BadOffset(name.into(), member.into()));
        }
        u16::try_from(bits / 8).map_err(|_| BtfError::BadOffset(name.into(), member.into()))
    }

    /// Bit offset of `member` within type `id`, descending into anonymous
    /// members.
    fn find(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        if depth > 8 || !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for m in &t.members {
            let off = if t.kind_flag {
                m.offset & 0x00ff_ffff
            } else {
                m.offset
            };
            if m.name != 0 && self.name(m.name) == member {
                return Some(off);
            }
            if m.name == 0
                && let Some(inner) = self.find(self.resolve(m.ty), member, depth + 1)
            {
                return Some(off + inner);
            }
        }
        None
    }

    /// Follow typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..16 {
            match self.types.get(id as usize) {
                Some(t) if matches!(t.kind, KIND_TYPEDEF..=KIND_RESTRICT | KIND_TYPE_TAG) => {
                    id = t.next;
                }
                _ => break,
            }
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF has the members the lineage programs read
    /// (skipped where there is no BTF: the daemon refuses to start there).
    #[test]
    fn finds_the_members_the_lineage_reads() {
        let Ok(btf) = KernelBtf::load() else {
            return;
        };
        for (s, m) in [
            ("task_struct", "pid"),
            ("cgroup", "kn"),
            ("kernfs_node", "id"),
            ("cgroup", "root"),
            ("cgroup_root", "hierarchy_id"),
        ] {
            let off = btf.offset_of(s, m).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                off > 0 || (s, m) == ("kernfs_node", "id") || (s, m) == ("cgroup", "root"),
                "{s}.{m} at {off}"
            );
        }
        assert!(btf.offset_of("task_struct", "no_such_member").is_err());
    }
}
