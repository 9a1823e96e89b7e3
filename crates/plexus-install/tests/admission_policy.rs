//! Every CEL expression of deploy/base/admission-policy.yaml evaluated against allowed and denied
//! requests with a CEL interpreter (no API server runs here). The policy evaluates the way the API
//! server does: match conditions first (a request that matches none is not subject to the policy),
//! then the variables in order (visible as `variables.<name>`), then every validation; a false
//! validation or an evaluation error denies (`failurePolicy: Fail`).
//!
//! The expressions use only standard CEL (`has`, `all`, `in`, ternaries, `startsWith`/`endsWith`,
//! `size`, equality), which both the interpreter and Kubernetes support.

use cel_interpreter::{Context, Program, Value as Cel};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;

const KEY: &str = "k8s.v1.cni.cncf.io/network-status";
const NODE_CLAIM: &str = "authentication.kubernetes.io/node-name";

struct Policy {
    match_conditions: Vec<(String, Program)>,
    variables: Vec<(String, Program)>,
    /// (message, program)
    validations: Vec<(String, Program)>,
}

fn compile(expr: &str) -> Program {
    Program::compile(expr).unwrap_or_else(|e| panic!("cannot compile {expr:?}: {e:?}"))
}

fn load() -> Policy {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base/admission-policy.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let policy = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .find(|v| v["kind"] == "ValidatingAdmissionPolicy")
        .expect("a ValidatingAdmissionPolicy");
    let list = |key: &str, label: &str| -> Vec<(String, Program)> {
        policy["spec"][key]
            .as_array()
            .unwrap_or_else(|| panic!("spec.{key}"))
            .iter()
            .map(|x| {
                (
                    x[label].as_str().unwrap_or_default().to_owned(),
                    compile(x["expression"].as_str().unwrap()),
                )
            })
            .collect()
    };
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    Policy {
        match_conditions: list("matchConditions", "name"),
        variables: list("variables", "name"),
        validations: list("validations", "message"),
    }
}

fn cel(v: &Value) -> Cel {
    cel_interpreter::to_value(v).expect("JSON converts to CEL")
}

/// The outcome of the policy for one request.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// No match condition matched: the policy does not apply.
    NotMatched,
    Allowed,
    /// Denied by the validation with this message (or by an evaluation error, with its text).
    Denied(String),
}

impl Policy {
    fn evaluate(&self, request: &Value, object: &Value, old: &Value) -> Verdict {
        let mut ctx = Context::default();
        ctx.add_variable_from_value("request", cel(request));
        ctx.add_variable_from_value("object", cel(object));
        ctx.add_variable_from_value("oldObject", cel(old));
        for (name, p) in &self.match_conditions {
            match p.execute(&ctx) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => return Verdict::NotMatched,
                other => return Verdict::Denied(format!("match condition {name}: {other:?}")),
            }
        }
        let mut vars: HashMap<String, Cel> = HashMap::new();
        for (name, p) in &self.variables {
            ctx.add_variable_from_value("variables", Cel::from(vars.clone()));
            match p.execute(&ctx) {
                Ok(v) => {
                    vars.insert(name.clone(), v);
                }
                Err(e) => return Verdict::Denied(format!("variable {name}: {e:?}")),
            }
        }
        ctx.add_variable_from_value("variables", Cel::from(vars));
        for (message, p) in &self.validations {
            match p.execute(&ctx) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => return Verdict::Denied(message.clone()),
                other => return Verdict::Denied(format!("{message}: evaluation error {other:?}")),
            }
        }
        Verdict::Allowed
    }
}

/// A request by `username` whose token carries `extra`.
fn request(username: &str, extra: Option<Value>) -> Value {
    let mut user =
        json!({"username": username, "groups": ["system:serviceaccounts", "system:authenticated"]});
    if let Some(e) = extra {
        user["extra"] = e;
    }
    json!({"operation": "UPDATE", "subResource": "status", "userInfo": user})
}

fn plexus_on(node: &str) -> Value {
    request(
        "system:serviceaccount:plexus-system:plexus",
        Some(
            json!({NODE_CLAIM: [node], "authentication.kubernetes.io/pod-name": ["plexus-abcde"]}),
        ),
    )
}

fn pod(node: Option<&str>) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web-0", "namespace": "blue", "uid": "u-1",
            "labels": {"app": "web"},
            "annotations": {"k8s.v1.cni.cncf.io/networks": "macvlan-a", "team": "blue"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "s-1"}]
        },
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        "status": {"phase": "Pending"}
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

/// `pod` with the network-status annotation set, as the plugin's patch does.
fn with_status(p: &Value) -> Value {
    let mut p = p.clone();
    p["metadata"]["annotations"][KEY] = json!("[{\"name\":\"cluster\"}]");
    p
}

fn edited(p: &Value, f: impl FnOnce(&mut Value)) -> Value {
    let mut p = p.clone();
    f(&mut p);
    p
}

#[test]
fn every_expression_compiles_and_the_plugins_own_patch_is_allowed() {
    let policy = load();
    assert_eq!(policy.match_conditions.len(), 1);
    assert!(
        policy.validations.len() >= 8,
        "{}",
        policy.validations.len()
    );
    let old = pod(Some("node-1"));
    assert_eq!(
        policy.evaluate(&plexus_on("node-1"), &with_status(&old), &old),
        Verdict::Allowed
    );
    // Rewriting an existing status, and a pod without any annotations before.
    let old2 = with_status(&old);
    let new2 = edited(&old2, |p| p["metadata"]["annotations"][KEY] = json!("[]"));
    assert_eq!(
        policy.evaluate(&plexus_on("node-1"), &new2, &old2),
        Verdict::Allowed
    );
    let bare = edited(&old, |p| {
        p["metadata"].as_object_mut().unwrap().remove("annotations");
        p["metadata"].as_object_mut().unwrap().remove("labels");
    });
    assert_eq!(
        policy.evaluate(&plexus_on("node-1"), &with_status(&bare), &bare),
        Verdict::Allowed
    );
}

#[test]
fn the_plexus_identity_is_matched_in_any_namespace_and_nobody_else_is() {
    let policy = load();
    let old = pod(Some("node-1"));
    let foreign = with_status(&old);
    // A kustomize namespace override, or a namePrefix, keeps the identity under the policy.
    for user in [
        "system:serviceaccount:plexus-system:plexus",
        "system:serviceaccount:networking:plexus",
        "system:serviceaccount:kube-system:prod-plexus",
    ] {
        let v = policy.evaluate(&request(user, None), &foreign, &old);
        assert!(matches!(v, Verdict::Denied(_)), "{user}: {v:?}");
    }
    for user in [
        "system:node:node-1",
        "system:serviceaccount:plexus-system:plexus-install",
        "system:serviceaccount:plexus-system:plexusx",
        "plexus",
        "system:kube-scheduler",
    ] {
        assert_eq!(
            policy.evaluate(&request(user, None), &foreign, &old),
            Verdict::NotMatched,
            "{user}"
        );
    }
}

#[test]
fn a_token_without_the_node_claim_may_change_nothing() {
    let policy = load();
    let old = pod(Some("node-1"));
    let new = with_status(&old);
    let sa = "system:serviceaccount:plexus-system:plexus";
    for extra in [
        None,
        Some(json!({})),
        Some(json!({"authentication.kubernetes.io/pod-name": ["x"]})),
        Some(json!({NODE_CLAIM: []})),
        Some(json!({NODE_CLAIM: ["node-1", "node-2"]})),
    ] {
        let v = policy.evaluate(&request(sa, extra.clone()), &new, &old);
        assert_eq!(
            v,
            Verdict::Denied("the plexus identity must use a node-bound token (claim authentication.kubernetes.io/node-name)".into()),
            "{extra:?}"
        );
    }
}

#[test]
fn only_pods_of_the_tokens_own_node() {
    let policy = load();
    for old in [pod(Some("node-2")), pod(None)] {
        assert_eq!(
            policy.evaluate(&plexus_on("node-1"), &with_status(&old), &old),
            Verdict::Denied("plexus may change only pods bound to its own node".into()),
            "{}",
            old["spec"]
        );
    }
}

#[test]
fn nothing_but_the_network_status_annotation_may_change() {
    let policy = load();
    let old = pod(Some("node-1"));
    let base = with_status(&old);
    let cases: Vec<(&str, Value)> = vec![
        (
            "plexus may change only the k8s.v1.cni.cncf.io/network-status annotation",
            edited(&base, |p| {
                p["metadata"]["annotations"]["team"] = json!("red")
            }),
        ),
        (
            "plexus may change only the k8s.v1.cni.cncf.io/network-status annotation",
            edited(&base, |p| p["metadata"]["annotations"]["new"] = json!("x")),
        ),
        (
            "plexus may change only the k8s.v1.cni.cncf.io/network-status annotation",
            edited(&base, |p| {
                drop(
                    p["metadata"]["annotations"]
                        .as_object_mut()
                        .unwrap()
                        .remove("team"),
                )
            }),
        ),
        (
            "plexus may not change pod labels",
            edited(&base, |p| p["metadata"]["labels"]["app"] = json!("db")),
        ),
        (
            "plexus may not change pod labels",
            edited(&base, |p| {
                drop(p["metadata"].as_object_mut().unwrap().remove("labels"))
            }),
        ),
        (
            "plexus may not change pod finalizers",
            edited(&base, |p| {
                p["metadata"]["finalizers"] = json!(["example.com/hold"])
            }),
        ),
        (
            "plexus may not change pod owner references",
            edited(&base, |p| p["metadata"]["ownerReferences"] = json!([])),
        ),
        (
            "plexus may not change the pod spec",
            edited(&base, |p| {
                p["spec"]["containers"][0]["image"] = json!("evil")
            }),
        ),
        (
            "plexus may not change pod status fields",
            edited(&base, |p| p["status"]["phase"] = json!("Running")),
        ),
        (
            "plexus may not change pod status fields",
            edited(&base, |p| p["status"]["podIP"] = json!("10.0.0.9")),
        ),
    ];
    for (want, new) in cases {
        assert_eq!(
            policy.evaluate(&plexus_on("node-1"), &new, &old),
            Verdict::Denied(want.into()),
            "{new}"
        );
    }
}
