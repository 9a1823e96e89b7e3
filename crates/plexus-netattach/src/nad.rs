//! The `NetworkAttachmentDefinition` custom resource (NPWG v1.3 §3).
//!
//! The object carries only `spec.config`: a CNI config or conflist as a JSON *string*. It stays a
//! string here on purpose: the spec allows it to be absent (then the plugin falls back to on-disk
//! configs with the NAD's name) and to omit `name`, so interpreting it belongs to the engine, which
//! also knows the on-disk configs.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Spec of a `NetworkAttachmentDefinition` (`k8s.cni.cncf.io/v1`, namespaced, short names
/// `net-attach-def` and `nad`, singular `network-attachment-definition`: Multus's names).
#[derive(
    CustomResource, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    singular = "network-attachment-definition",
    shortname = "net-attach-def",
    shortname = "nad",
    namespaced
)]
pub struct NetworkAttachmentDefinitionSpec {
    /// A JSON CNI config or conflist, kept verbatim. `None` means "use the on-disk config whose
    /// `name` equals this NAD's name" (§3.4.1); a config without `name` gets the NAD's name
    /// injected by the delegating plugin (§3.4.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::{CustomResourceExt, Resource};

    #[test]
    fn crd_has_npwg_group_names_and_scope() {
        let crd = NetworkAttachmentDefinition::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("network-attachment-definitions.k8s.cni.cncf.io")
        );
        assert_eq!(crd.spec.group, "k8s.cni.cncf.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "NetworkAttachmentDefinition");
        assert_eq!(crd.spec.names.plural, "network-attachment-definitions");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["net-attach-def".to_string(), "nad".to_string()][..])
        );
        assert_eq!(
            crd.spec.names.singular.as_deref(),
            Some("network-attachment-definition")
        );
        assert_eq!(crd.spec.versions.len(), 1);
        assert_eq!(crd.spec.versions[0].name, "v1");
        assert_eq!(
            NetworkAttachmentDefinition::api_version(&()),
            "k8s.cni.cncf.io/v1"
        );
    }

    #[test]
    fn config_is_optional_in_json() {
        let nad: NetworkAttachmentDefinition = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "macvlan-conf", "namespace": "blue"},
            "spec": {}
        }))
        .unwrap();
        assert_eq!(nad.spec.config, None);
        let back = serde_json::to_value(&nad).unwrap();
        assert_eq!(back["spec"], serde_json::json!({}));
    }

    #[test]
    fn config_string_round_trips() {
        let config = r#"{"cniVersion":"1.0.0","type":"macvlan","master":"eth0"}"#;
        let nad = NetworkAttachmentDefinition::new(
            "macvlan-conf",
            NetworkAttachmentDefinitionSpec {
                config: Some(config.to_string()),
            },
        );
        let value = serde_json::to_value(&nad).unwrap();
        assert_eq!(value["spec"]["config"], config);
        let parsed: NetworkAttachmentDefinition = serde_json::from_value(value).unwrap();
        assert_eq!(parsed.spec, nad.spec);
    }
}
