//! The resources the fake API server serves and how request paths map onto them.
//!
//! Only what Plexus touches is modelled (pods, NADs, events, DRA ResourceClaims and
//! ResourceSlices); everything else is a 404 with a real `Status` body, which is what a client sees
//! on a cluster where a resource is not installed.

/// A served resource type. All but ResourceSlices are namespaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// core/v1 `pods` (with the `status` subresource).
    Pods,
    /// `k8s.cni.cncf.io/v1` `network-attachment-definitions`.
    Nads,
    /// core/v1 `events`.
    Events,
    /// `events.k8s.io/v1` `events`.
    EventsV1,
    /// `resource.k8s.io/v1` `resourceclaims` (DRA).
    ResourceClaims,
    /// `resource.k8s.io/v1` `resourceslices` (DRA; cluster-scoped).
    ResourceSlices,
}

impl Resource {
    pub const ALL: [Resource; 6] = [
        Resource::Pods,
        Resource::Nads,
        Resource::Events,
        Resource::EventsV1,
        Resource::ResourceClaims,
        Resource::ResourceSlices,
    ];

    /// False for cluster-scoped resources (stored under the namespace `""`).
    pub fn namespaced(self) -> bool {
        self != Resource::ResourceSlices
    }

    /// API group ("" for core).
    pub fn group(self) -> &'static str {
        match self {
            Resource::Pods | Resource::Events => "",
            Resource::Nads => "k8s.cni.cncf.io",
            Resource::EventsV1 => "events.k8s.io",
            Resource::ResourceClaims | Resource::ResourceSlices => "resource.k8s.io",
        }
    }

    pub fn version(self) -> &'static str {
        "v1"
    }

    /// `apiVersion` as written in objects.
    pub fn api_version(self) -> &'static str {
        match self {
            Resource::Pods | Resource::Events => "v1",
            Resource::Nads => "k8s.cni.cncf.io/v1",
            Resource::EventsV1 => "events.k8s.io/v1",
            Resource::ResourceClaims | Resource::ResourceSlices => "resource.k8s.io/v1",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Resource::Pods => "Pod",
            Resource::Nads => "NetworkAttachmentDefinition",
            Resource::Events | Resource::EventsV1 => "Event",
            Resource::ResourceClaims => "ResourceClaim",
            Resource::ResourceSlices => "ResourceSlice",
        }
    }

    pub fn list_kind(self) -> String {
        format!("{}List", self.kind())
    }

    /// The URL plural.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::Nads => "network-attachment-definitions",
            Resource::Events | Resource::EventsV1 => "events",
            Resource::ResourceClaims => "resourceclaims",
            Resource::ResourceSlices => "resourceslices",
        }
    }

    /// `plural.group` as the real server prints it in messages (`pods`, `network-attachment-definitions.k8s.cni.cncf.io`).
    pub fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            g => format!("{}.{g}", self.plural()),
        }
    }

    /// The etcd key the real server would use (it appears in some error messages).
    pub fn storage_key(self, ns: &str, name: &str) -> String {
        match self.group() {
            "" => format!("/registry/{}/{ns}/{name}", self.plural()),
            g => format!("/registry/{g}/{}/{ns}/{name}", self.plural()),
        }
    }

    /// Subresources that exist for this resource.
    pub fn has_subresource(self, sub: &str) -> bool {
        matches!((self, sub), (Resource::Pods, "status"))
    }

    /// Field labels the real server accepts in `fieldSelector` for this resource.
    pub fn supports_field(self, field: &str) -> bool {
        const META: [&str; 2] = ["metadata.name", "metadata.namespace"];
        const POD: [&str; 9] = [
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
            "spec.nodeSelector",
        ];
        // The real server's ResourceSlice field selectors.
        const SLICE: [&str; 3] = ["spec.nodeName", "spec.driver", "spec.pool.name"];
        META.contains(&field)
            || (self == Resource::Pods && POD.contains(&field))
            || (self == Resource::ResourceSlices && SLICE.contains(&field))
    }

    /// Finds the resource served at `group/version/plural`.
    pub fn from_path(group: &str, version: &str, plural: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| r.group() == group && r.version() == version && r.plural() == plural)
    }

    /// Finds the resource of an object by its `apiVersion` and `kind`.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| r.api_version() == api_version && r.kind() == kind)
    }
}

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A collection: list, watch or create. `ns` is `None` for the all-namespaces path.
    Collection {
        res: Resource,
        ns: Option<String>,
    },
    /// One object, or one of its subresources.
    Object {
        res: Resource,
        ns: String,
        name: String,
        sub: Option<String>,
    },
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/api/v1` or `/apis/<group>/<version>`
    ResourceList {
        group: String,
        version: String,
    },
}

impl Route {
    /// Maps a request path to a route; `None` is a 404.
    pub fn parse(path: &str) -> Option<Route> {
        let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let (group, version, rest) = match segs.as_slice() {
            ["version"] => return Some(Route::Version),
            ["healthz"] | ["livez"] | ["readyz"] => return Some(Route::Health),
            ["api"] => return Some(Route::CoreVersions),
            ["apis"] => return Some(Route::Groups),
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return None,
        };
        let known_gv = Resource::ALL
            .iter()
            .any(|r| r.group() == group && r.version() == version);
        if !known_gv {
            return None;
        }
        let lookup = |plural: &str| Resource::from_path(group, version, plural);
        match rest {
            [] => Some(Route::ResourceList {
                group: group.to_owned(),
                version: version.to_owned(),
            }),
            [plural] => Some(Route::Collection {
                res: lookup(plural)?,
                ns: None,
            }),
            [plural, name] => {
                let res = lookup(plural).filter(|r| !r.namespaced())?;
                Some(Route::Object {
                    res,
                    ns: String::new(),
                    name: (*name).to_owned(),
                    sub: None,
                })
            }
            ["namespaces", ns, plural] => Some(Route::Collection {
                res: lookup(plural)?,
                ns: Some((*ns).to_owned()),
            }),
            ["namespaces", ns, plural, name] => Some(Route::Object {
                res: lookup(plural)?,
                ns: (*ns).to_owned(),
                name: (*name).to_owned(),
                sub: None,
            }),
            ["namespaces", ns, plural, name, sub] => {
                let res = lookup(plural)?;
                res.has_subresource(sub).then(|| Route::Object {
                    res,
                    ns: (*ns).to_owned(),
                    name: (*name).to_owned(),
                    sub: Some((*sub).to_owned()),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_paths_plexus_uses() {
        assert_eq!(
            Route::parse("/api/v1/namespaces/blue/pods/p1/status"),
            Some(Route::Object {
                res: Resource::Pods,
                ns: "blue".into(),
                name: "p1".into(),
                sub: Some("status".into())
            })
        );
        assert_eq!(
            Route::parse("/apis/k8s.cni.cncf.io/v1/network-attachment-definitions"),
            Some(Route::Collection {
                res: Resource::Nads,
                ns: None
            })
        );
        assert_eq!(
            Route::parse(
                "/apis/k8s.cni.cncf.io/v1/namespaces/a/network-attachment-definitions/x/status"
            ),
            None
        );
        assert_eq!(Route::parse("/api/v1/namespaces/a/secrets/x"), None);
        assert_eq!(Route::parse("/apis/apps/v1"), None);
        assert_eq!(
            Resource::Nads.qualified(),
            "network-attachment-definitions.k8s.cni.cncf.io"
        );
    }
}
