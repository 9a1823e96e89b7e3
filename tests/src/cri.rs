//! A CRI (Kubernetes Container Runtime Interface, v1) client that talks to a container runtime
//! the way the kubelet does: gRPC over the runtime's unix socket, with the pod sandbox config the
//! kubelet builds from a pod object.
//!
//! The messages are generated at build time from `proto/cri.proto` (a subset of the CRI API
//! written from its field list, compiled by protox). The client is synchronous: tests exec
//! binaries and poll the kernel, so it owns a small tokio runtime and blocks on each call.

use anyhow::Context;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// The generated CRI v1 messages and client.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod pb {
    tonic::include_proto!("runtime.v1");
}

use pb::runtime_service_client::RuntimeServiceClient;

/// How long one CRI call may take. The kubelet's default runtime request timeout is 2 minutes;
/// this guards the tests against a hang with the same order of slack.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// A connected CRI runtime service client.
#[derive(Debug)]
pub struct CriClient {
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    socket: PathBuf,
}

impl CriClient {
    /// Connects to the runtime listening on `socket` (the connection is made on first use and
    /// re-made after the runtime restarts).
    pub fn connect(socket: &Path) -> anyhow::Result<CriClient> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let path = socket.to_path_buf();
        let channel = {
            let _guard = runtime.enter();
            // The URI is required by the API but unused: every connection goes to the socket.
            Endpoint::try_from("http://cri.invalid")?
                .timeout(CALL_TIMEOUT)
                .connect_timeout(Duration::from_secs(5))
                .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }))
        };
        Ok(CriClient {
            runtime,
            client: RuntimeServiceClient::new(channel),
            socket: socket.to_path_buf(),
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `Version`: the runtime's name and version.
    pub fn version(&self) -> Result<pb::VersionResponse, tonic::Status> {
        let mut c = self.client.clone();
        self.runtime
            .block_on(c.version(pb::VersionRequest {
                version: "v1".into(),
            }))
            .map(tonic::Response::into_inner)
    }

    /// `Status`: the runtime's conditions (`RuntimeReady`, `NetworkReady`).
    pub fn status(&self) -> Result<pb::RuntimeStatus, tonic::Status> {
        let mut c = self.client.clone();
        let r = self
            .runtime
            .block_on(c.status(pb::StatusRequest { verbose: false }))?
            .into_inner();
        Ok(r.status.unwrap_or_default())
    }

    /// Whether the runtime reports condition `kind` (e.g. `NetworkReady`) as true; the reason
    /// and message otherwise.
    pub fn condition(&self, kind: &str) -> Result<Result<(), String>, tonic::Status> {
        let status = self.status()?;
        Ok(match status.conditions.iter().find(|c| c.r#type == kind) {
            Some(c) if c.status => Ok(()),
            Some(c) => Err(format!("{}: {}", c.reason, c.message)),
            None => Err(format!("no {kind} condition")),
        })
    }

    /// `RunPodSandbox` with the default runtime handler; returns the sandbox ID.
    pub fn run_pod_sandbox(&self, config: pb::PodSandboxConfig) -> Result<String, tonic::Status> {
        let mut c = self.client.clone();
        let req = pb::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        self.runtime
            .block_on(c.run_pod_sandbox(req))
            .map(|r| r.into_inner().pod_sandbox_id)
    }

    /// `StopPodSandbox`: the runtime tears the pod's network down (CNI DEL) and stops it.
    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), tonic::Status> {
        let mut c = self.client.clone();
        let req = pb::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.runtime.block_on(c.stop_pod_sandbox(req)).map(drop)
    }

    /// `RemovePodSandbox`: the runtime forgets the sandbox (containerd runs one more CNI DEL).
    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), tonic::Status> {
        let mut c = self.client.clone();
        let req = pb::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.runtime.block_on(c.remove_pod_sandbox(req)).map(drop)
    }

    /// `PodSandboxStatus` with `verbose`; the status and, when verbose, containerd's `info`
    /// document (pid, OCI runtime spec, CNI result) parsed as JSON.
    pub fn pod_sandbox_status(
        &self,
        id: &str,
    ) -> Result<(pb::PodSandboxStatus, serde_json::Value), tonic::Status> {
        let mut c = self.client.clone();
        let req = pb::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        };
        let r = self
            .runtime
            .block_on(c.pod_sandbox_status(req))?
            .into_inner();
        let info = r
            .info
            .get("info")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(serde_json::Value::Null);
        Ok((r.status.unwrap_or_default(), info))
    }

    /// `ListPodSandbox` without a filter.
    pub fn list_pod_sandboxes(&self) -> Result<Vec<pb::PodSandbox>, tonic::Status> {
        let mut c = self.client.clone();
        let req = pb::ListPodSandboxRequest { filter: None };
        self.runtime
            .block_on(c.list_pod_sandbox(req))
            .map(|r| r.into_inner().items)
    }
}

/// What the kubelet knows of a pod when it asks for its sandbox.
#[derive(Debug, Clone, Default)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: HashMap<String, String>,
    /// The pod object's annotations (the kubelet passes them all to the runtime).
    pub annotations: HashMap<String, String>,
}

impl PodRef {
    /// Reads name, namespace, UID, labels and annotations from a pod object.
    pub fn from_pod(pod: &serde_json::Value) -> PodRef {
        let meta = &pod["metadata"];
        let map = |v: &serde_json::Value| -> HashMap<String, String> {
            v.as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        };
        PodRef {
            namespace: meta["namespace"].as_str().unwrap_or_default().to_owned(),
            name: meta["name"].as_str().unwrap_or_default().to_owned(),
            uid: meta["uid"].as_str().unwrap_or_default().to_owned(),
            labels: map(&meta["labels"]),
            annotations: map(&meta["annotations"]),
        }
    }
}

/// The `PodSandboxConfig` the kubelet sends for a pod without host namespaces, security context
/// or ports, on a node whose cgroup driver is cgroupfs (`cgroup_root` is the kubelet's
/// `/kubepods` equivalent).
pub fn kubelet_sandbox_config(
    pod: &PodRef,
    attempt: u32,
    cgroup_root: &str,
    log_root: &Path,
) -> pb::PodSandboxConfig {
    // The kubelet adds its identifying labels to the pod's own.
    let mut labels = pod.labels.clone();
    labels.insert("io.kubernetes.pod.name".into(), pod.name.clone());
    labels.insert("io.kubernetes.pod.namespace".into(), pod.namespace.clone());
    labels.insert("io.kubernetes.pod.uid".into(), pod.uid.clone());
    let mut annotations = pod.annotations.clone();
    annotations.insert("kubernetes.io/config.source".into(), "api".into());
    annotations.insert(
        "kubernetes.io/config.seen".into(),
        "2024-01-01T00:00:00Z".into(),
    );
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            attempt,
        }),
        hostname: pod.name.clone(),
        log_directory: log_root
            .join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
            .to_string_lossy()
            .into_owned(),
        dns_config: Some(pb::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                format!("{}.svc.cluster.local", pod.namespace),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        }),
        labels,
        annotations,
        linux: Some(pb::LinuxPodSandboxConfig {
            cgroup_parent: format!("/{cgroup_root}/besteffort/pod{}", pod.uid),
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    network: pb::NamespaceMode::Pod.into(),
                    pid: pb::NamespaceMode::Container.into(),
                    ipc: pb::NamespaceMode::Pod.into(),
                    target_id: String::new(),
                }),
                // A pod without a seccompProfile, on a kubelet without --seccomp-default.
                seccomp: Some(pb::SecurityProfile {
                    profile_type: pb::security_profile::ProfileType::Unconfined.into(),
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            sysctls: HashMap::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_config_carries_the_pod_as_the_kubelet_does() {
        let pod = PodRef::from_pod(&serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u-1",
                         "labels": {"app": "x"}, "annotations": {"k8s.v1.cni.cncf.io/networks": "a"}}
        }));
        let c = kubelet_sandbox_config(&pod, 2, "kp", Path::new("/logs"));
        let m = c.metadata.unwrap();
        assert_eq!(
            (
                m.name.as_str(),
                m.namespace.as_str(),
                m.uid.as_str(),
                m.attempt
            ),
            ("p", "n", "u-1", 2)
        );
        assert_eq!(c.annotations["k8s.v1.cni.cncf.io/networks"], "a");
        assert_eq!(c.labels["app"], "x");
        assert_eq!(c.labels["io.kubernetes.pod.uid"], "u-1");
        assert_eq!(c.log_directory, "/logs/n_p_u-1");
        let linux = c.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/kp/besteffort/podu-1");
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.network(), pb::NamespaceMode::Pod);
    }
}
