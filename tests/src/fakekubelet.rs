//! A fake kubelet PodResources v1 server on a unix socket: the test bed's stand-in for the
//! kubelet on a node with SR-IOV VFs allocated by a device plugin.
//!
//! Faithful where Plexus depends on it: the wire API (`v1.PodResourcesLister` over gRPC), `List`
//! answering every pod of the node, `Get` answering one pod (UNKNOWN "... not found" for a pod the
//! kubelet does not know), and the kubelet's answers when `Get` is missing (UNIMPLEMENTED on a
//! kubelet older than 1.27, UNKNOWN "PodResources API Get method disabled" with the feature gate
//! off) or when it rate-limits (RESOURCE_EXHAUSTED). Switches: [`GetMode`], [`FakeKubelet::busy_for`]
//! and [`FakeKubelet::stop`] (socket left with nobody listening) / [`FakeKubelet::remove_socket`].

use anyhow::Context;
use plexus_kubelet::proto::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use plexus_kubelet::proto::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, ContainerDevices,
    ContainerResources, GetPodResourcesRequest, GetPodResourcesResponse, ListPodResourcesRequest,
    ListPodResourcesResponse, PodResources,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

/// How the fake answers `Get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GetMode {
    /// Kubernetes ≥ 1.27 with `KubeletPodResourcesGet` on.
    #[default]
    Served,
    /// A kubelet older than 1.27: UNIMPLEMENTED.
    Unimplemented,
    /// The feature gate off: UNKNOWN "PodResources API Get method disabled".
    Disabled,
}

#[derive(Debug, Default)]
struct State {
    pods: Vec<PodResources>,
    get: GetMode,
    /// Calls left to answer RESOURCE_EXHAUSTED.
    busy: u32,
    /// `"Get ns/name"`, `"List"` per call (busy answers included).
    calls: Vec<String>,
}

#[derive(Debug, Clone)]
struct Service(Arc<Mutex<State>>);

impl Service {
    fn enter(&self, call: String) -> Result<std::sync::MutexGuard<'_, State>, Status> {
        let mut s = self.0.lock().expect("fake kubelet state");
        s.calls.push(call);
        if s.busy > 0 {
            s.busy -= 1;
            // What the kubelet's rate limiter answers.
            return Err(Status::resource_exhausted("rejected by rate limit"));
        }
        Ok(s)
    }
}

#[tonic::async_trait]
impl PodResourcesLister for Service {
    async fn list(
        &self,
        _: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        let s = self.enter("List".into())?;
        Ok(Response::new(ListPodResourcesResponse {
            pod_resources: s.pods.clone(),
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        drop(self.enter("GetAllocatableResources".into())?);
        Ok(Response::new(AllocatableResourcesResponse::default()))
    }

    async fn get(
        &self,
        req: Request<GetPodResourcesRequest>,
    ) -> Result<Response<GetPodResourcesResponse>, Status> {
        let r = req.into_inner();
        let s = self.enter(format!("Get {}/{}", r.pod_namespace, r.pod_name))?;
        match s.get {
            GetMode::Unimplemented => {
                return Err(Status::unimplemented(
                    "unknown method Get for service v1.PodResourcesLister",
                ));
            }
            GetMode::Disabled => {
                return Err(Status::unknown("PodResources API Get method disabled"));
            }
            GetMode::Served => {}
        }
        let pod = s
            .pods
            .iter()
            .find(|p| p.name == r.pod_name && p.namespace == r.pod_namespace)
            .cloned()
            .ok_or_else(|| {
                Status::unknown(format!(
                    "pod {} in namespace {} not found",
                    r.pod_name, r.pod_namespace
                ))
            })?;
        Ok(Response::new(GetPodResourcesResponse {
            pod_resources: Some(pod),
        }))
    }
}

struct Running {
    runtime: tokio::runtime::Runtime,
    shutdown: tokio::sync::oneshot::Sender<()>,
}

/// The fake kubelet; serves until [`FakeKubelet::stop`] or drop (which also removes the socket).
pub struct FakeKubelet {
    socket: PathBuf,
    state: Arc<Mutex<State>>,
    running: Option<Running>,
}

impl std::fmt::Debug for FakeKubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKubelet")
            .field("socket", &self.socket)
            .field("running", &self.running.is_some())
            .finish()
    }
}

impl FakeKubelet {
    /// Binds `socket` (its directory is created) and serves on a background runtime.
    pub fn start(socket: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(socket);
        // One worker thread of its own: it serves while the test thread blocks on plexus.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fake-kubelet")
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let state = Arc::new(Mutex::new(State::default()));
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(socket)
                .with_context(|| format!("bind {}", socket.display()))?
        };
        let (shutdown, rx) = tokio::sync::oneshot::channel();
        let service = PodResourcesListerServer::new(Service(state.clone()));
        let serve = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async {
                    let _ = rx.await;
                },
            );
        runtime.spawn(async move {
            if let Err(e) = serve.await {
                eprintln!("fake kubelet: {e}");
            }
        });
        Ok(Self {
            socket: socket.to_owned(),
            state,
            running: Some(Running { runtime, shutdown }),
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Allocates `ids` of `resource` to container `container` of pod `ns/name`.
    pub fn allocate(&self, ns: &str, name: &str, container: &str, resource: &str, ids: &[&str]) {
        let mut s = self.state.lock().expect("state");
        let pos = match s
            .pods
            .iter()
            .position(|p| p.name == name && p.namespace == ns)
        {
            Some(i) => i,
            None => {
                s.pods.push(PodResources {
                    name: name.into(),
                    namespace: ns.into(),
                    ..Default::default()
                });
                s.pods.len() - 1
            }
        };
        let pod = &mut s.pods[pos];
        let c = match pod.containers.iter().position(|c| c.name == container) {
            Some(i) => i,
            None => {
                pod.containers.push(ContainerResources {
                    name: container.into(),
                    ..Default::default()
                });
                pod.containers.len() - 1
            }
        };
        pod.containers[c].devices.push(ContainerDevices {
            resource_name: resource.into(),
            device_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            topology: None,
        });
    }

    /// Sets how `Get` answers.
    pub fn set_get(&self, mode: GetMode) {
        self.state.lock().expect("state").get = mode;
    }

    /// The next `k` calls answer RESOURCE_EXHAUSTED.
    pub fn busy_for(&self, k: u32) {
        self.state.lock().expect("state").busy = k;
    }

    /// Every call so far (`"Get ns/name"`, `"List"`).
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().expect("state").calls.clone()
    }

    /// Stops serving; the socket file stays, with nobody listening (a kubelet that is down).
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown.send(());
            r.runtime
                .shutdown_timeout(std::time::Duration::from_secs(5));
        }
    }

    /// Stops serving and removes the socket (no kubelet, or the API not enabled).
    pub fn remove_socket(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.remove_socket();
    }
}

/// A device-manager checkpoint (the NUMA-keyed shape of kubelet ≥ 1.20) allocating `devices`
/// (`(pod UID, resource, IDs)`) to container `app`.
pub fn checkpoint_json(devices: &[(&str, &str, &[&str])]) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = devices
        .iter()
        .map(|(uid, resource, ids)| {
            serde_json::json!({"PodUID": uid, "ContainerName": "app", "ResourceName": resource,
                "DeviceIDs": {"-1": ids}, "AllocResp": ""})
        })
        .collect();
    serde_json::json!({"Data": {"PodDeviceEntries": entries, "RegisteredDevices": {}}, "Checksum": 0})
}
