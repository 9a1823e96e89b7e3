//! Static pods: the kubelet runs them from files (or a URL) and gives the runtime the static pod's
//! own UID, while the API server holds a *mirror* pod of the same name with a UID of its own. The
//! network-status patch is guarded by a UID, so it must name the mirror's, on every path: after a
//! pod GET, and when the runtime supplied the pod's annotations and no GET was made.

use crate::api::{ApiError, KubeApi};
use crate::error::EngineError;
use crate::resolve::PodRef;
use std::collections::BTreeMap;

/// Set by the kubelet on a mirror pod (the value is the static pod's config hash).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Set by the kubelet on every pod: `api` for pods from the API server, `file`/`http` for static
/// pods. Copied to the mirror, and passed to the runtime with the pod's other annotations.
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// True for a static pod as the kubelet describes it to the runtime (Multus's test).
pub fn is_static(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(CONFIG_SOURCE_ANNOTATION)
        .is_some_and(|s| s != "api")
}

/// True for the API server's mirror of a static pod.
pub fn is_mirror(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(MIRROR_ANNOTATION) || is_static(annotations)
}

/// With annotations the runtime supplied: for a static pod, one GET of its mirror to learn the
/// UID that guards the status patch (`None` for other pods, and when there is no API server).
/// A mirror that is not there yet (the kubelet creates it asynchronously) is "try again later";
/// a pod of that name that is not a mirror is a UID mismatch.
pub fn mirror_uid(
    kube: Option<&dyn KubeApi>,
    pod: &PodRef,
    runtime_annotations: &BTreeMap<String, String>,
) -> Result<Option<String>, EngineError> {
    let (true, Some(kube)) = (is_static(runtime_annotations), kube) else {
        return Ok(None);
    };
    let info = match kube.get_pod(&pod.namespace, &pod.name) {
        Ok(info) => info,
        Err(ApiError::NotFound { .. }) => {
            return Err(EngineError::PodNotFound {
                pod: format!("{pod} (static; its mirror pod)"),
                tries: 1,
            });
        }
        Err(source) => {
            return Err(EngineError::Api {
                pod: pod.to_string(),
                what: "get the mirror pod of a static pod".into(),
                source,
            });
        }
    };
    if info.uid == pod.uid || pod.uid.is_empty() {
        return Ok(None);
    }
    if !is_mirror(&info.annotations) {
        return Err(EngineError::PodUidMismatch {
            pod: pod.to_string(),
            expected: pod.uid.clone(),
            actual: info.uid,
        });
    }
    tracing::info!(pod = %pod, runtime_uid = %pod.uid, api_uid = %info.uid, "static pod: using the mirror pod's UID");
    Ok(Some(info.uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn static_and_mirror_pods_are_recognised() {
        assert!(is_static(&ann(&[(CONFIG_SOURCE_ANNOTATION, "file")])));
        assert!(is_static(&ann(&[(CONFIG_SOURCE_ANNOTATION, "http")])));
        assert!(!is_static(&ann(&[(CONFIG_SOURCE_ANNOTATION, "api")])));
        assert!(!is_static(&ann(&[])));
        assert!(is_mirror(&ann(&[(MIRROR_ANNOTATION, "hash")])));
        assert!(!is_mirror(&ann(&[("other", "x")])));
    }

    #[test]
    fn no_lookup_for_ordinary_pods_or_without_an_api() {
        let pod = PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
        };
        assert_eq!(mirror_uid(None, &pod, &ann(&[])).unwrap(), None);
        assert_eq!(
            mirror_uid(None, &pod, &ann(&[(CONFIG_SOURCE_ANNOTATION, "file")])).unwrap(),
            None
        );
    }
}
