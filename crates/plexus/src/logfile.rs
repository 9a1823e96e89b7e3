//! `logFile` with Multus's `logOptions`: size-based rotation, a bounded number and age of rotated
//! files, gzip compression.
//!
//! Hand-written rather than lumberjack's Rust equivalents (`file-rotate`, `rolling-file`) because
//! those rotate from a size counter kept inside one long-lived process. Plexus is the opposite: a
//! process per CNI call, several at once on a busy node, all appending to the same file. So the
//! decision is made from the file's size on disk when each call opens it, under an exclusive
//! `flock` of the log's directory, which makes exactly one process rotate. Each process then
//! holds a shared `flock` on the file it writes for as long as it lives; the compressor takes an
//! exclusive one on a rotated file before reading it, so it waits for the last process still
//! writing there instead of losing its lines. Compression (`flate2`) runs in a detached copy of
//! the binary so that gzipping 100 MB never delays a pod's ADD.
//!
//! Names follow lumberjack (`plexus.log` → `plexus-2026-11-29T10-15-00.123.log[.gz]`, UTC), so
//! log shippers configured for Multus's rotated files find these too. A file may grow past
//! `maxSize` by what the calls that opened it before the rotation still write.

use plexus_engine::config::LogOptions;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Environment variable that turns a `plexus` process into the compressor of the rotated file
/// it names.
pub const COMPRESS_ENV: &str = "PLEXUS_COMPRESS_LOG";

const DAY: Duration = Duration::from_secs(86_400);

/// The log file opened for appending (with a shared lock held for the process's lifetime), and
/// the rotated file to compress when this call rotated it.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub rotated: Option<PathBuf>,
}

/// Opens `path` for appending; rotates it first when it has reached `maxSize`, then removes the
/// rotated files that `maxBackups` and `maxAge` no longer allow.
pub fn open(path: &Path, options: &LogOptions, now: SystemTime) -> io::Result<Opened> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir_lock = File::open(&dir)?;
    dir_lock.lock()?;
    let limit = options.max_size_mb.max(1).saturating_mul(1024 * 1024);
    let mut rotated = None;
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= limit) {
        let backup = backup_name(path, now);
        std::fs::rename(path, &backup)?;
        rotated = Some(backup);
    }
    // Logs name pods, networks and delegate output: root-only, like the cache; a file left by an
    // older version or another tool is tightened too.
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    // Taken before the directory lock is released, so that a later rotation's compressor, which
    // can only start after that rotation, finds this process's lock on the file it wrote.
    file.lock_shared()?;
    if rotated.is_some() {
        prune(path, options, now)?;
    }
    drop(dir_lock);
    Ok(Opened { file, rotated })
}

/// `dir/stem-YYYY-MM-DDTHH-MM-SS.mmm.ext` for `dir/stem.ext`; a later millisecond if taken.
fn backup_name(path: &Path, now: SystemTime) -> PathBuf {
    let (stem, ext) = split_name(path);
    let mut t = now;
    loop {
        let mut name = stem.clone();
        name.push(format!("-{}", timestamp(t)));
        name.push(&ext);
        let p = path.with_file_name(name);
        if !p.exists() && !gz(&p).exists() {
            return p;
        }
        t += Duration::from_millis(1);
    }
}

/// `("plexus", ".log")` for `plexus.log`; `("plexus", "")` for `plexus`.
fn split_name(path: &Path) -> (OsString, OsString) {
    let stem = path.file_stem().unwrap_or_default().to_os_string();
    let ext = path
        .extension()
        .map(|e| {
            let mut s = OsString::from(".");
            s.push(e);
            s
        })
        .unwrap_or_default();
    (stem, ext)
}

fn gz(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(".gz");
    PathBuf::from(s)
}

/// The rotated files of `path`, oldest first (the timestamp in the name sorts them).
pub fn backups(path: &Path) -> io::Result<Vec<PathBuf>> {
    let (stem, ext) = split_name(path);
    let (stem, ext) = (stem.to_string_lossy(), ext.to_string_lossy());
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let rest = name.strip_suffix(".gz").unwrap_or(&name);
        let Some(middle) = rest
            .strip_prefix(&*stem)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix(&*ext))
        else {
            continue;
        };
        if is_timestamp(middle) {
            found.push(dir.join(&*name));
        }
    }
    found.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(found)
}

/// Removes rotated files beyond `maxBackups` (oldest first) and those older than `maxAge` days
/// (by modification time: when their last line was written).
fn prune(path: &Path, options: &LogOptions, now: SystemTime) -> io::Result<()> {
    let mut all = backups(path)?;
    if options.max_backups > 0 {
        let excess = all.len().saturating_sub(options.max_backups as usize);
        for old in all.drain(..excess) {
            remove(&old)?;
        }
    }
    if options.max_age_days > 0 {
        let max_age = DAY.saturating_mul(options.max_age_days.min(u32::MAX as u64) as u32);
        for p in all {
            let modified = std::fs::metadata(&p).and_then(|m| m.modified())?;
            if now.duration_since(modified).is_ok_and(|age| age > max_age) {
                remove(&p)?;
            }
        }
    }
    Ok(())
}

fn remove(p: &Path) -> io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Gzips `rotated` into `rotated.gz` and removes it. Waits (exclusive lock) until no process is
/// still writing to it. A leftover `.gz.tmp` of an interrupted run is overwritten.
pub fn compress(rotated: &Path) -> io::Result<PathBuf> {
    let mut src = File::open(rotated)?;
    src.lock()?;
    let target = gz(rotated);
    let tmp = {
        let mut s = target.as_os_str().to_os_string();
        s.push(".tmp");
        PathBuf::from(s)
    };
    {
        let out = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut src, &mut enc)?;
        enc.finish()?.sync_all()?;
    }
    std::fs::rename(&tmp, &target)?;
    std::fs::remove_file(rotated)?;
    Ok(target)
}

/// Starts a detached `plexus` that compresses `rotated` (stdio closed, not waited for: the
/// runtime must not wait on it, and it waits for the writers of that file to exit).
pub fn spawn_compressor(rotated: &Path) -> io::Result<()> {
    std::process::Command::new(std::env::current_exe()?)
        .env(COMPRESS_ENV, rotated)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(drop)
}

/// `YYYY-MM-DDTHH-MM-SS.mmm` in UTC (lumberjack's backup time format).
fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}-{:02}-{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn is_timestamp(s: &str) -> bool {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd-dd-dd.ddd";
    s.len() == SHAPE.len()
        && s.bytes().zip(SHAPE).all(|(c, &want)| match want {
            b'd' => c.is_ascii_digit(),
            _ => c == want,
        })
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    const MB: usize = 1024 * 1024;

    fn opts(max_size_mb: u64, max_backups: u64, max_age_days: u64) -> LogOptions {
        LogOptions {
            max_size_mb,
            max_age_days,
            max_backups,
            compress: true,
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn timestamps_sort_and_parse() {
        assert_eq!(timestamp(at(0)), "1970-01-01T00-00-00.000");
        assert_eq!(
            timestamp(at(1_798_761_599) + Duration::from_millis(7)),
            "2026-12-31T23-59-59.007"
        );
        assert!(is_timestamp("2026-12-31T23-59-59.007"));
        assert!(!is_timestamp("2026-12-31T23-59-59"));
    }

    #[test]
    fn below_max_size_appends_without_rotating() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("plexus.log");
        std::fs::write(&log, "old line\n").unwrap();
        let mut o = open(&log, &opts(1, 5, 5), at(1_000_000)).unwrap();
        assert!(o.rotated.is_none());
        writeln!(o.file, "new line").unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "old line\nnew line\n"
        );
        assert!(backups(&log).unwrap().is_empty());
    }

    #[test]
    fn at_max_size_rotates_to_a_timestamped_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("plexus.log");
        std::fs::write(&log, vec![b'x'; MB]).unwrap();
        let mut o = open(&log, &opts(1, 5, 0), at(1_798_761_599)).unwrap();
        let rotated = o.rotated.clone().unwrap();
        assert_eq!(
            rotated,
            dir.path().join("plexus-2026-12-31T23-59-59.000.log")
        );
        assert_eq!(std::fs::metadata(&rotated).unwrap().len(), MB as u64);
        writeln!(o.file, "fresh").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "fresh\n");
        assert_eq!(backups(&log).unwrap(), vec![rotated]);
    }

    #[test]
    fn max_backups_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("plexus.log");
        for (i, name) in [
            "plexus-2026-01-01T00-00-00.000.log.gz",
            "plexus-2026-01-02T00-00-00.000.log.gz",
            "plexus-2026-01-03T00-00-00.000.log",
        ]
        .iter()
        .enumerate()
        {
            std::fs::write(dir.path().join(name), format!("{i}")).unwrap();
        }
        // Not ours: same prefix without a timestamp, and another file.
        std::fs::write(dir.path().join("plexus-other.log"), "").unwrap();
        std::fs::write(dir.path().join("unrelated.log"), "").unwrap();
        std::fs::write(&log, vec![b'x'; MB]).unwrap();
        let now = SystemTime::now();
        let o = open(&log, &opts(1, 2, 0), now).unwrap();
        let left: Vec<String> = backups(&log)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            vec![
                "plexus-2026-01-03T00-00-00.000.log".to_owned(),
                o.rotated
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            ]
        );
        assert!(dir.path().join("plexus-other.log").exists());
        assert!(dir.path().join("unrelated.log").exists());
    }

    #[test]
    fn max_age_removes_old_backups_by_modification_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("plexus.log");
        let now = SystemTime::now();
        let old = dir.path().join("plexus-2026-01-01T00-00-00.000.log.gz");
        let recent = dir.path().join("plexus-2026-01-02T00-00-00.000.log.gz");
        for (p, age_days) in [(&old, 6), (&recent, 4)] {
            let f = File::create(p).unwrap();
            f.set_modified(now - DAY * age_days).unwrap();
        }
        std::fs::write(&log, vec![b'x'; MB]).unwrap();
        open(&log, &opts(1, 0, 5), now).unwrap();
        assert!(!old.exists(), "older than maxAge");
        assert!(recent.exists());
        assert_eq!(backups(&log).unwrap().len(), 2);
    }

    #[test]
    fn compress_writes_gzip_and_removes_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let rotated = dir.path().join("plexus-2026-01-01T00-00-00.000.log");
        let text = "line\n".repeat(10_000);
        std::fs::write(&rotated, &text).unwrap();
        let gz = compress(&rotated).unwrap();
        assert!(!rotated.exists());
        let mut out = String::new();
        flate2::read::GzDecoder::new(File::open(&gz).unwrap())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, text);
        assert!(std::fs::metadata(&gz).unwrap().len() < text.len() as u64 / 10);
    }

    #[test]
    fn compress_waits_for_writers_of_the_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("plexus.log");
        std::fs::write(&log, vec![b'x'; MB]).unwrap();
        // A writer that opened the file before the rotation.
        let mut writer = open(&log, &opts(2, 0, 0), SystemTime::now()).unwrap();
        let rotated = open(&log, &opts(1, 0, 0), SystemTime::now())
            .unwrap()
            .rotated
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let r = rotated.clone();
        let t = std::thread::spawn(move || {
            let gz = compress(&r).unwrap();
            tx.send(()).unwrap();
            gz
        });
        // The compressor must not finish while the writer holds its lock.
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "compressed under a live writer"
        );
        writeln!(writer.file, "late line").unwrap();
        drop(writer);
        let gz = t.join().unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(File::open(&gz).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.ends_with(b"late line\n"), "the late line is kept");
    }
}
