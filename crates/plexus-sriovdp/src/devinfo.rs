//! The device plugin's device-info files (NPWG device-info spec): written on Allocate as
//! `<dir>/dp/<resource>-<device>-device.json` (the name the meta plugin looks for, see
//! `plexus_engine::device::DeviceInfoDirs`), removed once the device is no longer allocated.
//!
//! "No longer allocated" is learnt from the kubelet: its PodResources `List` names every device
//! held by a pod it runs. A file whose device is in no pod's list is removed, but only once it is
//! older than a grace period, because the kubelet records an allocation only after our Allocate
//! answer reaches it (and the meta plugin reads the file later still, at the pod's CNI ADD).

use plexus_engine::device::DeviceInfoDirs;
use serde_json::Value;
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const SUFFIX: &str = "-device.json";

/// The `dp/` directory of the device-info root.
#[derive(Debug, Clone)]
pub struct DeviceInfoStore {
    dirs: DeviceInfoDirs,
}

/// A device-info file found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoFile {
    /// The resource it belongs to.
    pub resource: String,
    /// The device (PCI address).
    pub device: String,
    /// The file.
    pub path: PathBuf,
}

impl DeviceInfoStore {
    /// The store under `root` (e.g. `/var/run/k8s.cni.cncf.io/devinfo`).
    pub fn new(root: &Path) -> Self {
        Self {
            dirs: DeviceInfoDirs::under(root),
        }
    }

    /// The file of `device` of `resource`.
    pub fn path(&self, resource: &str, device: &str) -> PathBuf {
        self.dirs.dp_file(resource, device)
    }

    /// Writes `doc` atomically (a temporary file renamed into place).
    pub fn write(&self, resource: &str, device: &str, doc: &Value) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dirs.dp)?;
        let path = self.path(resource, device);
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dirs.dp)?;
        // Readable by every consumer of device-info (the temporary file starts 0600).
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        tmp.write_all(doc.to_string().as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(path)
    }

    /// The files of `resources` on disk (files of other device plugins are never touched).
    pub fn files(&self, resources: &[String]) -> std::io::Result<Vec<InfoFile>> {
        let rd = match std::fs::read_dir(&self.dirs.dp) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(SUFFIX) else {
                continue;
            };
            for resource in resources {
                let prefix = format!("{}-", resource.replace('/', "-"));
                if let Some(device) = stem.strip_prefix(&prefix) {
                    // A PCI address has no '-': anything else is another resource's file whose
                    // name happens to share our prefix.
                    if !device.is_empty() && !device.contains('-') {
                        out.push(InfoFile {
                            resource: resource.clone(),
                            device: device.to_owned(),
                            path: entry.path(),
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Removes the files of `resources` whose `(resource, device)` is not in `allocated` and which
    /// are older than `grace`; returns what was removed.
    pub fn remove_unallocated(
        &self,
        resources: &[String],
        allocated: &HashSet<(String, String)>,
        grace: Duration,
        now: SystemTime,
    ) -> std::io::Result<Vec<InfoFile>> {
        let mut removed = Vec::new();
        for f in self.files(resources)? {
            if allocated.contains(&(f.resource.clone(), f.device.clone())) {
                continue;
            }
            let modified = match std::fs::metadata(&f.path).and_then(|m| m.modified()) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if now.duration_since(modified).unwrap_or_default() < grace {
                continue;
            }
            match std::fs::remove_file(&f.path) {
                Ok(()) => removed.push(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn written_where_the_meta_plugin_reads_and_listed_per_resource() {
        let dir = tempfile::tempdir().unwrap();
        let s = DeviceInfoStore::new(dir.path());
        let doc = json!({"type": "pci"});
        let p = s.write("intel.com/sriov_a", "0000:3b:02.0", &doc).unwrap();
        assert_eq!(
            p,
            DeviceInfoDirs::under(dir.path()).dp_file("intel.com/sriov_a", "0000:3b:02.0")
        );
        assert_eq!(
            p.file_name().unwrap(),
            "intel.com-sriov_a-0000:3b:02.0-device.json"
        );
        let back: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(back, doc);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        s.write("intel.com/sriov_b", "0000:3b:02.1", &doc).unwrap();
        // Another plugin's file, and one whose name shares our prefix.
        std::fs::write(
            dir.path()
                .join("dp/nvidia.com-gpu-0000:01:00.0-device.json"),
            "{}",
        )
        .unwrap();
        std::fs::write(
            dir.path()
                .join("dp/intel.com-sriov_a-x-0000:01:00.0-device.json"),
            "{}",
        )
        .unwrap();
        let files = s.files(&["intel.com/sriov_a".into()]).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].device, "0000:3b:02.0");
        assert_eq!(
            s.files(&["intel.com/sriov_a".into(), "intel.com/sriov_b".into()])
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn only_unallocated_files_past_the_grace_period_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let s = DeviceInfoStore::new(dir.path());
        let r = "intel.com/a".to_owned();
        for d in ["0000:3b:02.0", "0000:3b:02.1"] {
            s.write(&r, d, &json!({})).unwrap();
        }
        let allocated: HashSet<(String, String)> = [(r.clone(), "0000:3b:02.1".to_owned())]
            .into_iter()
            .collect();
        let resources = vec![r.clone()];
        // Within the grace period nothing goes.
        let none = s
            .remove_unallocated(
                &resources,
                &allocated,
                Duration::from_secs(60),
                SystemTime::now(),
            )
            .unwrap();
        assert!(none.is_empty());
        let later = SystemTime::now() + Duration::from_secs(120);
        let gone = s
            .remove_unallocated(&resources, &allocated, Duration::from_secs(60), later)
            .unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].device, "0000:3b:02.0");
        assert!(!s.path(&r, "0000:3b:02.0").exists());
        assert!(s.path(&r, "0000:3b:02.1").exists());
    }
}
