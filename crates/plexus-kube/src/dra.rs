//! Devices allocated through Dynamic Resource Allocation (`resource.k8s.io/v1`, Kubernetes 1.34+)
//! for NADs whose resource only a DRA driver in "Multus mode" provides: the driver publishes
//! devices whose attributes `k8s.cni.cncf.io/resourceName` and `k8s.cni.cncf.io/deviceID` name the
//! resource a NAD asks for and the device (PCI address) to hand to the delegate.
//!
//! Request budget, paid only when the kubelet's device-plugin answer lacks a resource a NAD needs
//! ([`plexus_engine::device::Fallback`]): one pod GET (its `status.resourceClaimStatuses` and
//! `spec.nodeName`); for a pod without claims that is all. Otherwise one GET per ResourceClaim and
//! one LIST of ResourceSlices per driver (`fieldSelector=spec.nodeName=<node>,spec.driver=<d>`),
//! each batch issued concurrently. Devices without both attributes are skipped, so claims that
//! mix GPUs and NICs work.

use crate::retry::with_retries;
use crate::{LiveKube, decode_failure};
use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::{GetParams, ListParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use plexus_engine::api::ApiError;
use plexus_engine::device::{DeviceError, DeviceLookup, DeviceMap};
use plexus_engine::resolve::PodRef;
use serde_json::Value;
use std::collections::BTreeSet;

/// The device attribute naming the resource a NAD's `resourceName` matches.
pub const RESOURCE_NAME_ATTRIBUTE: &str = "k8s.cni.cncf.io/resourceName";
/// The device attribute holding the device ID handed to the delegate.
pub const DEVICE_ID_ATTRIBUTE: &str = "k8s.cni.cncf.io/deviceID";

const GROUP: &str = "resource.k8s.io";
const VERSION: &str = "v1";

fn api_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

/// One allocated device of a claim: `status.allocation.devices.results[]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AllocatedDevice {
    pub driver: String,
    pub pool: String,
    pub device: String,
}

/// The allocated devices of a ResourceClaim object.
pub fn claim_results(claim: &Value) -> Vec<AllocatedDevice> {
    let s = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    claim
        .pointer("/status/allocation/devices/results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| AllocatedDevice {
            driver: s(r, "driver"),
            pool: s(r, "pool"),
            device: s(r, "device"),
        })
        .filter(|d| !d.driver.is_empty() && !d.device.is_empty())
        .collect()
}

/// Resource → device IDs of the `allocated` devices, from the attributes the `slices` publish.
pub fn devices_from_slices(allocated: &[AllocatedDevice], slices: &[Value]) -> DeviceMap {
    let mut out = DeviceMap::new();
    for a in allocated {
        let device = slices
            .iter()
            .filter(|s| {
                s.pointer("/spec/driver").and_then(Value::as_str) == Some(a.driver.as_str())
                    && s.pointer("/spec/pool/name").and_then(Value::as_str) == Some(a.pool.as_str())
            })
            .flat_map(|s| {
                s.pointer("/spec/devices")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .find(|d| d.get("name").and_then(Value::as_str) == Some(a.device.as_str()));
        let attr = |key: &str| {
            device
                .and_then(|d| d.pointer(&format!("/attributes/{}", key.replace('/', "~1"))))
                .and_then(|v| v.get("string"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if let (Some(resource), Some(id)) =
            (attr(RESOURCE_NAME_ATTRIBUTE), attr(DEVICE_ID_ATTRIBUTE))
        {
            out.entry(resource).or_default().push(id);
        }
    }
    out
}

impl LiveKube {
    /// One GET (or LIST) of `url`, retried like every other read, decoded as `T`.
    async fn read<T: k8s_openapi::serde::de::DeserializeOwned>(
        &self,
        request: impl Fn() -> Result<http::Request<Vec<u8>>, kube::core::request::Error>,
        what: &str,
        kind: &'static str,
        namespace: &str,
        name: &str,
    ) -> Result<T, ApiError> {
        with_retries(self.limits(), what, &self.retries, || {
            let request = request();
            async move {
                let body = self.attempt(request, kind, namespace, name).await?;
                serde_json::from_slice::<T>(&body).map_err(|e| decode_failure(what, e))
            }
        })
        .await
    }

    /// The DRA-allocated network devices of `pod`, by resource (see the module docs).
    pub fn dra_devices(&self, pod: &PodRef) -> Result<DeviceMap, ApiError> {
        let (ns, name) = (pod.namespace.as_str(), pod.name.as_str());
        tracing::debug!(namespace = ns, name, "GET pod (DRA claims)");
        let url = Pod::url_path(&(), Some(ns));
        let obj: Pod = self.rt.block_on(self.read(
            || kube::core::Request::new(&url).get(name, &GetParams::default()),
            &format!("GET pod {ns}/{name}"),
            "pod",
            ns,
            name,
        ))?;
        let node = obj
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let claims: BTreeSet<String> = obj
            .status
            .as_ref()
            .and_then(|s| s.resource_claim_statuses.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.resource_claim_name.clone())
            .collect();
        if claims.is_empty() {
            return Ok(DeviceMap::new());
        }
        let claim_url =
            DynamicObject::url_path(&api_resource("ResourceClaim", "resourceclaims"), Some(ns));
        let gets = claims.iter().map(|claim| {
            let (claim_url, claim) = (claim_url.clone(), claim.as_str());
            async move {
                self.read::<Value>(
                    || kube::core::Request::new(&claim_url).get(claim, &GetParams::default()),
                    &format!("GET resourceclaim {ns}/{claim}"),
                    "resourceclaim",
                    ns,
                    claim,
                )
                .await
            }
        });
        let mut allocated = Vec::new();
        for claim in self.rt.block_on(join_all(gets)) {
            allocated.extend(claim_results(&claim?));
        }
        let drivers: BTreeSet<String> = allocated.iter().map(|a| a.driver.clone()).collect();
        let slice_url =
            DynamicObject::url_path(&api_resource("ResourceSlice", "resourceslices"), None);
        let node = node.as_str();
        let lists = drivers.iter().map(|driver| {
            let slice_url = slice_url.clone();
            let lp =
                ListParams::default().fields(&format!("spec.nodeName={node},spec.driver={driver}"));
            async move {
                let list: Value = self
                    .read(
                        || kube::core::Request::new(&slice_url).list(&lp),
                        &format!("LIST resourceslices of driver {driver} on node {node}"),
                        "resourceslice",
                        "",
                        driver,
                    )
                    .await?;
                Ok::<_, ApiError>(list["items"].as_array().cloned().unwrap_or_default())
            }
        });
        let mut slices = Vec::new();
        for list in self.rt.block_on(join_all(lists)) {
            slices.extend(list?);
        }
        Ok(devices_from_slices(&allocated, &slices))
    }
}

/// [`LiveKube::dra_devices`] as a [`DeviceLookup`].
#[derive(Debug)]
pub struct DraDevices<'a>(pub &'a LiveKube);

impl DeviceLookup for DraDevices<'_> {
    fn devices(&self, pod: &PodRef, _wanted: &[String]) -> Result<DeviceMap, DeviceError> {
        self.0.dra_devices(pod).map_err(|e| match e {
            ApiError::Unreachable(_) => DeviceError::Busy(format!("reading DRA claims: {e}")),
            other => DeviceError::Unavailable(format!("reading DRA claims: {other}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn devices_come_from_the_allocated_devices_attributes() {
        let claim = json!({"status": {"allocation": {"devices": {"results": [
            {"request": "nic", "driver": "sriov.example.com", "pool": "node-1", "device": "vf-3"},
            {"request": "nic", "driver": "sriov.example.com", "pool": "node-1", "device": "vf-1"},
            {"request": "gpu", "driver": "gpu.example.com", "pool": "node-1", "device": "gpu-0"}
        ]}}}});
        let allocated = claim_results(&claim);
        assert_eq!(allocated.len(), 3);
        let attrs = |id: &str| {
            json!({
                "k8s.cni.cncf.io/resourceName": {"string": "example.com/sriov"},
                "k8s.cni.cncf.io/deviceID": {"string": id},
                "dra.net/numaNode": {"int": 0}
            })
        };
        let slices = vec![
            json!({"spec": {"driver": "sriov.example.com", "nodeName": "node-1",
            "pool": {"name": "node-1", "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {"name": "vf-1", "attributes": attrs("0000:03:02.1")},
                {"name": "vf-2", "attributes": attrs("0000:03:02.2")},
                {"name": "vf-3", "attributes": attrs("0000:03:02.3")}
            ]}}),
            // The GPU has no CNI attributes: skipped.
            json!({"spec": {"driver": "gpu.example.com", "nodeName": "node-1",
                "pool": {"name": "node-1"}, "devices": [{"name": "gpu-0", "attributes": {}}]}}),
        ];
        let map = devices_from_slices(&allocated, &slices);
        assert_eq!(
            map,
            DeviceMap::from([(
                "example.com/sriov".to_owned(),
                vec!["0000:03:02.3".to_owned(), "0000:03:02.1".to_owned()]
            )])
        );
        // A device of another pool is not ours.
        let other_pool = vec![json!({"spec": {"driver": "sriov.example.com",
            "pool": {"name": "node-2"}, "devices": [{"name": "vf-1", "attributes": attrs("x")}]}})];
        assert!(devices_from_slices(&allocated, &other_pool).is_empty());
        assert!(claim_results(&json!({"status": {}})).is_empty());
    }
}
