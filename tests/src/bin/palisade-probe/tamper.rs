//! What a root agent with `CAP_BPF`/`CAP_SYS_ADMIN` that sees the pin
//! directory does to switch its guard off: open each pinned link and
//! detach it (`BPF_LINK_DETACH`), as bpf(2) allows any holder of the link.

use std::{ffi::CString, io, os::unix::ffi::OsStrExt, path::Path};

use serde_json::json;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<i64> {
    // SAFETY: attr is a zeroed bpf_attr of the size passed.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128u32) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn detach(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = [0u64; 16];
    attr[0] = c.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    let mut attr = [0u64; 16];
    attr[0] = fd as u64;
    let r = bpf(BPF_LINK_DETACH, &mut attr).map(drop);
    // SAFETY: we own fd.
    unsafe { libc::close(fd as i32) };
    r
}

/// `detach-links PIN_DIR NAME…`: `ok` when every link was detached.
pub fn detach_links(args: &[String]) -> Option<String> {
    let (dir, names) = args.split_first()?;
    let mut detached = Vec::new();
    let mut errors = serde_json::Map::new();
    for name in names {
        match detach(&Path::new(dir).join(format!("link_{name}"))) {
            Ok(()) => detached.push(name.clone()),
            Err(e) => {
                errors.insert(
                    name.clone(),
                    json!({"errno": e.raw_os_error(), "error": e.to_string()}),
                );
            }
        }
    }
    let first_errno = errors
        .values()
        .next()
        .and_then(|e| e["errno"].as_i64())
        .unwrap_or(-1);
    Some(
        json!({"ok": errors.is_empty(), "errno": if errors.is_empty() { 0 } else { first_errno },
               "detached": detached, "errors": errors})
        .to_string(),
    )
}
