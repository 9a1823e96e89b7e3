//! Every manifest in `deploy/` (except the examples and the kustomization) parsed into its
//! k8s-openapi type with nothing dropped, the RBAC asserted to be exactly the minimal set, the
//! DaemonSet's guarantees checked, and the CRD compared with the one generated from the Rust type.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The manifests the tests cover: every `*.yaml` under deploy/ but examples/ and kustomization.
fn manifest_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().unwrap() != "examples" {
                    walk(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml")
                && p.file_name().unwrap() != "kustomization.yaml"
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&deploy_dir(), &mut out);
    out.sort();
    out
}

/// The documents of a multi-document YAML file, as JSON values.
fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// Parses `v` as `T` and checks that serializing it back gives `v` again: a misspelt or unknown
/// field is dropped by the typed parse, so it shows up as a difference.
fn typed<T: DeserializeOwned + serde::Serialize>(v: &Value, origin: &str) -> T {
    let t: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{origin}: not a valid {}: {e}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        &back,
        v,
        "{origin}: fields lost or changed when parsed as {}",
        std::any::type_name::<T>()
    );
    t
}

/// All objects of all manifests: (file, kind, value), each checked against its type.
fn all_objects() -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for f in manifest_files() {
        let name = f.strip_prefix(deploy_dir()).unwrap().display().to_string();
        for v in docs(&f) {
            let kind = format!(
                "{}/{}",
                v["apiVersion"].as_str().unwrap_or("?"),
                v["kind"].as_str().unwrap_or("?")
            );
            let origin = format!("{name} {kind} {}", v["metadata"]["name"]);
            match kind.as_str() {
                "v1/Namespace" => drop(typed::<Namespace>(&v, &origin)),
                "v1/ServiceAccount" => drop(typed::<ServiceAccount>(&v, &origin)),
                "rbac.authorization.k8s.io/v1/ClusterRole" => {
                    drop(typed::<ClusterRole>(&v, &origin))
                }
                "rbac.authorization.k8s.io/v1/ClusterRoleBinding" => {
                    drop(typed::<ClusterRoleBinding>(&v, &origin))
                }
                "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy" => {
                    drop(typed::<ValidatingAdmissionPolicy>(&v, &origin))
                }
                "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding" => {
                    drop(typed::<ValidatingAdmissionPolicyBinding>(&v, &origin))
                }
                "apps/v1/DaemonSet" => drop(typed::<DaemonSet>(&v, &origin)),
                "apiextensions.k8s.io/v1/CustomResourceDefinition" => {
                    drop(typed::<CustomResourceDefinition>(&v, &origin))
                }
                other => panic!("{origin}: no test knows the kind {other}"),
            }
            out.push((name.clone(), kind, v));
        }
    }
    out
}

fn one<T: DeserializeOwned>(kind: &str) -> T {
    let found: Vec<_> = all_objects()
        .into_iter()
        .filter(|(_, k, _)| k == kind)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    serde_json::from_value(found[0].2.clone()).unwrap()
}

#[test]
fn every_manifest_parses_into_its_type_without_losing_fields() {
    let objs = all_objects();
    let kinds: BTreeSet<&str> = objs.iter().map(|(_, k, _)| k.as_str()).collect();
    for want in [
        "v1/Namespace",
        "v1/ServiceAccount",
        "rbac.authorization.k8s.io/v1/ClusterRole",
        "rbac.authorization.k8s.io/v1/ClusterRoleBinding",
        "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
        "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding",
        "apps/v1/DaemonSet",
        "apiextensions.k8s.io/v1/CustomResourceDefinition",
    ] {
        assert!(kinds.contains(want), "no {want} in deploy/");
    }
}

#[test]
fn a_misspelt_field_is_caught() {
    let v = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "x"}, "automountServiceAccountTokn": false});
    let r = std::panic::catch_unwind(|| typed::<ServiceAccount>(&v, "test"));
    assert!(r.is_err(), "unknown field not detected");
}

#[test]
fn crd_is_the_generated_one() {
    let committed =
        std::fs::read_to_string(deploy_dir().join("crds/network-attachment-definitions.yaml"))
            .unwrap();
    assert!(
        committed == plexus_install::crd::yaml(),
        "deploy/crds/network-attachment-definitions.yaml is stale: regenerate it with \
         `cargo run -p plexus-install -- crd > deploy/crds/network-attachment-definitions.yaml`"
    );
}

#[test]
fn kustomization_lists_every_manifest() {
    let k: Value = serde_yaml::from_str(
        &std::fs::read_to_string(deploy_dir().join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let files: BTreeSet<String> = manifest_files()
        .iter()
        .map(|f| f.strip_prefix(deploy_dir()).unwrap().display().to_string())
        .collect();
    assert_eq!(listed, files);
}

#[test]
fn rbac_is_exactly_the_minimal_set() {
    let role: ClusterRole = one("rbac.authorization.k8s.io/v1/ClusterRole");
    let mut got: BTreeSet<(String, String, String)> = BTreeSet::new();
    for r in role.rules.unwrap_or_default() {
        assert!(
            r.resource_names.is_none() && r.non_resource_urls.is_none(),
            "{r:?}"
        );
        for g in r.api_groups.clone().unwrap_or_default() {
            for res in r.resources.clone().unwrap_or_default() {
                for v in &r.verbs {
                    got.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    let t = |g: &str, r: &str, v: &str| (g.to_owned(), r.to_owned(), v.to_owned());
    let want: BTreeSet<_> = [
        // Thin mode: exactly the calls the plugin makes (plexus-kube: GET pod, GET NADs, PATCH
        // pods/status, POST core v1 events). No list/watch, no event updates.
        t("k8s.cni.cncf.io", "network-attachment-definitions", "get"),
        t("", "pods", "get"),
        t("", "pods/status", "patch"),
        t("", "events", "create"),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);

    let sa: ServiceAccount = one("v1/ServiceAccount");
    let binding: ClusterRoleBinding = one("rbac.authorization.k8s.io/v1/ClusterRoleBinding");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(binding.role_ref.name), role.metadata.name);
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), sa.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);
}

#[test]
fn admission_policy_targets_the_plexus_identity_and_the_status_annotation() {
    let sa: ServiceAccount = one("v1/ServiceAccount");
    let user = format!(
        "system:serviceaccount:{}:{}",
        sa.metadata.namespace.unwrap(),
        sa.metadata.name.unwrap()
    );
    let p: ValidatingAdmissionPolicy =
        one("admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy");
    let spec = p.spec.unwrap();
    let rules = spec.match_constraints.unwrap().resource_rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["pods/status".to_owned()][..])
    );
    let conds = spec.match_conditions.unwrap();
    // The identity is matched by its name, not its namespace (which kustomize may change); the
    // expressions themselves are evaluated in tests/admission_policy.rs.
    let name = user.rsplit(':').next().unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.expression.contains(&format!("endsWith('{name}')"))),
        "{conds:?}"
    );
    let vars = serde_json::to_string(&spec.variables).unwrap();
    assert!(vars.contains("k8s.v1.cni.cncf.io/network-status"));
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    let b: ValidatingAdmissionPolicyBinding =
        one("admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding");
    let bs = b.spec.unwrap();
    assert_eq!(bs.policy_name, p.metadata.name);
    assert_eq!(bs.validation_actions, Some(vec!["Deny".to_owned()]));
}

#[test]
fn daemonset_is_guaranteed_critical_tolerant_and_probed() {
    let ds: DaemonSet = one("apps/v1/DaemonSet");
    let sa: ServiceAccount = one("v1/ServiceAccount");
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(pod.service_account_name, sa.metadata.name);
    let tol = pod.tolerations.clone().unwrap();
    assert!(
        tol.iter().any(|t| t.operator.as_deref() == Some("Exists")
            && t.key.is_none()
            && t.effect.is_none()),
        "must tolerate every taint: {tol:?}"
    );
    let init = pod.init_containers.clone().unwrap();
    assert_eq!(init.len(), 1);
    assert!(
        init[0]
            .command
            .as_ref()
            .unwrap()
            .contains(&"install".to_owned())
    );
    assert_eq!(pod.containers.len(), 1);
    let main = &pod.containers[0];
    assert!(main.command.as_ref().unwrap().contains(&"run".to_owned()));
    assert!(main.liveness_probe.is_some() && main.readiness_probe.is_some());
    // Guaranteed QoS: every container (init included) has cpu and memory limits equal to requests.
    for c in init.iter().chain(&pod.containers) {
        let r = c.resources.clone().unwrap();
        let (req, lim) = (r.requests.unwrap(), r.limits.unwrap());
        assert_eq!(req, lim, "{}: requests != limits", c.name);
        assert!(
            req.contains_key("cpu") && req.contains_key("memory"),
            "{}",
            c.name
        );
    }
    // Host paths: only the CNI bin and config dirs, the bin dir only where binaries are copied.
    let host_vols: BTreeSet<String> = pod
        .volumes
        .unwrap()
        .into_iter()
        .filter_map(|v| v.host_path.map(|h| format!("{}={}", v.name, h.path)))
        .collect();
    assert_eq!(
        host_vols,
        ["cni-bin=/opt/cni/bin", "cni-conf=/etc/cni/net.d"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );
    let mounts = |c: &k8s_openapi::api::core::v1::Container| -> Vec<String> {
        c.volume_mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.name)
            .collect()
    };
    assert!(
        !mounts(main).contains(&"cni-bin".to_owned()),
        "main container needs no bin dir"
    );
}
