//! Every manifest in `deploy/` (except the examples and the kustomization) parsed into its
//! k8s-openapi type with nothing dropped, the RBAC asserted to be exactly the minimal set, the
//! DaemonSet's guarantees checked, and the CRD compared with the one generated from the Rust type.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
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
                "v1/ConfigMap" => drop(typed::<ConfigMap>(&v, &origin)),
                "rbac.authorization.k8s.io/v1/Role" => drop(typed::<Role>(&v, &origin)),
                "rbac.authorization.k8s.io/v1/RoleBinding" => {
                    drop(typed::<RoleBinding>(&v, &origin))
                }
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

/// The one object of `kind` of the Plexus agent (the SR-IOV device plugin's own manifests, in
/// sriovdp/, are checked by [`the_device_plugin_runs_without_api_access_and_mounts_what_it_needs`]).
fn one<T: DeserializeOwned>(kind: &str) -> T {
    let found: Vec<_> = all_objects()
        .into_iter()
        .filter(|(f, k, _)| k == kind && !f.starts_with("sriovdp/"))
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
        "v1/ConfigMap",
        "rbac.authorization.k8s.io/v1/Role",
        "rbac.authorization.k8s.io/v1/RoleBinding",
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
fn kustomizations_list_every_manifest_and_the_crd_only_in_its_own() {
    let resources = |dir: &str| -> BTreeSet<String> {
        let k = kustomization(&deploy_dir().join(dir));
        k["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{dir}/{}", r.as_str().unwrap()))
            .collect()
    };
    let listed: BTreeSet<String> = resources("base")
        .union(&resources("crds"))
        .cloned()
        .chain(resources("sriovdp"))
        .collect();
    let files: BTreeSet<String> = manifest_files()
        .iter()
        .map(|f| f.strip_prefix(deploy_dir()).unwrap().display().to_string())
        .collect();
    assert_eq!(listed, files);
    // Deleting Plexus (`kubectl delete -k` of deploy/, an overlay or the uninstall mode) must
    // never delete the CRD, and with it every NAD.
    for dir in BUILDS {
        assert!(
            !build(dir)
                .iter()
                .any(|o| o["kind"] == "CustomResourceDefinition"),
            "{dir} contains the CRD"
        );
    }
    let crds = build("crds");
    assert_eq!(crds.len(), 1);
    assert_eq!(crds[0]["kind"], "CustomResourceDefinition");
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
    // What `kubectl apply -k deploy/` grants is that file's role, untouched (DRA is opt-in:
    // `the_dra_component_adds_exactly_the_dra_reads`).
    assert_eq!(role_verbs(&build(".")), want);

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

// ------------------------------------------------------------------ kustomize, the parts we use
//
// `kubectl kustomize` is not available where the tests run, so the tests build the kustomizations
// with the subset of kustomize that deploy/ uses, and fail on anything else: `resources` (files
// and directories), `components`, inline JSON 6902 `patches` (replace/add/remove/copy) with a
// kind + name target, and `images` (newName/newTag), applied per kustomization after its patches
// (so a container that an overlay adds does not get the image of base's `images:`). The result was compared with `kubectl kustomize`
// (kustomize v5.5) when the overlays were written.

/// Every kustomization an operator applies, except crds/.
const BUILDS: [&str; 9] = [
    ".",
    "overlays/k3s",
    "overlays/openshift",
    "overlays/crio",
    "uninstall",
    "thick",
    "overlays/k3s-thick",
    "overlays/openshift-thick",
    "overlays/crio-thick",
];

fn kustomization(dir: &Path) -> Value {
    let p = dir.join("kustomization.yaml");
    let v: Value = serde_yaml::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let known = [
        "apiVersion",
        "kind",
        "resources",
        "components",
        "patches",
        "images",
    ];
    for k in v.as_object().unwrap().keys() {
        assert!(
            known.contains(&k.as_str()),
            "{}: the tests do not model `{k}`",
            p.display()
        );
    }
    v
}

/// The objects `kubectl kustomize deploy/<dir>` prints.
fn build(dir: &str) -> Vec<Value> {
    build_dir(&deploy_dir().join(dir))
}

fn build_dir(dir: &Path) -> Vec<Value> {
    let k = kustomization(dir);
    let mut objs = Vec::new();
    for r in k["resources"].as_array().into_iter().flatten() {
        let p = dir.join(r.as_str().unwrap());
        if p.is_dir() {
            objs.extend(build_dir(&p));
        } else {
            objs.extend(docs(&p));
        }
    }
    apply_patches(dir, &k, &mut objs);
    for c in k["components"].as_array().into_iter().flatten() {
        let cdir = dir.join(c.as_str().unwrap());
        let ck = kustomization(&cdir);
        assert_eq!(ck["kind"], "Component", "{}", cdir.display());
        apply_patches(&cdir, &ck, &mut objs);
    }
    for img in k["images"].as_array().into_iter().flatten() {
        let name = img["name"].as_str().unwrap();
        let new = format!(
            "{}:{}",
            img["newName"].as_str().unwrap_or(name),
            img["newTag"].as_str().expect("images: newTag")
        );
        for o in &mut objs {
            for list in ["initContainers", "containers"] {
                for c in o
                    .pointer_mut(&format!("/spec/template/spec/{list}"))
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    let old = c["image"].as_str().unwrap_or_default();
                    if old.split(':').next() == Some(name) {
                        c["image"] = json!(new);
                    }
                }
            }
        }
    }
    objs
}

fn apply_patches(dir: &Path, k: &Value, objs: &mut [Value]) {
    for p in k["patches"].as_array().into_iter().flatten() {
        let (kind, name) = (&p["target"]["kind"], &p["target"]["name"]);
        let ops: Vec<Value> = serde_yaml::from_str(p["patch"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{}: patch: {e}", dir.display()));
        let mut hit = false;
        for o in objs
            .iter_mut()
            .filter(|o| &o["kind"] == kind && &o["metadata"]["name"] == name)
        {
            hit = true;
            for op in &ops {
                apply_op(o, op).unwrap_or_else(|e| panic!("{}: {op}: {e}", dir.display()));
            }
        }
        assert!(
            hit,
            "{}: patch target {kind} {name} not found",
            dir.display()
        );
    }
}

fn apply_op(o: &mut Value, op: &Value) -> Result<(), String> {
    let path = op["path"].as_str().ok_or("no path")?;
    let (parent, last) = path.rsplit_once('/').ok_or("bad path")?;
    let target = o.pointer_mut(parent).ok_or("no such parent")?;
    match (op["op"].as_str(), target) {
        (Some("replace"), t) => {
            *t.pointer_mut(&format!("/{last}"))
                .ok_or("nothing to replace")? = op["value"].clone()
        }
        (Some("add"), Value::Array(a)) if last == "-" => a.push(op["value"].clone()),
        (Some("add"), Value::Object(m)) => drop(m.insert(last.to_owned(), op["value"].clone())),
        (Some("remove"), Value::Object(m)) => {
            m.remove(last).ok_or("nothing to remove")?;
        }
        (Some("copy"), _) => {
            let from = op["from"].as_str().ok_or("copy without from")?;
            let v = o.pointer(from).ok_or("nothing to copy")?.clone();
            return apply_op(o, &json!({"op": "add", "path": path, "value": v}));
        }
        (other, _) => return Err(format!("op {other:?} not modelled")),
    }
    Ok(())
}

fn daemonset(objs: &[Value]) -> DaemonSet {
    let ds: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "DaemonSet").collect();
    assert_eq!(ds.len(), 1);
    serde_json::from_value(ds[0].clone()).unwrap()
}

fn config_map(objs: &[Value], name: &str) -> BTreeMap<String, String> {
    let cm = objs
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no ConfigMap {name}"));
    serde_json::from_value(cm["data"].clone()).unwrap()
}

fn containers(ds: &DaemonSet) -> Vec<Container> {
    let pod = ds.spec.clone().unwrap().template.spec.unwrap();
    pod.init_containers
        .unwrap_or_default()
        .into_iter()
        .chain(pod.containers)
        .collect()
}

#[test]
fn the_image_is_set_in_one_place_and_pullable() {
    // In the manifests every container names the bare image `plexus`...
    let ds: DaemonSet = one("apps/v1/DaemonSet");
    for c in containers(&ds) {
        assert_eq!(c.image.as_deref(), Some("plexus"), "{}", c.name);
    }
    // ...and the kustomization's `images:` makes it a registry reference a node can pull.
    for dir in BUILDS {
        for c in containers(&daemonset(&build(dir))) {
            let image = c.image.unwrap();
            let (repo, tag) = image.rsplit_once(':').expect("tagged");
            let registry = repo.split('/').next().unwrap();
            assert!(
                repo.contains('/') && registry.contains('.') && registry != "localhost",
                "{dir}: {image} is not a pullable registry reference"
            );
            assert!(!tag.is_empty() && tag != "latest", "{dir}: {image}");
        }
    }
}

#[test]
fn the_daemonset_runs_only_on_linux_amd64_nodes() {
    for dir in BUILDS {
        let pod = daemonset(&build(dir)).spec.unwrap().template.spec.unwrap();
        let sel = pod.node_selector.unwrap_or_default();
        assert_eq!(
            (
                sel.get("kubernetes.io/os").map(String::as_str),
                sel.get("kubernetes.io/arch").map(String::as_str)
            ),
            (Some("linux"), Some("amd64")),
            "{dir}"
        );
    }
}

#[test]
fn both_containers_share_one_config_instead_of_repeated_flags() {
    let objs = build(".");
    let ds = daemonset(&objs);
    let node = config_map(&objs, "plexus-node");
    let template = node["PLEXUS_CONFIG_TEMPLATE"].clone();
    let opts: Value = serde_json::from_str(&config_map(&objs, "plexus-config")["plexus.json"])
        .expect("plexus.json is JSON");
    assert_eq!(opts["namespaceIsolation"], true, "{opts}");
    // A NAD author must not be able to take a host interface (docs/security.md).
    assert_eq!(
        opts["deniedDelegateTypes"],
        serde_json::json!(["host-device"]),
        "{opts}"
    );
    let pod = ds.spec.clone().unwrap().template.spec.unwrap();
    let config_vol = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| {
            v.config_map
                .as_ref()
                .is_some_and(|c| c.name == "plexus-config")
        })
        .expect("plexus-config volume");
    let cs = containers(&ds);
    assert_eq!(cs.len(), 2);
    for c in &cs {
        let from: Vec<String> = c
            .env_from
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| e.config_map_ref.map(|r| r.name))
            .collect();
        assert_eq!(from, vec!["plexus-node"], "{}", c.name);
        let mount = c
            .volume_mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.name == config_vol.name)
            .unwrap_or_else(|| panic!("{}: plexus-config not mounted", c.name));
        assert_eq!(
            Path::new(&mount.mount_path).join("plexus.json"),
            Path::new(&template),
            "{}",
            c.name
        );
        let env: BTreeSet<String> = c
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(
            env.contains("PLEXUS_NODE_NAME"),
            "{}: no node name for the token",
            c.name
        );
    }
    // No plugin option or host path repeated as a flag: every `--` flag in the two commands is
    // one only that container has.
    let flags = |c: &Container| -> BTreeSet<String> {
        c.command
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.starts_with("--"))
            .map(|a| a.split('=').next().unwrap().to_owned())
            .collect()
    };
    let shared: Vec<String> = flags(&cs[0])
        .intersection(&flags(&cs[1]))
        .cloned()
        .collect();
    assert!(
        shared.is_empty(),
        "flags repeated in both containers: {shared:?}"
    );
}

/// The host paths each layout must use (docs/install.md, "Host paths", has the same table), in
/// thin and in thick mode.
const LAYOUTS: [(&str, &str, &str); 8] = [
    (".", "/opt/cni/bin", "/etc/cni/net.d"),
    (
        "overlays/k3s",
        "/var/lib/rancher/k3s/data/cni",
        "/var/lib/rancher/k3s/agent/etc/cni/net.d",
    ),
    (
        "overlays/openshift",
        "/var/lib/cni/bin",
        "/etc/kubernetes/cni/net.d",
    ),
    ("overlays/crio", "/usr/libexec/cni", "/etc/cni/net.d"),
    ("thick", "/opt/cni/bin", "/etc/cni/net.d"),
    (
        "overlays/k3s-thick",
        "/var/lib/rancher/k3s/data/cni",
        "/var/lib/rancher/k3s/agent/etc/cni/net.d",
    ),
    (
        "overlays/openshift-thick",
        "/var/lib/cni/bin",
        "/etc/kubernetes/cni/net.d",
    ),
    ("overlays/crio-thick", "/usr/libexec/cni", "/etc/cni/net.d"),
];

#[test]
fn overlays_put_each_distributions_host_paths_everywhere_they_are_needed() {
    let docs = std::fs::read_to_string(deploy_dir().join("../docs/install.md")).unwrap();
    for (dir, bin, conf) in LAYOUTS {
        let objs = build(dir);
        let node = config_map(&objs, "plexus-node");
        assert_eq!(
            (
                node["PLEXUS_CNI_BIN_DIR"].as_str(),
                node["PLEXUS_CNI_CONF_DIR"].as_str()
            ),
            (bin, conf),
            "{dir}: the installer's host paths"
        );
        let ds = daemonset(&objs);
        let vols: BTreeMap<String, String> = ds
            .spec
            .clone()
            .unwrap()
            .template
            .spec
            .unwrap()
            .volumes
            .unwrap()
            .into_iter()
            .filter_map(|v| v.host_path.map(|h| (v.name, h.path)))
            .collect();
        assert_eq!(vols["cni-bin"], bin, "{dir}");
        assert_eq!(vols["cni-conf"], conf, "{dir}");
        // The installer reaches host path P at <host root>/P: every hostPath mount must be there.
        // plexusd reads the host paths the installer's config names (the primary's config,
        // binDir, the kubeconfig) itself: its mounts of the CNI directories are at P.
        let root = Path::new(&node["PLEXUS_HOST_ROOT"]);
        for c in containers(&ds) {
            for m in c.volume_mounts.clone().unwrap_or_default() {
                let Some(host) = vols.get(&m.name) else {
                    continue;
                };
                let expected = match c.name.as_str() {
                    "plexusd" if ["cni-bin", "cni-conf"].contains(&m.name.as_str()) => {
                        PathBuf::from(host)
                    }
                    "plexusd" => continue,
                    _ => root.join(host.trim_start_matches('/')),
                };
                assert_eq!(
                    Path::new(&m.mount_path),
                    expected,
                    "{dir}: {} mounts {} elsewhere",
                    c.name,
                    m.name
                );
            }
            if c.name == "plexusd" {
                assert!(
                    c.command
                        .unwrap_or_default()
                        .contains(&format!("--config={conf}/00-plexus.conflist")),
                    "{dir}: plexusd must read the config the installer writes into {conf}"
                );
            }
        }
        assert_eq!(
            dir.contains("thick"),
            node.get("PLEXUS_MODE").map(String::as_str) == Some("thick"),
            "{dir}: the mode"
        );
        if dir != "." && dir != "thick" {
            assert!(
                docs.contains(&format!("`{bin}`")) && docs.contains(&format!("`{conf}`")),
                "docs/install.md has no host path row for {dir}"
            );
            assert!(
                docs.contains(&format!("deploy/{dir}")),
                "docs/install.md does not name {dir}"
            );
        }
    }
}

#[test]
fn the_uninstall_mode_uninstalls_on_every_node_and_stays_ready() {
    let ds = daemonset(&build("uninstall"));
    let pod = ds.spec.clone().unwrap().template.spec.unwrap();
    let init = &pod.init_containers.clone().unwrap()[0];
    let main = &pod.containers[0];
    let cmd = |c: &Container| c.command.clone().unwrap();
    assert_eq!(cmd(init)[1], "uninstall");
    assert_eq!(&cmd(main)[1..3], ["uninstall", "--then-wait"]);
    let cache = pod
        .volumes
        .unwrap()
        .into_iter()
        .find_map(|v| v.host_path.filter(|h| h.path == "/var/lib/cni/plexus"))
        .is_some();
    assert!(cache, "the cache dir is not mounted");
    assert!(
        init.volume_mounts
            .clone()
            .unwrap()
            .iter()
            .any(|m| m.mount_path == "/host/var/lib/cni/plexus")
    );
    // The probe's file is the one the main container touches when done, and never ages out.
    let probe = main
        .readiness_probe
        .clone()
        .unwrap()
        .exec
        .unwrap()
        .command
        .unwrap();
    assert!(
        probe.contains(&"--health-file=/run/plexus/health".to_owned()),
        "{probe:?}"
    );
    assert!(cmd(main).contains(&"--done-file=/run/plexus/health".to_owned()));
    // Same image and everything else as the install mode.
    let base = daemonset(&build("."));
    assert_eq!(
        containers(&base)
            .iter()
            .map(|c| c.image.clone())
            .collect::<Vec<_>>(),
        containers(&ds)
            .iter()
            .map(|c| c.image.clone())
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_crd_has_multus_names() {
    let crd: CustomResourceDefinition = one("apiextensions.k8s.io/v1/CustomResourceDefinition");
    let names = crd.spec.names;
    assert_eq!(
        names.singular.as_deref(),
        Some("network-attachment-definition")
    );
    let short: BTreeSet<String> = names.short_names.unwrap().into_iter().collect();
    assert_eq!(
        short,
        ["nad", "net-attach-def"]
            .map(str::to_owned)
            .into_iter()
            .collect()
    );
    assert_eq!(names.plural, "network-attachment-definitions");
    assert_eq!(crd.spec.group, "k8s.cni.cncf.io");
}

#[test]
fn the_image_build_context_excludes_target() {
    let root = deploy_dir().join("..");
    let ignore = std::fs::read_to_string(root.join(".containerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "{ignore}");
    assert_eq!(
        std::fs::read_to_string(root.join(".dockerignore")).unwrap(),
        ignore
    );
}

#[test]
fn every_installer_flag_is_documented() {
    let docs = std::fs::read_to_string(deploy_dir().join("../docs/install.md")).unwrap();
    for sub in ["install", "run", "uninstall", "health"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plexus-install"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        for word in help.split_whitespace() {
            let flag = word.trim_end_matches([',', '.']);
            let Some(name) = flag.strip_prefix("--") else {
                continue;
            };
            let name: String = name
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if name.is_empty() || name == "help" {
                continue;
            }
            assert!(
                docs.contains(&format!("`--{name}")),
                "`plexus-install {sub} --{name}` is not in docs/install.md"
            );
        }
    }
}

#[test]
fn the_token_role_allows_only_this_service_accounts_token() {
    let sa: ServiceAccount = one("v1/ServiceAccount");
    let role: Role = one("rbac.authorization.k8s.io/v1/Role");
    assert_eq!(role.metadata.namespace, sa.metadata.namespace);
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    let r = &rules[0];
    assert_eq!(r.api_groups.as_deref(), Some(&["".to_owned()][..]));
    assert_eq!(
        r.resources.as_deref(),
        Some(&["serviceaccounts/token".to_owned()][..])
    );
    assert_eq!(r.verbs, vec!["create"]);
    assert_eq!(
        r.resource_names.as_ref(),
        Some(&vec![sa.metadata.name.clone().unwrap()])
    );
    let b: RoleBinding = one("rbac.authorization.k8s.io/v1/RoleBinding");
    assert_eq!(b.role_ref.kind, "Role");
    assert_eq!(Some(b.role_ref.name), role.metadata.name);
    let s = &b.subjects.unwrap()[0];
    assert_eq!(
        (s.kind.as_str(), Some(&s.name)),
        ("ServiceAccount", sa.metadata.name.as_ref())
    );
}

// ------------------------------------------------------------------ thick mode (deploy/thick)

fn pod_spec(ds: &DaemonSet) -> k8s_openapi::api::core::v1::PodSpec {
    ds.spec.clone().unwrap().template.spec.unwrap()
}

fn container<'a>(pod: &'a k8s_openapi::api::core::v1::PodSpec, name: &str) -> &'a Container {
    pod.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The value of `--flag=value` in a command.
fn flag(c: &Container, name: &str) -> Option<String> {
    let prefix = format!("--{name}=");
    c.command
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix(&prefix).map(str::to_owned))
}

/// The host path that `path` reaches in container `c` through its hostPath mounts (the longest
/// mount prefix wins), if any.
fn host_path_of(
    pod: &k8s_openapi::api::core::v1::PodSpec,
    c: &Container,
    path: &str,
) -> Option<PathBuf> {
    let vols: BTreeMap<String, String> = pod
        .volumes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.host_path.map(|h| (v.name, h.path)))
        .collect();
    c.volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let rest = Path::new(path).strip_prefix(&m.mount_path).ok()?;
            let host = vols.get(&m.name)?;
            Some((m.mount_path.len(), Path::new(host).join(rest)))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, p)| p)
}

#[test]
fn thick_mode_writes_the_shim_config_and_installs_the_shim_with_everything_else() {
    let thin = build(".");
    let objs = build("thick");
    assert_eq!(config_map(&objs, "plexus-node")["PLEXUS_MODE"], "thick");
    assert!(!config_map(&thin, "plexus-node").contains_key("PLEXUS_MODE"));
    let (base, ds) = (daemonset(&thin), daemonset(&objs));
    let (base_pod, pod) = (pod_spec(&base), pod_spec(&ds));
    // Both installer containers read the mode from plexus-node (envFrom), so they agree.
    for c in pod
        .init_containers
        .iter()
        .flatten()
        .chain([container(&pod, "keeper")])
    {
        let from: Vec<String> = c
            .env_from
            .iter()
            .flatten()
            .filter_map(|e| e.config_map_ref.as_ref().map(|r| r.name.clone()))
            .collect();
        assert_eq!(from, vec!["plexus-node"], "{}", c.name);
    }
    // The init container installs what thin mode installs, with the shim instead of plexus.
    let binaries = |p: &k8s_openapi::api::core::v1::PodSpec| -> BTreeSet<String> {
        p.init_containers.as_ref().unwrap()[0]
            .command
            .iter()
            .flatten()
            .filter_map(|a| a.strip_prefix("--binary="))
            .map(|b| b.rsplit('/').next().unwrap().to_owned())
            .collect()
    };
    let mut want = binaries(&base_pod);
    assert!(want.remove("plexus"), "{want:?}");
    want.insert("plexus-shim".into());
    assert_eq!(binaries(&pod), want);
    let init_cmd = &pod.init_containers.as_ref().unwrap()[0]
        .command
        .clone()
        .unwrap();
    assert_eq!(init_cmd[1], "install");
    // The keeper is thin mode's, unchanged, and still needs no bin dir.
    let keeper = container(&pod, "keeper");
    assert_eq!(keeper, container(&base_pod, "keeper"));
}

#[test]
fn plexusd_reads_the_installers_config_listens_where_the_shim_looks_and_is_probed() {
    let objs = build("thick");
    let node = config_map(&objs, "plexus-node");
    let ds = daemonset(&objs);
    let pod = pod_spec(&ds);
    assert_eq!(pod.containers.len(), 2);
    let d = container(&pod, "plexusd");
    assert_eq!(d.command.as_ref().unwrap()[0], "/usr/local/bin/plexusd");
    // The same image as the installer (base's `images:` is the one place it is set).
    assert_eq!(d.image, container(&pod, "keeper").image);
    // --config is the installer's conflist (`--config-name` default), reached at its host path:
    // the host paths inside it (clusterNetwork, kubeconfig) then resolve in the container too.
    let conf_dir = &node["PLEXUS_CNI_CONF_DIR"];
    let config = flag(d, "config").expect("--config");
    assert_eq!(config, format!("{conf_dir}/00-plexus.conflist"));
    assert_eq!(host_path_of(&pod, d, &config), Some(PathBuf::from(&config)));
    // Delegates run chrooted into the host's root (their tools are not in the image), and pods'
    // netns mounts made after the daemon started must show inside it.
    let root = flag(d, "chroot-dir").expect("--chroot-dir");
    assert_eq!(host_path_of(&pod, d, &root), Some(PathBuf::from("/")));
    let mount = d
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == root)
        .expect("the chroot dir is a mount");
    assert_eq!(mount.mount_propagation.as_deref(), Some("HostToContainer"));
    assert_ne!(mount.read_only, Some(true), "delegates write host files");
    // The socket is where the shim config points by default, on the host.
    let socket = flag(d, "socket").expect("--socket");
    assert_eq!(socket, plexus_install::cniconf::DEFAULT_DAEMON_SOCKET);
    assert_eq!(host_path_of(&pod, d, &socket), Some(PathBuf::from(&socket)));
    // Probes: HTTP on the health address's port.
    let port: i32 = flag(d, "health-addr")
        .expect("--health-addr")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ports = d.ports.clone().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].container_port, port);
    for (probe, path) in [
        (&d.liveness_probe, "/healthz"),
        (&d.readiness_probe, "/readyz"),
    ] {
        let get = probe
            .clone()
            .expect("probe")
            .http_get
            .expect("httpGet probe");
        assert_eq!(get.path.as_deref(), Some(path));
        let target = serde_json::to_value(&get.port).unwrap();
        assert!(
            target == json!(port)
                || Some(target.as_str().unwrap_or("")) == ports[0].name.as_deref(),
            "{path} probes {target}"
        );
    }
    // Guaranteed QoS like the other containers; the node's name for the pod watch.
    let r = d.resources.clone().unwrap();
    assert_eq!(r.requests, r.limits);
    assert!(r.limits.unwrap().contains_key("memory"));
    assert!(d.env.iter().flatten().any(|e| {
        e.name == "NODE_NAME"
            && e.value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str())
                == Some("spec.nodeName")
    }));
    assert_eq!(ds.spec.unwrap().template.spec.unwrap().host_pid, Some(true));
}

#[test]
fn every_host_path_the_daemon_and_its_delegates_use_is_the_hosts() {
    // plexusd runs the delegates in its own container: each path the engine and the delegates
    // read or write by default must be the host's, at the same path (the shim's local DEL and
    // thin mode read the same cache and IPAM leases on the host).
    use plexus_engine::config as c;
    let pod = pod_spec(&daemonset(&build("thick")));
    let d = container(&pod, "plexusd");
    // On the host /var/run is a symlink to /run (FHS 3.0; every systemd distribution).
    let host = |p: &Path| -> PathBuf {
        p.strip_prefix("/var/run")
            .map_or_else(|_| p.to_path_buf(), |rest| Path::new("/run").join(rest))
    };
    for path in [
        c::DEFAULT_CNI_DIR,
        c::DEFAULT_BIN_DIR,
        c::DEFAULT_CONF_DIR,
        c::DEFAULT_POD_RESOURCES_SOCKET,
        c::DEFAULT_DEVICE_CHECKPOINT_FILE,
        c::DEFAULT_DEVICE_INFO_DIR,
        // host-local's default dataDir.
        "/var/lib/cni/networks",
        // Network namespaces as containerd and CRI-O name them, and as iproute2 does.
        "/var/run/netns/cni-0",
        "/run/netns/cni-0",
        // The dhcp IPAM plugin's daemon.
        "/run/cni/dhcp.sock",
    ] {
        assert_eq!(
            host_path_of(&pod, d, path).map(|p| host(&p)),
            Some(host(Path::new(path))),
            "{path} does not reach the host's {path} in plexusd"
        );
    }
}

/// (group, resource, verb) of every rule of the one ClusterRole among `objs`.
fn role_verbs(objs: &[Value]) -> BTreeSet<(String, String, String)> {
    let roles: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "ClusterRole").collect();
    assert_eq!(roles.len(), 1);
    let r: ClusterRole = serde_json::from_value(roles[0].clone()).unwrap();
    let mut got = BTreeSet::new();
    for r in r.rules.unwrap_or_default() {
        assert!(r.resource_names.is_none() && r.non_resource_urls.is_none());
        for g in r.api_groups.clone().unwrap_or_default() {
            for res in r.resources.clone().unwrap_or_default() {
                for v in &r.verbs {
                    got.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    got
}

/// Builds what an operator's own kustomization gives: `resources: [<deploy>/<base>]`,
/// `components: [<deploy>/components/<component>]`, written in a temporary directory with
/// relative paths (kustomize refuses absolute ones).
fn build_with_component(base: &str, component: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let deploy = deploy_dir().canonicalize().unwrap();
    let up = "../".repeat(dir.path().canonicalize().unwrap().components().count() - 1);
    let rel = |p: &str| {
        format!(
            "{up}{}",
            deploy.join(p).display().to_string().trim_start_matches('/')
        )
    };
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [{}]\ncomponents: [{}]\n",
            rel(base),
            rel(&format!("components/{component}"))
        ),
    )
    .unwrap();
    build_dir(dir.path())
}

#[test]
fn the_dra_component_adds_exactly_the_dra_reads() {
    let t = |g: &str, r: &str, v: &str| (g.to_owned(), r.to_owned(), v.to_owned());
    let dra: BTreeSet<_> = [
        // A pod's claims (by name), and the slices of this node and driver (a field selector that
        // RBAC cannot restrict: slices are cluster-scoped).
        t("resource.k8s.io", "resourceclaims", "get"),
        t("resource.k8s.io", "resourceslices", "list"),
    ]
    .into_iter()
    .collect();
    for base in [".", "thick", "overlays/k3s"] {
        let without = role_verbs(&build(base));
        assert!(without.is_disjoint(&dra), "{base}: {without:?}");
        let with = role_verbs(&build_with_component(base, "dra"));
        assert_eq!(
            with.difference(&without).cloned().collect::<BTreeSet<_>>(),
            dra,
            "{base}"
        );
        assert!(without.is_subset(&with), "{base}");
    }
}

#[test]
fn thick_rbac_adds_only_the_watches() {
    let role = role_verbs;
    let thin = role(&build("."));
    let thick = role(&build("thick"));
    let t = |g: &str, r: &str, v: &str| (g.to_owned(), r.to_owned(), v.to_owned());
    let added: BTreeSet<_> = thick.difference(&thin).cloned().collect();
    assert_eq!(
        added,
        [
            t("k8s.cni.cncf.io", "network-attachment-definitions", "list"),
            t("k8s.cni.cncf.io", "network-attachment-definitions", "watch"),
            t("", "pods", "list"),
            t("", "pods", "watch"),
        ]
        .into_iter()
        .collect()
    );
    assert!(thin.is_subset(&thick), "{:?}", thin.difference(&thick));
}

/// Paths of the final image (the `COPY` lines after the last `FROM` of deploy/Containerfile).
fn image_files() -> BTreeSet<String> {
    let text = std::fs::read_to_string(deploy_dir().join("Containerfile")).unwrap();
    let last_stage = text.rsplit("\nFROM ").next().unwrap();
    last_stage
        .lines()
        .filter(|l| l.starts_with("COPY "))
        .map(|l| l.split_whitespace().last().unwrap().to_owned())
        .collect()
}

#[test]
fn every_binary_a_daemonset_runs_or_installs_is_in_the_image() {
    let image = image_files();
    assert!(image.contains("/usr/local/bin/plexusd"), "{image:?}");
    for dir in BUILDS {
        let ds = daemonset(&build(dir));
        for c in containers(&ds) {
            let mut wanted: Vec<String> = c.command.clone().unwrap_or_default()[..1].to_vec();
            for probe in [&c.liveness_probe, &c.readiness_probe]
                .into_iter()
                .flatten()
            {
                if let Some(cmd) = probe.exec.as_ref().and_then(|e| e.command.clone()) {
                    wanted.push(cmd[0].clone());
                }
            }
            wanted.extend(
                c.command
                    .iter()
                    .flatten()
                    .filter_map(|a| a.strip_prefix("--binary="))
                    .map(str::to_owned),
            );
            for w in wanted {
                assert!(
                    image.contains(&w),
                    "{dir}: {} needs {w}, which deploy/Containerfile does not put in the image",
                    c.name
                );
            }
        }
    }
}

#[test]
fn the_device_plugin_runs_without_api_access_and_mounts_what_it_needs() {
    let objs = build("sriovdp");
    let ds = daemonset(&objs);
    assert_eq!(ds.metadata.namespace.as_deref(), Some("plexus-system"));
    let pod = ds.spec.clone().unwrap().template.spec.unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false), "no token");
    assert_eq!(pod.service_account_name, None);
    assert_eq!(
        pod.node_selector.clone().unwrap_or_default(),
        BTreeMap::from([
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
        ])
    );
    let c = &containers(&ds)[0];
    let image = c.image.clone().unwrap();
    assert!(
        image.starts_with("ghcr.io/") && image.contains(':'),
        "{image}"
    );
    assert_eq!(
        c.command.as_ref().unwrap()[0],
        "/usr/local/bin/plexus-sriovdp"
    );
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    // Every host path it uses, and read-only where it only reads.
    let mounts: BTreeMap<String, (String, bool)> = c
        .volume_mounts
        .clone()
        .unwrap()
        .into_iter()
        .map(|m| (m.name, (m.mount_path, m.read_only.unwrap_or(false))))
        .collect();
    let host: BTreeMap<String, String> = pod
        .volumes
        .clone()
        .unwrap()
        .into_iter()
        .filter_map(|v| Some((v.name, v.host_path?.path)))
        .collect();
    for (vol, path, ro) in [
        ("sys", "/sys", true),
        ("device-plugins", "/var/lib/kubelet/device-plugins", false),
        ("pod-resources", "/var/lib/kubelet/pod-resources", true),
        ("devinfo", "/var/run/k8s.cni.cncf.io/devinfo/dp", false),
    ] {
        assert_eq!(host[vol], path, "{vol}");
        assert_eq!(mounts[vol], (path.to_owned(), ro), "{vol}");
    }
    // The config the container reads is the ConfigMap's.
    assert_eq!(mounts["config"].0, "/etc/pcidp");
    assert!(
        c.command
            .as_ref()
            .unwrap()
            .contains(&"--config=/etc/pcidp/config.json".to_owned())
    );
    assert!(config_map(&objs, "plexus-sriovdp-config").contains_key("config.json"));
}
