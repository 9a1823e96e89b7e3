//! A fake kubelet on unix sockets: the test bed's stand-in for the kubelet of a node with SR-IOV
//! VFs. Two faces, sharing one state:
//!
//! - the PodResources v1 server that plexus queries. Faithful where Plexus depends on it: the wire
//!   API (`v1.PodResourcesLister` over gRPC), `List` answering every pod of the node, `Get`
//!   answering one pod (UNKNOWN "... not found" for a pod the kubelet does not know), and the
//!   kubelet's answers when `Get` is missing (UNIMPLEMENTED on a kubelet older than 1.27, UNKNOWN
//!   "PodResources API Get method disabled" with the feature gate off) or when it rate-limits
//!   (RESOURCE_EXHAUSTED) or is not serving yet (UNAVAILABLE). Switches: [`GetMode`],
//!   [`FakeKubelet::busy_for`] / [`FakeKubelet::busy_with`] ([`Busy`]) and
//!   [`FakeKubelet::stop`] (socket left with nobody listening) / [`FakeKubelet::remove_socket`].
//! - the device-plugin side ([`FakeKubelet::serve_device_plugins`]): the v1beta1 `Registration`
//!   server on `<dir>/kubelet.sock`; for each registered plugin a client that follows its
//!   `ListAndWatch` stream, and [`FakeKubelet::allocate_from_plugin`], which does what the
//!   kubelet's device manager does when a pod asks for a resource (GetPreferredAllocation when the
//!   plugin offers it, then Allocate) and records the allocation, so that PodResources answers
//!   with it. [`FakeKubelet::restart_device_plugins`] is a kubelet restart: every socket in the
//!   directory is removed and a new `kubelet.sock` is bound; allocations survive (the kubelet
//!   keeps them in its checkpoint).

use anyhow::Context;
use plexus_kubelet::proto::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use plexus_kubelet::proto::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, ContainerDevices,
    ContainerResources, GetPodResourcesRequest, GetPodResourcesResponse, ListPodResourcesRequest,
    ListPodResourcesResponse, PodResources,
};
use plexus_sriovdp::proto::device_plugin_client::DevicePluginClient;
use plexus_sriovdp::proto::registration_server::{Registration, RegistrationServer};
use plexus_sriovdp::proto::{
    AllocateRequest, ContainerAllocateRequest, ContainerAllocateResponse,
    ContainerPreferredAllocationRequest, Device, DevicePluginOptions, Empty,
    PreferredAllocationRequest, RegisterRequest,
};
use std::collections::BTreeMap;
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

/// How a busy kubelet answers: the two codes the client retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Busy {
    /// RESOURCE_EXHAUSTED "rejected by rate limit": the PodResources rate limiter.
    #[default]
    ResourceExhausted,
    /// UNAVAILABLE: a kubelet (or its gRPC server) that is starting or shutting down.
    Unavailable,
}

impl Busy {
    fn status(self) -> Status {
        match self {
            Busy::ResourceExhausted => Status::resource_exhausted("rejected by rate limit"),
            Busy::Unavailable => Status::unavailable("the server is not serving yet"),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    pods: Vec<PodResources>,
    get: GetMode,
    /// Calls left to answer `busy_answer`.
    busy: u32,
    busy_answer: Busy,
    /// `"Get ns/name"`, `"List"` per call (busy answers included).
    calls: Vec<String>,
    /// Every `Register` call received, in order.
    registrations: Vec<Registered>,
    /// The registered device plugins by resource.
    plugins: BTreeMap<String, Plugin>,
}

/// One `Register` call as the fake kubelet received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// `resource_name`.
    pub resource: String,
    /// `endpoint` (a socket name in the device-plugin directory).
    pub endpoint: String,
    /// `version`.
    pub version: String,
    /// `options`.
    pub options: Option<DevicePluginOptions>,
}

#[derive(Debug)]
struct Plugin {
    endpoint: PathBuf,
    options: DevicePluginOptions,
    /// The last ListAndWatch answer.
    devices: Vec<Device>,
    /// How many ListAndWatch answers arrived on the current stream.
    updates: usize,
    /// Follows the plugin's ListAndWatch stream.
    stream: tokio::task::JoinHandle<()>,
}

/// What [`FakeKubelet::allocate_from_plugin`] gave a container.
#[derive(Debug, Clone)]
pub struct Allocation {
    /// The device IDs, in the order the kubelet asked for them.
    pub ids: Vec<String>,
    /// The plugin's answer for the container.
    pub response: ContainerAllocateResponse,
}

#[derive(Debug, Clone)]
struct Service(Arc<Mutex<State>>);

impl Service {
    fn enter(&self, call: String) -> Result<std::sync::MutexGuard<'_, State>, Status> {
        let mut s = self.0.lock().expect("fake kubelet state");
        s.calls.push(call);
        if s.busy > 0 {
            s.busy -= 1;
            return Err(s.busy_answer.status());
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

/// The device-plugin `Registration` server.
struct DevicePlugins {
    dir: PathBuf,
    shutdown: tokio::sync::oneshot::Sender<()>,
}

/// The fake kubelet; serves until [`FakeKubelet::stop`] or drop (which also removes the socket).
pub struct FakeKubelet {
    socket: PathBuf,
    state: Arc<Mutex<State>>,
    running: Option<Running>,
    device_plugins: Option<DevicePlugins>,
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
            device_plugins: None,
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

    /// The next `k` calls answer RESOURCE_EXHAUSTED (the rate limiter).
    pub fn busy_for(&self, k: u32) {
        self.busy_with(k, Busy::ResourceExhausted);
    }

    /// The next `k` calls answer `answer`.
    pub fn busy_with(&self, k: u32, answer: Busy) {
        let mut s = self.state.lock().expect("state");
        s.busy = k;
        s.busy_answer = answer;
    }

    /// Every call so far (`"Get ns/name"`, `"List"`).
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().expect("state").calls.clone()
    }

    /// Stops serving; the socket file stays, with nobody listening (a kubelet that is down).
    pub fn stop(&mut self) {
        self.stop_device_plugins();
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

/// The kubelet's `Registration` service: validates the request the way the kubelet does, then
/// follows the plugin's ListAndWatch stream.
#[derive(Debug, Clone)]
struct RegistrationService {
    state: Arc<Mutex<State>>,
    dir: PathBuf,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.state
            .lock()
            .expect("state")
            .registrations
            .push(Registered {
                resource: r.resource_name.clone(),
                endpoint: r.endpoint.clone(),
                version: r.version.clone(),
                options: r.options,
            });
        if r.version != plexus_sriovdp::API_VERSION {
            return Err(Status::invalid_argument(format!(
                "Unsupported plugin API version {}",
                r.version
            )));
        }
        if !r.resource_name.contains('/') {
            return Err(Status::invalid_argument(format!(
                "invalid extended resource name {:?}",
                r.resource_name
            )));
        }
        let endpoint = self.dir.join(&r.endpoint);
        let state = self.state.clone();
        let resource = r.resource_name.clone();
        let follow = endpoint.clone();
        let stream = tokio::spawn(async move {
            let stream = async {
                let channel = plexus_kubelet::connect(&follow).await?;
                let mut s = DevicePluginClient::new(channel)
                    .list_and_watch(Empty {})
                    .await?
                    .into_inner();
                while let Some(msg) = s.message().await? {
                    let mut st = state.lock().expect("state");
                    if let Some(p) = st.plugins.get_mut(&resource) {
                        p.devices = msg.devices;
                        p.updates += 1;
                    }
                }
                anyhow::Ok(())
            };
            if let Err(e) = stream.await {
                eprintln!("fake kubelet: ListAndWatch of {resource}: {e:#}");
            }
        });
        let mut st = self.state.lock().expect("state");
        // A new registration of the same resource replaces the old endpoint, as in the kubelet.
        if let Some(old) = st.plugins.insert(
            r.resource_name,
            Plugin {
                endpoint,
                options: r.options.unwrap_or_default(),
                devices: Vec::new(),
                updates: 0,
                stream,
            },
        ) {
            old.stream.abort();
        }
        Ok(Response::new(Empty {}))
    }
}

impl FakeKubelet {
    /// Serves the device-plugin `Registration` service on `<dir>/kubelet.sock` (the directory is
    /// created).
    pub fn serve_device_plugins(&mut self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let running = self
            .running
            .as_ref()
            .context("the fake kubelet is stopped")?;
        let socket = dir.join(plexus_sriovdp::KUBELET_SOCKET);
        let _ = std::fs::remove_file(&socket);
        let listener = {
            let _guard = running.runtime.enter();
            tokio::net::UnixListener::bind(&socket)
                .with_context(|| format!("bind {}", socket.display()))?
        };
        let (shutdown, rx) = tokio::sync::oneshot::channel();
        let service = RegistrationServer::new(RegistrationService {
            state: self.state.clone(),
            dir: dir.to_owned(),
        });
        let serve = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async {
                    let _ = rx.await;
                },
            );
        running.runtime.spawn(async move {
            if let Err(e) = serve.await {
                eprintln!("fake kubelet registration: {e}");
            }
        });
        self.device_plugins = Some(DevicePlugins {
            dir: dir.to_owned(),
            shutdown,
        });
        Ok(())
    }

    /// Stops the registration server and every ListAndWatch follower.
    fn stop_device_plugins(&mut self) {
        if let Some(dp) = self.device_plugins.take() {
            let _ = dp.shutdown.send(());
            let _ = std::fs::remove_file(dp.dir.join(plexus_sriovdp::KUBELET_SOCKET));
        }
        let mut st = self.state.lock().expect("state");
        for (_, p) in std::mem::take(&mut st.plugins) {
            p.stream.abort();
        }
    }

    /// A kubelet restart as the device plugins see it: the registration server and the
    /// ListAndWatch streams go away, every file in the directory but the checkpoint is removed
    /// (the kubelet's device manager does that when it starts), and a new `kubelet.sock` is
    /// bound. Allocations and the registration log are kept.
    pub fn restart_device_plugins(&mut self) -> anyhow::Result<()> {
        let dir = self
            .device_plugins
            .as_ref()
            .map(|d| d.dir.clone())
            .context("serve_device_plugins first")?;
        self.stop_device_plugins();
        for e in std::fs::read_dir(&dir)?.flatten() {
            if e.file_name() != "kubelet_internal_checkpoint" {
                let _ = std::fs::remove_file(e.path());
            }
        }
        self.serve_device_plugins(&dir)
    }

    /// A new `kubelet.sock` (new inode) with the plugins' sockets left in place: what a kubelet
    /// restart that failed to clean its directory looks like. Plugins must register again.
    pub fn rebind_registration(&mut self) -> anyhow::Result<()> {
        let dir = self
            .device_plugins
            .as_ref()
            .map(|d| d.dir.clone())
            .context("serve_device_plugins first")?;
        self.stop_device_plugins();
        self.serve_device_plugins(&dir)
    }

    /// Every `Register` call so far.
    pub fn registrations(&self) -> Vec<Registered> {
        self.state.lock().expect("state").registrations.clone()
    }

    /// The devices the plugin of `resource` advertised last, as `(id, health, NUMA nodes)`;
    /// `None` while no plugin of that resource is registered.
    pub fn advertised(&self, resource: &str) -> Option<Vec<(String, String, Vec<i64>)>> {
        let st = self.state.lock().expect("state");
        st.plugins.get(resource).map(|p| {
            p.devices
                .iter()
                .map(|d| {
                    let numa = d
                        .topology
                        .as_ref()
                        .map(|t| t.nodes.iter().map(|n| n.id).collect())
                        .unwrap_or_default();
                    (d.id.clone(), d.health.clone(), numa)
                })
                .collect()
        })
    }

    /// How many ListAndWatch answers the current stream of `resource` brought (0 when none).
    pub fn list_and_watch_updates(&self, resource: &str) -> usize {
        let st = self.state.lock().expect("state");
        st.plugins.get(resource).map_or(0, |p| p.updates)
    }

    /// Gives `count` devices of `resource` to container `container` of pod `ns/name`, as the
    /// kubelet's device manager does: the healthy devices no pod holds are offered to the
    /// plugin's GetPreferredAllocation (when its options say it serves it), the chosen ones are
    /// Allocated, and the allocation is recorded so that PodResources reports it.
    pub fn allocate_from_plugin(
        &self,
        ns: &str,
        name: &str,
        container: &str,
        resource: &str,
        count: usize,
    ) -> anyhow::Result<Allocation> {
        let (endpoint, options, free) = {
            let st = self.state.lock().expect("state");
            let p = st
                .plugins
                .get(resource)
                .with_context(|| format!("no device plugin registered for {resource}"))?;
            let held: Vec<&String> = st
                .pods
                .iter()
                .flat_map(|pod| &pod.containers)
                .flat_map(|c| &c.devices)
                .filter(|d| d.resource_name == resource)
                .flat_map(|d| &d.device_ids)
                .collect();
            let free: Vec<String> = p
                .devices
                .iter()
                .filter(|d| d.health == plexus_sriovdp::pool::HEALTHY && !held.contains(&&d.id))
                .map(|d| d.id.clone())
                .collect();
            (p.endpoint.clone(), p.options, free)
        };
        if free.len() < count {
            anyhow::bail!(
                "{resource}: {count} devices asked, {} healthy and free: {free:?}",
                free.len()
            );
        }
        let runtime = &self
            .running
            .as_ref()
            .context("the fake kubelet is stopped")?
            .runtime;
        let allocation = runtime.block_on(async {
            let channel = plexus_kubelet::connect(&endpoint)
                .await
                .with_context(|| format!("connect {}", endpoint.display()))?;
            let mut client = DevicePluginClient::new(channel);
            let ids = if options.get_preferred_allocation_available {
                let resp = client
                    .get_preferred_allocation(PreferredAllocationRequest {
                        container_requests: vec![ContainerPreferredAllocationRequest {
                            available_device_i_ds: free.clone(),
                            must_include_device_i_ds: Vec::new(),
                            allocation_size: i32::try_from(count)?,
                        }],
                    })
                    .await?
                    .into_inner();
                let ids = resp
                    .container_responses
                    .into_iter()
                    .next()
                    .map(|c| c.device_i_ds)
                    .unwrap_or_default();
                // The kubelet checks the plugin's preference and ignores a wrong one.
                if ids.len() == count && ids.iter().all(|i| free.contains(i)) {
                    ids
                } else {
                    free[..count].to_vec()
                }
            } else {
                free[..count].to_vec()
            };
            let resp = client
                .allocate(AllocateRequest {
                    container_requests: vec![ContainerAllocateRequest {
                        devices_ids: ids.clone(),
                    }],
                })
                .await?
                .into_inner();
            let response = resp
                .container_responses
                .into_iter()
                .next()
                .context("Allocate answered no container response")?;
            anyhow::Ok(Allocation { ids, response })
        })?;
        let ids: Vec<&str> = allocation.ids.iter().map(String::as_str).collect();
        self.allocate(ns, name, container, resource, &ids);
        Ok(allocation)
    }

    /// Forgets pod `ns/name` (deleted: PodResources no longer lists it, its devices are free).
    pub fn release_pod(&self, ns: &str, name: &str) {
        self.state
            .lock()
            .expect("state")
            .pods
            .retain(|p| !(p.namespace == ns && p.name == name));
    }
}
