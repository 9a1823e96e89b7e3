//! Service-account tokens as the real API server issues and checks them: the TokenRequest
//! subresource (`POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`), tokens bound to a
//! Pod or a Node, and authentication that stops accepting a bound token once its object is gone
//! (deleted, or recreated with another UID) or its expiry has passed — a `401` with a `Status`
//! body, which is what a plugin holding a deleted DaemonSet pod's token gets.
//!
//! Service accounts and nodes are kept here rather than in the object store: the fake serves no
//! other API for them, only what TokenRequest needs (their existence and UIDs). Validation follows
//! the real server's TokenRequest storage: the service account must exist, `expirationSeconds`
//! must be at least 10 minutes (default one hour) and is capped by the server's maximum, a Pod
//! must run as that service account, a Node must exist, a given UID must match, and binding to a
//! Node needs the `ServiceAccountTokenNodeBinding` feature (alpha in 1.29, beta and on by default
//! from 1.31, GA in 1.33; [`FakeApiServer::set_node_token_binding`] turns it off to model older
//! servers).
//!
//! [`FakeApiServer::set_node_token_binding`]: super::FakeApiServer::set_node_token_binding

use super::resource::Resource;
use super::status::ApiError;
use super::store::{Store, rfc3339};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The issuer and default audience of the tokens (a real cluster's usual value).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The extra user info the authenticator sets from a token's node claim.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

const MIN_EXPIRATION: u64 = 600;
const DEFAULT_EXPIRATION: u64 = 3600;

/// What a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Pod { name: String, uid: String },
    Node { name: String, uid: String },
}

/// One issued token.
#[derive(Debug, Clone)]
pub struct Issued {
    pub namespace: String,
    pub service_account: String,
    pub bound: Bound,
    /// The node name claim (the bound Node, or the node a bound Pod runs on).
    pub node_name: Option<String>,
    pub expires: SystemTime,
    /// The JWT claims, for tests that assert on them.
    pub claims: Value,
}

/// Service accounts, nodes and the tokens issued for them.
#[derive(Debug)]
pub struct Tokens {
    service_accounts: BTreeMap<(String, String), String>,
    nodes: BTreeMap<String, String>,
    issued: HashMap<String, Issued>,
    /// `ServiceAccountTokenNodeBinding`.
    pub node_binding: bool,
    /// `--service-account-max-token-expiration`.
    pub max_expiration: Option<Duration>,
    serial: u64,
}

impl Default for Tokens {
    fn default() -> Self {
        Self {
            service_accounts: BTreeMap::new(),
            nodes: BTreeMap::new(),
            issued: HashMap::new(),
            node_binding: true,
            max_expiration: None,
            serial: 0,
        }
    }
}

/// `(namespace, service account)` when `path` is a TokenRequest path.
pub fn token_request_path(path: &str) -> Option<(String, String)> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segs.as_slice() {
        [
            "api",
            "v1",
            "namespaces",
            ns,
            "serviceaccounts",
            sa,
            "token",
        ] => Some(((*ns).to_owned(), (*sa).to_owned())),
        _ => None,
    }
}

impl Tokens {
    fn uid(&mut self, kind: &str) -> String {
        self.serial += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        format!("{:08x}-{kind:.4}-4000-8000-{:012x}", nanos, self.serial)
    }

    /// Creates (or returns) a service account; returns its UID.
    pub fn create_service_account(&mut self, ns: &str, name: &str) -> String {
        let key = (ns.to_owned(), name.to_owned());
        if let Some(uid) = self.service_accounts.get(&key) {
            return uid.clone();
        }
        let uid = self.uid("5acc");
        self.service_accounts.insert(key, uid.clone());
        uid
    }

    /// Creates a node (a new UID if it existed: a re-registered node is a new object).
    pub fn create_node(&mut self, name: &str) -> String {
        let uid = self.uid("0de0");
        self.nodes.insert(name.to_owned(), uid.clone());
        uid
    }

    pub fn delete_node(&mut self, name: &str) -> bool {
        self.nodes.remove(name).is_some()
    }

    /// Handles a TokenRequest `body` for `ns/sa`; `store` gives the bound pods.
    pub fn request(
        &mut self,
        store: &Store,
        ns: &str,
        sa: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let Some(sa_uid) = self
            .service_accounts
            .get(&(ns.to_owned(), sa.to_owned()))
            .cloned()
        else {
            return Err(sa_not_found(sa));
        };
        let spec = &body["spec"];
        let requested = match &spec["expirationSeconds"] {
            Value::Null => DEFAULT_EXPIRATION,
            v => v.as_u64().ok_or_else(|| {
                ApiError::bad_request(format!("spec.expirationSeconds: {v} is not an integer"))
            })?,
        };
        if requested < MIN_EXPIRATION {
            return Err(invalid(
                sa,
                format!(
                    "spec.expirationSeconds: Invalid value: {requested}: may not specify a duration less than 10 minutes"
                ),
            ));
        }
        let granted = match self.max_expiration {
            Some(max) => requested.min(max.as_secs().max(1)),
            None => requested,
        };
        let r = &spec["boundObjectRef"];
        let (kind, name) = (
            r["kind"].as_str().unwrap_or_default(),
            r["name"].as_str().unwrap_or_default(),
        );
        let api_version = r["apiVersion"].as_str().unwrap_or("v1");
        let (bound, node_name) = match (api_version, kind) {
            (_, "") => {
                return Err(ApiError::bad_request(
                    "the fake API server issues bound tokens only (spec.boundObjectRef is required)",
                ));
            }
            ("v1", "Pod") => {
                let pod = store.get(Resource::Pods, ns, name)?;
                let runs_as = pod["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("default");
                if runs_as != sa {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for serviceaccount {sa:?} to pod running with different serviceaccount name."
                    )));
                }
                let uid = pod["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let node = pod["spec"]["nodeName"].as_str().map(str::to_owned);
                (
                    Bound::Pod {
                        name: name.to_owned(),
                        uid,
                    },
                    node,
                )
            }
            ("v1", "Node") => {
                if !self.node_binding {
                    return Err(ApiError::bad_request(
                        "cannot bind token to a Node object as the \"ServiceAccountTokenNodeBinding\" feature-gate is disabled",
                    ));
                }
                let Some(uid) = self.nodes.get(name).cloned() else {
                    return Err(node_not_found(name));
                };
                (
                    Bound::Node {
                        name: name.to_owned(),
                        uid,
                    },
                    Some(name.to_owned()),
                )
            }
            (av, k) => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token to object of type {}, Kind={k}",
                    if av == "v1" {
                        "/v1".to_owned()
                    } else {
                        av.to_owned()
                    }
                )));
            }
        };
        let bound_uid = match &bound {
            Bound::Pod { uid, .. } | Bound::Node { uid, .. } => uid.clone(),
        };
        if let Some(want) = r["uid"].as_str().filter(|u| !u.is_empty())
            && want != bound_uid
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {kind} {name:?}: the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        let audiences = match spec["audiences"].as_array() {
            Some(a) if !a.is_empty() => Value::Array(a.clone()),
            _ => json!([ISSUER]),
        };
        let now = SystemTime::now();
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let exp = iat + granted;
        let mut k8s = json!({
            "namespace": ns,
            "serviceaccount": {"name": sa, "uid": sa_uid},
        });
        match &bound {
            Bound::Pod { name, uid } => k8s["pod"] = json!({"name": name, "uid": uid}),
            Bound::Node { name, uid } => k8s["node"] = json!({"name": name, "uid": uid}),
        }
        if let (Bound::Pod { .. }, Some(n)) = (&bound, &node_name)
            && let Some(uid) = self.nodes.get(n)
        {
            k8s["node"] = json!({"name": n, "uid": uid});
        }
        self.serial += 1;
        let claims = json!({
            "aud": audiences,
            "exp": exp,
            "iat": iat,
            "iss": ISSUER,
            "jti": format!("fake-{}", self.serial),
            "kubernetes.io": k8s,
            "nbf": iat,
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
        });
        let token = jwt(&claims, self.serial);
        self.issued.insert(
            token.clone(),
            Issued {
                namespace: ns.to_owned(),
                service_account: sa.to_owned(),
                bound,
                node_name,
                expires: UNIX_EPOCH + Duration::from_secs(exp),
                claims,
            },
        );
        let mut spec_out = spec.clone();
        spec_out["expirationSeconds"] = json!(granted);
        spec_out["audiences"] = audiences;
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": sa, "namespace": ns, "creationTimestamp": null},
            "spec": spec_out,
            "status": {"token": token, "expirationTimestamp": rfc3339(exp)},
        }))
    }

    /// Whether any token was issued (then authentication is enforced).
    pub fn any_issued(&self) -> bool {
        !self.issued.is_empty()
    }

    /// Whether the server issued `token` (then [`Tokens::check`] decides), as opposed to a token
    /// it does not know.
    pub fn knows(&self, token: &str) -> bool {
        self.issued.contains_key(token)
    }

    /// Authenticates an issued token: its bound object must still exist with the same UID (pods
    /// from `store`) and it must not have expired.
    pub fn check(&self, store: &Store, token: &str) -> Result<(), ApiError> {
        let Some(t) = self.issued.get(token) else {
            return Err(ApiError::unauthorized());
        };
        if SystemTime::now() >= t.expires {
            return Err(ApiError::unauthorized());
        }
        let alive = match &t.bound {
            Bound::Pod { name, uid } => store
                .get(Resource::Pods, &t.namespace, name)
                .is_ok_and(|p| p["metadata"]["uid"].as_str() == Some(uid)),
            Bound::Node { name, uid } => self.nodes.get(name) == Some(uid),
        };
        let sa_alive = self
            .service_accounts
            .contains_key(&(t.namespace.clone(), t.service_account.clone()));
        if alive && sa_alive {
            Ok(())
        } else {
            Err(ApiError::unauthorized())
        }
    }

    /// What the server recorded for `token`.
    pub fn issued(&self, token: &str) -> Option<Issued> {
        self.issued.get(token).cloned()
    }
}

/// A JWT-shaped token (header.claims.signature, base64url): clients treat it as opaque, tests can
/// read the claims. The "signature" only makes it unique.
fn jwt(claims: &Value, serial: u64) -> String {
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let sig = URL_SAFE_NO_PAD.encode(format!("fake-signature-{serial}-{}", claims["iat"]));
    format!(
        "{}.{}.{sig}",
        enc(&json!({"alg": "RS256", "kid": "fake"})),
        enc(claims)
    )
}

/// The claims of a token made by [`jwt`] (or any JWT), for assertions.
pub fn claims_of(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn sa_not_found(name: &str) -> ApiError {
    let mut e = ApiError::new(
        404,
        "NotFound",
        format!("serviceaccounts {name:?} not found"),
    );
    e.details = json!({"name": name, "kind": "serviceaccounts"});
    e
}

fn node_not_found(name: &str) -> ApiError {
    let mut e = ApiError::new(404, "NotFound", format!("nodes {name:?} not found"));
    e.details = json!({"name": name, "kind": "nodes"});
    e
}

fn invalid(sa: &str, cause: String) -> ApiError {
    let mut e = ApiError::new(
        422,
        "Invalid",
        format!("TokenRequest.authentication.k8s.io {sa:?} is invalid: {cause}"),
    );
    e.details = json!({"name": sa, "group": "authentication.k8s.io", "kind": "TokenRequest"});
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            token_request_path("/api/v1/namespaces/plexus-system/serviceaccounts/plexus/token"),
            Some(("plexus-system".into(), "plexus".into()))
        );
        assert_eq!(
            token_request_path("/api/v1/namespaces/a/serviceaccounts/b"),
            None
        );
    }

    #[test]
    fn node_bound_token_lives_with_its_node_and_pod_bound_with_its_pod() {
        let mut store = Store::new();
        let mut t = Tokens::default();
        t.create_service_account("sys", "plexus");
        t.create_node("node-1");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"serviceAccountName": "plexus", "nodeName": "node-1"}});
        store.create(Resource::Pods, "sys", pod.clone()).unwrap();
        let req = |kind: &str, name: &str| {
            json!({"spec": {"boundObjectRef": {"apiVersion": "v1", "kind": kind, "name": name},
                "expirationSeconds": 7200}})
        };
        let node_tok = t
            .request(&store, "sys", "plexus", &req("Node", "node-1"))
            .unwrap();
        let pod_tok = t
            .request(&store, "sys", "plexus", &req("Pod", "p"))
            .unwrap();
        let (nt, pt) = (
            node_tok["status"]["token"].as_str().unwrap().to_owned(),
            pod_tok["status"]["token"].as_str().unwrap().to_owned(),
        );
        assert_eq!(node_tok["spec"]["expirationSeconds"], 7200);
        assert_eq!(
            claims_of(&nt).unwrap()["kubernetes.io"]["node"]["name"],
            "node-1"
        );
        assert!(t.check(&store, &nt).is_ok() && t.check(&store, &pt).is_ok());
        store
            .delete(Resource::Pods, "sys", "p", &Value::Null)
            .unwrap();
        assert_eq!(t.check(&store, &pt).unwrap_err().code, 401);
        assert!(t.check(&store, &nt).is_ok());
        // A pod recreated under the same name is another object.
        store.create(Resource::Pods, "sys", pod.clone()).unwrap();
        assert_eq!(t.check(&store, &pt).unwrap_err().code, 401);
        t.delete_node("node-1");
        assert_eq!(t.check(&store, &nt).unwrap_err().code, 401);
    }

    #[test]
    fn refusals_are_worded_as_the_real_server_words_them() {
        let store = Store::new();
        let mut t = Tokens::default();
        let body =
            json!({"spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Node", "name": "n"}}});
        assert_eq!(
            t.request(&store, "sys", "plexus", &body)
                .unwrap_err()
                .message,
            "serviceaccounts \"plexus\" not found"
        );
        t.create_service_account("sys", "plexus");
        assert_eq!(
            t.request(&store, "sys", "plexus", &body)
                .unwrap_err()
                .message,
            "nodes \"n\" not found"
        );
        t.create_node("n");
        let short = json!({"spec": {"boundObjectRef": body["spec"]["boundObjectRef"], "expirationSeconds": 60}});
        assert_eq!(
            t.request(&store, "sys", "plexus", &short).unwrap_err().code,
            422
        );
        t.node_binding = false;
        let e = t.request(&store, "sys", "plexus", &body).unwrap_err();
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        assert!(
            e.message.contains("ServiceAccountTokenNodeBinding"),
            "{}",
            e.message
        );
        t.node_binding = true;
        t.max_expiration = Some(Duration::from_secs(900));
        let ok = t.request(&store, "sys", "plexus", &body).unwrap();
        assert_eq!(ok["spec"]["expirationSeconds"], 900);
    }
}
