//! The kubelet device manager's checkpoint (`kubelet_internal_checkpoint`): an internal,
//! unversioned file, read only when the PodResources API cannot answer.
//!
//! Two shapes are known for `Data.PodDeviceEntries[].DeviceIDs`: a map from NUMA node (`"-1"`
//! when none) to IDs (kubelet 1.20 and later), and a plain list (kubelet 1.19 and earlier).
//! Entries are matched by pod UID.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Reading or parsing the checkpoint failed. Messages include their cause, so causes are fields,
/// not [`std::error::Error::source`]: a printed source chain would say them twice.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file does not exist.
    #[error("checkpoint {0} does not exist")]
    Missing(PathBuf),
    /// The file exists but cannot be read.
    #[error("checkpoint {path}: {cause}")]
    Io {
        /// The checkpoint path.
        path: PathBuf,
        /// The read error.
        cause: std::io::Error,
    },
    /// The file is not a checkpoint of a known shape.
    #[error("checkpoint {path} is not a device-manager checkpoint of a known shape: {reason}")]
    Parse {
        /// The checkpoint path.
        path: PathBuf,
        /// What did not parse.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
struct File {
    #[serde(rename = "Data")]
    data: Data,
}

#[derive(Debug, Deserialize)]
struct Data {
    #[serde(rename = "PodDeviceEntries", default)]
    entries: Option<Vec<Entry>>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "PodUID")]
    pod_uid: String,
    #[serde(rename = "ResourceName")]
    resource_name: String,
    #[serde(rename = "DeviceIDs")]
    device_ids: DeviceIds,
}

/// `DeviceIDs` in either of its shapes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DeviceIds {
    /// NUMA node → IDs (kubelet ≥ 1.20).
    ByNuma(BTreeMap<String, Vec<String>>),
    /// Plain list (kubelet ≤ 1.19).
    Plain(Vec<String>),
}

/// One parsed checkpoint: `(pod UID, resource, device IDs)` per container entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    entries: Vec<(String, String, Vec<String>)>,
}

impl Checkpoint {
    /// Reads and parses the checkpoint at `path`.
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|cause| {
            if cause.kind() == std::io::ErrorKind::NotFound {
                CheckpointError::Missing(path.to_owned())
            } else {
                CheckpointError::Io {
                    path: path.to_owned(),
                    cause,
                }
            }
        })?;
        Self::parse(&bytes).map_err(|reason| CheckpointError::Parse {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses checkpoint text of either shape.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let file: File = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let entries = file
            .data
            .entries
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                let ids = match e.device_ids {
                    DeviceIds::ByNuma(m) => m.into_values().flatten().collect(),
                    DeviceIds::Plain(v) => v,
                };
                (e.pod_uid, e.resource_name, ids)
            })
            .collect();
        Ok(Self { entries })
    }

    /// The devices of the pod with UID `uid`, by resource (every container merged).
    pub fn pod_devices(&self, uid: &str) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (pod, resource, ids) in &self.entries {
            if pod == uid {
                out.entry(resource.clone())
                    .or_default()
                    .extend(ids.iter().cloned());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numa_keyed_shape() {
        let text = br#"{"Data": {"PodDeviceEntries": [
            {"PodUID": "uid-a", "ContainerName": "app", "ResourceName": "intel.com/sriov_net_A",
             "DeviceIDs": {"-1": ["0000:03:02.3"], "0": ["0000:03:02.0"]}, "AllocResp": "CgA="},
            {"PodUID": "uid-a", "ContainerName": "side", "ResourceName": "intel.com/sriov_net_A",
             "DeviceIDs": {"1": ["0000:03:02.5"]}, "AllocResp": ""},
            {"PodUID": "uid-b", "ContainerName": "app", "ResourceName": "intel.com/sriov_net_A",
             "DeviceIDs": {"-1": ["0000:03:02.1"]}, "AllocResp": ""}],
          "RegisteredDevices": {"intel.com/sriov_net_A": ["0000:03:02.0", "0000:03:02.1"]}},
          "Checksum": 229855270}"#;
        let cp = Checkpoint::parse(text).unwrap();
        let mut ids = cp.pod_devices("uid-a")["intel.com/sriov_net_A"].clone();
        ids.sort();
        assert_eq!(ids, ["0000:03:02.0", "0000:03:02.3", "0000:03:02.5"]);
        assert_eq!(
            cp.pod_devices("uid-b")["intel.com/sriov_net_A"],
            ["0000:03:02.1"]
        );
        assert!(cp.pod_devices("uid-c").is_empty());
    }

    #[test]
    fn plain_list_shape_of_old_kubelets() {
        let text = br#"{"Data": {"PodDeviceEntries": [
            {"PodUID": "uid-a", "ContainerName": "app", "ResourceName": "intel.com/sriov_net_A",
             "DeviceIDs": ["0000:03:02.3", "0000:03:02.0"], "AllocResp": "CgA="}],
          "RegisteredDevices": {"intel.com/sriov_net_A": ["0000:03:02.0"]}}, "Checksum": 1}"#;
        let cp = Checkpoint::parse(text).unwrap();
        assert_eq!(
            cp.pod_devices("uid-a")["intel.com/sriov_net_A"],
            ["0000:03:02.3", "0000:03:02.0"]
        );
    }

    #[test]
    fn no_entries_and_bad_shapes() {
        let cp = Checkpoint::parse(
            br#"{"Data": {"PodDeviceEntries": null, "RegisteredDevices": {}}, "Checksum": 0}"#,
        )
        .unwrap();
        assert!(cp.pod_devices("uid-a").is_empty());
        let e = Checkpoint::parse(br#"{"Data": {"PodDeviceEntries": [{"PodUID": "u", "ResourceName": "r", "DeviceIDs": 5}]}}"#).unwrap_err();
        assert!(!e.is_empty());
        assert!(Checkpoint::parse(b"not json").is_err());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("cp");
        assert!(matches!(
            Checkpoint::read(&missing),
            Err(CheckpointError::Missing(p)) if p == missing
        ));
        std::fs::write(&missing, b"{}").unwrap();
        let e = Checkpoint::read(&missing).unwrap_err();
        assert!(
            e.to_string().contains("not a device-manager checkpoint"),
            "{e}"
        );
    }
}
