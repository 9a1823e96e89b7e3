//! Criterion benchmarks of the pure work every ADD does: parsing the `networks` annotation,
//! building each delegate's stdin, converting results between versions, building network-status.
//! Whole-process figures (which dominate) are in hack/bench.sh.

use criterion::{Criterion, criterion_group, criterion_main};
use plexus_cni::{CniResult, CniVersion, NetworkConfig};
use plexus_netattach::{parse_networks, statuses_from_result};
use serde_json::{Map, Value, json};
use std::hint::black_box;

fn short_form(n: usize) -> String {
    (0..n)
        .map(|i| format!("ns-{i}/net-{i}@if{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn json_form(n: usize) -> String {
    let v: Vec<Value> = (0..n)
        .map(|i| {
            json!({"name": format!("net-{i}"), "namespace": "blue", "interface": format!("if{i}"),
                   "ips": [format!("10.1.{i}.5/24")], "mac": "02:11:22:33:44:55", "cni-args": {"k": "v"}})
        })
        .collect();
    Value::Array(v).to_string()
}

fn result_100(i: usize) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "br0", "mac": "02:00:00:00:00:01"},
            {"name": "veth1", "mac": "02:00:00:00:00:02"},
            {"name": format!("net{i}"), "mac": "02:00:00:00:00:03", "sandbox": "/run/netns/x"}
        ],
        "ips": [{"address": format!("10.0.{i}.5/24"), "gateway": format!("10.0.{i}.1"), "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0", "gw": format!("10.0.{i}.1")}],
        "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
    })
}

fn bench(c: &mut Criterion) {
    let short = short_form(16);
    let long = json_form(16);
    c.bench_function("parse_networks/short/16", |b| {
        b.iter(|| parse_networks(black_box(&short), "blue").unwrap())
    });
    c.bench_function("parse_networks/json/16", |b| {
        b.iter(|| parse_networks(black_box(&long), "blue").unwrap())
    });

    let conflist = NetworkConfig::from_value(json!({
        "cniVersion": "1.0.0", "name": "chain", "plugins": [
            {"type": "bridge", "bridge": "br0", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/16"}]]}},
            {"type": "tuning", "capabilities": {"mac": true}, "mtu": 1400},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]}))
    .unwrap();
    let prev = result_100(1);
    let mut rc = Map::new();
    rc.insert("mac".into(), json!("02:11:22:33:44:55"));
    rc.insert(
        "portMappings".into(),
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
    );
    c.bench_function("plugin_stdin/conflist-3", |b| {
        b.iter(|| {
            for i in 0..3 {
                black_box(conflist.plugin_stdin(i, CniVersion::V1_0_0, Some(&prev), Some(&rc)));
            }
        })
    });

    c.bench_function("result/convert/1.0.0->0.3.1", |b| {
        b.iter(|| {
            CniResult::from_value(black_box(&prev), CniVersion::V1_0_0)
                .unwrap()
                .to_value(CniVersion::V0_3_1)
                .unwrap()
        })
    });
    c.bench_function("result/convert/1.0.0->0.2.0", |b| {
        b.iter(|| {
            CniResult::from_value(black_box(&prev), CniVersion::V1_0_0)
                .unwrap()
                .to_value(CniVersion::V0_2_0)
                .unwrap()
        })
    });

    let results: Vec<CniResult> = (0..17)
        .map(|i| CniResult::from_value(&result_100(i), CniVersion::V1_0_0).unwrap())
        .collect();
    c.bench_function("network_status/17", |b| {
        b.iter(|| {
            let statuses: Vec<_> = results
                .iter()
                .enumerate()
                .flat_map(|(i, r)| {
                    statuses_from_result(
                        &format!("blue/net-{i}"),
                        &format!("net{i}"),
                        r,
                        i == 0,
                        &[],
                        None,
                    )
                })
                .collect();
            plexus_netattach::status::status_annotation_value(black_box(&statuses))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
