//! Offsets of struct members in the running kernel, from its BTF
//! (`/sys/kernel/btf/vmlinux`). The lineage programs are raw tracepoints
//! (whose links can be pinned) and read a few fields of `task_struct` and
//! `cgroup` at offsets that differ between kernel builds; aya-ebpf has no
//! CO-RE relocations, so the daemon finds them here and hands them over in
//! `GUARD_CFG`. The BPF LSM probe (`bpf::lsm_probe`) finds its hook's id
//! here too.
//!
//! Only what that needs, and lean: the kernel's BTF is about 5 MiB and a
//! full parse (aya's) holds about 20 MiB for a moment, which alone would
//! break a small daemon's memory budget. This keeps the raw bytes and one
//! `u32` per type (where its record starts) and reads members on demand.

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
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Size of a type record's common header (name, info, size/type).
const TYPE_HEADER: usize = 12;
/// Size of one struct or union member record (name, type, offset).
const MEMBER: usize = 12;

/// One type record's header, read from the raw bytes.
struct TypeHeader {
    name: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// The referenced type of typedefs and qualifiers (size for others).
    next: u32,
}

/// The kernel's BTF: its bytes and where each type's record starts.
pub struct KernelBtf {
    raw: Vec<u8>,
    types_at: usize,
    strings: std::ops::Range<usize>,
    /// Index = type id (0 is void, which has no record): the record's offset
    /// in the type section.
    records: Vec<u32>,
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
        Self::parse(raw)
    }

    pub fn parse(raw: Vec<u8>) -> Result<Self, BtfError> {
        if raw.len() < 24 || raw[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(&raw, 4)? as usize;
        let (type_off, type_len) = (u32_at(&raw, 8)? as usize, u32_at(&raw, 12)? as usize);
        let (str_off, str_len) = (u32_at(&raw, 16)? as usize, u32_at(&raw, 20)? as usize);
        let section = |off: usize, len: usize| {
            let start = hdr_len
                .checked_add(off)
                .ok_or(BtfError::Malformed("section out of bounds"))?;
            let end = start
                .checked_add(len)
                .filter(|end| *end <= raw.len())
                .ok_or(BtfError::Malformed("section out of bounds"))?;
            Ok::<_, BtfError>(start..end)
        };
        let types = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;
        let types_raw = &raw[types.clone()];
        // Records are at least 12 bytes: this bounds the index.
        let mut records = Vec::with_capacity(1 + types_raw.len() / TYPE_HEADER);
        records.push(0);
        let mut at = 0;
        while at < types_raw.len() {
            let info = u32_at(types_raw, at + 4)?;
            let (vlen, kind) = ((info & 0xffff) as usize, (info >> 24) & 0x1f);
            records.push(u32::try_from(at).map_err(|_| BtfError::Malformed("too large"))?);
            at += TYPE_HEADER
                + match kind {
                    KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                    KIND_ARRAY => 12,
                    KIND_STRUCT | KIND_UNION => vlen * MEMBER,
                    KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                    KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                    _ => 0,
                };
        }
        if at != types_raw.len() {
            return Err(BtfError::Malformed("type section ends inside a record"));
        }
        records.shrink_to_fit();
        Ok(Self {
            raw,
            types_at: types.start,
            strings,
            records,
        })
    }

    fn header(&self, id: u32) -> Option<TypeHeader> {
        if id == 0 {
            return None;
        }
        let at = self.types_at + *self.records.get(id as usize)? as usize;
        let info = u32_at(&self.raw, at + 4).ok()?;
        Some(TypeHeader {
            name: u32_at(&self.raw, at).ok()?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            next: u32_at(&self.raw, at + 8).ok()?,
        })
    }

    /// Member `i` of struct or union `id`: (name, type, offset field).
    fn member(&self, id: u32, i: usize) -> Option<(u32, u32, u32)> {
        let at =
            self.types_at + *self.records.get(id as usize)? as usize + TYPE_HEADER + i * MEMBER;
        Some((
            u32_at(&self.raw, at).ok()?,
            u32_at(&self.raw, at + 4).ok()?,
            u32_at(&self.raw, at + 8).ok()?,
        ))
    }

    fn name(&self, off: u32) -> &[u8] {
        let strings = &self.raw[self.strings.clone()];
        let rest = strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// The id of the first type of `kind` named `name`.
    fn find_named(&self, kind: u32, name: &str) -> Option<u32> {
        (1..self.records.len() as u32).find(|&id| {
            self.header(id).is_some_and(|h| {
                h.kind == kind && h.name != 0 && self.name(h.name) == name.as_bytes()
            })
        })
    }

    /// The BTF id of the kernel function `name` (for BTF-attached programs).
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.find_named(KIND_FUNC, name)
    }

    /// Byte offset of `member` in `struct name`.
    pub fn offset_of(&self, name: &str, member: &str) -> Result<u16, BtfError> {
        let id = self
            .find_named(KIND_STRUCT, name)
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
        let t = self.header(id)?;
        if depth > 8 || !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for i in 0..t.vlen {
            let (name, ty, offset) = self.member(id, i)?;
            let off = if t.kind_flag {
                offset & 0x00ff_ffff
            } else {
                offset
            };
            if name != 0 && self.name(name) == member.as_bytes() {
                return Some(off);
            }
            if name == 0
                && let Some(inner) = self.find(self.resolve(ty), member, depth + 1)
            {
                return Some(off + inner);
            }
        }
        None
    }

    /// Follow typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..16 {
            match self.header(id) {
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

    /// Function ids agree with aya's full parse, which the LSM program is
    /// loaded with: the probe must test the hook the program attaches to.
    #[test]
    fn function_ids_agree_with_ayas_parse() {
        let Ok(btf) = KernelBtf::load() else {
            return;
        };
        let full = aya::Btf::from_sys_fs().expect("aya parses the kernel's BTF");
        for name in ["bpf_lsm_socket_create", "schedule"] {
            let ours = btf.func_id(name);
            let theirs = full
                .id_by_type_name_kind(name, aya_obj::btf::BtfKind::Func)
                .ok();
            assert_eq!(ours, theirs, "{name}");
        }
        assert_eq!(btf.func_id("no_such_function_in_any_kernel"), None);
    }
}
