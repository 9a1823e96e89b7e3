//! The object store: one global resourceVersion counter, objects per resource, a bounded history
//! of changes (so a watch can resume from a resourceVersion) and a broadcast of every change.
//!
//! All writes happen under one lock and publish while holding it, so a watch that snapshots and
//! subscribes under the same lock sees every change exactly once.

use super::patch::{self, PatchError, PatchType};
use super::resource::Resource;
use super::selector::Selectors;
use super::status::ApiError;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::ops::Bound;
use std::sync::Arc;
use tokio::sync::broadcast;

/// How many past changes a watch can resume from before it gets `410 Expired`.
const HISTORY: usize = 20_000;
/// How far a live watcher may fall behind before its stream is closed (the client re-lists).
const BROADCAST: usize = 16_384;
/// The real server's limit on the total size of annotations.
const MAX_ANNOTATIONS: usize = 256 * 1024;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One write, as broadcast to watchers.
#[derive(Debug)]
pub struct Change {
    pub res: Resource,
    pub ty: ChangeType,
    /// The object before the write (for selector transitions).
    pub old: Option<Value>,
    /// The object after the write (for deletions: the last state, with the deletion's resourceVersion).
    pub new: Value,
    pub rv: u64,
}

impl Change {
    /// The watch event `(type, object)` this change means for a watcher of `res` in `ns` with
    /// `sel`, if any: an object that starts matching is ADDED, one that stops matching is DELETED.
    pub fn event_for(
        &self,
        res: Resource,
        ns: Option<&str>,
        sel: &Selectors,
    ) -> Option<(&'static str, Value)> {
        if self.res != res || ns.is_some_and(|ns| self.new["metadata"]["namespace"] != ns) {
            return None;
        }
        let now = sel.matches(&self.new);
        let before = self.old.as_ref().is_some_and(|o| sel.matches(o));
        let ty = match (self.ty, before, now) {
            (ChangeType::Added, _, true) => "ADDED",
            (ChangeType::Deleted, b, n) if b || n => "DELETED",
            (ChangeType::Modified, true, true) => "MODIFIED",
            (ChangeType::Modified, false, true) => "ADDED",
            (ChangeType::Modified, true, false) => "DELETED",
            _ => return None,
        };
        Some((ty, self.new.clone()))
    }
}

/// Where a new watch starts.
#[derive(Debug)]
pub struct WatchStart {
    /// Events to send before live ones.
    pub initial: Vec<(&'static str, Value)>,
    /// Live changes after the snapshot.
    pub rx: broadcast::Receiver<Arc<Change>>,
    /// The resourceVersion the stream is at after `initial`.
    pub rv: u64,
    /// Set when the requested resourceVersion is older than the history: send as an ERROR event.
    pub expired: Option<ApiError>,
}

/// A paginated list request.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// The object store (see the module docs).
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<Resource, BTreeMap<(String, String), Value>>,
    history: VecDeque<Arc<Change>>,
    /// Changes with a resourceVersion at or below this are no longer in `history`.
    compacted: u64,
    tx: broadcast::Sender<Arc<Change>>,
    ids: IdGen,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(BROADCAST);
        // Start at a non-trivial value so that nobody relies on resourceVersions being small.
        Self {
            rv: 1000,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 1000,
            tx,
            ids: IdGen::default(),
        }
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    fn map(&mut self, res: Resource) -> &mut BTreeMap<(String, String), Value> {
        self.objects.entry(res).or_default()
    }

    fn publish(&mut self, res: Resource, ty: ChangeType, old: Option<Value>, new: Value) {
        let c = Arc::new(Change {
            res,
            ty,
            old,
            new,
            rv: self.rv,
        });
        if self.history.len() == HISTORY
            && let Some(dropped) = self.history.pop_front()
        {
            self.compacted = dropped.rv;
        }
        self.history.push_back(c.clone());
        // No receivers is fine.
        let _ = self.tx.send(c);
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub fn get(&self, res: Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&res)
            .and_then(|m| m.get(&(ns.to_owned(), name.to_owned())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    /// All objects of `res` (in `ns` if given) in key order.
    pub fn all(&self, res: Resource, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .get(&res)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|((ons, _), _)| ns.is_none_or(|ns| ns == ons))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A `<Kind>List` with pagination (`limit`, `continue`) as the real server does it.
    pub fn list(
        &self,
        res: Resource,
        ns: Option<&str>,
        sel: &Selectors,
        page: &ListParams,
    ) -> Result<Value, ApiError> {
        let start = match &page.continue_token {
            Some(t) if !t.is_empty() => Bound::Excluded(decode_continue(t)?),
            _ => Bound::Unbounded,
        };
        let empty = BTreeMap::new();
        let map = self.objects.get(&res).unwrap_or(&empty);
        let mut matching = map
            .range((start, Bound::Unbounded))
            .filter(|((ons, _), v)| ns.is_none_or(|ns| ns == ons) && sel.matches(v));
        let limit = page.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let page_items: Vec<_> = matching.by_ref().take(limit).collect();
        let rest = matching.count();
        let mut meta = json!({"resourceVersion": self.rv.to_string()});
        if rest > 0
            && let Some(((lns, lname), _)) = page_items.last()
        {
            meta["continue"] = json!(encode_continue(lns, lname));
            meta["remainingItemCount"] = json!(rest);
        }
        let items: Vec<Value> = page_items.into_iter().map(|(_, v)| v.clone()).collect();
        Ok(
            json!({"kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": meta, "items": items}),
        )
    }

    /// Creates `obj` in `ns`, as a POST to the collection does.
    pub fn create(&mut self, res: Resource, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        let Some(o) = obj.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the request body is not a JSON object",
            ));
        };
        check_type(res, o)?;
        o.insert("apiVersion".into(), json!(res.api_version()));
        o.insert("kind".into(), json!(res.kind()));
        let meta = o.entry("metadata").or_insert_with(|| json!({}));
        let Some(meta) = meta.as_object_mut() else {
            return Err(ApiError::bad_request("metadata is not an object"));
        };
        match meta.get("namespace").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {}
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = match (
            meta.get("name").and_then(Value::as_str),
            meta.get("generateName").and_then(Value::as_str),
        ) {
            (Some(n), _) if !n.is_empty() => n.to_owned(),
            (_, Some(g)) if !g.is_empty() => format!("{g}{}", self.ids.suffix()),
            _ => {
                return Err(ApiError::invalid(
                    res,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        let key = (ns.to_owned(), name.clone());
        if self.map(res).contains_key(&key) {
            return Err(ApiError::already_exists(res, &name));
        }
        validate_meta(res, &name, &obj)?;
        let rv = self.bump();
        let uid = self.ids.uid();
        let meta = obj["metadata"].as_object_mut().expect("checked above");
        meta.insert("name".into(), json!(name));
        meta.insert("namespace".into(), json!(ns));
        meta.insert("uid".into(), json!(uid));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("creationTimestamp".into(), json!(rfc3339_now()));
        self.map(res).insert(key, obj.clone());
        self.publish(res, ChangeType::Added, None, obj.clone());
        Ok(obj)
    }

    /// Applies a patch body of `ty` (`sub` is a subresource such as `status`).
    pub fn patch(
        &mut self,
        res: Resource,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        ty: PatchType,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let stored = self.get(res, ns, name)?;
        let mut new = stored.clone();
        patch::apply(ty, &mut new, body).map_err(|e| match e {
            PatchError::Malformed(m) => ApiError::bad_request(m),
            PatchError::Failed(m) => ApiError::invalid(res, name, m),
        })?;
        self.update(res, ns, name, sub, stored, new)
    }

    /// Replaces an object (PUT). `metadata.resourceVersion` is required, as for pods on the real server.
    pub fn replace(
        &mut self,
        res: Resource,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        new: Value,
    ) -> Result<Value, ApiError> {
        let stored = self.get(res, ns, name)?;
        if new["metadata"]["resourceVersion"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            return Err(ApiError::invalid(
                res,
                name,
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            ));
        }
        self.update(res, ns, name, sub, stored, new)
    }

    /// The common tail of PATCH and PUT: preconditions, immutable fields, subresource rules,
    /// validation, and a write only when something changed (a no-op keeps the resourceVersion).
    fn update(
        &mut self,
        res: Resource,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        stored: Value,
        mut new: Value,
    ) -> Result<Value, ApiError> {
        if !new.is_object() || !new["metadata"].is_object() {
            return Err(ApiError::bad_request("the object has no metadata"));
        }
        let stored_meta = &stored["metadata"];
        if let Some(uid) = new["metadata"]["uid"].as_str()
            && Some(uid) != stored_meta["uid"].as_str()
        {
            return Err(ApiError::uid_precondition(
                res,
                ns,
                name,
                uid,
                stored_meta["uid"].as_str().unwrap_or_default(),
            ));
        }
        if let Some(rv) = new["metadata"]["resourceVersion"].as_str()
            && Some(rv) != stored_meta["resourceVersion"].as_str()
        {
            return Err(ApiError::modified(res, name));
        }
        if let Some(n) = new["metadata"]["name"].as_str()
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        for k in ["apiVersion", "kind"] {
            new[k] = stored[k].clone();
        }
        for k in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "creationTimestamp",
        ] {
            new["metadata"][k] = stored_meta[k].clone();
        }
        // The status subresource may change metadata and status but never spec (nor owner
        // references); the main resource never changes a pod's status.
        if sub == Some("status") {
            restore(&mut new, &stored, &["spec"]);
            restore(&mut new["metadata"], stored_meta, &["ownerReferences"]);
        } else if res == Resource::Pods {
            restore(&mut new, &stored, &["status"]);
        }
        validate_meta(res, name, &new)?;
        if new == stored {
            return Ok(stored);
        }
        let rv = self.bump();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.map(res)
            .insert((ns.to_owned(), name.to_owned()), new.clone());
        self.publish(res, ChangeType::Modified, Some(stored), new.clone());
        Ok(new)
    }

    /// Deletes an object (immediately: no graceful deletion or finalizers), honouring
    /// `DeleteOptions.preconditions`.
    pub fn delete(
        &mut self,
        res: Resource,
        ns: &str,
        name: &str,
        preconditions: &Value,
    ) -> Result<Value, ApiError> {
        let stored = self.get(res, ns, name)?;
        if let Some(uid) = preconditions["uid"].as_str()
            && Some(uid) != stored["metadata"]["uid"].as_str()
        {
            return Err(ApiError::uid_precondition(
                res,
                ns,
                name,
                uid,
                stored["metadata"]["uid"].as_str().unwrap_or_default(),
            ));
        }
        if let Some(rv) = preconditions["resourceVersion"].as_str()
            && Some(rv) != stored["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::modified(res, name));
        }
        self.map(res).remove(&(ns.to_owned(), name.to_owned()));
        let rv = self.bump();
        let mut gone = stored.clone();
        gone["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.publish(res, ChangeType::Deleted, Some(stored), gone.clone());
        Ok(gone)
    }

    /// Snapshots (or replays history) and subscribes, atomically.
    pub fn watch(
        &self,
        res: Resource,
        ns: Option<&str>,
        sel: &Selectors,
        resource_version: Option<&str>,
    ) -> Result<WatchStart, ApiError> {
        let rx = self.tx.subscribe();
        let from =
            match resource_version {
                None | Some("") | Some("0") => None,
                Some(s) => Some(s.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {s:?}"))
                })?),
            };
        let Some(from) = from else {
            let initial = self
                .all(res, ns)
                .into_iter()
                .filter(|o| sel.matches(o))
                .map(|o| ("ADDED", o))
                .collect();
            return Ok(WatchStart {
                initial,
                rx,
                rv: self.rv,
                expired: None,
            });
        };
        if from < self.compacted {
            let e = ApiError::new(
                410,
                "Expired",
                format!("too old resource version: {from} ({})", self.compacted + 1),
            );
            return Ok(WatchStart {
                initial: Vec::new(),
                rx,
                rv: self.rv,
                expired: Some(e),
            });
        }
        let initial = self
            .history
            .iter()
            .filter(|c| c.rv > from)
            .filter_map(|c| c.event_for(res, ns, sel))
            .collect();
        Ok(WatchStart {
            initial,
            rx,
            rv: self.rv.max(from),
            expired: None,
        })
    }
}

fn restore(new: &mut Value, old: &Value, keys: &[&str]) {
    let Some(n) = new.as_object_mut() else { return };
    for k in keys {
        match old.get(*k) {
            Some(v) => {
                n.insert((*k).to_owned(), v.clone());
            }
            None => {
                n.remove(*k);
            }
        }
    }
}

fn check_type(res: Resource, o: &Map<String, Value>) -> Result<(), ApiError> {
    let api_version = o
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or(res.api_version());
    let kind = o.get("kind").and_then(Value::as_str).unwrap_or(res.kind());
    if api_version != res.api_version() || kind != res.kind() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) and kind ({kind}) do not match the expected {} {}",
            res.api_version(),
            res.kind()
        )));
    }
    Ok(())
}

/// Labels and annotations must be string maps (the real server fails to decode anything else,
/// which catches a plugin writing network-status as a JSON value instead of a string), and
/// annotations are limited to 256 KiB in total.
fn validate_meta(res: Resource, name: &str, obj: &Value) -> Result<(), ApiError> {
    for field in ["labels", "annotations"] {
        match &obj["metadata"][field] {
            Value::Null => {}
            Value::Object(m) => {
                if let Some((k, v)) = m.iter().find(|(_, v)| !v.is_string()) {
                    return Err(ApiError::bad_request(format!(
                        "json: cannot unmarshal {} into Go struct field ObjectMeta.metadata.{field} of type string (key {k:?})",
                        json_type(v)
                    )));
                }
                if field == "annotations" {
                    let size: usize = m
                        .iter()
                        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                        .sum();
                    if size > MAX_ANNOTATIONS {
                        return Err(ApiError::invalid(
                            res,
                            name,
                            format!(
                                "metadata.annotations: Too long: must have at most {MAX_ANNOTATIONS} bytes"
                            ),
                        ));
                    }
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "json: cannot unmarshal {} into Go struct field ObjectMeta.metadata.{field} of type map[string]string",
                    json_type(other)
                )));
            }
        }
    }
    Ok(())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn encode_continue(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(t: &str) -> Result<(String, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = (0..t.len())
        .step_by(2)
        .map(|i| t.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let s = String::from_utf8(bytes).map_err(|_| bad())?;
    let (ns, name) = s.split_once('/').ok_or_else(bad)?;
    Ok((ns.to_owned(), name.to_owned()))
}

/// Random-looking UIDs (UUIDv4 layout) and generateName suffixes, unique per store.
#[derive(Debug, Default)]
struct IdGen {
    seed: RandomState,
    n: u64,
}

impl IdGen {
    fn next(&mut self) -> u64 {
        self.n += 1;
        let mut h = self.seed.build_hasher();
        h.write_u64(self.n);
        h.finish()
    }

    fn uid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        let hex = format!("{a:016x}{b:016x}");
        format!(
            "{}-{}-4{}-a{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        )
    }

    /// Five characters from the alphabet the real server uses for generateName.
    fn suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut x = self.next();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
                x /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }
}

/// Now as RFC 3339 in UTC with second precision, as `creationTimestamp` is written.
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// `secs` since the epoch as RFC 3339 in UTC with second precision.
pub fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (the well-known era/day-of-era method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"nodeName": node}})
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn create_fills_metadata_and_bumps_versions() {
        let mut s = Store::new();
        let a = s.create(Resource::Pods, "ns", pod("a", "n1")).unwrap();
        let b = s
            .create(
                Resource::Pods,
                "ns",
                json!({"metadata": {"generateName": "b-"}}),
            )
            .unwrap();
        assert_eq!(a["kind"], "Pod");
        assert_ne!(a["metadata"]["uid"], b["metadata"]["uid"]);
        assert!(b["metadata"]["name"].as_str().unwrap().starts_with("b-"));
        let (ra, rb): (u64, u64) = (
            a["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
            b["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        );
        assert!(rb > ra);
        assert_eq!(
            s.create(Resource::Pods, "ns", pod("a", "n1"))
                .unwrap_err()
                .code,
            409
        );
        assert_eq!(
            s.create(
                Resource::Pods,
                "other",
                json!({"metadata": {"name": "x", "namespace": "ns"}})
            )
            .unwrap_err()
            .code,
            400
        );
    }

    #[test]
    fn no_op_patch_keeps_the_resource_version() {
        let mut s = Store::new();
        let a = s.create(Resource::Pods, "ns", pod("a", "n1")).unwrap();
        let same = s
            .patch(
                Resource::Pods,
                "ns",
                "a",
                None,
                PatchType::Merge,
                &json!({"spec": {"nodeName": "n1"}}),
            )
            .unwrap();
        assert_eq!(
            same["metadata"]["resourceVersion"],
            a["metadata"]["resourceVersion"]
        );
    }

    #[test]
    fn status_subresource_keeps_spec_and_main_keeps_status() {
        let mut s = Store::new();
        s.create(Resource::Pods, "ns", pod("a", "n1")).unwrap();
        let p = s
            .patch(Resource::Pods, "ns", "a", Some("status"), PatchType::Merge, &json!({"spec": {"nodeName": "x"}, "status": {"phase": "Running"}, "metadata": {"annotations": {"k": "v"}}}))
            .unwrap();
        assert_eq!(p["spec"]["nodeName"], "n1");
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["metadata"]["annotations"]["k"], "v");
        let p = s
            .patch(
                Resource::Pods,
                "ns",
                "a",
                None,
                PatchType::Merge,
                &json!({"status": {"phase": "Failed"}}),
            )
            .unwrap();
        assert_eq!(p["status"]["phase"], "Running");
        let e = s
            .patch(
                Resource::Pods,
                "ns",
                "a",
                None,
                PatchType::Merge,
                &json!({"metadata": {"annotations": {"k": 1}}}),
            )
            .unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn pagination_walks_every_item_once() {
        let mut s = Store::new();
        for i in 0..7 {
            s.create(
                Resource::Pods,
                "ns",
                pod(&format!("p{i}"), if i % 2 == 0 { "n1" } else { "n2" }),
            )
            .unwrap();
        }
        let sel = Selectors::default();
        let mut seen = Vec::new();
        let mut page = ListParams {
            limit: Some(3),
            continue_token: None,
        };
        loop {
            let l = s.list(Resource::Pods, Some("ns"), &sel, &page).unwrap();
            seen.extend(
                l["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned()),
            );
            match l["metadata"]["continue"].as_str() {
                Some(c) => page.continue_token = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
        let sel = Selectors::parse(Resource::Pods, Some("spec.nodeName=n1"), None).unwrap();
        let l = s
            .list(Resource::Pods, None, &sel, &ListParams::default())
            .unwrap();
        assert_eq!(l["items"].as_array().unwrap().len(), 4);
        assert!(l["metadata"].get("continue").is_none());
    }

    #[test]
    fn watch_resumes_from_history() {
        let mut s = Store::new();
        let a = s.create(Resource::Pods, "ns", pod("a", "n1")).unwrap();
        let rv = a["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        s.patch(
            Resource::Pods,
            "ns",
            "a",
            None,
            PatchType::Merge,
            &json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .unwrap();
        s.delete(Resource::Pods, "ns", "a", &Value::Null).unwrap();
        let w = s
            .watch(Resource::Pods, None, &Selectors::default(), Some(&rv))
            .unwrap();
        let types: Vec<_> = w.initial.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, ["MODIFIED", "DELETED"]);
        assert!(
            s.watch(Resource::Pods, None, &Selectors::default(), Some("5"))
                .unwrap()
                .expired
                .is_some()
        );
    }
}
