//! End-to-end tests of device IDs for SR-IOV-style networks (issue #10): the real `plexus` binary
//! in a real netns, a fake kubelet PodResources server on a unix socket, the kubelet checkpoint
//! file, and the `cni-recorder` plugin standing in for `sriov` (these machines have no VFs), so
//! that the test sees exactly which device each delegate was handed.

use plexus_e2e::bed::{Bed, cid};
use plexus_e2e::cni::link_names;
use plexus_e2e::fakeapi::Fault;
use plexus_e2e::fakekubelet::{Busy, FakeKubelet, GetMode, checkpoint_json};
use serde_json::{Value, json};

const VF: &str = "intel.com/sriov_netdevice";
const OTHER: &str = "intel.com/sriov_other";

/// A pod `blue/<name>` asking for `networks`; its NADs `vf-a`, `vf-b` (resource [`VF`]) and
/// `other` (resource [`OTHER`]) exist.
fn sriov_pod(bed: &Bed, name: &str, networks: &str) -> String {
    sriov_nads(bed);
    bed.pod("blue", name, Some(networks))
}

/// The NADs of [`sriov_pod`].
fn sriov_nads(bed: &Bed) {
    for (nad, resource) in [("vf-a", VF), ("vf-b", VF), ("other", OTHER)] {
        if bed.api.get_nad("blue", nad).is_none() {
            bed.resource_nad("blue", nad, resource, &bed.vf_conf(nad));
        }
    }
}

/// `(command, ifname, deviceID, pciBusID, runtimeConfig.deviceID)` of every recorded call.
fn devices_seen(bed: &Bed) -> Vec<(String, String, String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    bed.records()
        .iter()
        .map(|r| {
            (
                s(&r["command"]),
                s(&r["env"]["CNI_IFNAME"]),
                s(&r["stdin"]["deviceID"]),
                s(&r["stdin"]["pciBusID"]),
                s(&r["stdin"]["runtimeConfig"]["deviceID"]),
            )
        })
        .collect()
}

fn seen(command: &str, ifname: &str, dev: &str) -> (String, String, String, String, String) {
    (
        command.into(),
        ifname.into(),
        dev.into(),
        dev.into(),
        dev.into(),
    )
}

#[test]
fn two_nads_on_one_resource_get_both_vfs_a_third_its_own_and_del_works_with_the_kubelet_gone() {
    let bed = Bed::new();
    let mut kubelet = FakeKubelet::start(&bed.kubelet_socket()).unwrap();
    // The kubelet lists devices in its own order; plexus sorts them.
    kubelet.allocate("blue", "web", "app", VF, &["0000:03:02.1", "0000:03:02.0"]);
    kubelet.allocate("blue", "web", "sidecar", OTHER, &["0000:05:00.4"]);
    // The pod also holds a DRA claim (a GPU, say): its NICs all come from device plugins, so the
    // claim must not cost a single DRA request.
    sriov_nads(&bed);
    bed.api
        .create_object(json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": "web-gpu", "namespace": "blue"},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]}},
            "status": {"allocation": {"devices": {"results": [
                {"request": "gpu", "driver": "gpu.example.com", "pool": "node-1", "device": "gpu-0"}
            ]}}}
        }))
        .unwrap();
    let pod = bed.api.create_pod(json!({
        "metadata": {"name": "web", "namespace": "blue",
            "annotations": {"k8s.v1.cni.cncf.io/networks": "vf-a, vf-b, other"}},
        "spec": {"nodeName": "node-1", "resourceClaims": [{"name": "gpu", "resourceClaimName": "web-gpu"}]},
        "status": {"resourceClaimStatuses": [{"name": "gpu", "resourceClaimName": "web-gpu"}]}
    }));
    bed.synced("pods", &pod);
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
    bed.api.clear_requests();
    // The device plugin's device-info file for one of the VFs.
    let dp = bed.device_info_dir().join("dp");
    std::fs::create_dir_all(&dp).unwrap();
    let info = json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:02.1"}});
    std::fs::write(
        dp.join("intel.com-sriov_netdevice-0000:03:02.1-device.json"),
        info.to_string(),
    )
    .unwrap();
    let sb = bed.sandbox_without_pod("blue", "web", &uid);
    let config = bed.device_config(json!({}));
    bed.add(&sb, &config).assert_ok();
    assert_eq!(
        devices_seen(&bed),
        vec![
            seen("ADD", "net1", "0000:03:02.0"),
            seen("ADD", "net2", "0000:03:02.1"),
            seen("ADD", "net3", "0000:05:00.4"),
        ]
    );
    assert_eq!(
        kubelet.calls(),
        ["Get blue/web"],
        "one Get per ADD, no List"
    );
    let no_dra = |when: &str| {
        for path in ["/resourceclaims", "/resourceslices"] {
            assert_eq!(bed.api.count("GET", path), 0, "{when}: {path}");
        }
        // The DRA lookup starts with its own GET of the pod: there is only the plan's.
        assert_eq!(bed.api.count("GET", "/pods/web"), bed.reads(1), "{when}");
    };
    no_dra("ADD");
    assert_eq!(
        bed.records()[0]["stdin"]["vlan"],
        100,
        "the NAD's config is kept"
    );
    // device-info: copied for the delegate, reported in network-status.
    let cni_file = bed
        .device_info_dir()
        .join(format!("cni/blue-vf-b-{}_net2", sb.cid));
    assert_eq!(
        bed.records()[1]["stdin"]["runtimeConfig"]["CNIDeviceInfoFile"],
        cni_file.display().to_string()
    );
    let copied: Value = serde_json::from_slice(&std::fs::read(&cni_file).unwrap()).unwrap();
    assert_eq!(copied, info);
    let status = bed.status_of("blue", "web");
    let vf_b = status.iter().find(|e| e["name"] == "blue/vf-b").unwrap();
    assert_eq!(vf_b["device-info"], info, "{status:?}");
    assert!(
        status
            .iter()
            .find(|e| e["name"] == "blue/vf-a")
            .unwrap()
            .get("device-info")
            .is_none(),
        "no device-plugin file, no device-info: {status:?}"
    );

    // The kubelet is gone (and has released the VFs): DEL hands each delegate the same device.
    kubelet.remove_socket();
    std::fs::remove_file(bed.record.as_path()).unwrap();
    bed.api.clear_requests();
    bed.del(&sb, &config).assert_ok();
    assert_eq!(
        devices_seen(&bed),
        vec![
            seen("DEL", "net3", "0000:05:00.4"),
            seen("DEL", "net2", "0000:03:02.1"),
            seen("DEL", "net1", "0000:03:02.0"),
        ]
    );
    for path in ["/resourceclaims", "/resourceslices"] {
        assert_eq!(bed.api.count("GET", path), 0, "DEL: {path}");
    }
    assert!(!cni_file.exists(), "the device-info copy is removed on DEL");
    bed.assert_clean(&sb.ns);
}

#[test]
fn get_unimplemented_or_disabled_falls_back_to_list() {
    for (mode, tag) in [(GetMode::Unimplemented, "old"), (GetMode::Disabled, "gate")] {
        let bed = Bed::new();
        let kubelet = FakeKubelet::start(&bed.kubelet_socket()).unwrap();
        kubelet.set_get(mode);
        kubelet.allocate("blue", tag, "app", VF, &["0000:03:02.6"]);
        // Another pod on the node: List returns it too, and it must not leak in.
        kubelet.allocate("blue", "neighbour", "app", VF, &["0000:03:02.0"]);
        let uid = sriov_pod(&bed, tag, "vf-a");
        let sb = bed.sandbox_without_pod("blue", tag, &uid);
        let config = bed.device_config(json!({}));
        bed.add(&sb, &config).assert_ok();
        assert_eq!(
            kubelet.calls(),
            [format!("Get blue/{tag}"), "List".to_owned()],
            "{mode:?}"
        );
        assert_eq!(
            devices_seen(&bed),
            vec![seen("ADD", "net1", "0000:03:02.6")]
        );
        bed.del(&sb, &config).assert_ok();
        bed.assert_clean(&sb.ns);
    }
}

/// Both answers of a busy kubelet are retried: the rate limiter's RESOURCE_EXHAUSTED and the
/// UNAVAILABLE of a kubelet that is not serving yet.
#[rstest::rstest]
fn a_busy_kubelet_is_retried_within_the_deadline(
    #[values(Busy::ResourceExhausted, Busy::Unavailable)] answer: Busy,
) {
    let bed = Bed::new();
    let kubelet = FakeKubelet::start(&bed.kubelet_socket()).unwrap();
    kubelet.allocate("blue", "busy", "app", VF, &["0000:03:02.2"]);
    kubelet.busy_with(3, answer);
    let uid = sriov_pod(&bed, "busy", "vf-a");
    let sb = bed.sandbox_without_pod("blue", "busy", &uid);
    let config = bed.device_config(json!({}));
    bed.add(&sb, &config).assert_ok();
    assert_eq!(kubelet.calls().len(), 4, "{:?}", kubelet.calls());
    assert_eq!(
        devices_seen(&bed),
        vec![seen("ADD", "net1", "0000:03:02.2")]
    );
    bed.del(&sb, &config).assert_ok();

    // Busy past the deadline: try again later (11), nothing left behind.
    kubelet.busy_with(u32::MAX, answer);
    std::fs::remove_file(bed.record.as_path()).unwrap();
    let config = bed.device_config(json!({"kubeletTimeoutSeconds": 1}));
    let started = std::time::Instant::now();
    let msg = bed.add(&sb, &config).assert_error(11);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "bounded by the deadline"
    );
    assert!(
        msg.contains("blue/busy") && msg.contains(VF) && msg.contains("busy"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("{answer:?}")),
        "names the last answer: {msg}"
    );
    assert!(bed.records().is_empty(), "no delegate ran");
    bed.assert_clean(&sb.ns);
    assert!(
        bed.cni_files_of(&sb.cid).is_empty(),
        "{:?}",
        bed.cni_files_of(&sb.cid)
    );
}

#[test]
fn without_a_listening_kubelet_the_checkpoint_answers() {
    let bed = Bed::new();
    let uid = sriov_pod(&bed, "cp", "vf-a, vf-b");
    std::fs::create_dir_all(bed.checkpoint_file().parent().unwrap()).unwrap();
    std::fs::write(
        bed.checkpoint_file(),
        checkpoint_json(&[
            (&uid, VF, &["0000:03:02.5", "0000:03:02.4"]),
            ("another-pod", VF, &["0000:03:02.0"]),
        ])
        .to_string(),
    )
    .unwrap();
    let config = bed.device_config(json!({}));
    // First no socket at all, then a socket nobody listens on (a kubelet that is down).
    let mut stopped = None;
    for tag in ["nosock", "refused"] {
        if tag == "refused" {
            let mut k = FakeKubelet::start(&bed.kubelet_socket()).unwrap();
            k.stop();
            assert!(bed.kubelet_socket().exists());
            stopped = Some(k);
        }
        std::fs::remove_file(bed.record.as_path()).ok();
        let sb = bed
            .sandbox_without_pod("blue", "cp", &uid)
            .with_cid(cid(tag));
        bed.add(&sb, &config).assert_ok();
        assert_eq!(
            devices_seen(&bed),
            vec![
                seen("ADD", "net1", "0000:03:02.4"),
                seen("ADD", "net2", "0000:03:02.5"),
            ],
            "{tag}"
        );
        bed.del(&sb, &config).assert_ok();
        bed.assert_clean(&sb.ns);
    }
    drop(stopped);
}

#[test]
fn neither_socket_nor_checkpoint_is_a_clear_error_that_leaves_nothing() {
    let bed = Bed::new();
    let uid = sriov_pod(&bed, "none", "vf-a");
    let sb = bed.sandbox_without_pod("blue", "none", &uid);
    let msg = bed
        .add(&sb, &bed.device_config(json!({})))
        .assert_error(105);
    for part in [
        "blue/none",
        "blue/vf-a",
        VF,
        bed.kubelet_socket().to_str().unwrap(),
        bed.checkpoint_file().to_str().unwrap(),
    ] {
        assert!(msg.contains(part), "{part:?} missing from {msg}");
    }
    assert!(bed.records().is_empty());
    assert_eq!(link_names(&sb.ns), vec!["lo"]);
    bed.assert_clean(&sb.ns);
    assert!(bed.cni_files_of(&sb.cid).is_empty());
}

#[test]
fn more_nads_than_devices_fails_before_any_delegate() {
    let bed = Bed::new();
    let kubelet = FakeKubelet::start(&bed.kubelet_socket()).unwrap();
    kubelet.allocate("blue", "short", "app", VF, &["0000:03:02.0"]);
    let uid = sriov_pod(&bed, "short", "vf-a, vf-b");
    let sb = bed.sandbox_without_pod("blue", "short", &uid);
    let msg = bed
        .add(&sb, &bed.device_config(json!({})))
        .assert_error(105);
    for part in ["blue/short", VF, "2 networks", "allocated 1 device"] {
        assert!(msg.contains(part), "{part:?} missing from {msg}");
    }
    assert!(bed.records().is_empty(), "no delegate ran");
    bed.assert_clean(&sb.ns);
    assert!(bed.cni_files_of(&sb.cid).is_empty());
    assert_eq!(bed.api.count("PATCH", "/pods/short"), 0);
}

const DRA: &str = "dra.example.com/sriov";
const DRIVER: &str = "sriov.dra.example.com";

/// A DRA pod `blue/dra` on node-1 (no kubelet socket and no checkpoint in the bed: the devices
/// come from DRA alone): NADs `dra-a`, `dra-b` on resource [`DRA`], its claim `web-nics`
/// allocated `vf-2` and `vf-1` of node-1's slice, and a slice of the same driver, pool and
/// device names on node-2 that sorts first, so that only the LIST's field selector keeps it out.
/// Returns the pod's UID.
fn dra_pod(bed: &Bed) -> String {
    bed.resource_nad("blue", "dra-a", DRA, &bed.vf_conf("dra-a"));
    bed.resource_nad("blue", "dra-b", DRA, &bed.vf_conf("dra-b"));
    let attrs = |id: &str| {
        json!({"k8s.cni.cncf.io/resourceName": {"string": DRA},
               "k8s.cni.cncf.io/deviceID": {"string": id},
               "dra.net/numaNode": {"int": 0}})
    };
    // Listed first (names sort): read without the selector, it would give 0000:99:00.x.
    bed.api
        .create_object(json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": "a-node-2-sriov"},
            "spec": {"driver": DRIVER, "nodeName": "node-2",
                "pool": {"name": "node-1", "generation": 1, "resourceSliceCount": 1},
                "devices": [
                    {"name": "vf-1", "attributes": attrs("0000:99:00.1")},
                    {"name": "vf-2", "attributes": attrs("0000:99:00.2")}
                ]}
        }))
        .unwrap();
    bed.api
        .create_object(json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": "node-1-sriov"},
            "spec": {"driver": DRIVER, "nodeName": "node-1",
                "pool": {"name": "node-1", "generation": 1, "resourceSliceCount": 1},
                "devices": [
                    {"name": "vf-0", "attributes": attrs("0000:81:00.2")},
                    {"name": "vf-1", "attributes": attrs("0000:81:00.1")},
                    {"name": "vf-2", "attributes": attrs("0000:81:00.3")}
                ]}
        }))
        .unwrap();
    bed.api
        .create_object(json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": "web-nics", "namespace": "blue"},
            "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "sriov", "count": 2}}]}},
            "status": {"allocation": {"devices": {"results": [
                {"request": "nic", "driver": DRIVER, "pool": "node-1", "device": "vf-2"},
                {"request": "nic", "driver": DRIVER, "pool": "node-1", "device": "vf-1"}
            ]}}}
        }))
        .unwrap();
    let pod = bed.api.create_pod(json!({
        "metadata": {"name": "dra", "namespace": "blue",
            "annotations": {"k8s.v1.cni.cncf.io/networks": "dra-a, dra-b"}},
        "spec": {"nodeName": "node-1", "resourceClaims": [{"name": "nics", "resourceClaimName": "web-nics"}]},
        "status": {"resourceClaimStatuses": [{"name": "nics", "resourceClaimName": "web-nics"}]}
    }));
    pod["metadata"]["uid"].as_str().unwrap().to_owned()
}

/// The kubelet unusable (no socket, no checkpoint) and the API server failing the claim reads:
/// nobody can tell yet whether the pod's devices are DRA claims, so the runtime is told to try
/// again later (11), naming both causes, not "devices unavailable" (105) for good. Once the API
/// server answers again, the same ADD succeeds.
#[test]
fn a_dra_pod_whose_claims_cannot_be_read_now_is_try_again_later() {
    let bed = Bed::new();
    let sb = bed.sandbox_without_pod("blue", "dra", &dra_pod(&bed));
    let config = bed.device_config(json!({}));
    bed.api
        .inject(Fault::on("GET", "/resourceclaims").status(503).always());
    let msg = bed.add(&sb, &config).assert_error(11);
    for part in ["blue/dra", DRA, "DRA claims", "kubelet", "kubelet.sock"] {
        assert!(msg.contains(part), "{part:?} missing from {msg}");
    }
    assert!(bed.api.count("GET", "/resourceclaims/web-nics") >= 1);
    assert!(bed.records().is_empty(), "no delegate ran");
    bed.assert_clean(&sb.ns);
    assert!(
        bed.cni_files_of(&sb.cid).is_empty(),
        "{:?}",
        bed.cni_files_of(&sb.cid)
    );
    assert_eq!(bed.api.count("PATCH", "/pods/dra/status"), 0);

    bed.api.clear_faults();
    bed.add(&sb, &config).assert_ok();
    assert_eq!(
        devices_seen(&bed),
        vec![
            seen("ADD", "net1", "0000:81:00.1"),
            seen("ADD", "net2", "0000:81:00.3"),
        ]
    );
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}

#[test]
fn a_dra_pod_gets_the_devices_of_its_claims_through_the_api() {
    let bed = Bed::new();
    let sb = bed.sandbox_without_pod("blue", "dra", &dra_pod(&bed));
    let config = bed.device_config(json!({}));
    bed.api.clear_requests();
    bed.add(&sb, &config).assert_ok();
    assert_eq!(
        devices_seen(&bed),
        vec![
            seen("ADD", "net1", "0000:81:00.1"),
            seen("ADD", "net2", "0000:81:00.3"),
        ]
    );
    // The documented budget: one claim GET, one slice LIST per driver, one extra pod GET.
    assert_eq!(bed.api.count("GET", "/resourceclaims/web-nics"), 1);
    assert_eq!(bed.api.count("GET", "/resourceslices"), 1);
    assert_eq!(bed.api.count("GET", "/pods/dra"), 2);
    // Only this node's slices of the claim's driver are read.
    let list = bed
        .api
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/resourceslices"))
        .unwrap();
    assert_eq!(
        list.param("fieldSelector").as_deref(),
        Some(format!("spec.nodeName=node-1,spec.driver={DRIVER}").as_str()),
        "{list:?}"
    );
    bed.del(&sb, &config).assert_ok();
    bed.assert_clean(&sb.ns);
}
