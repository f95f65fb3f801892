//! The cgroup v2 filesystem: where it is mounted, cgroup ids, moving
//! processes. Paths called "relative" start with `/` at the v2 root.

use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

#[derive(Clone, Debug)]
pub struct CgroupFs {
    root: PathBuf,
}

impl CgroupFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Find the cgroup v2 mount from `/proc/self/mountinfo` (it is
    /// `/sys/fs/cgroup` on most hosts, `/sys/fs/cgroup/unified` on hybrid ones).
    pub fn discover() -> io::Result<Self> {
        let text = fs::read_to_string("/proc/self/mountinfo")?;
        find_cgroup2(&text).map(Self::new).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no cgroup2 filesystem is mounted (see /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup`",
            )
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `/a/b` for `<root>/a/b`; `None` outside the hierarchy.
    pub fn relative(&self, abs: &Path) -> Option<String> {
        let rest = abs.strip_prefix(&self.root).ok()?;
        Some(format!("/{}", rest.to_string_lossy())).map(|s| {
            if s.len() > 1 {
                s.trim_end_matches('/').to_string()
            } else {
                s
            }
        })
    }

    pub fn absolute(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// The cgroup id is the inode number of its directory on cgroup v2.
    pub fn id_of(path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.ino())
    }

    /// The cgroup (relative path) of a process, from `/proc/PID/cgroup`.
    pub fn cgroup_of_pid(pid: u32) -> io::Result<String> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(str::to_string)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("process {pid} has no cgroup v2 entry"),
                )
            })
    }

    /// Ids of a relative cgroup path and each of its ancestors, deepest
    /// first, stopping below the root. Lazy: a caller that stops at the
    /// first match stats no further.
    pub fn ancestry_ids(&self, rel: &str) -> impl Iterator<Item = u64> + '_ {
        let mut path = self.absolute(rel);
        let mut at_top = false;
        std::iter::from_fn(move || {
            while !at_top && path.starts_with(&self.root) && path != self.root {
                let id = Self::id_of(&path).ok();
                at_top = !path.pop();
                if id.is_some() {
                    return id;
                }
            }
            None
        })
    }

    /// Thread ids of every task in the cgroup `rel` and the cgroups below it.
    pub fn threads_below(&self, rel: &str) -> Vec<u32> {
        self.walk(&self.absolute(rel))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(r, _)| fs::read_to_string(self.absolute(&r).join("cgroup.threads")).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }

    /// Move a process (all its threads) into a cgroup.
    pub fn move_pid(cgroup: &Path, pid: u32) -> io::Result<()> {
        fs::write(cgroup.join("cgroup.procs"), pid.to_string())
    }

    /// Every cgroup directory below `start` (inclusive), depth first, as
    /// (relative path, id). A cgroup removed meanwhile is skipped; any other
    /// error (out of descriptors, say) fails the walk: a partial tree would
    /// look like cgroups that are gone, and their enrolment would be dropped.
    pub fn walk(&self, start: &Path) -> io::Result<Vec<(String, u64)>> {
        let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
        let mut out = Vec::new();
        let mut stack = vec![start.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let meta = match fs::metadata(&dir) {
                Ok(m) => m,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
            };
            if let Some(rel) = self.relative(&dir) {
                out.push((rel, meta.ino()));
            }
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
            };
            for e in entries {
                let e = match e {
                    Ok(e) => e,
                    Err(e) if gone(&e) => continue,
                    Err(e) => {
                        return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
                    }
                };
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        Ok(out)
    }
}

fn find_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mountpoint = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mountpoint)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_unified_mounts() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_cgroup2(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(find_cgroup2(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(find_cgroup2("1 0 0:1 / / rw - ext4 /dev/vda rw\n"), None);
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }

    #[test]
    fn relative_paths() {
        let fs = CgroupFs::new("/sys/fs/cgroup");
        assert_eq!(
            fs.relative(Path::new("/sys/fs/cgroup/a/b")),
            Some("/a/b".into())
        );
        assert_eq!(fs.relative(Path::new("/sys/fs/cgroup")), Some("/".into()));
        assert_eq!(fs.relative(Path::new("/tmp")), None);
        assert_eq!(fs.absolute("/a/b"), PathBuf::from("/sys/fs/cgroup/a/b"));
    }
}
