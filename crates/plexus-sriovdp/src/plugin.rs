//! The kubelet device-plugin service of one pool, on a unix socket of its own.

use crate::allocate::{container_response, device_info, preferred};
use crate::config::PoolConfig;
use crate::devinfo::DeviceInfoStore;
use crate::pool::{PoolDevice, advertised};
use crate::proto;
use crate::proto::device_plugin_server::{DevicePlugin, DevicePluginServer};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt, wrappers::WatchStream};
use tonic::{Request, Response, Status};

/// One advertised resource: its config and its current devices. Every change of the device list
/// (a VF added or removed, a PF going down) is pushed to the kubelet's ListAndWatch stream.
#[derive(Debug)]
pub struct Pool {
    /// `<prefix>/<name>`.
    pub resource: String,
    /// Its `resourceList` entry.
    pub config: PoolConfig,
    devices: watch::Sender<Vec<PoolDevice>>,
    devinfo: DeviceInfoStore,
}

impl Pool {
    /// A pool with no devices yet.
    pub fn new(resource: String, config: PoolConfig, devinfo: DeviceInfoStore) -> Arc<Self> {
        Arc::new(Self {
            resource,
            config,
            devices: watch::Sender::new(Vec::new()),
            devinfo,
        })
    }

    /// Replaces the device list; true (and ListAndWatch streams get the new list) when it
    /// changed.
    pub fn update(&self, devices: Vec<PoolDevice>) -> bool {
        self.devices.send_if_modified(|cur| {
            if *cur == devices {
                false
            } else {
                *cur = devices;
                true
            }
        })
    }

    /// The current devices.
    pub fn devices(&self) -> Vec<PoolDevice> {
        self.devices.borrow().clone()
    }

    /// The socket file name: `<prefix>_<name>.sock`, as the reference names it.
    pub fn socket_name(&self) -> String {
        format!("{}.sock", self.resource.replace('/', "_"))
    }

    /// The options this plugin registers with (GetPreferredAllocation is served).
    pub fn options() -> proto::DevicePluginOptions {
        proto::DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }
    }
}

/// The gRPC service over a [`Pool`].
#[derive(Debug, Clone)]
pub struct Service(pub Arc<Pool>);

type DeviceStream = Pin<Box<dyn Stream<Item = Result<proto::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Service {
    async fn get_device_plugin_options(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::DevicePluginOptions>, Status> {
        Ok(Response::new(Pool::options()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let pool = self.0.clone();
        // The current list first, then every change.
        let stream = WatchStream::new(pool.devices.subscribe()).map(move |devices| {
            let devices = advertised(&pool.config, &devices);
            let healthy = devices
                .iter()
                .filter(|d| d.health == crate::pool::HEALTHY)
                .count();
            tracing::info!(
                resource = %pool.resource,
                "ListAndWatch: advertising {} devices ({healthy} healthy)",
                devices.len()
            );
            Ok(proto::ListAndWatchResponse { devices })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<proto::PreferredAllocationRequest>,
    ) -> Result<Response<proto::PreferredAllocationResponse>, Status> {
        let devices = self.0.devices();
        let numa_of = |id: &str| {
            devices
                .iter()
                .find(|d| d.vf.pci_address == id)
                .and_then(|d| d.vf.numa_node)
        };
        let container_responses = req
            .into_inner()
            .container_requests
            .iter()
            .map(|c| proto::ContainerPreferredAllocationResponse {
                device_i_ds: preferred(
                    &c.available_device_i_ds,
                    &c.must_include_device_i_ds,
                    usize::try_from(c.allocation_size).unwrap_or(0),
                    numa_of,
                ),
            })
            .collect();
        Ok(Response::new(proto::PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        req: Request<proto::AllocateRequest>,
    ) -> Result<Response<proto::AllocateResponse>, Status> {
        let pool = &self.0;
        let devices = pool.devices();
        let mut container_responses = Vec::new();
        for c in req.into_inner().container_requests {
            let (resp, chosen) =
                container_response(&pool.resource, &pool.config, &devices, &c.devices_ids)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
            for d in &chosen {
                // The pod can run without it (the meta plugin then reports no device-info), so a
                // write failure is logged, not fatal.
                match pool
                    .devinfo
                    .write(&pool.resource, &d.vf.pci_address, &device_info(d))
                {
                    Ok(path) => tracing::debug!("device-info written: {}", path.display()),
                    Err(e) => tracing::warn!(
                        resource = %pool.resource,
                        device = %d.vf.pci_address,
                        "cannot write the device-info file: {e}"
                    ),
                }
            }
            tracing::info!(
                resource = %pool.resource,
                "Allocate: {} (device-info written, {} device nodes)",
                c.devices_ids.join(","),
                resp.devices.len()
            );
            container_responses.push(resp);
        }
        Ok(Response::new(proto::AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<proto::PreStartContainerRequest>,
    ) -> Result<Response<proto::PreStartContainerResponse>, Status> {
        // Not requested in the options; answered anyway so a kubelet that calls it gets no error.
        Ok(Response::new(proto::PreStartContainerResponse {}))
    }
}

/// A pool served on its socket; stops serving and removes the socket when dropped.
#[derive(Debug)]
pub struct Served {
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Binds `socket` (a stale file is replaced) and serves `pool` on the current tokio runtime.
    pub fn start(pool: Arc<Pool>, socket: &Path) -> std::io::Result<Self> {
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = tokio::net::UnixListener::bind(socket)?;
        let resource = pool.resource.clone();
        let serve = tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(Service(pool)))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener));
        let task = tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(%resource, "device plugin server stopped: {e}");
            }
        });
        Ok(Self {
            socket: socket.to_owned(),
            task,
        })
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the socket file is still there (the kubelet removes every plugin socket when it
    /// restarts).
    pub fn socket_exists(&self) -> bool {
        self.socket.exists()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Aborting drops open ListAndWatch streams too (a graceful shutdown would wait for them
        // forever: they never end on their own).
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ResourceConfig;
    use crate::pool::{HEALTHY, UNHEALTHY, assign};
    use crate::proto::device_plugin_client::DevicePluginClient;
    use crate::selector::tests::vf;
    use serde_json::json;

    fn pool(dir: &Path) -> Arc<Pool> {
        let c = ResourceConfig::from_value(
            &json!({"resourceList": [{"resourceName": "net", "selectors": {}}]}),
            "intel.com",
        )
        .unwrap();
        let p = Pool::new(
            "intel.com/net".into(),
            c.pools[0].clone(),
            DeviceInfoStore::new(&dir.join("devinfo")),
        );
        p.update(assign(&c, &[vf(0), vf(1)]).remove(0));
        p
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_the_pool_over_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let p = pool(dir.path());
        assert_eq!(p.socket_name(), "intel.com_net.sock");
        let socket = dir.path().join(p.socket_name());
        let served = Served::start(p.clone(), &socket).unwrap();
        let mut client = DevicePluginClient::new(plexus_kubelet::connect(&socket).await.unwrap());

        let opts = client
            .get_device_plugin_options(proto::Empty {})
            .await
            .unwrap()
            .into_inner();
        assert!(opts.get_preferred_allocation_available && !opts.pre_start_required);

        // ListAndWatch: the list now, then each change (here: PF down for VF 1).
        let mut stream = client
            .list_and_watch(proto::Empty {})
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        let health: Vec<&str> = first.devices.iter().map(|d| d.health.as_str()).collect();
        assert_eq!(health, [HEALTHY, HEALTHY]);
        let mut down = p.devices();
        down[1].vf.pf_link_up = false;
        assert!(p.update(down.clone()));
        assert!(!p.update(down), "no change, no push");
        let second = stream.message().await.unwrap().unwrap();
        assert_eq!(second.devices[1].health, UNHEALTHY);

        // Allocate: device-info written; a device not in the pool is refused.
        let resp = client
            .allocate(proto::AllocateRequest {
                container_requests: vec![proto::ContainerAllocateRequest {
                    devices_ids: vec!["0000:3b:02.1".into()],
                }],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            resp.container_responses[0].envs["PCIDEVICE_INTEL_COM_NET"],
            "0000:3b:02.1"
        );
        let info =
            DeviceInfoStore::new(&dir.path().join("devinfo")).path("intel.com/net", "0000:3b:02.1");
        assert!(info.exists());
        let err = client
            .allocate(proto::AllocateRequest {
                container_requests: vec![proto::ContainerAllocateRequest {
                    devices_ids: vec!["0000:99:00.1".into()],
                }],
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("0000:99:00.1"), "{}", err.message());

        let pref = client
            .get_preferred_allocation(proto::PreferredAllocationRequest {
                container_requests: vec![proto::ContainerPreferredAllocationRequest {
                    available_device_i_ds: vec!["0000:3b:02.1".into(), "0000:3b:02.0".into()],
                    must_include_device_i_ds: vec![],
                    allocation_size: 1,
                }],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(pref.container_responses[0].device_i_ds, ["0000:3b:02.0"]);
        client
            .pre_start_container(proto::PreStartContainerRequest {
                devices_ids: vec!["0000:3b:02.0".into()],
            })
            .await
            .unwrap();

        // Dropping stops serving and removes the socket (a stale one is replaced on start).
        drop(served);
        assert!(!socket.exists());
        std::fs::write(&socket, "stale").unwrap();
        let again = Served::start(p, &socket).unwrap();
        assert!(again.socket_exists());
    }
}
