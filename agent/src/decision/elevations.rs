//! Break-glass elevations: an identity holds an elevated role until a set
//! time. The kernel ends the egress part on its own (each grant range
//! carries the expiry on the boot clock); this store is what the decision
//! engine checks for tools, and it is saved to a small file (written to a
//! temporary name, then renamed) so a restarted daemon neither forgets an
//! elevation nor revives or extends one.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use agent_common::grants::ELEVATION_RULE;
use serde::{Deserialize, Serialize};

use super::grants::boot_now_ns;

/// Format of the state file.
const FORMAT: u32 = 1;

/// One elevation: `identity` holds `role` until `expires`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Elevation {
    /// `elv-` and eight hex digits of `number`.
    pub id: String,
    /// Carried by the kernel grant ranges (below `ELEVATION_RULE`).
    pub number: u32,
    pub identity: String,
    pub role: String,
    pub reason: String,
    /// Who granted it, as the audit trail names operators.
    pub by: String,
    pub started_unix: u64,
    pub expires_unix_ms: u64,
    /// The expiry on the boot clock the kernel hooks read.
    pub expires_boot_ns: u64,
}

impl Elevation {
    pub fn new(identity: &str, role: &str, ttl: Duration, reason: &str, by: &str) -> Self {
        let number = loop {
            let n = rand::random::<u32>() & !ELEVATION_RULE;
            if n != 0 {
                break n;
            }
        };
        let now = SystemTime::now();
        Self {
            id: format!("elv-{number:08x}"),
            number,
            identity: identity.to_string(),
            role: role.to_string(),
            reason: reason.to_string(),
            by: by.to_string(),
            started_unix: unix_ms(now) / 1000,
            expires_unix_ms: unix_ms(now + ttl),
            expires_boot_ns: boot_now_ns().saturating_add(ttl.as_nanos() as u64),
        }
    }

    /// The `GrantRange::rule` of this elevation's kernel grants.
    pub const fn kernel_rule(&self) -> u32 {
        ELEVATION_RULE | self.number
    }

    pub fn expires(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.expires_unix_ms)
    }

    pub fn live(&self, now_boot_ns: u64) -> bool {
        now_boot_ns < self.expires_boot_ns
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, thiserror::Error)]
pub enum ElevationError {
    #[error("elevation state file {path}: {source}")]
    StateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: u32,
    /// `/proc/sys/kernel/random/boot_id` when written: on the same boot the
    /// kernel expiry is reused as is; after a reboot it is recomputed from
    /// the wall clock (the pins, and so the grants, are gone anyway).
    boot_id: String,
    elevations: Vec<Elevation>,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub struct Elevations {
    list: Mutex<Vec<Elevation>>,
    path: PathBuf,
}

impl Elevations {
    /// Read the saved elevations. Returns the store (live ones only) and
    /// those that ended while no daemon was running.
    pub fn load(path: &Path) -> Result<(Self, Vec<Elevation>), ElevationError> {
        let err = |source| ElevationError::StateFile {
            path: path.to_path_buf(),
            source,
        };
        let saved = match std::fs::read(path) {
            Ok(text) => {
                let file: StateFile = serde_json::from_slice(&text)
                    .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
                if file.format != FORMAT {
                    return Err(err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("format {} (this daemon reads {FORMAT})", file.format),
                    )));
                }
                let same_boot = !file.boot_id.is_empty() && file.boot_id == boot_id();
                let (boot, wall) = (boot_now_ns(), unix_ms(SystemTime::now()));
                file.elevations
                    .into_iter()
                    .map(|mut e| {
                        if !same_boot {
                            // Never later than the wall-clock expiry said.
                            let left_ms = e.expires_unix_ms.saturating_sub(wall);
                            e.expires_boot_ns = boot.saturating_add(left_ms * 1_000_000);
                        }
                        e
                    })
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(e)),
        };
        let now = boot_now_ns();
        let (live, ended): (Vec<Elevation>, Vec<Elevation>) =
            saved.into_iter().partition(|e| e.live(now));
        let store = Self {
            list: Mutex::new(live),
            path: path.to_path_buf(),
        };
        if !ended.is_empty() {
            store.save(&store.lock())?;
        }
        Ok((store, ended))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Elevation>> {
        self.list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, list: &[Elevation]) -> Result<(), ElevationError> {
        let err = |source| ElevationError::StateFile {
            path: self.path.clone(),
            source,
        };
        let file = StateFile {
            format: FORMAT,
            boot_id: boot_id(),
            elevations: list.to_vec(),
        };
        let text = serde_json::to_vec_pretty(&file).map_err(|e| err(std::io::Error::other(e)))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = self.path.with_extension("tmp");
        crate::owned::write_new_private(&tmp, &text, true).map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }

    /// Record a new elevation (saved before it takes effect).
    pub fn add(&self, e: Elevation) -> Result<(), ElevationError> {
        let mut list = self.lock();
        list.push(e);
        if let Err(err) = self.save(&list) {
            list.pop();
            return Err(err);
        }
        Ok(())
    }

    /// Remove the elevations `end` selects; returns them.
    pub fn remove(
        &self,
        end: impl Fn(&Elevation) -> bool,
    ) -> Result<Vec<Elevation>, ElevationError> {
        let mut list = self.lock();
        let (gone, kept): (Vec<Elevation>, Vec<Elevation>) = list.drain(..).partition(|e| end(e));
        *list = kept;
        if !gone.is_empty() {
            self.save(&list)?;
        }
        Ok(gone)
    }

    /// Elevations past their expiry, removed.
    pub fn take_expired(&self) -> Result<Vec<Elevation>, ElevationError> {
        let now = boot_now_ns();
        self.remove(|e| !e.live(now))
    }

    /// Every elevation held now (expired ones not yet swept are left out).
    pub fn active(&self) -> Vec<Elevation> {
        let now = boot_now_ns();
        self.lock()
            .iter()
            .filter(|e| e.live(now))
            .cloned()
            .collect()
    }

    pub fn active_for(&self, identity: &str) -> Vec<Elevation> {
        let now = boot_now_ns();
        self.lock()
            .iter()
            .filter(|e| e.identity == identity && e.live(now))
            .cloned()
            .collect()
    }

    /// The elevation whose kernel grants carry `number`.
    pub fn by_number(&self, number: u32) -> Option<Elevation> {
        self.lock().iter().find(|e| e.number == number).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_elevations_come_back_and_expired_ones_do_not() {
        let dir = std::env::temp_dir().join(format!("palisade-elev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("elevations.json");
        let (store, ended) = Elevations::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(ended.is_empty());
        let live = Elevation::new("a", "dba", Duration::from_secs(600), "incident", "uid 0");
        let mut dead = Elevation::new("b", "dba", Duration::from_secs(600), "x", "uid 0");
        dead.expires_boot_ns = boot_now_ns().saturating_sub(1);
        store.add(live.clone()).unwrap_or_else(|e| panic!("{e}"));
        store.add(dead.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.active(), vec![live.clone()]);
        let (again, ended) = Elevations::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            again.active(),
            vec![live.clone()],
            "same expiry, not extended"
        );
        assert_eq!(ended, vec![dead]);
        let (third, ended) = Elevations::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(ended.is_empty(), "an ended elevation is reported once");
        assert_eq!(third.by_number(live.number), Some(live));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
