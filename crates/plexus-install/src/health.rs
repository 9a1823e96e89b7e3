//! A liveness/readiness signal for the DaemonSet: the loop touches a file after every successful
//! sync, and the probe (`plexus-install health`, an exec probe, since the image has no shell)
//! checks that it is recent. A loop that is stuck or failing stops touching it.

use crate::atomic;
use crate::error::{Error, Result};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Records "healthy now".
pub fn touch(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    atomic::write(path, format!("{now}\n").as_bytes(), 0o644)
}

/// Records "not healthy" (the probe fails at once).
pub fn clear(path: &Path) -> Result<()> {
    atomic::remove(path).map(drop)
}

/// Ok when `path` was touched within `max_age`; else a message saying why not.
pub fn check(path: &Path, max_age: Duration) -> Result<Duration, String> {
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| format!("not healthy: {}: {e} (not installed yet?)", path.display()))?;
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default();
    if age > max_age {
        return Err(format!(
            "not healthy: last successful sync {}s ago (limit {}s)",
            age.as_secs(),
            max_age.as_secs()
        ));
    }
    Ok(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_then_check() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run/health");
        assert!(check(&p, Duration::from_secs(5)).is_err());
        touch(&p).unwrap();
        assert!(check(&p, Duration::from_secs(5)).is_ok());
        clear(&p).unwrap();
        assert!(check(&p, Duration::from_secs(5)).is_err());
        clear(&p).unwrap();
    }
}
