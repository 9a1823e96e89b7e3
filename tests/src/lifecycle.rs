//! One helper per step of a pod sandbox's lifecycle on the e2e [`Bed`]: the sandboxes a test
//! needs (a pod with annotations, a pod the API server does not have, another container ID), the
//! macvlan NAD most of them select, and the calls a runtime makes for them (CHECK, one DEL, the
//! DEL after the netns is gone). Tests say `bed.del(&sb, &config)` instead of spelling out the
//! seven values of the CNI environment, so that what a test varies stands out from what every
//! call repeats.
//!
//! ADD and containerd's pair of DELs are [`Bed::add`] and [`Bed::teardown`] in [`crate::bed`].

use crate::bed::{Bed, Sandbox, cid};
use crate::cni::Outcome;
use crate::netns::NetNs;
use serde_json::Value;

impl Sandbox {
    /// This sandbox under container ID `cid`: the runtime's next sandbox of the same pod in the
    /// same netns (a retried RunPodSandbox), or a test that names the ID itself.
    pub fn with_cid(mut self, cid: impl Into<String>) -> Self {
        self.cid = cid.into();
        self
    }
}

impl Bed {
    /// Creates NAD `namespace/name`: macvlan on the node's master with host-local IPAM in
    /// `subnet` (the network most sandboxes of these tests select).
    pub fn macvlan_nad(&self, namespace: &str, name: &str, subnet: &str) {
        self.nad(namespace, name, &self.node.macvlan_config(name, subnet));
    }

    /// Creates pod `namespace/pod` with these annotations, a netns and a container ID for its
    /// sandbox ([`Bed::sandbox`] for pods with only a selection annotation).
    pub fn sandbox_annotated(&self, namespace: &str, pod: &str, annotations: Value) -> Sandbox {
        let uid = self.pod_annotated(namespace, pod, annotations);
        self.sandbox_without_pod(namespace, pod, &uid)
    }

    /// A sandbox of pod `namespace/pod` whose `K8S_POD_UID` is `uid` (may be empty), without
    /// creating the pod: for pods the API server does not have (deleted, never created), a static
    /// pod whose kubelet UID differs from its mirror's, or a pod the test created itself.
    pub fn sandbox_without_pod(&self, namespace: &str, pod: &str, uid: &str) -> Sandbox {
        Sandbox {
            ns: NetNs::new("pxf").expect("netns"),
            cid: cid(pod),
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            uid: uid.to_owned(),
        }
    }

    /// `command` (ADD, CHECK, DEL) on the sandbox, with its netns, as the runtime sends it.
    pub fn verb_on(&self, command: &str, sb: &Sandbox, config: &Value) -> Outcome {
        self.call(
            command,
            &sb.cid,
            Some(sb.ns.path()),
            &sb.namespace,
            &sb.pod,
            &sb.uid,
            config,
        )
    }

    /// CHECK of the sandbox.
    pub fn check(&self, sb: &Sandbox, config: &Value) -> Outcome {
        self.verb_on("CHECK", sb, config)
    }

    /// One DEL of the sandbox with its netns (StopPodSandbox's, without a `prevResult`).
    pub fn del(&self, sb: &Sandbox, config: &Value) -> Outcome {
        self.verb_on("DEL", sb, config)
    }

    /// The DEL of a sandbox whose netns is gone: `CNI_NETNS` empty (RemovePodSandbox's).
    pub fn del_without_netns(&self, sb: &Sandbox, config: &Value) -> Outcome {
        self.call(
            "DEL",
            &sb.cid,
            None,
            &sb.namespace,
            &sb.pod,
            &sb.uid,
            config,
        )
    }
}
