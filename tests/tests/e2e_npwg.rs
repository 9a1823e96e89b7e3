//! End-to-end tests of the NPWG v1.3 request fields and the CNI 1.1.0 verbs: the real `plexus`
//! binary, real netns, Debian delegates where they can do the job, and the `cni-recorder` test
//! plugin where they cannot (STATUS/GC need 1.1.0; exact stdin needs a plugin that tells).

use plexus_e2e::bed::{Bed, Sandbox};
use plexus_e2e::cni::{default_routes, ipv4_of};
use serde_json::{Value, json};

#[test]
fn recorder_records_every_verb_with_env_and_stdin() {
    let bed = Bed::new();
    // A runtime's GC always lists the attachments that stay valid (none here).
    let config = bed.config(
        json!({"clusterNetwork": bed.recorder_cluster(json!({})), "cni.dev/valid-attachments": []}),
    );
    for verb in ["VERSION", "STATUS", "GC"] {
        // plexus answers VERSION itself; it asks the 1.1.0 cluster network for STATUS and GC.
        bed.verb(verb, &config).assert_ok();
    }
    let verbs: Vec<String> = bed
        .records()
        .iter()
        .map(|r| r["command"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(verbs, vec!["STATUS", "GC"]);
    let gc = &bed.records()[1];
    assert_eq!(gc["stdin"]["cni.dev/valid-attachments"], json!([]));
    assert_eq!(gc["env"]["CNI_COMMAND"], "GC");
}

#[test]
fn status_follows_the_readiness_file_and_the_cluster_networks_status() {
    let bed = Bed::new();
    let ready = bed.node.root.path().join("ready");
    let cluster = bed.recorder_cluster(json!({}));
    let config = bed.config(json!({"clusterNetwork": cluster, "readinessindicatorfile": ready}));
    let msg = bed.verb("STATUS", &config).assert_error(50);
    assert!(msg.contains("readiness indicator"), "{msg}");
    assert!(
        bed.records().is_empty(),
        "not ready: the cluster network is not asked"
    );
    std::fs::write(&ready, "").unwrap();
    bed.verb("STATUS", &config).assert_ok();
    let rec = bed.records();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0]["command"], "STATUS");
    let env = rec[0]["env"].as_object().unwrap();
    assert!(
        !env.contains_key("CNI_CONTAINERID") && env.contains_key("CNI_PATH"),
        "{env:?}"
    );
    assert_eq!(rec[0]["stdin"]["name"], "rec-cluster");
    assert_eq!(rec[0]["stdin"]["cniVersion"], "1.1.0");

    let failing = bed.recorder_cluster(json!({"STATUS": "no route to the overlay"}));
    let config = bed.config(json!({"clusterNetwork": failing, "readinessindicatorfile": ready}));
    let msg = bed.verb("STATUS", &config).assert_error(50);
    assert!(
        msg.contains("rec-cluster") && msg.contains("no route to the overlay"),
        "{msg}"
    );

    // A 1.0.0 cluster network (the Debian bridge) is not asked: STATUS is 1.1.0 only.
    bed.verb("STATUS", &bed.config(json!({}))).assert_ok();
}

#[test]
fn gc_removes_a_stale_attachment_releases_its_ip_and_keeps_the_valid_one() {
    let bed = Bed::new();
    bed.macvlan_nad("blue", "macvlan-gc", "10.78.40.0/24");
    bed.nad("blue", "rec-gc", &bed.recorder_conf("rec-gc"));
    let config = bed.config(json!({}));
    let ann = json!({"k8s.v1.cni.cncf.io/networks": "macvlan-gc, rec-gc"});
    let sb1 = bed.sandbox_annotated("blue", "gc1", ann.clone());
    let sb2 = bed.sandbox_annotated("blue", "gc2", ann);
    bed.add(&sb1, &config).assert_ok();
    bed.add(&sb2, &config).assert_ok();
    let (ns1, ns2, c1, c2) = (&sb1.ns, &sb2.ns, &sb1.cid, &sb2.cid);
    assert_eq!(bed.node.leases().len(), 4, "{:?}", bed.node.leases());
    let net1_of_c2 = ipv4_of(ns2, "net1");

    let mut gc = config.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": c1, "ifname": "eth0"}]);
    bed.api.clear_requests();
    bed.verb("GC", &gc).assert_ok();
    assert!(bed.api.requests().is_empty(), "GC runs from the cache");
    assert_eq!(bed.node.cache_entries(), vec![format!("{c1}.json")]);
    let leases = bed.node.leases();
    assert_eq!(leases.len(), 2, "{leases:?}");
    let ip2 = net1_of_c2[0].split('/').next().unwrap();
    assert!(!leases.iter().any(|l| l.ends_with(ip2)), "{leases:?}");
    assert_eq!(plexus_e2e::cni::link_names(ns2), vec!["lo"]);
    assert_eq!(plexus_e2e::cni::link_names(ns1), vec!["eth0", "lo", "net1"]);

    // The 1.1.0 recorder got DEL for the stale container, then GC with the valid attachment.
    let rec = bed.records();
    let tail: Vec<(&str, &str)> = rec[rec.len() - 2..]
        .iter()
        .map(|r| {
            (
                r["command"].as_str().unwrap(),
                r["env"]["CNI_CONTAINERID"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(tail, vec![("DEL", c2.as_str()), ("GC", "")]);
    let valid = json!([{"containerID": c1, "ifname": "net2"}]);
    assert_eq!(
        rec[rec.len() - 1]["stdin"]["cni.dev/valid-attachments"],
        valid
    );
    assert_eq!(rec[rec.len() - 1]["stdin"]["cni.dev/attachments"], valid);

    // The legacy key alone: everything is stale now.
    let mut gc = config.clone();
    gc["cni.dev/attachments"] = json!([]);
    bed.verb("GC", &gc).assert_ok();
    assert!(bed.node.cache_entries().is_empty());
    assert!(bed.node.leases().is_empty());
}

#[test]
fn default_route_moves_to_net1_and_check_stays_consistent() {
    let bed = Bed::new();
    // A cluster network with a default route on eth0 (via 10.77.0.1).
    let mut cluster = bed.node.cluster_conflist("1.0.0");
    cluster["plugins"][0]["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}]);
    let file = bed.node.root.path().join("cluster-gw.conflist");
    std::fs::write(&file, cluster.to_string()).unwrap();
    let mut mv = bed.node.macvlan_config("macvlan-dr", "10.78.41.0/24");
    mv["cniVersion"] = json!("1.0.0");
    bed.nad("blue", "macvlan-dr", &mv);
    let sb = bed.sandbox_annotated(
        "blue",
        "dr",
        json!({"k8s.v1.cni.cncf.io/networks": r#"[{"name": "macvlan-dr", "default-route": ["10.78.41.1"]}]"#}),
    );
    let config = bed.config(json!({"clusterNetwork": file}));
    // Without the request, eth0 has the default route (so the move below is not vacuous).
    let plain = bed.sandbox_annotated("blue", "plain", json!({}));
    bed.add(&plain, &config).assert_ok();
    assert_eq!(
        default_routes(&plain.ns),
        vec![("eth0".to_owned(), "10.77.0.1".to_owned())]
    );
    bed.del(&plain, &config).assert_ok();

    let out = bed.add(&sb, &config);
    out.assert_ok();
    assert_eq!(
        default_routes(&sb.ns),
        vec![("net1".to_owned(), "10.78.41.1".to_owned())]
    );
    // The result returned for eth0 no longer claims the default route it lost.
    let returned = out.json();
    assert!(
        !returned["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["dst"] == "0.0.0.0/0"),
        "{returned}"
    );
    assert!(bed.api.get_pod("blue", "dr").is_some());
    let status = bed.status_of("blue", "dr");
    assert_eq!(status[1]["interface"], "net1");
    assert_eq!(status[1]["gateway"], json!(["10.78.41.1"]));
    assert!(status[0].get("gateway").is_none(), "{status:?}");
    bed.check(&sb, &config).assert_ok();
    // CHECK fails once net1 loses its address.
    sb.ns.exec(&["ip", "addr", "flush", "dev", "net1"]).unwrap();
    let msg = bed.check(&sb, &config).assert_error(100);
    assert!(
        msg.contains("blue/macvlan-dr") && msg.contains("net1"),
        "{msg}"
    );
    bed.del(&sb, &config).assert_ok();
    assert!(bed.node.leases().is_empty());
}

#[test]
fn two_default_routes_for_one_family_fail_with_code_7_and_leave_nothing() {
    let bed = Bed::new();
    bed.nad("blue", "ra", &bed.recorder_conf("ra"));
    bed.nad("blue", "rb", &bed.recorder_conf("rb"));
    let sb = bed.sandbox_annotated(
        "blue",
        "dr2",
        json!({"k8s.v1.cni.cncf.io/networks": r#"[{"name": "ra", "default-route": ["10.1.0.1"]}, {"name": "rb", "default-route": ["10.2.0.1"]}]"#}),
    );
    let msg = bed.add(&sb, &bed.config(json!({}))).assert_error(7);
    assert!(
        msg.contains("blue/dr2") && msg.contains("more than one IPv4 default-route"),
        "{msg}"
    );
    assert!(bed.records().is_empty());
    assert!(bed.node.cache_entries().is_empty());
    assert_eq!(plexus_e2e::cni::link_names(&sb.ns), vec!["lo"]);
}

#[test]
fn default_network_annotation_replaces_the_cluster_network() {
    let bed = Bed::new();
    let mut alt = bed.node.bridge_config("alt-cluster", "10.78.42.0/24");
    alt["cniVersion"] = json!("1.0.0");
    bed.nad("kube-system", "alt-cluster", &alt);
    let sb = bed.sandbox_annotated(
        "blue",
        "dn",
        json!({"v1.multus-cni.io/default-network": "alt-cluster"}),
    );
    let config = bed.config(json!({}));
    let out = bed.add(&sb, &config);
    out.assert_ok();
    let ip = ipv4_of(&sb.ns, "eth0");
    assert!(ip[0].starts_with("10.78.42."), "{ip:?}");
    assert!(
        out.json()["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("10.78.42.")
    );
    let status = bed.status_of("blue", "dn");
    assert_eq!(status.len(), 1);
    // Multus names the override `<multusNamespace>/<name>`.
    assert_eq!(status[0]["name"], "kube-system/alt-cluster");
    assert_eq!(status[0]["default"], true);
    bed.del(&sb, &config).assert_ok();
    assert!(bed.node.leases().is_empty());

    // Two entries: code 7 naming the annotation.
    let sb = bed.sandbox_annotated(
        "blue",
        "dn2",
        json!({"v1.multus-cni.io/default-network": "a, b"}),
    );
    let msg = bed.add(&sb, &config).assert_error(7);
    assert!(msg.contains("v1.multus-cni.io/default-network"), "{msg}");
}

#[test]
fn a_mirror_pod_is_attached_and_its_api_uid_guards_the_patch() {
    let bed = Bed::new();
    bed.pod_annotated(
        "blue",
        "static",
        json!({"kubernetes.io/config.mirror": "abc", "kubernetes.io/config.source": "file"}),
    );
    let config = bed.config(json!({}));
    // The kubelet gives the runtime the static pod's own UID, not the mirror's.
    let sb = bed.sandbox_without_pod("blue", "static", "kubelet-uid");
    bed.add(&sb, &config).assert_ok();
    assert_eq!(bed.status_of("blue", "static").len(), 1);
    bed.del(&sb, &config).assert_ok();
}

#[test]
fn a_missing_pod_is_retried_briefly_then_code_11_with_no_fabricated_result() {
    let bed = Bed::new();
    let sb = bed.sandbox_without_pod("blue", "ghost", "u");
    let config = bed.config(json!({"events": true}));
    bed.api.clear_requests();
    let msg = bed.add(&sb, &config).assert_error(11);
    assert!(
        msg.contains("blue/ghost") && msg.contains("not found"),
        "{msg}"
    );
    assert_eq!(bed.api.count("GET", "/pods/ghost"), 3);
    assert_eq!(bed.api.count("POST", "/events"), 0);
    assert_eq!(plexus_e2e::cni::link_names(&sb.ns), vec!["lo"]);
    assert!(bed.node.cache_entries().is_empty());
}

#[test]
fn events_list_the_attachments_or_the_failure() {
    let bed = Bed::new();
    bed.macvlan_nad("blue", "macvlan-ev", "10.78.43.0/24");
    let sb = bed.sandbox_annotated(
        "blue",
        "ev",
        json!({"k8s.v1.cni.cncf.io/networks": "macvlan-ev"}),
    );
    let config = bed.config(json!({"events": true}));
    bed.add(&sb, &config).assert_ok();
    // Events are posted by a detached process after the result is returned: wait for them.
    let events = bed.wait_for_events(1);
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = &events[0];
    assert_eq!(ev["type"], "Normal");
    assert_eq!(ev["involvedObject"]["name"], "ev");
    assert_eq!(ev["involvedObject"]["uid"], sb.uid.as_str());
    let msg = ev["message"].as_str().unwrap();
    let (eth0, net1) = (
        ipv4_of(&sb.ns, "eth0")[0].clone(),
        ipv4_of(&sb.ns, "net1")[0].clone(),
    );
    assert_eq!(
        msg,
        format!("eth0 {eth0} from cluster, net1 {net1} from blue/macvlan-ev")
    );
    bed.del(&sb, &config).assert_ok();

    // A failure: one Warning with the reason.
    let failed = bed.sandbox_annotated(
        "blue",
        "evf",
        json!({"k8s.v1.cni.cncf.io/networks": "missing-nad"}),
    );
    let err = bed.add(&failed, &config).assert_error(103);
    let events = bed.wait_for_events(2);
    let warn = events
        .iter()
        .find(|e| e["type"] == "Warning")
        .expect("warning event");
    assert_eq!(warn["involvedObject"]["name"], "evf");
    assert_eq!(warn["message"], err.as_str());

    // events: false sends none.
    let before = bed.api.events().len();
    let sb = bed.sandbox_annotated("blue", "evn", json!({}));
    let quiet = bed.config(json!({"events": false}));
    bed.add(&sb, &quiet).assert_ok();
    assert_eq!(bed.api.events().len(), before);
    bed.del(&sb, &quiet).assert_ok();
}

#[test]
fn runtime_supplied_annotations_mean_no_pod_get() {
    let bed = Bed::new();
    bed.nad("blue", "rec-rt", &bed.recorder_conf("rec-rt"));
    let config = bed.config(json!({
        "events": false,
        "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": "rec-rt"}}
    }));
    bed.pod_annotated("blue", "rt", json!({}));
    let sb = bed.sandbox_without_pod("blue", "rt", "");
    bed.api.clear_requests();
    bed.add(&sb, &config).assert_ok();
    assert_eq!(
        bed.api.count("GET", "/pods/"),
        0,
        "{:?}",
        bed.api.requests()
    );
    assert_eq!(bed.api.count("GET", "network-attachment-definitions"), 1);
    assert_eq!(bed.api.count("PATCH", "/pods/rt/status"), 1);
    assert_eq!(bed.records().len(), 1);
    bed.del(&sb, &config).assert_ok();
}

// ---- exact stdin snapshots ----

#[test]
fn snapshot_of_a_single_conf_delegate() {
    let bed = Bed::new();
    bed.nad("blue", "rec-conf", &json!({"cniVersion": "1.0.0", "type": "cni-recorder", "recordFile": bed.record, "extra": {"kept": [1, 2]}}));
    let sb = bed.sandbox_annotated(
        "blue",
        "s1",
        json!({"k8s.v1.cni.cncf.io/networks": "rec-conf"}),
    );
    let config = bed.config(json!({"events": false}));
    bed.add(&sb, &config).assert_ok();
    bed.del(&sb, &config).assert_ok();
    let rec = bed.records();
    assert_eq!(rec.len(), 2);
    assert_eq!(
        rec[0]["stdin"],
        json!({"cniVersion": "1.0.0", "name": "rec-conf", "type": "cni-recorder", "recordFile": bed.record, "extra": {"kept": [1, 2]}})
    );
    let args = format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=blue;K8S_POD_NAME=s1;K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        sb.cid, sb.uid
    );
    assert_eq!(
        rec[0]["env"],
        json!({
            "CNI_COMMAND": "ADD", "CNI_CONTAINERID": sb.cid, "CNI_NETNS": sb.ns.path(), "CNI_IFNAME": "net1",
            "CNI_ARGS": args, "CNI_PATH": format!("/usr/lib/cni:{}", bed.cni_path.split(':').nth(1).unwrap()),
        })
    );
    // DEL: the same config with the final result as prevResult.
    let mut del = rec[0]["stdin"].clone();
    del["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "mac": "02:00:00:00:00:01", "sandbox": sb.ns.path()}],
        "ips": [{"address": "192.0.2.10/24", "interface": 0}]
    });
    assert_eq!(rec[1]["stdin"], del);
    assert_eq!(rec[1]["env"]["CNI_COMMAND"], "DEL");
}

#[test]
fn snapshot_of_a_conflist_delegate() {
    let bed = Bed::new();
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "rec-list",
        "plugins": [
            {"type": "cni-recorder", "recordFile": bed.record, "address": "198.51.100.7/24"},
            {"type": "cni-recorder", "recordFile": bed.record, "capabilities": {"portMappings": true}, "runtimeConfig": {"static": "kept"}}
        ]
    });
    bed.nad("blue", "rec-list", &list);
    let sb = bed.sandbox_annotated(
        "blue",
        "s2",
        json!({"k8s.v1.cni.cncf.io/networks": r#"[{"name": "rec-list", "interface": "data0", "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "TCP"}]}]"#}),
    );
    let config = bed.config(json!({"events": false}));
    bed.add(&sb, &config).assert_ok();
    let rec = bed.records();
    assert_eq!(rec.len(), 2);
    let first_result = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "data0", "mac": "02:00:00:00:00:01", "sandbox": sb.ns.path()}],
        "ips": [{"address": "198.51.100.7/24", "interface": 0}]
    });
    assert_eq!(
        rec[0]["stdin"],
        json!({"cniVersion": "1.0.0", "name": "rec-list", "type": "cni-recorder", "recordFile": bed.record, "address": "198.51.100.7/24"})
    );
    assert_eq!(
        rec[1]["stdin"],
        json!({
            "cniVersion": "1.0.0", "name": "rec-list", "type": "cni-recorder", "recordFile": bed.record,
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"static": "kept", "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
            "prevResult": first_result,
        })
    );
    assert_eq!(rec[1]["env"]["CNI_IFNAME"], "data0");
    bed.del(&sb, &config).assert_ok();
    let rec = bed.records();
    let order: Vec<&str> = rec[2..]
        .iter()
        .map(|r| r["stdin"]["address"].as_str().unwrap_or("second"))
        .collect();
    assert_eq!(order, vec!["second", "198.51.100.7/24"], "DEL in reverse");
}

#[test]
fn snapshot_of_an_attachment_with_every_request_field() {
    let bed = Bed::new();
    let mut conf = bed.recorder_conf("rec-all");
    conf["args"] = json!({"cni": {"fromNad": "nad", "shared": "nad"}});
    bed.nad("blue", "rec-all", &conf);
    let element = json!([{
        "name": "rec-all",
        "namespace": "blue",
        "interface": "data9",
        "ips": ["10.1.2.3/24", "fd00::3/64"],
        "mac": "02:11:22:33:44:55",
        "infiniband-guid": "00:11:22:33:44:55:66:77",
        "portMappings": [{"hostPort": 8443, "containerPort": 443, "protocol": "udp", "hostIP": "192.0.2.1"}],
        "bandwidth": {"ingressRate": 1000000, "ingressBurst": 2000000, "egressRate": 3000000, "egressBurst": 4000000},
        "deviceID": "0000:00:01.0",
        "cni-args": {"shared": "pod", "fromPod": true}
    }]);
    let sb = bed.sandbox_annotated(
        "blue",
        "s3",
        json!({"k8s.v1.cni.cncf.io/networks": element.to_string()}),
    );
    let config = bed.config(json!({"events": false}));
    bed.add(&sb, &config).assert_ok();
    let rec = bed.records();
    assert_eq!(
        rec[0]["stdin"],
        json!({
            "cniVersion": "1.1.0",
            "name": "rec-all",
            "type": "cni-recorder",
            "recordFile": bed.record,
            "capabilities": {"ips": true, "mac": true, "infinibandGUID": true, "portMappings": true, "bandwidth": true, "deviceID": true},
            "args": {"cni": {"fromNad": "nad", "shared": "pod", "fromPod": true}},
            "runtimeConfig": {
                "ips": ["10.1.2.3/24", "fd00::3/64"],
                "mac": "02:11:22:33:44:55",
                "infinibandGUID": "00:11:22:33:44:55:66:77",
                "portMappings": [{"hostPort": 8443, "containerPort": 443, "protocol": "udp", "hostIP": "192.0.2.1"}],
                "bandwidth": {"ingressRate": 1000000, "ingressBurst": 2000000, "egressRate": 3000000, "egressBurst": 4000000},
                "deviceID": "0000:00:01.0"
            }
        })
    );
    assert_eq!(rec[0]["env"]["CNI_IFNAME"], "data9");
    bed.del(&sb, &config).assert_ok();
}

// ---- request fields with the Debian delegates ----

/// The sandbox of a new pod `blue/name` asking for `element` (JSON form).
fn sandbox_with(bed: &Bed, name: &str, element: Value) -> Sandbox {
    bed.sandbox_annotated(
        "blue",
        name,
        json!({"k8s.v1.cni.cncf.io/networks": json!([element]).to_string()}),
    )
}

/// Adds a new pod `blue/name` asking for `element` and returns its sandbox.
fn add_with(bed: &Bed, name: &str, element: Value, config: &Value) -> Sandbox {
    let sb = sandbox_with(bed, name, element);
    bed.add(&sb, config).assert_ok();
    sb
}

#[test]
fn static_ip_via_ips_and_mac_via_tuning() {
    let bed = Bed::new();
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "static-mac",
        "plugins": [
            {"type": "macvlan", "master": bed.node.macvlan_master, "mode": "bridge",
             "capabilities": {"ips": true}, "ipam": {"type": "static"}},
            {"type": "tuning", "capabilities": {"mac": true}}
        ]
    });
    bed.nad("blue", "static-mac", &list);
    let config = bed.config(json!({"events": false}));
    let sb = add_with(
        &bed,
        "st",
        json!({"name": "static-mac", "ips": ["10.78.50.7/24"], "mac": "02:11:22:33:44:55"}),
        &config,
    );
    assert_eq!(ipv4_of(&sb.ns, "net1"), vec!["10.78.50.7/24"]);
    assert_eq!(
        plexus_e2e::cni::mac_of(&sb.ns, "net1").as_deref(),
        Some("02:11:22:33:44:55")
    );
    let status = bed.status_of("blue", "st");
    assert_eq!(status[1]["ips"], json!(["10.78.50.7"]));
    assert_eq!(status[1]["mac"], "02:11:22:33:44:55");
    bed.del(&sb, &config).assert_ok();
    assert_eq!(plexus_e2e::cni::link_names(&sb.ns), vec!["lo"]);
}

/// The host end of the pod's veth on the node's second bridge.
fn host_veth_on(bridge: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-j", "link", "show", "master", bridge])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["ifname"]
        .as_str()
        .expect("a port on the bridge")
        .to_owned()
}

#[test]
fn bandwidth_shapes_the_host_veth() {
    let bed = Bed::new();
    let mut bridge = bed.node.bridge_config("bw", "10.78.51.0/24");
    bridge.as_object_mut().unwrap().remove("cniVersion");
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "bw",
        "plugins": [bridge, {"type": "bandwidth", "capabilities": {"bandwidth": true}}]
    });
    bed.nad("blue", "bw", &list);
    let config = bed.config(json!({"events": false}));
    let sb = add_with(
        &bed,
        "bw",
        json!({"name": "bw", "bandwidth": {"ingressRate": 8000000, "ingressBurst": 80000}}),
        &config,
    );
    let veth = host_veth_on(bed.node.bridge2.name());
    let out = std::process::Command::new("tc")
        .args(["-j", "qdisc", "show", "dev", &veth])
        .output()
        .unwrap();
    let qdiscs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tbf = qdiscs
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["kind"] == "tbf")
        .unwrap_or_else(|| panic!("no tbf on {veth}: {qdiscs}"));
    // tc reports the rate in bytes per second: 8 Mbit/s = 1,000,000 B/s.
    assert_eq!(tbf["options"]["rate"], 1_000_000, "{tbf}");
    bed.del(&sb, &config).assert_ok();
    assert!(bed.node.leases().is_empty());
}

#[test]
fn port_mappings_reach_portmap() {
    let bed = Bed::new();
    let mut bridge = bed.node.bridge_config("pm", "10.78.52.0/24");
    bridge.as_object_mut().unwrap().remove("cniVersion");
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "pm",
        "plugins": [bridge, {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false}]
    });
    bed.nad("blue", "pm", &list);
    let config = bed.config(json!({"events": false}));
    let port = 20000 + (std::process::id() % 20000);
    let sb = add_with(
        &bed,
        "pm",
        json!({"name": "pm", "portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "TCP"}]}),
        &config,
    );
    let rules = || {
        let out = std::process::Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ip = ipv4_of(&sb.ns, "net1")[0]
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let text = rules();
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("--dport {port}")) && l.contains(&format!("{ip}:80"))),
        "no DNAT {port} -> {ip}:80 in:\n{text}"
    );
    bed.del(&sb, &config).assert_ok();
    assert!(!rules().contains(&format!("--dport {port}")));
}

#[test]
fn a_capability_the_nad_cannot_honour_fails_naming_it() {
    let bed = Bed::new();
    bed.macvlan_nad("blue", "plain-mv", "10.78.53.0/24");
    let sb = sandbox_with(
        &bed,
        "cap",
        json!({"name": "plain-mv", "bandwidth": {"ingressRate": 100000, "ingressBurst": 100000}}),
    );
    let msg = bed.add(&sb, &bed.config(json!({}))).assert_error(7);
    assert!(
        msg.contains("blue/cap") && msg.contains("blue/plain-mv") && msg.contains("\"bandwidth\""),
        "{msg}"
    );
    assert_eq!(plexus_e2e::cni::link_names(&sb.ns), vec!["lo"]);
    assert!(bed.node.cache_entries().is_empty());
    assert!(bed.node.leases().is_empty());
}

#[test]
fn invalid_values_of_every_field_fail_with_code_7_quoting_them() {
    let bed = Bed::new();
    let config = bed.config(json!({"events": false}));
    let cases = [
        (json!({"name": "a", "ips": ["10.0.0.300"]}), "10.0.0.300"),
        (
            json!({"name": "a", "mac": "02:zz:22:33:44:55"}),
            "02:zz:22:33:44:55",
        ),
        (
            json!({"name": "a", "infiniband-guid": "not-a-guid"}),
            "not-a-guid",
        ),
        (
            json!({"name": "a", "interface": "much-too-long-name0"}),
            "much-too-long-name0",
        ),
        (
            json!({"name": "a", "portMappings": [{"hostPort": 70000, "containerPort": 80}]}),
            "70000",
        ),
        (
            json!({"name": "a", "bandwidth": {"ingressRate": -5, "ingressBurst": 1}}),
            "-5",
        ),
        (
            json!({"name": "a", "default-route": ["gw.example"]}),
            "gw.example",
        ),
        (json!({"name": "a", "deviceID": 42}), "42"),
        (json!({"name": "a", "cni-args": "x=y"}), "x=y"),
        (
            json!({"name": "a", "ips": ["10.0.0.1"], "ipam-claim-reference": "claim"}),
            "claim",
        ),
        (json!({"name": "Not_A_Name"}), "Not_A_Name"),
    ];
    for (i, (element, quoted)) in cases.into_iter().enumerate() {
        let name = format!("inv{i}");
        let sb = sandbox_with(&bed, &name, element.clone());
        let msg = bed.add(&sb, &config).assert_error(7);
        assert!(
            msg.contains(&format!("blue/{name}")) && msg.contains(quoted),
            "{element}: {msg}"
        );
        assert_eq!(plexus_e2e::cni::link_names(&sb.ns), vec!["lo"], "{element}");
    }
    assert!(bed.node.cache_entries().is_empty());
}
