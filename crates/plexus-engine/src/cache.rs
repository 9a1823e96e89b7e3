//! The on-disk record of what an ADD did, so that DEL and CHECK work without the API server.
//!
//! Files in `cniDir` (0700), per container:
//! - `<id>.json`: the entry, as a log of generations, each one compact JSON object on a line of
//!   its own; a reader takes the last line that reads back. The first generation is written
//!   atomically (temp file, rename) **before** the first delegate runs, so that a crash of the
//!   process at any point leaves an entry listing every attachment the ADD may have made, which
//!   is all DEL needs to release them. Its disk sync (fsync of the file and of the directory)
//!   runs on a thread of its own while the first delegate starts ([`Cache::write_syncing`]), and
//!   the ADD does not succeed before it finished: a node crash before then loses the pod's
//!   network namespace with the entry, and no ADD has reported success on an entry that is not
//!   on disk. Each result then **appends** a generation (without waiting for the disk: a result
//!   only adds the `prevResult` a DEL may pass on). An append never touches the lines before
//!   it, so the durable first generation stays readable whatever happens to the tail: an append
//!   cut short (the process killed, the node crashed before the kernel wrote it) leaves a last
//!   line that does not parse, and the reader falls back to the line before;
//! - `<id>.prev`: only when a durable write replaces an existing entry (an ADD repeated for the
//!   same container): the entry it replaces, kept until the new one is written, so that a torn
//!   write cannot lose the whole record; a reader that finds no line of `<id>.json` readable
//!   falls back to it;
//! - `<id>.lock`: the `flock` that serialises operations on the container. It is removed only by
//!   the holder that removed the entry (or found none), while still holding it;
//! - `.tmp-<id>.<random>`: a write in progress (or killed mid-way; GC sweeps those).
//!
//! The log costs one file per entry instead of two (session 5 kept the durable generation as
//! `<id>.prev` and renamed a new file over `<id>.json` at the first result): one inode allocated
//! per ADD and one freed per DEL fewer, and no rename over the entry, after which ext4 starts
//! writing the data out at once (`auto_da_alloc`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Marks the file format so that a future format change is detected rather than misread.
pub const CACHE_KIND: &str = "plexusCacheV1";

/// GC removes a lock file without an entry, or a temp file, only once it is this old (and, for a
/// lock, nobody holds it). Every CNI call that creates either file finishes, or is killed by the
/// runtime, long before: the kubelet's runtime request timeout is 2 minutes.
pub const STALE_GRACE: std::time::Duration = std::time::Duration::from_secs(10 * 60);

const ENTRY_SUFFIX: &str = ".json";
const PREV_SUFFIX: &str = ".prev";
const LOCK_SUFFIX: &str = ".lock";
const TMP_PREFIX: &str = ".tmp-";

/// Whether `name` is a temp file of `container_id`: `.tmp-<id>.<suffix>` where the suffix (the
/// random part, or `prev`) has no dot, so that container `a` never claims `.tmp-a.b.<suffix>`,
/// a temp file of container `a.b`.
fn is_temp_of(name: &str, container_id: &str) -> bool {
    name.strip_prefix(TMP_PREFIX)
        .and_then(|rest| rest.strip_prefix(container_id))
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|suffix| !suffix.is_empty() && !suffix.contains('.'))
}

/// A cache operation that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    /// A filesystem call failed (`op` names it).
    #[error("cache {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::sync::Arc<std::io::Error>,
    },
    /// Neither the entry nor its previous generation can be read back.
    #[error("cache entry {path} is corrupt ({reason})")]
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
    /// The device the attachment got (NADs with a `resourceName`). The config text above already
    /// carries it; this record names it and its device-info file, which DEL removes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<crate::device::AssignedDevice>,
}

/// The cache directory of one node.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// Holds the per-container lock until dropped.
#[derive(Debug)]
pub struct ContainerLock {
    lock: nix::fcntl::Flock<File>,
    path: PathBuf,
}

impl std::os::fd::AsFd for ContainerLock {
    /// The locked file, for delegates that must keep the lock held (see
    /// [`crate::exec::UnderLock`]).
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.lock.as_fd()
    }
}

impl ContainerLock {
    /// Removes the lock file while still holding the lock, then releases it. Only for the holder
    /// that leaves the container without an entry (DEL, a clean rollback, GC): a waiter that then
    /// gets the unlinked inode notices and retries on a fresh file (see [`Cache::lock`]), where it
    /// finds no entry, which is the right answer after a completed DEL.
    pub fn unlink(self) -> Result<(), CacheError> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&self.path, "remove lock")(e)),
        }
        // `self.lock` is released here, after the unlink.
    }

    fn held_inode(&self) -> std::io::Result<u64> {
        self.lock.metadata().map(|m| m.ino())
    }
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
        self.dir.join(format!("{container_id}{ENTRY_SUFFIX}"))
    }

    /// Path of the previous generation of a container's entry.
    pub fn prev_path(&self, container_id: &str) -> PathBuf {
        self.dir.join(format!("{container_id}{PREV_SUFFIX}"))
    }

    /// Path of a container's lock file.
    pub fn lock_path(&self, container_id: &str) -> PathBuf {
        self.dir.join(format!("{container_id}{LOCK_SUFFIX}"))
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
        let path = self.lock_path(container_id);
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
            // `ContainerLock::unlink` removes the lock file while holding it; whoever was waiting
            // on that inode now holds a lock nobody else can see, so it must retry on the current
            // file.
            let lock = ContainerLock {
                lock,
                path: path.clone(),
            };
            let held = lock.held_inode().map_err(io(&path, "stat lock"))?;
            match fs::metadata(&path) {
                Ok(m) if m.ino() == held => return Ok(Some(lock)),
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
        self.write_file(&entry.container_id, &encode(entry), Durability::Synced)?;
        sync_dir(&self.dir)
    }

    /// Writes the entry atomically and starts its disk sync (file, then directory) on a thread
    /// of its own; [`Syncing::wait`] says whether it reached the disk. The ADD's first write: it
    /// is visible to every process (a DEL, a crashed and restarted daemon) as soon as this
    /// returns, and the ~0.5 ms the sync takes on the bench machine's disk overlaps the first
    /// delegate's start instead of delaying it.
    pub fn write_syncing(&self, entry: &CacheEntry) -> Result<Syncing, CacheError> {
        self.ensure_dir()?;
        let file = self.write_file(&entry.container_id, &encode(entry), Durability::Deferred)?;
        let path = self.entry_path(&entry.container_id);
        let dir = self.dir.clone();
        let thread = std::thread::Builder::new()
            .name("cache-sync".to_owned())
            .spawn(move || sync_entry(&file, &path, &dir));
        match thread {
            Ok(handle) => Ok(Syncing {
                handle: Some(handle),
            }),
            // No thread to spare (a process at its limit): sync here, as `write` does.
            Err(_) => {
                let path = self.entry_path(&entry.container_id);
                let file = File::open(&path).map_err(io(&path, "fsync"))?;
                sync_entry(&file, &path, &self.dir)?;
                Ok(Syncing { handle: None })
            }
        }
    }

    /// Records a new generation of an entry that [`Cache::write`] made durable, without syncing:
    /// one append to `<id>.json` (a newline, then the entry), which every process reads at once.
    /// A crash can lose it only to an earlier generation, which lists the same attachments (what
    /// is lost is a `prevResult` DEL can do without). This keeps a disk sync per delegate off the
    /// ADD's critical path (hack/bench.sh: ~0.5 ms per sync on the bench machine's disk), and a
    /// file created and renamed per delegate as well.
    pub fn update(&self, entry: &CacheEntry) -> Result<(), CacheError> {
        let id = &entry.container_id;
        let path = self.entry_path(id);
        let mut line = Vec::with_capacity(256);
        line.push(b'\n');
        line.extend_from_slice(&encode(entry));
        match OpenOptions::new().append(true).open(&path) {
            // One write: the kernel copies it into the page cache whole, or page by page when
            // it is larger; a kill between pages leaves a last line that does not parse.
            Ok(mut file) => file.write_all(&line).map_err(io(&path, "append")),
            // No entry to add to (removed behind our back): write it whole.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.write_file(id, &line[1..], Durability::Lazy).map(drop)
            }
            Err(e) => Err(io(&path, "open")(e)),
        }
    }

    /// Temp file (synced when `durability` says so), then, for a durable write, the current
    /// entry becomes `<id>.prev` (a hard link, so that `<id>.json` never disappears), and the
    /// temp file is renamed over `<id>.json`.
    fn write_file(
        &self,
        id: &str,
        bytes: &[u8],
        durability: Durability,
    ) -> Result<File, CacheError> {
        let path = self.entry_path(id);
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!("{TMP_PREFIX}{id}."))
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.dir)
            .map_err(io(&self.dir, "create temp file"))?;
        tmp.write_all(bytes).map_err(io(&path, "write"))?;
        match durability {
            Durability::Synced => {
                tmp.as_file().sync_all().map_err(io(&path, "fsync"))?;
                self.keep_previous(id)?;
            }
            Durability::Deferred => self.keep_previous(id)?,
            // Only used when the entry file is gone: there is nothing to keep.
            Durability::Lazy => {}
        }
        tmp.persist(&path).map_err(|e| CacheError::Io {
            path: path.clone(),
            op: "rename",
            source: std::sync::Arc::new(e.error),
        })
    }

    /// Links the current entry (if any, and only if it reads back) as `<id>.prev`: a corrupt
    /// current entry must not replace a good previous one.
    fn keep_previous(&self, id: &str) -> Result<(), CacheError> {
        let path = self.entry_path(id);
        match parse_entry(&path, id) {
            Ok(Some(_)) => {}
            Ok(None) | Err(CacheError::Corrupt { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        let staged = self.dir.join(format!("{TMP_PREFIX}{id}.prev"));
        let _ = fs::remove_file(&staged);
        fs::hard_link(&path, &staged).map_err(io(&staged, "link previous entry"))?;
        fs::rename(&staged, self.prev_path(id)).map_err(io(&staged, "rename previous entry"))
    }

    /// Reads a container's entry (its newest generation that reads back); `Ok(None)` when there
    /// is none. An entry file without a readable generation falls back to `<id>.prev` (logged);
    /// only when neither reads back is it [`CacheError::Corrupt`].
    pub fn read(&self, container_id: &str) -> Result<Option<CacheEntry>, CacheError> {
        let path = self.entry_path(container_id);
        match parse_entry(&path, container_id) {
            Err(CacheError::Corrupt { path, reason }) => {
                match parse_entry(&self.prev_path(container_id), container_id) {
                    Ok(Some(prev)) => {
                        tracing::warn!(
                            container = container_id,
                            "cache entry {} is corrupt ({reason}); using its previous generation",
                            path.display()
                        );
                        Ok(Some(prev))
                    }
                    _ => Err(CacheError::Corrupt { path, reason }),
                }
            }
            other => other,
        }
    }

    /// Removes a container's entry, its previous generation and the temp files of its killed
    /// writes (missing is fine). The caller holds the container's lock, so no write of this
    /// container is in progress: any temp file of it was left by a writer that died. The lock
    /// file stays: only its holder removes it, with [`ContainerLock::unlink`].
    ///
    /// The removal is not synced to disk: an entry a node crash brings back only costs one more
    /// DEL of attachments that are gone, which every delegate must accept (CNI SPEC §DEL).
    pub fn remove(&self, container_id: &str) -> Result<(), CacheError> {
        for name in self.file_names()? {
            if is_temp_of(&name, container_id) {
                let path = self.dir.join(&name);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&path, "remove")(e)),
                }
            }
        }
        // The previous generation goes first: a crash in between must not leave an old record
        // without the current one.
        for path in [self.prev_path(container_id), self.entry_path(container_id)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path, "remove")(e)),
            }
        }
        Ok(())
    }

    /// Container IDs with an entry (for GC and tests).
    pub fn list(&self) -> Result<Vec<String>, CacheError> {
        let mut ids: Vec<String> = self
            .file_names()?
            .into_iter()
            .filter_map(|n| n.strip_suffix(ENTRY_SUFFIX).map(str::to_owned))
            .filter(|n| !n.starts_with('.'))
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn file_names(&self) -> Result<Vec<String>, CacheError> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir, "list")(e)),
        };
        Ok(rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect())
    }

    /// GC's sweep of files no operation will ever remove: temp files of killed writes, and lock
    /// files of containers without an entry that nobody holds, once older than `grace`. Returns
    /// the names removed.
    pub fn sweep(&self, grace: std::time::Duration) -> Result<Vec<String>, CacheError> {
        let mut removed = Vec::new();
        let now = std::time::SystemTime::now();
        let old = |path: &Path| {
            fs::symlink_metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age >= grace))
        };
        for name in self.file_names()? {
            let path = self.dir.join(&name);
            if name.starts_with(TMP_PREFIX) {
                // A write lasts milliseconds under the container's lock; one this old was killed.
                if old(&path) && fs::remove_file(&path).is_ok() {
                    removed.push(name);
                }
                continue;
            }
            let Some(id) = name.strip_suffix(LOCK_SUFFIX) else {
                continue;
            };
            if id.starts_with('.') || self.entry_path(id).exists() || !old(&path) {
                continue;
            }
            let Some(lock) = self.lock_mode(id, nix::fcntl::FlockArg::LockExclusiveNonblock)?
            else {
                continue; // held: an operation is running
            };
            // Checked again under the lock: an ADD may have written its entry meanwhile.
            if self.entry_path(id).exists() {
                continue;
            }
            lock.unlink()?;
            removed.push(name);
        }
        Ok(removed)
    }
}

/// Reads and validates one entry file; `Ok(None)` when it does not exist.
fn parse_entry(path: &Path, container_id: &str) -> Result<Option<CacheEntry>, CacheError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, "read")(e)),
    };
    decode_entry(path, container_id, &bytes).map(Some)
}

/// Decodes the bytes of `container_id`'s entry file at `path`: its newest generation (the last
/// line that is an entry of this format for this container); a file without one is `Corrupt`
/// (fuzzed in fuzz/fuzz_targets/cache_entry.rs).
pub fn decode_entry(
    path: &Path,
    container_id: &str,
    bytes: &[u8],
) -> Result<CacheEntry, CacheError> {
    let corrupt = |reason: String| CacheError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let mut newest_error = None;
    for line in bytes
        .rsplit(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
    {
        match decode_generation(container_id, line) {
            Ok(entry) => return Ok(entry),
            Err(reason) => {
                newest_error.get_or_insert(reason);
            }
        }
    }
    Err(corrupt(
        newest_error.unwrap_or_else(|| "empty file".to_owned()),
    ))
}

/// One line of an entry file: an entry of this format for this container, or why not.
fn decode_generation(container_id: &str, line: &[u8]) -> Result<CacheEntry, String> {
    let entry: CacheEntry = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    if entry.kind != CACHE_KIND {
        return Err(format!("unknown kind {:?}", entry.kind));
    }
    if entry.container_id != container_id {
        return Err(format!("holds container {:?}", entry.container_id));
    }
    Ok(entry)
}

/// Whether a write waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Data and rename on disk before the write returns.
    Synced,
    /// Visible to every process at once; synced by the caller afterwards (file, then
    /// directory), the previous generation kept as with `Synced`.
    Deferred,
    /// Visible to every process at once; on disk when the kernel gets to it (an update whose
    /// entry file is gone).
    Lazy,
}

/// The disk sync of a [`Cache::write_syncing`], running on its own thread. Dropping it waits
/// for the thread (the sync's result is then only lost, never left running past the call).
#[derive(Debug)]
#[must_use = "an entry is durable only once `wait` returned Ok"]
pub struct Syncing {
    handle: Option<std::thread::JoinHandle<Result<(), CacheError>>>,
}

impl Syncing {
    /// Waits for the sync: `Ok` once the entry and its directory entry are on disk.
    pub fn wait(mut self) -> Result<(), CacheError> {
        match self.handle.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => Ok(()),
        }
    }
}

impl Drop for Syncing {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One generation's bytes as written to disk: compact JSON, so that it holds no newline (the
/// separator of generations) and a line cut short never parses.
fn encode(entry: &CacheEntry) -> Vec<u8> {
    serde_json::to_vec(entry).expect("cache entries always serialize")
}

/// The disk sync of a written entry: its data, then the directory entry naming it.
fn sync_entry(file: &File, path: &Path, dir: &Path) -> Result<(), CacheError> {
    file.sync_all().map_err(io(path, "fsync"))?;
    sync_dir(dir)
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
                device: None,
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
        held.unlink().unwrap();
        let waiter_lock = waiter.join().unwrap();
        // The waiter's lock is on the file that exists now, so a third party is excluded.
        let f = OpenOptions::new()
            .write(true)
            .open(d.path().join("abc.lock"))
            .unwrap();
        assert!(nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err());
        drop(waiter_lock);
    }

    fn age(path: &Path, by: std::time::Duration) {
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(std::time::SystemTime::now() - by).unwrap();
    }

    fn names(c: &Cache) -> Vec<String> {
        let mut v = c.file_names().unwrap();
        v.sort();
        v
    }

    /// Cuts `n` bytes off the end of a container's entry file (an append cut short).
    fn tear_tail(c: &Cache, id: &str, n: u64) {
        let f = OpenOptions::new()
            .write(true)
            .open(c.entry_path(id))
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - n).unwrap();
    }

    #[test]
    fn a_torn_entry_falls_back_to_the_previous_generation() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        let first = entry("abc");
        c.write(&first).unwrap();
        let mut second = first.clone();
        second.attachments[0].result = Some(serde_json::json!({"cniVersion": "0.3.1"}));
        c.update(&second).unwrap();
        assert_eq!(c.read("abc").unwrap(), Some(second.clone()));
        // The last generation cut short: the one before it is read instead.
        tear_tail(&c, "abc", 5);
        assert_eq!(c.read("abc").unwrap(), Some(first.clone()));
        // The next generation starts on a line of its own after the torn one, and reads back.
        c.update(&second).unwrap();
        assert_eq!(c.read("abc").unwrap(), Some(second.clone()));
        // No generation readable, and no `<id>.prev`: corrupt.
        fs::write(c.entry_path("abc"), b"{\"kind\": \"plexusCa").unwrap();
        assert!(matches!(c.read("abc"), Err(CacheError::Corrupt { .. })));
        // Removal takes the entry and leaves the lock to its holder.
        let lock = c.lock("abc").unwrap();
        c.remove("abc").unwrap();
        assert_eq!(names(&c), vec!["abc.lock"]);
        lock.unlink().unwrap();
        assert!(names(&c).is_empty());
    }

    #[test]
    fn a_generation_of_another_container_or_kind_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        let first = entry("abc");
        c.write(&first).unwrap();
        let mut other = entry("xyz");
        other.pod_name = "other".into();
        let mut bad = encode(&first);
        bad.splice(0..0, *b"\n");
        let text = String::from_utf8(bad)
            .unwrap()
            .replace(CACHE_KIND, "plexusCacheV0");
        let mut f = OpenOptions::new()
            .append(true)
            .open(c.entry_path("abc"))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
        f.write_all(&encode(&other)).unwrap();
        drop(f);
        assert_eq!(c.read("abc").unwrap(), Some(first));
    }

    #[test]
    fn a_syncing_write_is_read_at_once_and_keeps_generations_like_a_synced_one() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path().join("cache"));
        let first = entry("abc");
        let syncing = c.write_syncing(&first).unwrap();
        // Visible before the sync finished: a DEL or a restarted daemon finds it at once.
        assert_eq!(c.read("abc").unwrap(), Some(first.clone()));
        syncing.wait().unwrap();
        let mode = fs::metadata(c.entry_path("abc")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // The entry it replaces becomes the previous generation, as with `write`.
        let mut second = first.clone();
        second.attachments.clear();
        c.write_syncing(&second).unwrap().wait().unwrap();
        fs::write(c.entry_path("abc"), b"").unwrap();
        assert_eq!(c.read("abc").unwrap(), Some(first));
        assert_eq!(names(&c), vec!["abc.json", "abc.prev"], "no temp file left");
    }

    #[test]
    fn updates_append_to_the_same_file_and_never_touch_the_durable_generation() {
        use std::os::unix::fs::MetadataExt as _;
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        let durable = entry("abc");
        c.write(&durable).unwrap();
        let durable_len = fs::metadata(c.entry_path("abc")).unwrap().len();
        let ino = fs::metadata(c.entry_path("abc")).unwrap().ino();
        let mut later = durable.clone();
        for n in 0..4 {
            later.attachments[0].result = Some(serde_json::json!({"cniVersion": "1.0.0", "n": n}));
            c.update(&later).unwrap();
            assert_eq!(c.read("abc").unwrap(), Some(later.clone()));
            // The same file: no temp file created and renamed, no previous generation linked.
            assert_eq!(fs::metadata(c.entry_path("abc")).unwrap().ino(), ino);
            assert_eq!(names(&c), vec!["abc.json"]);
        }
        // The first line is still the durable generation, byte for byte.
        let bytes = fs::read(c.entry_path("abc")).unwrap();
        assert_eq!(&bytes[..durable_len as usize], &encode(&durable)[..]);
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 4);
        // Everything after it lost (the appends never reached the disk): the durable one reads.
        tear_tail(&c, "abc", bytes.len() as u64 - durable_len);
        assert_eq!(c.read("abc").unwrap(), Some(durable.clone()));
        // A generation larger than a page is appended the same way.
        let mut big = later.clone();
        big.cni_args = "x".repeat(3 * 4096);
        c.update(&big).unwrap();
        assert_eq!(c.read("abc").unwrap(), Some(big));
        assert_eq!(fs::metadata(c.entry_path("abc")).unwrap().ino(), ino);
        // An update with its entry file gone writes it whole.
        fs::remove_file(c.entry_path("abc")).unwrap();
        c.update(&later).unwrap();
        assert_eq!(c.read("abc").unwrap(), Some(later));
        assert_eq!(names(&c), vec!["abc.json"], "no temp file left");
    }

    #[test]
    fn a_durable_write_over_an_entry_keeps_it_as_the_previous_one() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        let durable = entry("abc");
        c.write(&durable).unwrap();
        let mut later = durable.clone();
        later.attachments[0].result = Some(serde_json::json!({"cniVersion": "1.0.0"}));
        c.update(&later).unwrap();
        // A repeated ADD writes its entry anew: the one it replaces (its newest generation is
        // what reads back) is kept as `<id>.prev` until then.
        let mut last = later.clone();
        last.attachments.clear();
        c.write(&last).unwrap();
        assert_eq!(c.read("abc").unwrap(), Some(last));
        fs::write(c.entry_path("abc"), b"{").unwrap();
        assert_eq!(c.read("abc").unwrap(), Some(later));
    }

    #[test]
    fn remove_takes_the_temp_files_of_that_container_only() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(d.path());
        cache.write(&entry("a")).unwrap();
        for name in [
            ".tmp-a.Ab12Cd",
            ".tmp-a.prev",
            ".tmp-a.b.Xy34Zw",
            ".tmp-ab.Qw56Er",
        ] {
            fs::write(d.path().join(name), b"{").unwrap();
        }
        cache.remove("a").unwrap();
        let mut left = cache.file_names().unwrap();
        left.sort();
        assert_eq!(left, vec![".tmp-a.b.Xy34Zw", ".tmp-ab.Qw56Er"]);
    }

    #[test]
    fn sweep_removes_only_stale_unheld_files() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        let hour = std::time::Duration::from_secs(3600);
        // A live container: entry and lock, both old.
        c.write(&entry("live")).unwrap();
        drop(c.lock("live").unwrap());
        age(&c.lock_path("live"), hour);
        // Leftovers of a killed DEL and a killed write.
        drop(c.lock("gone").unwrap());
        age(&c.lock_path("gone"), hour);
        let tmp = d.path().join(".tmp-gone.Ab12Cd");
        fs::write(&tmp, b"{").unwrap();
        age(&tmp, hour);
        // Young files of an operation that may still be running, and an old lock still held.
        drop(c.lock("young").unwrap());
        fs::write(d.path().join(".tmp-young.Xy34Zw"), b"{").unwrap();
        let busy = c.lock("busy").unwrap();
        age(&c.lock_path("busy"), hour);

        let mut removed = c.sweep(STALE_GRACE).unwrap();
        removed.sort();
        assert_eq!(removed, vec![".tmp-gone.Ab12Cd", "gone.lock"]);
        assert_eq!(
            names(&c),
            vec![
                ".tmp-young.Xy34Zw",
                "busy.lock",
                "live.json",
                "live.lock",
                "young.lock"
            ]
        );
        drop(busy);
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
