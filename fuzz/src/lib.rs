//! What the fuzz targets share: the real example policies (loaded once),
//! a fixed view of the daemon for kernel records, and scratch files for the
//! entry points that read from a path (as the daemon and the CLI do).
//!
//! Each target drives the daemon's own entry points and checks properties
//! on the way (answers that parse, chains that verify, two loaders that
//! agree); a panic anywhere is a finding.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use palisade::{
    daemon::{ActivePolicy, Generation, RecordContext},
    dns::judge::Judges,
    policy::{self, Policy},
};

/// The example policies as shipped (`examples/policies`, `examples/demo`).
pub const EXAMPLE_POLICIES: &[(&str, &str)] = &[
    (
        "clinical.yaml",
        include_str!("../../examples/policies/clinical.yaml"),
    ),
    (
        "devops.yaml",
        include_str!("../../examples/policies/devops.yaml"),
    ),
    (
        "finance.yaml",
        include_str!("../../examples/policies/finance.yaml"),
    ),
    (
        "support.yaml",
        include_str!("../../examples/policies/support.yaml"),
    ),
    ("demo.yaml", include_str!("../../examples/demo/policy.yaml")),
    // Conditions over every kind of value a call can send (fuzz only).
    ("cel.yaml", include_str!("../policies/cel.yaml")),
];

fn load(name: &str, text: &str) -> Policy {
    match policy::load_str(name, text) {
        Ok(l) => l.policy,
        Err(e) => panic!("the example policy {name} does not load: {e}"),
    }
}

/// Every example policy, loaded.
pub fn example_policies() -> &'static [Policy] {
    static P: OnceLock<Vec<Policy>> = OnceLock::new();
    P.get_or_init(|| {
        EXAMPLE_POLICIES
            .iter()
            .map(|(name, text)| load(name, text))
            .collect()
    })
}

/// The example policy picked by `selector`.
pub fn pick_policy(selector: u8) -> &'static Policy {
    let all = example_policies();
    &all[usize::from(selector) % all.len()]
}

/// DNS judges of every example identity with host rules (indexes of the
/// N-th policy start at `100 * N + 1`).
pub fn dns_judges() -> &'static Judges {
    static J: OnceLock<Judges> = OnceLock::new();
    J.get_or_init(|| {
        let mut all = Judges::default();
        for (n, p) in example_policies().iter().enumerate() {
            let index_of = |name: &str| {
                p.identities
                    .iter()
                    .position(|i| i.id == name)
                    .map(|i| (100 * n + i + 1) as u32)
            };
            all.by_index
                .extend(Judges::from_policy(p, true, &index_of).by_index);
        }
        assert!(
            !all.by_index.is_empty(),
            "no example identity has host rules"
        );
        all
    })
}

/// The daemon as kernel records see it: identity indexes 1.. in policy
/// order, and the policy active at generations 1 and 2 (0 and others are
/// forgotten, as after many reloads).
pub struct FixedDaemon {
    pub active: Arc<ActivePolicy>,
    pub older: Arc<ActivePolicy>,
    names: HashMap<u32, String>,
}

impl FixedDaemon {
    pub fn new(policy: &Policy, older: &Policy) -> Self {
        let names = policy
            .identities
            .iter()
            .enumerate()
            .map(|(i, id)| (i as u32 + 1, id.id.clone()))
            .collect();
        Self {
            active: Arc::new(ActivePolicy {
                policy: policy.clone(),
                generation: 2,
            }),
            older: Arc::new(ActivePolicy {
                policy: older.clone(),
                generation: 1,
            }),
            names,
        }
    }

    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(i, _)| *i)
    }
}

impl RecordContext for FixedDaemon {
    fn identity_name(&self, index: u32) -> Option<String> {
        self.names.get(&index).cloned()
    }

    fn policy_at(&self, generation: u32) -> Option<Generation> {
        match generation {
            1 => Some(Generation::Active(self.older.clone())),
            2 => Some(Generation::Active(self.active.clone())),
            _ => None,
        }
    }

    fn active_policy(&self) -> Arc<ActivePolicy> {
        self.active.clone()
    }
}

/// This process's scratch directory: `$PALISADE_FUZZ_SCRATCH` (set and
/// removed by `cargo xtask fuzz`), else a directory of its own under the
/// system's temporary directory.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("PALISADE_FUZZ_SCRATCH").map_or_else(
            || std::env::temp_dir().join(format!("palisade-fuzz-{}", std::process::id())),
            PathBuf::from,
        );
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("creating the scratch directory {}: {e}", dir.display());
        }
        dir
    })
}

/// Write `bytes` to the scratch file `name` and return its path.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    if let Err(e) = std::fs::write(&path, bytes) {
        panic!("writing {}: {e}", path.display());
    }
    path
}

/// Cut `data` at the first occurrence of `sep` (the rest is empty when it
/// does not occur).
pub fn split_once<'a>(data: &'a [u8], sep: &[u8]) -> (&'a [u8], &'a [u8]) {
    match data.windows(sep.len()).position(|w| w == sep) {
        Some(i) => (&data[..i], &data[i + sep.len()..]),
        None => (data, &[]),
    }
}
