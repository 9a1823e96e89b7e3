//! plexus-sriovdp: the SR-IOV network device plugin of Plexus.
//!
//! It reads the reference device plugin's resource config unchanged ([`config`]), discovers the
//! node's VFs from sysfs through the shared `plexus-sysfs` model ([`discovery`]), splits them into
//! pools by the config's selectors ([`selector`], [`pool`]), and serves each pool to the kubelet
//! over the device-plugin API v1beta1 ([`plugin`], [`kubelet`]): ListAndWatch with health
//! changes pushed, Allocate with the reference's env and the vfio/vhost device nodes, NUMA-aware
//! GetPreferredAllocation. Allocate writes the NPWG device-info file of each device
//! ([`devinfo`]), which the meta plugin hands to the CNI delegate and reports in network-status.
//! [`daemon`] ties it together: registration, re-registration when the kubelet restarts,
//! re-discovery on a timer and on SIGHUP, device-info clean-up.

pub mod allocate;
pub mod config;
pub mod daemon;
pub mod devinfo;
pub mod discovery;
pub mod kubelet;
pub mod plugin;
pub mod pool;
pub mod selector;

/// Generated from `proto/deviceplugin.proto` (package `v1beta1`): the `DevicePlugin` server and
/// client, the `Registration` server and client.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod proto {
    tonic::include_proto!("v1beta1");
}

/// The API version plugins register with.
pub const API_VERSION: &str = "v1beta1";
/// The kubelet's device-plugin directory (its `kubelet.sock` and the plugins' sockets).
pub const DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
/// The kubelet's registration socket name inside [`DEVICE_PLUGIN_DIR`].
pub const KUBELET_SOCKET: &str = "kubelet.sock";
