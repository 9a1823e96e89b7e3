//! The on-disk record of what an ADD did, so that DEL and CHECK work without the API server.
//!
//! One JSON file per container in `cniDir` (0700), written atomically (temp file, fsync, rename,
//! fsync of the directory) **before** the first delegate runs and again after each result, so that
//! a crash at any point leaves an entry that lets DEL release everything already allocated.
//! A lock file per container serialises concurrent operations on it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Marks the file format so that a future format change is detected rather than misread.
pub const CACHE_KIND: &str = "plexusCacheV1";

#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error("cache {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::sync::Arc<std::io::Error>,
    },
    #[error(
        "cache entry {path} is corrupt ({reason}); refusing to report success without tearing the attachments down"
    )]
    Corrupt { path: PathBuf, reason: String },
}

fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> CacheError + use<> {
    let path = path.to_owned();
    move |e| CacheError::Io {
        path,
        op,
        source: std::sync::Arc::new(e),
    }
}

/// Everything needed to undo an ADD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub kind: String,
    pub container_id: String,
    pub netns: Option<String>,
    /// The runtime's `CNI_IFNAME` (the cluster network's interface).
    pub ifname: String,
    /// The runtime's `CNI_ARGS`, verbatim.
    pub cni_args: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub attachments: Vec<CachedAttachment>,
}

/// One delegate: its exact config and, once added, its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedAttachment {
    /// `ns/name` of the NAD, or the cluster network's config name.
    pub network: String,
    pub ifname: String,
    /// The config (conf or conflist) exactly as given to the delegate, as JSON text.
    pub config: String,
    /// The runtime config this attachment's plugins received (before capability filtering).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub runtime_config: Map<String, Value>,
    #[serde(default)]
    pub is_default: bool,
    /// `CNI_ARGS` given to this delegate.
    pub cni_args: String,
    /// The final ADD result in the delegate's own version; `None` until the ADD returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// Decodes the bytes of `container_id`'s entry file at `path`: anything but an entry of this
/// format for this container is `Corrupt` (fuzzed in fuzz/fuzz_targets/cache_entry.rs).
pub fn decode_entry(
    path: &Path,
    container_id: &str,
    bytes: &[u8],
) -> Result<CacheEntry, CacheError> {
    let entry: CacheEntry = serde_json::from_slice(bytes).map_err(|e| CacheError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if entry.kind != CACHE_KIND {
        return Err(CacheError::Corrupt {
            path: path.to_owned(),
            reason: format!("unknown kind {:?}", entry.kind),
        });
    }
    if entry.container_id != container_id {
        return Err(CacheError::Corrupt {
            path: path.to_owned(),
            reason: format!("holds container {:?}", entry.container_id),
        });
    }
    Ok(entry)
}

/// The cache directory of one node.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// Holds the per-container lock until dropped.
#[derive(Debug)]
pub struct ContainerLock {
    _lock: nix::fcntl::Flock<File>,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a container's entry. Container IDs are validated by `CniEnv` (no `/`).
    pub fn entry_path(&self, container_id: &str) -> PathBuf {
        self.dir.join(format!("{container_id}.json"))
    }

    fn ensure_dir(&self) -> Result<(), CacheError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(&self.dir, "create directory"))?;
        // A pre-existing directory may have looser permissions; cached configs can hold secrets.
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(io(&self.dir, "chmod"))
    }

    /// Takes the exclusive lock for `container_id`, blocking until other operations finish.
    pub fn lock(&self, container_id: &str) -> Result<ContainerLock, CacheError> {
        self.lock_mode(container_id, nix::fcntl::FlockArg::LockExclusive)
            .map(|l| l.expect("a blocking lock is always taken"))
    }

    /// Like [`Cache::lock`], but gives up after `wait` (`Ok(None)`): GC sweeps every container
    /// and must not hang behind one whose ADD is stuck in a delegate.
    pub fn try_lock_for(
        &self,
        container_id: &str,
        wait: std::time::Duration,
    ) -> Result<Option<ContainerLock>, CacheError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match self.lock_mode(container_id, nix::fcntl::FlockArg::LockExclusiveNonblock)? {
                Some(l) => return Ok(Some(l)),
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                None => return Ok(None),
            }
        }
    }

    /// `Ok(None)` only for a non-blocking `mode` that found the lock held.
    fn lock_mode(
        &self,
        container_id: &str,
        mode: nix::fcntl::FlockArg,
    ) -> Result<Option<ContainerLock>, CacheError> {
        self.ensure_dir()?;
        let path = self.dir.join(format!("{container_id}.lock"));
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(io(&path, "open lock"))?;
            let lock = match nix::fcntl::Flock::lock(file, mode) {
                Ok(l) => l,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
                Err((_, e)) => {
                    return Err(CacheError::Io {
                        path: path.clone(),
                        op: "lock",
                        source: std::sync::Arc::new(e.into()),
                    });
                }
            };
            // `remove` unlinks the lock file while holding it; whoever was waiting on that inode
            // now holds a lock nobody else can see, so it must retry on the current file.
            let held = lock.metadata().map_err(io(&path, "stat lock"))?.ino();
            match fs::metadata(&path) {
                Ok(m) if m.ino() == held => return Ok(Some(ContainerLock { _lock: lock })),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&path, "stat lock")(e)),
            }
        }
    }

    /// Writes the entry atomically and durably (the first write of an ADD, before any delegate
    /// runs: the entry must survive a crash so that DEL can undo whatever ran next).
    pub fn write(&self, entry: &CacheEntry) -> Result<(), CacheError> {
        self.ensure_dir()?;
        self.write_file(entry)?;
        sync_dir(&self.dir)
    }

    /// Replaces an existing entry atomically, with the file's data synced but not the directory:
    /// the rename of an already durable entry is ordered by the filesystem journal, and losing it
    /// in a crash only loses a `prevResult` that DEL can do without. Saves a sync per delegate.
    pub fn update(&self, entry: &CacheEntry) -> Result<(), CacheError> {
        self.write_file(entry)
    }

    fn write_file(&self, entry: &CacheEntry) -> Result<(), CacheError> {
        let path = self.entry_path(&entry.container_id);
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.dir)
            .map_err(io(&self.dir, "create temp file"))?;
        let bytes = serde_json::to_vec(entry).expect("cache entries always serialize");
        tmp.write_all(&bytes).map_err(io(&path, "write"))?;
        tmp.as_file().sync_all().map_err(io(&path, "fsync"))?;
        tmp.persist(&path).map_err(|e| CacheError::Io {
            path: path.clone(),
            op: "rename",
            source: std::sync::Arc::new(e.error),
        })?;
        Ok(())
    }

    /// Reads a container's entry; `Ok(None)` when there is none.
    pub fn read(&self, container_id: &str) -> Result<Option<CacheEntry>, CacheError> {
        let path = self.entry_path(container_id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, "read")(e)),
        };
        decode_entry(&path, container_id, &bytes).map(Some)
    }

    /// Removes a container's entry and its lock file (missing is fine).
    pub fn remove(&self, container_id: &str) -> Result<(), CacheError> {
        let path = self.entry_path(container_id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path, "remove")(e)),
        }
        // The lock file is removed while we still hold the lock: a waiter that then locks the
        // unlinked inode only finds "no entry", which is the right answer after a completed DEL.
        let _ = fs::remove_file(self.dir.join(format!("{container_id}.lock")));
        sync_dir(&self.dir)
    }

    /// Container IDs with an entry (for GC and tests).
    pub fn list(&self) -> Result<Vec<String>, CacheError> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir, "list")(e)),
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_owned)
            })
            .filter(|n| !n.starts_with('.'))
            .collect();
        ids.sort();
        Ok(ids)
    }
}

fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> CacheEntry {
        CacheEntry {
            kind: CACHE_KIND.into(),
            container_id: id.into(),
            netns: Some("/run/netns/x".into()),
            ifname: "eth0".into(),
            cni_args: "K8S_POD_NAME=p".into(),
            pod_namespace: "ns".into(),
            pod_name: "p".into(),
            pod_uid: "u".into(),
            attachments: vec![CachedAttachment {
                network: "ns/a".into(),
                ifname: "net1".into(),
                config: "{\"cniVersion\":\"0.3.1\",\"type\":\"bridge\"}".into(),
                runtime_config: Map::new(),
                is_default: false,
                cni_args: String::new(),
                result: None,
            }],
        }
    }

    #[test]
    fn write_read_remove() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path().join("cache"));
        assert_eq!(c.read("abc").unwrap(), None);
        c.write(&entry("abc")).unwrap();
        assert_eq!(c.read("abc").unwrap(), Some(entry("abc")));
        assert_eq!(c.list().unwrap(), vec!["abc"]);
        let mode = fs::metadata(c.entry_path("abc"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(c.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        c.remove("abc").unwrap();
        assert_eq!(c.read("abc").unwrap(), None);
        c.remove("abc").unwrap();
        assert!(c.list().unwrap().is_empty());
    }

    #[test]
    fn corrupt_entry_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        fs::write(c.entry_path("abc"), b"{not json").unwrap();
        assert!(matches!(c.read("abc"), Err(CacheError::Corrupt { .. })));
        let mut e = entry("other");
        e.container_id = "other".into();
        fs::write(c.entry_path("abc"), serde_json::to_vec(&e).unwrap()).unwrap();
        assert!(matches!(c.read("abc"), Err(CacheError::Corrupt { .. })));
    }

    #[test]
    fn a_waiter_on_a_removed_lock_file_takes_the_current_one() {
        let d = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(Cache::new(d.path()));
        let held = c.lock("abc").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let c2 = c.clone();
        let waiter = std::thread::spawn(move || {
            let l = c2.lock("abc").unwrap();
            tx.send(()).unwrap();
            l
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            rx.try_recv().is_err(),
            "waiter must block while the lock is held"
        );
        c.remove("abc").unwrap();
        drop(held);
        let waiter_lock = waiter.join().unwrap();
        // The waiter's lock is on the file that exists now, so a third party is excluded.
        let f = OpenOptions::new()
            .write(true)
            .open(d.path().join("abc.lock"))
            .unwrap();
        assert!(nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err());
        drop(waiter_lock);
    }

    #[test]
    fn try_lock_gives_up_on_a_held_lock() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        let held = c.lock("abc").unwrap();
        let t = std::time::Instant::now();
        assert!(
            c.try_lock_for("abc", std::time::Duration::from_millis(60))
                .unwrap()
                .is_none()
        );
        assert!(t.elapsed() >= std::time::Duration::from_millis(60));
        drop(held);
        assert!(
            c.try_lock_for("abc", std::time::Duration::ZERO)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn lock_excludes_a_second_holder() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        let held = c.lock("abc").unwrap();
        let path = d.path().join("abc.lock");
        let f = OpenOptions::new().write(true).open(path).unwrap();
        let second = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock);
        assert!(second.is_err(), "lock must be exclusive");
        drop(held);
    }
}
