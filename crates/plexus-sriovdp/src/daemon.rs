//! The daemon: one served pool per `resourceList` entry, registered with the kubelet, kept
//! current by re-discovery (timer and SIGHUP), re-registered when the kubelet restarts, with the
//! device-info files of released devices cleaned up.

use crate::config::ResourceConfig;
use crate::devinfo::DeviceInfoStore;
use crate::discovery::discover;
use crate::kubelet::{allocated_devices, register, socket_identity};
use crate::plugin::{Pool, Served};
use crate::pool::assign;
use anyhow::Context;
use plexus_sysfs::Sysfs;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Everything the daemon is configured with (the command line).
#[derive(Debug, Clone)]
pub struct Options {
    /// The resource config (`/etc/pcidp/config.json`).
    pub config_file: PathBuf,
    /// The prefix of entries without `resourcePrefix`.
    pub resource_prefix: String,
    /// The sysfs root.
    pub sysfs_root: PathBuf,
    /// The kubelet's device-plugin directory: its `kubelet.sock` and our sockets.
    pub plugin_dir: PathBuf,
    /// The device-info root (`dp/` is written).
    pub device_info_dir: PathBuf,
    /// The kubelet's PodResources socket (which devices are still allocated).
    pub pod_resources_socket: PathBuf,
    /// Re-discovery period.
    pub rediscover_every: Duration,
    /// How often the kubelet socket and ours are checked (restart detection).
    pub watch_every: Duration,
    /// How long an unallocated device-info file is kept after it was written.
    pub device_info_grace: Duration,
}

/// The running state.
#[derive(Debug)]
pub struct Daemon {
    opts: Options,
    sysfs: Sysfs,
    pools: Vec<Arc<Pool>>,
    served: Vec<Option<Served>>,
    /// The kubelet socket all pools were last registered with.
    registered_with: Option<crate::kubelet::SocketIdentity>,
    devinfo: DeviceInfoStore,
}

const KUBELET_CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Daemon {
    /// Reads and validates the config (an entry it cannot honour is an error here, before
    /// anything is advertised) and runs the first discovery.
    pub fn new(opts: Options) -> anyhow::Result<Self> {
        let config = ResourceConfig::load(&opts.config_file, &opts.resource_prefix)?;
        let devinfo = DeviceInfoStore::new(&opts.device_info_dir);
        let pools: Vec<Arc<Pool>> = config
            .pools
            .iter()
            .map(|p| {
                Pool::new(
                    p.resource_name(&opts.resource_prefix),
                    p.clone(),
                    devinfo.clone(),
                )
            })
            .collect();
        let mut d = Self {
            sysfs: Sysfs::new(&opts.sysfs_root),
            served: pools.iter().map(|_| None).collect(),
            pools,
            registered_with: None,
            devinfo,
            opts,
        };
        d.rediscover()?;
        Ok(d)
    }

    /// The pools (in config order).
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// Reads sysfs again and updates every pool; the changes reach the kubelet through
    /// ListAndWatch.
    pub fn rediscover(&mut self) -> anyhow::Result<()> {
        let found = discover(&self.sysfs)
            .with_context(|| format!("discovering VFs under {}", self.sysfs.root().display()))?;
        for s in &found.skipped {
            tracing::warn!("discovery skipped {s}");
        }
        let config = ResourceConfig {
            pools: self.pools.iter().map(|p| p.config.clone()).collect(),
        };
        for (pool, devices) in self.pools.iter().zip(assign(&config, &found.vfs)) {
            let before = pool.devices();
            let ids = |v: &[crate::pool::PoolDevice]| -> Vec<String> {
                v.iter().map(|d| d.vf.pci_address.clone()).collect()
            };
            let (old, new) = (ids(&before), ids(&devices));
            if pool.update(devices) {
                let added: Vec<&String> = new.iter().filter(|i| !old.contains(i)).collect();
                let gone: Vec<&String> = old.iter().filter(|i| !new.contains(i)).collect();
                tracing::info!(
                    resource = %pool.resource,
                    "discovery: {} VFs (added {added:?}, removed {gone:?}; health or attributes may have changed)",
                    new.len()
                );
            }
        }
        Ok(())
    }

    /// Serves every pool whose socket is missing, and (re-)registers all of them when a socket
    /// was re-created or the kubelet socket is not the one last registered with (a restarted
    /// kubelet removes the plugins' sockets and binds a new `kubelet.sock`).
    pub async fn ensure_registered(&mut self) {
        let mut reserved = false;
        for (i, pool) in self.pools.iter().enumerate() {
            if self.served[i].as_ref().is_some_and(Served::socket_exists) {
                continue;
            }
            // Drop first: its Drop removes the socket path the new server binds.
            self.served[i] = None;
            let socket = self.opts.plugin_dir.join(pool.socket_name());
            match Served::start(pool.clone(), &socket) {
                Ok(s) => {
                    tracing::info!(resource = %pool.resource, "serving on {}", socket.display());
                    self.served[i] = Some(s);
                    reserved = true;
                }
                Err(e) => {
                    tracing::error!(resource = %pool.resource, "cannot serve on {}: {e}", socket.display())
                }
            }
        }
        let kubelet = self.opts.plugin_dir.join(crate::KUBELET_SOCKET);
        let identity = socket_identity(&kubelet);
        if !reserved && identity.is_some() && identity == self.registered_with {
            return;
        }
        if identity.is_none() {
            if self.registered_with.take().is_some() {
                tracing::warn!("{} is gone (kubelet restarting?)", kubelet.display());
            }
            return;
        }
        if self.registered_with.is_some() {
            tracing::info!(
                "the kubelet restarted ({} is new): registering again",
                kubelet.display()
            );
        }
        let mut all = true;
        for (i, pool) in self.pools.iter().enumerate() {
            let Some(served) = &self.served[i] else {
                all = false;
                continue;
            };
            let endpoint = served
                .socket()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match register(&kubelet, &endpoint, &pool.resource, KUBELET_CALL_TIMEOUT).await {
                Ok(()) => tracing::info!(
                    resource = %pool.resource,
                    "registered with the kubelet (endpoint {endpoint}, {} devices)",
                    pool.devices().len()
                ),
                Err(e) => {
                    tracing::warn!(resource = %pool.resource, "registration failed (retrying): {e}");
                    all = false;
                }
            }
        }
        self.registered_with = if all { identity } else { None };
    }

    /// Removes the device-info files of devices no pod holds any more (per the kubelet's
    /// PodResources `List`); keeps everything when the kubelet cannot be asked.
    pub async fn clean_device_info(&self) {
        let resources: Vec<String> = self.pools.iter().map(|p| p.resource.clone()).collect();
        let allocated = match allocated_devices(
            &self.opts.pod_resources_socket,
            &resources,
            KUBELET_CALL_TIMEOUT,
        )
        .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!("device-info clean-up skipped: {e}");
                return;
            }
        };
        match self.devinfo.remove_unallocated(
            &resources,
            &allocated,
            self.opts.device_info_grace,
            SystemTime::now(),
        ) {
            Ok(removed) => {
                for f in removed {
                    tracing::info!(
                        resource = %f.resource,
                        "device {} is no longer allocated: removed {}",
                        f.device,
                        f.path.display()
                    );
                }
            }
            Err(e) => tracing::warn!("device-info clean-up: {e}"),
        }
    }

    /// Serves until `shutdown` completes: registration checks every `watch_every`,
    /// re-discovery and device-info clean-up every `rediscover_every` and on SIGHUP.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("SIGHUP handler")?;
        let mut watch = tokio::time::interval(self.opts.watch_every);
        let mut rediscover = tokio::time::interval(self.opts.rediscover_every);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rediscover.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = watch.tick() => self.ensure_registered().await,
                _ = rediscover.tick() => self.refresh().await,
                Some(()) = hup.recv() => {
                    tracing::info!("SIGHUP: re-discovering");
                    self.refresh().await;
                }
            }
        }
        tracing::info!("shutting down");
        // Device-info files stay: pods allocated but not yet networked still need them; the
        // next start's clean-up removes what is no longer allocated.
        self.served.clear();
        Ok(())
    }

    async fn refresh(&mut self) {
        if let Err(e) = self.rediscover() {
            tracing::error!("{e:#}");
        }
        self.clean_device_info().await;
    }
}
