//! The patch formats the API server accepts, applied to a stored object.
//!
//! * `application/merge-patch+json`: RFC 7386.
//! * `application/strategic-merge-patch+json`: applied as a merge patch. This is exact for the
//!   maps Plexus patches (`metadata.annotations`, `metadata.labels`) but ignores strategic merge
//!   keys (`$patch`, `$retainKeys`, merging lists by key): lists are replaced whole.
//! * `application/json-patch+json`: RFC 6902 `add`, `remove`, `replace`, `test`, `move`, `copy`
//!   with RFC 6901 pointers (`~0`, `~1` escapes, array indices and `-`).

use serde_json::{Map, Value};

/// Patch content types the server understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
}

impl PatchType {
    /// Parses a `Content-Type` header value (parameters such as `charset` are ignored).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/json-patch+json" => Some(PatchType::Json),
            _ => None,
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (400).
    #[error("{0}")]
    Malformed(String),
    /// The patch is well formed but does not apply to this object (422).
    #[error("{0}")]
    Failed(String),
}

/// Applies `patch` of type `ty` to `target` in place.
pub fn apply(ty: PatchType, target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    match ty {
        PatchType::Merge | PatchType::Strategic => {
            if !patch.is_object() {
                return Err(PatchError::Malformed(
                    "merge patch must be a JSON object".into(),
                ));
            }
            merge_patch(target, patch);
            Ok(())
        }
        PatchType::Json => json_patch(target, patch),
    }
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// RFC 6902 JSON patch. Operations apply in order on a copy; on failure `target` is untouched.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), PatchError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| PatchError::Malformed("json patch must be a JSON array".into()))?;
    let mut doc = target.clone();
    for op in ops {
        let field = |name: &str| -> Result<&str, PatchError> {
            op.get(name).and_then(Value::as_str).ok_or_else(|| {
                PatchError::Malformed(format!("json patch operation {op} has no string {name:?}"))
            })
        };
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                PatchError::Malformed(format!("json patch operation {op} has no \"value\""))
            })
        };
        let path = parse_pointer(field("path")?)?;
        match field("op")? {
            "add" => add(&mut doc, &path, value()?)?,
            "remove" => {
                remove(&mut doc, &path)?;
            }
            "replace" => {
                remove(&mut doc, &path)?;
                add(&mut doc, &path, value()?)?;
            }
            "test" => {
                let want = value()?;
                let got = get(&doc, &path).ok_or_else(|| {
                    PatchError::Failed(format!(
                        "test failed: {} does not exist",
                        field("path").unwrap_or_default()
                    ))
                })?;
                if *got != want {
                    return Err(PatchError::Failed(format!(
                        "test failed: {} is {got}, not {want}",
                        field("path")?
                    )));
                }
            }
            "move" => {
                let from = parse_pointer(field("from")?)?;
                let v = remove(&mut doc, &from)?;
                add(&mut doc, &path, v)?;
            }
            "copy" => {
                let from = parse_pointer(field("from")?)?;
                let v = get(&doc, &from).cloned().ok_or_else(|| {
                    PatchError::Failed(format!(
                        "copy from missing path {}",
                        field("from").unwrap_or_default()
                    ))
                })?;
                add(&mut doc, &path, v)?;
            }
            other => {
                return Err(PatchError::Malformed(format!(
                    "unknown json patch operation {other:?}"
                )));
            }
        }
    }
    *target = doc;
    Ok(())
}

/// RFC 6901: `""` is the whole document, otherwise `/`-separated tokens with `~1` = `/`, `~0` = `~`.
fn parse_pointer(p: &str) -> Result<Vec<String>, PatchError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(PatchError::Malformed(format!(
            "json pointer {p:?} must start with '/'"
        )));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn index(token: &str, len: usize, allow_end: bool) -> Result<usize, PatchError> {
    if token == "-" && allow_end {
        return Ok(len);
    }
    let i: usize = token
        .parse()
        .map_err(|_| PatchError::Failed(format!("invalid array index {token:?}")))?;
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if i > max || (!allow_end && len == 0) {
        return Err(PatchError::Failed(format!("array index {i} out of bounds")));
    }
    Ok(i)
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |cur, t| match cur {
        Value::Object(m) => m.get(t),
        Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn parent<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for t in path {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError::Failed(format!("missing path: /{}", path.join("/"))))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &[String], v: Value) -> Result<(), PatchError> {
    let Some((last, init)) = path.split_last() else {
        *doc = v;
        return Ok(());
    };
    match parent(doc, init)? {
        Value::Object(m) => {
            m.insert(last.clone(), v);
        }
        Value::Array(a) => {
            let i = index(last, a.len(), true)?;
            a.insert(i, v);
        }
        _ => {
            return Err(PatchError::Failed(format!(
                "cannot add /{}: parent is not a container",
                path.join("/")
            )));
        }
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, PatchError> {
    let Some((last, init)) = path.split_last() else {
        return Ok(std::mem::take(doc));
    };
    let missing = || PatchError::Failed(format!("missing path: /{}", path.join("/")));
    match parent(doc, init)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i = index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        merge_patch(&mut t, &json!({"a": [3], "n": {"x": null, "y": 1}}));
        assert_eq!(t, json!({"a": [3], "n": {"y": 1}}));
    }

    #[test]
    fn json_patch_handles_escaped_annotation_keys() {
        let mut t = json!({"metadata": {"annotations": {"old": "1"}}});
        json_patch(
            &mut t,
            &json!([
                {"op": "test", "path": "/metadata/annotations/old", "value": "1"},
                {"op": "add", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1network-status", "value": "[]"},
                {"op": "replace", "path": "/metadata/annotations/old", "value": "2"},
                {"op": "copy", "from": "/metadata/annotations/old", "path": "/metadata/annotations/copy"},
                {"op": "remove", "path": "/metadata/annotations/old"},
            ]),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": "[]", "copy": "2"}}})
        );
    }

    #[test]
    fn failed_json_patch_leaves_target_alone() {
        let mut t = json!({"a": [1]});
        let e = json_patch(
            &mut t,
            &json!([{"op": "add", "path": "/a/-", "value": 2}, {"op": "test", "path": "/a/0", "value": 9}]),
        );
        assert!(matches!(e, Err(PatchError::Failed(_))));
        assert_eq!(t, json!({"a": [1]}));
        assert!(matches!(
            json_patch(&mut t, &json!([{"op": "remove", "path": "/b"}])),
            Err(PatchError::Failed(_))
        ));
        assert!(matches!(
            json_patch(&mut t, &json!({"op": "x"})),
            Err(PatchError::Malformed(_))
        ));
    }
}
