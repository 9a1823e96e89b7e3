//! Atomic file replacement: write a temporary file in the destination's directory, fsync it,
//! rename it over the destination, fsync the directory.
//!
//! This is what makes "text file busy" impossible (a running binary's inode is never opened for
//! writing; the rename only repoints the name) and guarantees a reader — the container runtime
//! loading a config, kubelet exec'ing a plugin — sees either the old file or the complete new one,
//! even across a crash.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Prefix of every temporary file we create, so `uninstall` and a restarted installer can remove
/// leftovers of a crash, and so the config scan never mistakes one for a CNI config.
pub const TEMP_PREFIX: &str = ".plexus-install.";

/// The temporary name used for `dest`: hidden, in the same directory (rename is atomic only within
/// one file system), unique per process.
pub fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!("{TEMP_PREFIX}{name}.{}.tmp", std::process::id()))
}

/// Replaces `dest` with `data`, created with permission bits `mode`.
pub fn write(dest: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_from(dest, &mut &data[..], mode)
}

/// Replaces `dest` with everything read from `src`, created with permission bits `mode`.
pub fn write_from(dest: &Path, src: &mut dyn Read, mode: u32) -> Result<()> {
    write_checked(dest, src, mode, |_| Ok(()))
}

/// Like [`write_from`], but runs `check` on the complete, closed temporary file before it is
/// renamed into place: a file that fails the check never replaces the old one.
pub fn write_checked(
    dest: &Path,
    src: &mut dyn Read,
    mode: u32,
    check: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let tmp = temp_path(dest);
    let result = (|| {
        // A leftover of a crashed run with our pid (pid reuse) would make create_new fail.
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(Error::io("create", &tmp))?;
        std::io::copy(src, &mut f).map_err(Error::io("write", &tmp))?;
        // The umask may have cleared bits of `mode`.
        f.set_permissions(Permissions::from_mode(mode))
            .map_err(Error::io("chmod", &tmp))?;
        f.flush().map_err(Error::io("write", &tmp))?;
        f.sync_all().map_err(Error::io("fsync", &tmp))?;
        drop(f);
        check(&tmp)?;
        std::fs::rename(&tmp, dest).map_err(Error::io("rename into place", dest))?;
        sync_dir(dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes the rename itself durable.
fn sync_dir(dest: &Path) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

/// True when `path` exists and holds exactly `data` (so an unchanged file is not rewritten, which
/// would wake every watcher of the directory for nothing).
pub fn same_content(path: &Path, data: &[u8]) -> bool {
    std::fs::read(path).is_ok_and(|old| old == data)
}

/// Removes `path`; a file that is already gone is success. Returns whether something was removed.
pub fn remove(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove", path)(e)),
    }
}

/// Removes our temporary leftovers (from a crash) in `dir`.
pub fn remove_leftovers(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            remove(&e.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn write_replaces_content_and_sets_mode_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write(&p, b"one", 0o600).unwrap();
        let ino = std::fs::metadata(&p).unwrap().ino();
        write(&p, b"two", 0o755).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.mode() & 0o777, 0o755);
        assert_ne!(md.ino(), ino, "replaced by rename, not rewritten in place");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["f"]);
    }

    #[test]
    fn same_content_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert!(!same_content(&p, b"x"));
        write(&p, b"x", 0o644).unwrap();
        assert!(same_content(&p, b"x"));
        assert!(remove(&p).unwrap());
        assert!(!remove(&p).unwrap());
    }
}
