//! Reading policy files and hashing their content into the policy version.

use std::{
    fs,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::{Diagnostic, PolicyErrors, SourceLoc};

/// Policy files larger than this are refused before parsing.
const MAX_POLICY_BYTES: u64 = 64 * 1024 * 1024;

pub(super) struct Source {
    pub path: PathBuf,
    pub text: String,
}

fn whole_file_error(path: &Path, message: String) -> PolicyErrors {
    PolicyErrors::single(Diagnostic::error(SourceLoc::new(path, 1, 1), message))
}

/// Is this entry of a policy directory one the daemon reads? Hidden
/// files (a Kubernetes ConfigMap's `..data`, `..2024_…`) are skipped.
pub fn is_policy_file(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    !hidden && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

pub(super) fn read(path: &Path) -> Result<Vec<Source>, PolicyErrors> {
    let meta = fs::metadata(path)
        .map_err(|e| whole_file_error(path, format!("cannot read policy: {e}")))?;
    let files: Vec<PathBuf> = if meta.is_dir() {
        let entries = fs::read_dir(path)
            .map_err(|e| whole_file_error(path, format!("cannot list policy directory: {e}")))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| is_policy_file(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(whole_file_error(
                path,
                "policy directory holds no *.yaml, *.yml or *.json file".into(),
            ));
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for file in files {
        match read_one(&file) {
            Ok(text) => out.push(Source { path: file, text }),
            Err(e) => errors.push(Diagnostic::error(SourceLoc::new(&file, 1, 1), e)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(PolicyErrors {
            diagnostics: errors,
        })
    }
}

fn read_one(file: &Path) -> Result<String, String> {
    let meta = fs::metadata(file).map_err(|e| format!("cannot read policy: {e}"))?;
    if meta.len() > MAX_POLICY_BYTES {
        return Err(format!(
            "policy file is {} bytes; the limit is {MAX_POLICY_BYTES}",
            meta.len()
        ));
    }
    let bytes = fs::read(file).map_err(|e| format!("cannot read policy: {e}"))?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "policy file is not UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Parser limits scaled to the file: large policies (100,000 rules) parse,
/// while alias and anchor limits keep "billion laughs" documents out. File
/// size is capped before parsing (`MAX_POLICY_BYTES`).
pub(super) fn parse_options(text: &str) -> serde_saphyr::Options {
    let n = text.len();
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: n.max(250_000),
            max_events: (2 * n).max(1_000_000),
        },
    }
}

/// `sha256:` + 16 hex digits over every file's name and content, in order.
pub(super) fn content_hash(sources: &[Source]) -> String {
    let mut h = Sha256::new();
    for s in sources {
        let name = s.path.file_name().map(|n| n.to_string_lossy().into_owned());
        h.update(name.unwrap_or_default().as_bytes());
        h.update([0]);
        h.update(s.text.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    format!("sha256:{}", crate::hex::lower(&digest[..8]))
}
