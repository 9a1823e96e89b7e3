//! `labelSelector` and `fieldSelector` query parameters, with the real server's syntax:
//! comma-separated requirements that must all hold.

use super::resource::Resource;
use super::status::ApiError;
use serde_json::Value;

/// Both selectors of a list or watch request.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    fields: Vec<FieldReq>,
    labels: Vec<LabelReq>,
}

#[derive(Debug, Clone)]
struct FieldReq {
    path: String,
    equal: bool,
    value: String,
}

#[derive(Debug, Clone)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Selectors {
    /// Parses the raw (already percent-decoded) selector strings for `res`.
    pub fn parse(
        res: Resource,
        field: Option<&str>,
        label: Option<&str>,
    ) -> Result<Self, ApiError> {
        let mut s = Selectors::default();
        for req in field.map(split_top).unwrap_or_default() {
            let (path, equal, value) = if let Some((k, v)) = req.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = req.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = req.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {req:?}"
                )));
            };
            let path = path.trim();
            if !res.supports_field(path) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {path}"
                )));
            }
            s.fields.push(FieldReq {
                path: path.to_owned(),
                equal,
                value: value.trim().to_owned(),
            });
        }
        for req in label.map(split_top).unwrap_or_default() {
            s.labels.push(parse_label(&req)?);
        }
        Ok(s)
    }

    /// Whether `obj` satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let fields_ok = self
            .fields
            .iter()
            .all(|f| (field_value(obj, &f.path) == f.value) == f.equal);
        let labels = &obj["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v),
            LabelReq::NotEq(k, v) => label(k) != Some(v),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        fields_ok && labels_ok
    }
}

/// A field's value as a string; missing fields are `""` (so `spec.nodeName=` selects unscheduled pods).
fn field_value(obj: &Value, path: &str) -> String {
    let v = path.split('.').try_fold(obj, |cur, k| cur.get(k));
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Splits on commas outside parentheses (`a in (x,y),b` has two requirements).
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut cur) = (0i32, String::new());
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect()
}

fn parse_label(req: &str) -> Result<LabelReq, ApiError> {
    let bad = || ApiError::bad_request(format!("unable to parse requirement: {req:?}"));
    if let Some(k) = req.strip_prefix('!') {
        return Ok(LabelReq::NotExists(k.trim().to_owned()));
    }
    if let Some((k, v)) = req.split_once("!=") {
        return Ok(LabelReq::NotEq(k.trim().to_owned(), v.trim().to_owned()));
    }
    if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
        return Ok(LabelReq::Eq(k.trim().to_owned(), v.trim().to_owned()));
    }
    let set = |rest: &str| -> Result<Vec<String>, ApiError> {
        let inner = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(bad)?;
        Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
    };
    if let Some((k, rest)) = req.split_once(" notin ") {
        return Ok(LabelReq::NotIn(k.trim().to_owned(), set(rest)?));
    }
    if let Some((k, rest)) = req.split_once(" in ") {
        return Ok(LabelReq::In(k.trim().to_owned(), set(rest)?));
    }
    if req.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(LabelReq::Exists(req.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects_by_node_and_labels() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "a", "tier": "web"}}, "spec": {"nodeName": "n1"}});
        let sel = |f: Option<&str>, l: Option<&str>| {
            Selectors::parse(Resource::Pods, f, l)
                .unwrap()
                .matches(&pod)
        };
        assert!(sel(Some("spec.nodeName=n1"), None));
        assert!(!sel(Some("spec.nodeName=n2"), None));
        assert!(sel(Some("spec.nodeName!=n2,metadata.name==p"), None));
        assert!(sel(None, Some("app=a,tier in (web, db),!gone,app")));
        assert!(!sel(None, Some("tier notin (web)")));
        assert!(Selectors::parse(Resource::Nads, Some("spec.nodeName=x"), None).is_err());
    }
}
