//! Metadata-only answers (`PartialObjectMetadata`), as the real server gives them to a client
//! whose `Accept` header asks `application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`
//! (for a get, a watch, or the object a patch or an update answers with) or
//! `...;as=PartialObjectMetadataList;...` (for a list): the object's `metadata` only, under
//! `kind`/`apiVersion` of `meta.k8s.io/v1`. Plexus's node daemon watches pods this way, and
//! Plexus asks for the status PATCH's answer this way. A transformation the request asks for but that does not fit it (a list asked
//! for as a single object) is `406 Not Acceptable` unless the header also accepts plain JSON,
//! as on the real server.

use super::status::ApiError;
use serde_json::{Value, json};

const GROUP: &str = "meta.k8s.io";
const OBJECT: &str = "PartialObjectMetadata";
const LIST: &str = "PartialObjectMetadataList";

/// What a request's `Accept` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Whole objects.
    Full,
    /// `PartialObjectMetadata` (lists: `PartialObjectMetadataList`).
    Metadata,
}

/// Reads `accept` for a request that answers a list (`list`) or objects (a get, a watch).
pub fn view(accept: &str, list: bool) -> Result<View, ApiError> {
    let want = if list { LIST } else { OBJECT };
    let mut plain = false;
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let ty = parts.next().unwrap_or_default();
        if ty != "application/json" && ty != "*/*" && ty != "application/*" {
            continue;
        }
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let get = |k: &str| params.iter().find(|(pk, _)| *pk == k).map(|(_, v)| *v);
        match get("as") {
            None => plain = true,
            Some(a) if a == want && get("g") == Some(GROUP) && get("v") == Some("v1") => {
                return Ok(View::Metadata);
            }
            Some(_) => {}
        }
    }
    if plain || accept.trim().is_empty() {
        Ok(View::Full)
    } else {
        Err(ApiError::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: application/json, application/json;as={want};g={GROUP};v=v1"
            ),
        ))
    }
}

/// An object as `PartialObjectMetadata`.
pub fn object(obj: &Value) -> Value {
    json!({"kind": OBJECT, "apiVersion": format!("{GROUP}/v1"), "metadata": obj["metadata"]})
}

/// A single object as `view` asks for it.
pub fn as_viewed(obj: Value, view: View) -> Value {
    match view {
        View::Full => obj,
        View::Metadata => object(&obj),
    }
}

/// A list as `PartialObjectMetadataList`.
pub fn list(l: &Value) -> Value {
    let items: Vec<Value> = l["items"]
        .as_array()
        .map(|a| a.iter().map(object).collect())
        .unwrap_or_default();
    json!({"kind": LIST, "apiVersion": format!("{GROUP}/v1"), "metadata": l["metadata"], "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_as_kube_and_kubectl_send_them() {
        let kube_get = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
        let kube_list = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        assert_eq!(view(kube_get, false).unwrap(), View::Metadata);
        assert_eq!(view(kube_list, true).unwrap(), View::Metadata);
        assert_eq!(view("application/json", true).unwrap(), View::Full);
        assert_eq!(view("", false).unwrap(), View::Full);
        // The wrong kind for the request: 406, unless plain JSON is acceptable too.
        assert_eq!(view(kube_get, true).unwrap_err().code, 406);
        assert_eq!(
            view(&format!("{kube_get}, application/json"), true).unwrap(),
            View::Full
        );
    }

    #[test]
    fn only_metadata_is_kept() {
        let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "uid": "u"}, "spec": {"nodeName": "n"}});
        assert_eq!(
            object(&pod),
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "p", "uid": "u"}})
        );
        let l =
            list(&json!({"kind": "PodList", "metadata": {"resourceVersion": "7"}, "items": [pod]}));
        assert_eq!(l["kind"], "PartialObjectMetadataList");
        assert_eq!(l["metadata"]["resourceVersion"], "7");
        assert_eq!(l["items"][0]["metadata"]["name"], "p");
        assert!(l["items"][0].get("spec").is_none());
    }
}
