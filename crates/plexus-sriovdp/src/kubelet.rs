//! The plugin's side of the kubelet: `Registration.Register` on `kubelet.sock`, the socket's
//! identity (to notice a kubelet restart), and the PodResources `List` that tells which devices
//! are still allocated.

use crate::proto::RegisterRequest;
use crate::proto::registration_client::RegistrationClient;
use plexus_kubelet::proto::ListPodResourcesRequest;
use plexus_kubelet::proto::pod_resources_lister_client::PodResourcesListerClient;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// Why a kubelet call failed. Messages include their cause, so causes are fields, not
/// [`std::error::Error::source`]: a printed source chain would say them twice.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The socket could not be connected to (no kubelet, or it is restarting).
    #[error("cannot connect to {path}: {}", plexus_cni::report::chain(cause))]
    Connect {
        /// The socket.
        path: String,
        /// The transport error.
        cause: tonic::transport::Error,
    },
    /// The kubelet answered with an error.
    #[error("{call} on {path}: {status}")]
    Rpc {
        /// `Register` or `List`.
        call: &'static str,
        /// The socket.
        path: String,
        /// The kubelet's answer.
        status: tonic::Status,
    },
    /// No answer in time.
    #[error("{call} on {path}: no answer within {timeout:?}")]
    Timeout {
        /// `Register` or `List`.
        call: &'static str,
        /// The socket.
        path: String,
        /// The bound.
        timeout: Duration,
    },
}

/// The identity of a socket file: a restarted kubelet binds a new one. Device and inode alone are
/// not enough: the filesystem may hand the new socket the inode the old one just freed (seen on
/// this project's CI), so the change time, which a new file cannot share, is part of it.
pub fn socket_identity(path: &Path) -> Option<SocketIdentity> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// See [`socket_identity`]: device, inode, change time (seconds, nanoseconds).
pub type SocketIdentity = (u64, u64, i64, i64);

/// Registers `resource` served on `endpoint` (a socket file name in the kubelet's directory)
/// with the kubelet at `kubelet_socket`.
pub async fn register(
    kubelet_socket: &Path,
    endpoint: &str,
    resource: &str,
    timeout: Duration,
) -> Result<(), KubeletError> {
    let path = kubelet_socket.display().to_string();
    let call = async {
        let channel = plexus_kubelet::connect(kubelet_socket)
            .await
            .map_err(|cause| KubeletError::Connect {
                path: path.clone(),
                cause,
            })?;
        RegistrationClient::new(channel)
            .register(RegisterRequest {
                version: crate::API_VERSION.into(),
                endpoint: endpoint.into(),
                resource_name: resource.into(),
                options: Some(crate::plugin::Pool::options()),
            })
            .await
            .map_err(|status| KubeletError::Rpc {
                call: "Register",
                path: path.clone(),
                status,
            })
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(KubeletError::Timeout {
            call: "Register",
            path,
            timeout,
        }),
    }
}

/// Every `(resource, device)` of `resources` the kubelet's PodResources `List` shows allocated to
/// a pod.
pub async fn allocated_devices(
    pod_resources_socket: &Path,
    resources: &[String],
    timeout: Duration,
) -> Result<HashSet<(String, String)>, KubeletError> {
    let path = pod_resources_socket.display().to_string();
    let call = async {
        let channel = plexus_kubelet::connect(pod_resources_socket)
            .await
            .map_err(|cause| KubeletError::Connect {
                path: path.clone(),
                cause,
            })?;
        PodResourcesListerClient::new(channel)
            .max_decoding_message_size(16 * 1024 * 1024)
            .list(ListPodResourcesRequest {})
            .await
            .map_err(|status| KubeletError::Rpc {
                call: "List",
                path: path.clone(),
                status,
            })
    };
    let list = match tokio::time::timeout(timeout, call).await {
        Ok(r) => r?.into_inner(),
        Err(_) => {
            return Err(KubeletError::Timeout {
                call: "List",
                path,
                timeout,
            });
        }
    };
    let mut out = HashSet::new();
    for pod in list.pod_resources {
        for c in pod.containers {
            for d in c.devices {
                if resources.contains(&d.resource_name) {
                    for id in d.device_ids {
                        out.insert((d.resource_name.clone(), id));
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_kubelet_socket_is_named_with_the_os_error_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(register(&path, "x.sock", "r", Duration::from_secs(5)))
            .unwrap_err();
        // Printed alone or with its source chain (as main prints a fatal error), the transport
        // error's useful part is there, once.
        let os = std::io::Error::from_raw_os_error(2).to_string();
        for text in [err.to_string(), plexus_cni::report::chain(&err)] {
            assert!(matches!(err, KubeletError::Connect { .. }), "{err:?}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert_eq!(text.matches(&os).count(), 1, "{text}");
        }
    }

    #[test]
    fn a_socket_bound_again_at_the_same_path_is_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet.sock");
        let first = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let before = socket_identity(&path).unwrap();
        drop(first);
        std::fs::remove_file(&path).unwrap();
        // A kubelet restart takes far longer than the file clock's tick (a jiffy at worst).
        std::thread::sleep(std::time::Duration::from_millis(50));
        // The filesystem typically hands the new socket the inode just freed.
        let _second = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let after = socket_identity(&path).unwrap();
        assert_ne!(before, after, "a restarted kubelet would go unnoticed");
    }
}
