//! Paths through symbolic links, followed one component at a time: where a
//! daemon file really is, and which links lead there (each one a way for
//! whoever can write its directory to send the daemon elsewhere).

use std::{
    collections::VecDeque,
    ffi::OsString,
    path::{Path, PathBuf},
};

/// A path resolved component by component: where it really leads, and the
/// links met on the way (each as the path of the link itself).
pub struct Resolved {
    pub real: PathBuf,
    pub links: Vec<PathBuf>,
}

/// Resolve `path` as the kernel does (40 links at most), remembering every
/// link followed, final or in the middle. What does not exist is kept as
/// named (a link to a file not made yet leads to that file's path).
pub fn resolve_links(path: &Path) -> Resolved {
    // Relative paths from the working directory, as the kernel takes them.
    let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    use std::path::Component;
    let mut pending: VecDeque<OsString> = VecDeque::new();
    let push_front = |pending: &mut VecDeque<OsString>, p: &Path| {
        for c in p.components().rev() {
            pending.push_front(match c {
                Component::RootDir => "/".into(),
                Component::CurDir => ".".into(),
                Component::ParentDir => "..".into(),
                Component::Normal(n) => n.to_os_string(),
                Component::Prefix(p) => p.as_os_str().to_os_string(),
            });
        }
    };
    push_front(&mut pending, path);
    let mut real = PathBuf::from("/");
    let mut links = Vec::new();
    let mut followed = 0;
    while let Some(c) = pending.pop_front() {
        match c.to_str() {
            Some("/") => real = PathBuf::from("/"),
            Some(".") => {}
            Some("..") => {
                real.pop();
            }
            _ => {
                let next = real.join(&c);
                let link =
                    std::fs::symlink_metadata(&next).is_ok_and(|m| m.file_type().is_symlink());
                match std::fs::read_link(&next) {
                    Ok(target) if link && followed < 40 => {
                        followed += 1;
                        links.push(next.clone());
                        push_front(&mut pending, &target);
                    }
                    _ => real = next,
                }
            }
        }
    }
    Resolved { real, links }
}
