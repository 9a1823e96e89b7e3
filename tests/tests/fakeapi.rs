//! The fake API server exercised over real HTTP(S) with a deliberately dumb HTTP/1.1 client
//! (std TCP + rustls), so that what is tested is the wire behaviour, not a client library's.

use plexus_e2e::fakeapi::{FakeApiOptions, FakeApiServer, Fault};
use plexus_e2e::netns::{HostLink, NetNs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- a minimal HTTP/1.1 client

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Where to connect and how.
struct Client {
    url: String,
    ca_pem: Option<String>,
    token: Option<String>,
    /// TLS server name to send (defaults to the URL's host).
    sni: Option<String>,
    /// The `Accept` header.
    accept: String,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    fn of(api: &FakeApiServer) -> Self {
        Client {
            url: api.url(),
            ca_pem: api.ca_pem(),
            token: None,
            sni: None,
            accept: "application/json".to_owned(),
        }
    }

    fn with_token(mut self, t: &str) -> Self {
        self.token = Some(t.to_owned());
        self
    }

    fn host_port(&self) -> &str {
        self.url.split("://").nth(1).expect("url has a scheme")
    }

    fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
        let tcp = TcpStream::connect(self.host_port())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        if !self.url.starts_with("https://") {
            return Ok(Box::new(tcp));
        }
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &self.ca_pem {
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.expect("CA PEM")).expect("CA cert");
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let host = self
            .sni
            .clone()
            .unwrap_or_else(|| self.host_port().rsplit_once(':').unwrap().0.to_owned());
        let name = ServerName::try_from(host).expect("server name");
        let conn =
            rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
        Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
    }

    /// Sends one request on a fresh connection and returns the reader positioned at the body.
    fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<BufReader<Box<dyn Stream>>> {
        let mut s = self.connect()?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: {}\r\nConnection: close\r\n",
            self.host_port(),
            self.accept
        );
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        s.flush()?;
        Ok(BufReader::new(s))
    }

    fn request(&self, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> Resp {
        let mut r = self
            .send(method, path, content_type, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let (status, headers) = read_head(&mut r);
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse::<usize>().unwrap());
        let body = if chunked {
            let mut all = Vec::new();
            while let Some(c) = read_chunk(&mut r) {
                all.extend(c);
            }
            all
        } else if let Some(n) = len {
            let mut b = vec![0; n];
            r.read_exact(&mut b).unwrap();
            b
        } else {
            let mut b = Vec::new();
            let _ = r.read_to_end(&mut b);
            b
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    fn get(&self, path: &str) -> Resp {
        self.request("GET", path, None, b"")
    }

    fn json(&self, method: &str, path: &str, content_type: &str, body: &Value) -> Resp {
        self.request(
            method,
            path,
            Some(content_type),
            body.to_string().as_bytes(),
        )
    }

    /// Opens a watch and returns a reader of its events.
    fn watch(&self, path_and_query: &str) -> Watch {
        let mut r = self
            .send("GET", path_and_query, None, b"")
            .expect("watch request");
        let (status, _) = read_head(&mut r);
        assert_eq!(status, 200, "watch {path_and_query}");
        Watch { r, buf: Vec::new() }
    }
}

fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header");
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    (status, headers)
}

/// One chunk of a chunked body; `None` at the last chunk or end of stream.
fn read_chunk(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
    if size == 0 {
        return None;
    }
    let mut c = vec![0; size + 2];
    r.read_exact(&mut c).ok()?;
    c.truncate(size);
    Some(c)
}

struct Watch {
    r: BufReader<Box<dyn Stream>>,
    buf: Vec<u8>,
}

impl Watch {
    /// The next event, or `None` when the stream ends.
    fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).expect("watch line is JSON"));
            }
            self.buf.extend(read_chunk(&mut self.r)?);
        }
    }

    /// The next event that is not a BOOKMARK.
    fn next_change(&mut self) -> Option<Value> {
        loop {
            let e = self.next()?;
            if e["type"] != "BOOKMARK" {
                return Some(e);
            }
        }
    }
}

// ---------------------------------------------------------------- helpers

const POD_PATH: &str = "/api/v1/namespaces/blue/pods";
const NAD_PATH: &str = "/apis/k8s.cni.cncf.io/v1/namespaces/blue/network-attachment-definitions";
const STATUS_KEY: &str = "k8s.v1.cni.cncf.io/network-status";

fn server() -> FakeApiServer {
    FakeApiServer::start(FakeApiOptions::default()).expect("start fake API server")
}

fn pod(api: &FakeApiServer, name: &str, node: &str) -> Value {
    api.create_pod(json!({
        "metadata": {"name": name, "namespace": "blue", "annotations": {"k8s.v1.cni.cncf.io/networks": "a,b"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}
    }))
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------- tests

#[test]
fn missing_objects_get_real_status_bodies() {
    let api = server();
    let c = Client::of(&api);
    let r = c.get(&format!("{POD_PATH}/x"));
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404}"#
    );
    let r = c.get(&format!("{NAD_PATH}/gone")).json();
    assert_eq!(
        r["message"],
        "network-attachment-definitions.k8s.cni.cncf.io \"gone\" not found"
    );
    assert_eq!(
        r["details"],
        json!({"name": "gone", "group": "k8s.cni.cncf.io", "kind": "network-attachment-definitions"})
    );
    let r = c.get("/api/v1/namespaces/blue/secrets/s");
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (404, json!("NotFound"))
    );
    assert_eq!(c.get("/healthz").body, b"ok");
    assert_eq!(c.get("/version").json()["major"], "1");
    assert_eq!(
        c.get("/apis").json()["groups"][0]["name"],
        "k8s.cni.cncf.io"
    );
    assert_eq!(
        c.get("/apis/k8s.cni.cncf.io/v1").json()["resources"][0]["name"],
        "network-attachment-definitions"
    );
}

#[test]
fn create_get_list_and_delete_over_http() {
    let api = server();
    let c = Client::of(&api);
    let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"}, "spec": {"nodeName": "node-1"}});
    let created = c.json("POST", POD_PATH, "application/json", &body);
    assert_eq!(created.status, 201);
    let created = created.json();
    assert_eq!(created["metadata"]["namespace"], "blue");
    assert!(
        created["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(
        created["metadata"]["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let dup = c.json("POST", POD_PATH, "application/json", &body);
    assert_eq!(
        (dup.status, dup.json()["reason"].clone()),
        (409, json!("AlreadyExists"))
    );

    pod(&api, "p2", "node-2");
    api.create_pod(
        json!({"metadata": {"name": "p3", "namespace": "red"}, "spec": {"nodeName": "node-1"}}),
    );
    let got = c.get(&format!("{POD_PATH}/p1")).json();
    assert_eq!(got, created);
    assert_eq!(
        (got["kind"].clone(), got["apiVersion"].clone()),
        (json!("Pod"), json!("v1"))
    );

    let list = c.get(POD_PATH).json();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(names(&list), ["p1", "p2"]);
    assert_eq!(list["items"][0]["kind"], "Pod");
    assert_eq!(
        list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        api.resource_version()
    );
    assert_eq!(
        names(
            &c.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1")
                .json()
        ),
        ["p1", "p3"]
    );
    assert_eq!(
        names(
            &c.get(&format!("{POD_PATH}?fieldSelector=spec.nodeName=node-1"))
                .json()
        ),
        ["p1"]
    );
    let page = c.get("/api/v1/pods?limit=2").json();
    assert_eq!(page["metadata"]["remainingItemCount"], 1);
    let token = page["metadata"]["continue"].as_str().unwrap();
    assert_eq!(
        names(
            &c.get(&format!("/api/v1/pods?limit=2&continue={token}"))
                .json()
        ),
        ["p3"]
    );
    assert_eq!(
        c.get("/api/v1/pods?fieldSelector=spec.bogus%3Dx").status,
        400
    );

    api.create_nad(
        "blue",
        "macvlan-a",
        Some(r#"{"cniVersion":"0.4.0","type":"macvlan"}"#),
    );
    api.create_nad("red", "other", None);
    let nad = c.get(&format!("{NAD_PATH}/macvlan-a")).json();
    assert_eq!(nad["kind"], "NetworkAttachmentDefinition");
    assert_eq!(
        nad["spec"]["config"],
        r#"{"cniVersion":"0.4.0","type":"macvlan"}"#
    );
    let all = c
        .get("/apis/k8s.cni.cncf.io/v1/network-attachment-definitions")
        .json();
    assert_eq!(all["kind"], "NetworkAttachmentDefinitionList");
    assert_eq!(names(&all), ["macvlan-a", "other"]);

    let del = c.request("DELETE", &format!("{POD_PATH}/p1"), None, b"");
    assert_eq!(del.status, 200);
    assert!(api.get_pod("blue", "p1").is_none());
    assert_eq!(
        c.request("DELETE", &format!("{POD_PATH}/p1"), None, b"")
            .status,
        404
    );
    let uid_mismatch = json!({"preconditions": {"uid": "nope"}});
    assert_eq!(
        c.json(
            "DELETE",
            &format!("{POD_PATH}/p2"),
            "application/json",
            &uid_mismatch
        )
        .status,
        409
    );
    assert!(api.delete_nad("blue", "macvlan-a").is_some());
    assert_eq!(c.get(&format!("{NAD_PATH}/macvlan-a")).status, 404);
}

#[test]
fn merge_patch_on_pod_status_sets_annotations() {
    let api = server();
    let c = Client::of(&api);
    let before = pod(&api, "p", "node-1");
    let uid = before["metadata"]["uid"].as_str().unwrap();
    let patch =
        json!({"metadata": {"uid": uid, "annotations": {STATUS_KEY: "[{\"name\":\"cluster\"}]"}}});
    let r = c.json(
        "PATCH",
        &format!("{POD_PATH}/p/status"),
        "application/merge-patch+json",
        &patch,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let after = r.json();
    assert_eq!(
        after["metadata"]["annotations"][STATUS_KEY],
        "[{\"name\":\"cluster\"}]"
    );
    assert_eq!(
        after["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"], "a,b",
        "other annotations kept"
    );
    assert!(rv_of(&after) > rv_of(&before));
    assert_eq!(api.get_pod("blue", "p").unwrap(), after);

    // Removing with null, and spec is not writable through the status subresource.
    let patch =
        json!({"metadata": {"annotations": {STATUS_KEY: null}}, "spec": {"nodeName": "elsewhere"}});
    let after = c
        .json(
            "PATCH",
            &format!("{POD_PATH}/p/status"),
            "application/merge-patch+json; charset=utf-8",
            &patch,
        )
        .json();
    assert!(after["metadata"]["annotations"].get(STATUS_KEY).is_none());
    assert_eq!(after["spec"]["nodeName"], "node-1");

    // Annotation values must be strings, as on a real server.
    let bad = json!({"metadata": {"annotations": {STATUS_KEY: [{"name": "x"}]}}});
    assert_eq!(
        c.json(
            "PATCH",
            &format!("{POD_PATH}/p/status"),
            "application/merge-patch+json",
            &bad
        )
        .status,
        400
    );
    assert_eq!(
        c.json(
            "PATCH",
            &format!("{POD_PATH}/missing/status"),
            "application/merge-patch+json",
            &json!({})
        )
        .status,
        404
    );
}

#[test]
fn uid_precondition_conflicts_like_the_real_server() {
    let api = server();
    let c = Client::of(&api);
    let stored = pod(&api, "p", "node-1");
    let uid = stored["metadata"]["uid"].as_str().unwrap();
    let patch = json!({"metadata": {"uid": "11111111-2222-3333-4444-555555555555", "annotations": {STATUS_KEY: "[]"}}});
    let r = c.json(
        "PATCH",
        &format!("{POD_PATH}/p/status"),
        "application/merge-patch+json",
        &patch,
    );
    assert_eq!(r.status, 409);
    let s = r.json();
    assert_eq!(
        (
            s["kind"].clone(),
            s["status"].clone(),
            s["reason"].clone(),
            s["code"].clone()
        ),
        (
            json!("Status"),
            json!("Failure"),
            json!("Conflict"),
            json!(409)
        )
    );
    let msg = s["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Operation cannot be fulfilled on pods \"p\": "),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("Precondition failed: UID in precondition: 11111111-2222-3333-4444-555555555555, UID in object meta: {uid}")),
        "{msg}"
    );
    assert_eq!(
        api.get_pod("blue", "p").unwrap(),
        stored,
        "a failed precondition changes nothing"
    );

    // A stale resourceVersion is the other kind of conflict.
    let stale = json!({"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}});
    let r = c
        .json(
            "PATCH",
            &format!("{POD_PATH}/p"),
            "application/merge-patch+json",
            &stale,
        )
        .json();
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified"),
        "{r}"
    );
}

#[test]
fn json_patch_strategic_patch_and_unsupported_types() {
    let api = server();
    let c = Client::of(&api);
    pod(&api, "p", "node-1");
    let ops = json!([
        {"op": "test", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks", "value": "a,b"},
        {"op": "add", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1network-status", "value": "[]"},
        {"op": "remove", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks"},
    ]);
    let r = c.json(
        "PATCH",
        &format!("{POD_PATH}/p"),
        "application/json-patch+json",
        &ops,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["metadata"]["annotations"],
        json!({STATUS_KEY: "[]"})
    );
    let failing = json!([{"op": "test", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1network-status", "value": "x"}]);
    assert_eq!(
        c.json(
            "PATCH",
            &format!("{POD_PATH}/p"),
            "application/json-patch+json",
            &failing
        )
        .status,
        422
    );

    let smp = json!({"metadata": {"labels": {"app": "web"}, "annotations": {"x": "y"}}});
    let r = c
        .json(
            "PATCH",
            &format!("{POD_PATH}/p"),
            "application/strategic-merge-patch+json",
            &smp,
        )
        .json();
    assert_eq!(r["metadata"]["labels"]["app"], "web");
    assert_eq!(
        r["metadata"]["annotations"],
        json!({STATUS_KEY: "[]", "x": "y"})
    );

    let r = c.request(
        "PATCH",
        &format!("{POD_PATH}/p"),
        Some("application/apply-patch+yaml"),
        b"metadata: {}",
    );
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (415, json!("UnsupportedMediaType"))
    );
    assert_eq!(
        c.request("PATCH", &format!("{POD_PATH}/p"), None, b"{}")
            .status,
        415
    );
    assert_eq!(
        c.request(
            "PATCH",
            &format!("{POD_PATH}/p"),
            Some("application/merge-patch+json"),
            b"{nope"
        )
        .status,
        400
    );

    // NADs are patchable the same way.
    api.create_nad("blue", "n", Some("{}"));
    let r = c.json(
        "PATCH",
        &format!("{NAD_PATH}/n"),
        "application/merge-patch+json",
        &json!({"spec": {"config": "{\"a\":1}"}}),
    );
    assert_eq!(r.json()["spec"]["config"], "{\"a\":1}");
}

#[test]
fn watch_streams_added_modified_deleted_and_bookmarks() {
    let api = FakeApiServer::start(FakeApiOptions {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .unwrap();
    let c = Client::of(&api);
    pod(&api, "p1", "node-1");
    pod(&api, "other-node", "node-2");

    let mut w = c.watch(
        "/api/v1/pods?watch=1&fieldSelector=spec.nodeName%3Dnode-1&allowWatchBookmarks=true",
    );
    let e = w.next_change().unwrap();
    assert_eq!(
        (e["type"].clone(), e["object"]["metadata"]["name"].clone()),
        (json!("ADDED"), json!("p1"))
    );
    assert_eq!(e["object"]["kind"], "Pod");

    api.patch_pod(
        "blue",
        "p1",
        &json!({"metadata": {"annotations": {"x": "1"}}}),
    )
    .unwrap();
    let e = w.next_change().unwrap();
    assert_eq!(e["type"], "MODIFIED");
    assert_eq!(e["object"]["metadata"]["annotations"]["x"], "1");
    let modified_rv = rv_of(&e["object"]);

    // A change on another node is not seen; a new pod on this node is.
    api.patch_pod(
        "blue",
        "other-node",
        &json!({"metadata": {"labels": {"y": "2"}}}),
    )
    .unwrap();
    pod(&api, "p2", "node-1");
    let e = w.next_change().unwrap();
    assert_eq!(
        (e["type"].clone(), e["object"]["metadata"]["name"].clone()),
        (json!("ADDED"), json!("p2"))
    );
    api.delete_pod("blue", "p2");
    assert_eq!(w.next_change().unwrap()["type"], "DELETED");

    // Bookmarks carry the latest resourceVersion and nothing else.
    let b = loop {
        let e = w.next().unwrap();
        if e["type"] == "BOOKMARK" {
            break e;
        }
    };
    assert_eq!(b["object"]["kind"], "Pod");
    assert_eq!(rv_of(&b["object"]), api.resource_version());

    // Resuming from a resourceVersion replays only what came after it; timeoutSeconds ends the stream.
    let mut w = c.watch(&format!(
        "{POD_PATH}?watch=true&resourceVersion={modified_rv}&timeoutSeconds=1"
    ));
    let types: Vec<String> = std::iter::from_fn(|| w.next_change())
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["MODIFIED", "ADDED", "DELETED"]);

    // A NAD watch with sendInitialEvents ends the initial list with the annotated bookmark.
    api.create_nad("blue", "n", None);
    let mut w = c.watch(&format!("{NAD_PATH}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"));
    assert_eq!(w.next().unwrap()["type"], "ADDED");
    let b = w.next().unwrap();
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(
        b["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[test]
fn partial_object_metadata_for_get_list_and_watch() {
    let api = server();
    pod(&api, "p1", "node-1");
    let meta = |what: &str| Client {
        accept: format!("application/json;as={what};g=meta.k8s.io;v=v1"),
        ..Client::of(&api)
    };
    let c = meta("PartialObjectMetadata");
    let r = c.get(&format!("{POD_PATH}/p1"));
    assert_eq!(r.status, 200);
    let o = r.json();
    assert_eq!(
        (o["kind"].as_str(), o["apiVersion"].as_str()),
        (Some("PartialObjectMetadata"), Some("meta.k8s.io/v1"))
    );
    assert_eq!(
        o["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"],
        "a,b"
    );
    assert!(o.get("spec").is_none(), "{o}");

    let l = meta("PartialObjectMetadataList")
        .get("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1")
        .json();
    assert_eq!(l["kind"], "PartialObjectMetadataList");
    assert_eq!(names(&l), ["p1"]);
    assert!(l["items"][0].get("spec").is_none(), "{l}");
    assert!(l["metadata"]["resourceVersion"].is_string(), "{l}");
    // A list asked for as a single object is not acceptable.
    assert_eq!(c.get(POD_PATH).status, 406);

    let mut w = c.watch("/api/v1/pods?watch=1&fieldSelector=spec.nodeName%3Dnode-1");
    let e = w.next_change().unwrap();
    assert_eq!(e["type"], "ADDED");
    assert_eq!(e["object"]["kind"], "PartialObjectMetadata");
    assert!(e["object"].get("spec").is_none(), "{e}");
    api.patch_pod(
        "blue",
        "p1",
        &json!({"metadata": {"annotations": {"x": "1"}}}),
    )
    .unwrap();
    let e = w.next_change().unwrap();
    assert_eq!(e["type"], "MODIFIED");
    assert_eq!(e["object"]["metadata"]["annotations"]["x"], "1");
    assert!(e["object"].get("spec").is_none(), "{e}");
}

/// A PATCH (or PUT) answers with the object as the request's `Accept` asks: metadata only for
/// `as=PartialObjectMetadata`. Negotiation comes first, so a `406` leaves the object unchanged.
#[test]
fn patch_answers_metadata_only_when_asked_and_a_406_writes_nothing() {
    let api = server();
    pod(&api, "p", "node-1");
    let meta = |accept: &str| Client {
        accept: accept.to_owned(),
        ..Client::of(&api)
    };
    let path = format!("{POD_PATH}/p/status");
    let patch = |c: &Client, value: &str| {
        c.json(
            "PATCH",
            &path,
            "application/merge-patch+json",
            &json!({"metadata": {"annotations": {STATUS_KEY: value}}}),
        )
    };

    let r = patch(
        &meta("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"),
        "one",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let o = r.json();
    assert_eq!(o["kind"], "PartialObjectMetadata");
    assert_eq!(o["metadata"]["annotations"][STATUS_KEY], "one");
    assert!(o.get("spec").is_none() && o.get("status").is_none(), "{o}");

    // A list view for a single object, with no plain-JSON fallback: not acceptable, not applied.
    let r = patch(
        &meta("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
        "two",
    );
    assert_eq!(r.status, 406, "{}", String::from_utf8_lossy(&r.body));
    let now = Client::of(&api).get(&format!("{POD_PATH}/p")).json();
    assert_eq!(now["metadata"]["annotations"][STATUS_KEY], "one");
    assert!(
        now.get("spec").is_some(),
        "plain JSON is the whole pod: {now}"
    );
}

#[test]
fn bearer_token_is_required_when_configured() {
    let api = FakeApiServer::start(FakeApiOptions {
        token: Some("s3cr3t".into()),
        ..Default::default()
    })
    .unwrap();
    pod(&api, "p", "n");
    let path = format!("{POD_PATH}/p");
    let r = Client::of(&api).get(&path);
    assert_eq!(
        (
            r.status,
            r.json()["reason"].clone(),
            r.json()["kind"].clone()
        ),
        (401, json!("Unauthorized"), json!("Status"))
    );
    assert_eq!(Client::of(&api).with_token("wrong").get(&path).status, 401);
    assert_eq!(Client::of(&api).with_token("s3cr3t").get(&path).status, 200);
    assert_eq!(
        Client::of(&api).get("/healthz").status,
        200,
        "anonymous health checks are allowed"
    );
    api.set_token(Some("rotated".into()));
    assert_eq!(Client::of(&api).with_token("s3cr3t").get(&path).status, 401);
    assert_eq!(
        Client::of(&api).with_token("rotated").get(&path).status,
        200
    );
}

#[test]
fn tls_with_generated_ca_and_kubeconfig() {
    let api = FakeApiServer::start(FakeApiOptions {
        tls: true,
        token: Some("tok".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(api.url().starts_with("https://127.0.0.1:"));
    let ca = api.ca_pem().expect("CA in TLS mode");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    pod(&api, "p", "n");

    let c = Client::of(&api).with_token("tok");
    let r = c.get(&format!("{POD_PATH}/p"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["metadata"]["name"], "p");
    let by_name = Client {
        sni: Some("localhost".into()),
        ..Client::of(&api).with_token("tok")
    };
    assert_eq!(
        by_name.get("/version").status,
        200,
        "the certificate is valid for localhost too"
    );

    // Without the CA the server is not trusted.
    let untrusted = Client {
        ca_pem: None,
        ..Client::of(&api)
    };
    let mut s = untrusted.connect().unwrap();
    assert!(
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .and_then(|_| s.flush())
            .is_err()
    );

    let dir = tempfile::tempdir().unwrap();
    let kc = api.write_kubeconfig(&dir.path().join("kube")).unwrap();
    let v: Value = serde_yaml::from_str(&std::fs::read_to_string(&kc).unwrap()).unwrap();
    let cluster = &v["clusters"][0]["cluster"];
    assert_eq!(cluster["server"], api.url());
    let ca_path = cluster["certificate-authority"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(ca_path).unwrap(), ca);
    let token_file = v["users"][0]["user"]["tokenFile"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(token_file).unwrap(), "tok");
    assert_eq!(v["current-context"], "fake");

    let plain = server();
    let kc = plain.write_kubeconfig(dir.path()).unwrap();
    let v: Value = serde_yaml::from_str(&std::fs::read_to_string(kc).unwrap()).unwrap();
    assert!(
        v["clusters"][0]["cluster"]
            .get("certificate-authority")
            .is_none()
    );
    assert_eq!(v["users"][0]["user"], json!({}));
}

#[test]
fn latency_faults_and_the_request_log() {
    let api = server();
    let c = Client::of(&api);
    pod(&api, "p", "n");
    api.clear_requests();

    api.set_latency(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(c.get(&format!("{POD_PATH}/p")).status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    api.set_latency(Duration::ZERO);

    api.set_fail_next("patch", "/pods/p/status", 500);
    let patch = json!({"metadata": {"annotations": {"a": "b"}}});
    let r = c.json(
        "PATCH",
        &format!("{POD_PATH}/p/status"),
        "application/merge-patch+json",
        &patch,
    );
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (500, json!("InternalError"))
    );
    assert!(
        api.get_pod("blue", "p").unwrap()["metadata"]["annotations"]
            .get("a")
            .is_none(),
        "a failed request changes nothing"
    );
    assert_eq!(
        c.json(
            "PATCH",
            &format!("{POD_PATH}/p/status"),
            "application/merge-patch+json",
            &patch
        )
        .status,
        200,
        "only once"
    );
    c.get(&format!("{NAD_PATH}/x?resourceVersion=0"));

    let log = api.requests();
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!(api.count("GET", "/pods/p"), 1);
    assert_eq!(api.count("PATCH", "/pods/p/status"), 2);
    assert_eq!(api.count("GET", "/network-attachment-definitions/"), 1);
    assert_eq!(api.count("POST", ""), 0);
    assert_eq!(
        (log[1].status, log[2].status, log[3].status),
        (500, 200, 404)
    );
    assert_eq!(log[2].request_bytes, patch.to_string().len());
    assert!(log[2].response_bytes > 100);
    assert_eq!(log[3].query, "resourceVersion=0");
    assert_eq!(
        log[3].path,
        "/apis/k8s.cni.cncf.io/v1/namespaces/blue/network-attachment-definitions/x"
    );
    api.clear_requests();
    assert!(api.requests().is_empty());
}

#[test]
fn scripted_error_faults_answer_like_the_real_server_then_stop() {
    let api = server();
    let c = Client::of(&api);
    pod(&api, "p", "n");
    api.clear_requests();
    api.inject(Fault::on("GET", "/pods/p").status(500).times(2));
    for _ in 0..2 {
        let r = c.get(&format!("{POD_PATH}/p"));
        assert_eq!(r.status, 500);
        let b = r.json();
        assert_eq!(
            (b["kind"].clone(), b["reason"].clone(), b["code"].clone()),
            (json!("Status"), json!("InternalError"), json!(500))
        );
        assert!(
            b["message"]
                .as_str()
                .unwrap()
                .starts_with("Internal error occurred: "),
            "{b}"
        );
    }
    assert_eq!(
        c.get(&format!("{POD_PATH}/p")).status,
        200,
        "two faults, then served"
    );
    assert_eq!(api.statuses("GET", "/pods/p"), [500, 500, 200]);

    // 409 on an object names it; 410 is Expired; other methods and paths are not touched.
    api.inject(Fault::on("PATCH", "/pods/p/status").status(409));
    api.inject(Fault::on("GET", "/network-attachment-definitions").status(410));
    let patch = json!({"metadata": {"annotations": {"a": "b"}}});
    let r = c.json(
        "PATCH",
        &format!("{POD_PATH}/p/status"),
        "application/merge-patch+json",
        &patch,
    );
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (409, json!("Conflict"))
    );
    assert!(
        r.json()["message"].as_str().unwrap().contains("pods \"p\""),
        "{}",
        r.json()
    );
    assert!(
        api.get_pod("blue", "p").unwrap()["metadata"]["annotations"]
            .get("a")
            .is_none(),
        "a failed request changes nothing"
    );
    assert_eq!(c.get(&format!("{POD_PATH}/p")).status, 200);
    let r = c.get(NAD_PATH);
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (410, json!("Expired"))
    );
}

#[test]
fn too_many_requests_carries_retry_after() {
    let api = server();
    let c = Client::of(&api);
    pod(&api, "p", "n");
    api.inject(Fault::on("*", "/pods/p").too_many_requests(3));
    let r = c.get(&format!("{POD_PATH}/p"));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("3"));
    let b = r.json();
    assert_eq!(b["reason"], "TooManyRequests");
    assert_eq!(b["details"]["retryAfterSeconds"], 3);
    assert_eq!(c.get(&format!("{POD_PATH}/p")).status, 200);
}

#[test]
fn dropped_connections_get_no_answer_and_are_logged() {
    let api = server();
    let c = Client::of(&api);
    pod(&api, "p", "n");
    api.clear_requests();
    api.inject(Fault::on("GET", "/pods/p").drop_connection().once());
    let mut r = c.send("GET", &format!("{POD_PATH}/p"), None, b"").unwrap();
    let mut rest = Vec::new();
    let n = r.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "no byte of an answer: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(c.get(&format!("{POD_PATH}/p")).status, 200);
    assert_eq!(api.statuses("GET", "/pods/p"), [0, 200]);
}

#[test]
fn flapping_and_slow_faults() {
    let api = server();
    let c = Client::of(&api);
    pod(&api, "p", "n");
    api.clear_requests();
    api.inject(Fault::on("GET", "/pods/p").status(503).flapping(1, 2));
    let seen: Vec<u16> = (0..6)
        .map(|_| c.get(&format!("{POD_PATH}/p")).status)
        .collect();
    assert_eq!(seen, [503, 200, 200, 503, 200, 200]);
    api.clear_faults();
    assert_eq!(c.get(&format!("{POD_PATH}/p")).status, 200);

    api.inject(
        Fault::on("GET", "/pods/p")
            .delay(Duration::from_millis(1500))
            .once(),
    );
    let t = Instant::now();
    assert_eq!(
        c.get(&format!("{POD_PATH}/p")).status,
        200,
        "served after the delay"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn events_are_accepted_on_both_apis() {
    let api = server();
    let c = Client::of(&api);
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "p.1"}, "reason": "AddedInterface", "message": "net1"});
    assert_eq!(
        c.json(
            "POST",
            "/api/v1/namespaces/blue/events",
            "application/json",
            &ev
        )
        .status,
        201
    );
    let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"generateName": "p."}, "reason": "AddedInterface", "note": "net2"});
    assert_eq!(
        c.json(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/blue/events",
            "application/json",
            &ev
        )
        .status,
        201
    );
    let evs = api.events();
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0]["message"], "net1");
    assert_eq!(evs[1]["note"], "net2");
}

#[test]
fn stopping_closes_the_port() {
    let api = server();
    let addr = api.addr();
    assert_eq!(Client::of(&api).get("/healthz").status, 200);
    // A watch still open while stopping must not hold the server up.
    let c = Client::of(&api);
    let mut w = c.watch("/api/v1/pods?watch=1");
    api.stop();
    assert!(
        TcpStream::connect(addr).is_err(),
        "connections are refused after stop"
    );
    assert!(w.next().is_none(), "open watches end");
    drop(api);
    let again = server();
    drop(again);
}

#[test]
fn binary_serves_seeds_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(
        &seed,
        "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: a\n  namespace: blue\nspec:\n  config: '{}'\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: blue\n  uid: will-be-replaced\nspec:\n  nodeName: n1\n",
    )
    .unwrap();
    let port_file = dir.path().join("url");
    let log = dir.path().join("requests.jsonl");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fake-apiserver"))
        .args(["--token", "t", "--seed"])
        .arg(&seed)
        .arg("--port-file")
        .arg(&port_file)
        .arg("--kubeconfig-out")
        .arg(dir.path().join("kube"))
        .arg("--request-log")
        .arg(&log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !port_file.exists() {
        assert!(Instant::now() < deadline, "no port file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = std::fs::read_to_string(&port_file).unwrap();
    let c = Client {
        url,
        ca_pem: None,
        token: Some("t".into()),
        sni: None,
        accept: "application/json".to_owned(),
    };
    assert_eq!(
        c.get(&format!("{NAD_PATH}/a")).json()["spec"]["config"],
        "{}"
    );
    let p = c.get(&format!("{POD_PATH}/p")).json();
    assert_ne!(p["metadata"]["uid"], "will-be-replaced");
    assert!(
        dir.path().join("kube/kubeconfig").is_file() && dir.path().join("kube/token").is_file()
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["method"].clone(), first["status"].clone()),
        (json!("GET"), json!(200))
    );
    assert_eq!(lines.lines().count(), 2);

    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn netns_and_host_links_are_cleaned_up() {
    plexus_e2e::netns::require_root();
    let path;
    {
        let ns = NetNs::new("pxtest").unwrap();
        path = ns.path().to_owned();
        assert!(path.exists(), "{} missing", path.display());
        assert!(ns.name().len() <= 15);
        let links = ns.links();
        assert_eq!(links[0]["ifname"], "lo");
        ns.exec(&[
            "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1",
        ])
        .unwrap();
        assert_eq!(ns.links().as_array().unwrap().len(), 3);
        assert!(ns.routes().is_array() && ns.addrs().is_array());
        assert!(ns.exec(&["false"]).is_err());
    }
    assert!(!path.exists(), "netns left behind at {}", path.display());

    let br = plexus_e2e::netns::unique_name("pxbr");
    let (a, b) = (
        plexus_e2e::netns::unique_name("pxa"),
        plexus_e2e::netns::unique_name("pxb"),
    );
    {
        let _bridge = HostLink::bridge(&br).unwrap();
        let veth = HostLink::veth_pair(&a, &b).unwrap();
        assert_eq!(veth.peer(), Some(b.as_str()));
        for l in [&br, &a, &b] {
            assert!(
                std::process::Command::new("ip")
                    .args(["link", "show", l])
                    .output()
                    .unwrap()
                    .status
                    .success(),
                "{l} missing"
            );
        }
    }
    for l in [&br, &a, &b] {
        assert!(
            !std::process::Command::new("ip")
                .args(["link", "show", l])
                .output()
                .unwrap()
                .status
                .success(),
            "{l} left behind"
        );
    }
}

#[test]
fn token_request_binds_to_pods_and_nodes_and_deleting_the_pod_invalidates_its_token() {
    let api = server();
    api.create_service_account("plexus-system", "plexus");
    api.create_node("node-1");
    api.create_pod(json!({
        "metadata": {"name": "plexus-abcde", "namespace": "plexus-system"},
        "spec": {"nodeName": "node-1", "serviceAccountName": "plexus"}
    }));
    let pod_token = api
        .issue_pod_token("plexus-system", "plexus-abcde")
        .unwrap();
    let tr_path = "/api/v1/namespaces/plexus-system/serviceaccounts/plexus/token";
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Node", "name": "node-1"},
            "expirationSeconds": 86400}});
    // Issued tokens turn authentication on: no token, no request.
    assert_eq!(
        Client::of(&api)
            .json("POST", tr_path, "application/json", &body)
            .status,
        401
    );
    let r =
        Client::of(&api)
            .with_token(&pod_token)
            .json("POST", tr_path, "application/json", &body);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let tr = r.json();
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["spec"]["expirationSeconds"], 86400);
    assert!(
        tr["status"]["expirationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let node_token = tr["status"]["token"].as_str().unwrap().to_owned();
    let claims = plexus_e2e::fakeapi::tokens::claims_of(&node_token).unwrap();
    assert_eq!(claims["kubernetes.io"]["node"]["name"], "node-1");
    assert_eq!(claims["sub"], "system:serviceaccount:plexus-system:plexus");

    let path = "/api/v1/namespaces/plexus-system/pods/plexus-abcde";
    assert_eq!(
        Client::of(&api).with_token(&pod_token).get(path).status,
        200
    );
    api.delete_pod("plexus-system", "plexus-abcde");
    let r = Client::of(&api).with_token(&pod_token).get(path);
    assert_eq!(
        (
            r.status,
            r.json()["kind"].clone(),
            r.json()["reason"].clone()
        ),
        (401, json!("Status"), json!("Unauthorized")),
        "a token bound to a deleted pod must stop working"
    );
    assert_eq!(
        Client::of(&api)
            .with_token(&node_token)
            .get(POD_PATH)
            .status,
        200
    );
    assert_eq!(
        Client::of(&api).with_token("made-up").get(POD_PATH).status,
        401
    );

    // Older servers: no binding to Nodes, a 400 with the real server's wording.
    api.set_node_token_binding(false);
    let r =
        Client::of(&api)
            .with_token(&node_token)
            .json("POST", tr_path, "application/json", &body);
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("ServiceAccountTokenNodeBinding"),
        "{}",
        r.json()
    );
    api.delete_node("node-1");
    assert_eq!(
        Client::of(&api)
            .with_token(&node_token)
            .get(POD_PATH)
            .status,
        401
    );
}

// ---------------------------------------------------------------- HTTP/2 over TLS

/// An HTTP/2 client connection to `api` (TLS with ALPN `h2`, as kube-apiserver's clients offer):
/// the sender and the negotiated ALPN protocol.
async fn h2_connect(
    api: &FakeApiServer,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    Option<Vec<u8>>,
) {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(api.ca_pem().expect("TLS").as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("CA cert");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(api.addr()).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    (send, alpn)
}

fn h2_request(
    method: &str,
    path: &str,
    body: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(format!("https://127.0.0.1{path}"))
        .header("authorization", "Bearer tok")
        .header("content-type", "application/merge-patch+json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .unwrap()
}

#[test]
fn over_tls_http2_one_connection_carries_a_watch_and_other_requests() {
    use http_body_util::BodyExt;
    let api = FakeApiServer::start(FakeApiOptions {
        tls: true,
        token: Some("tok".into()),
        ..Default::default()
    })
    .unwrap();
    pod(&api, "p", "n");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut send, alpn) = h2_connect(&api).await;
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        // A watch stays open on one stream while a GET and a PATCH go on others; the PATCH's
        // change arrives on the watch as a DATA frame of its own (one JSON line).
        let watch = send
            .send_request(h2_request("GET", &format!("{POD_PATH}?watch=1"), ""))
            .await
            .unwrap();
        assert_eq!(watch.status(), 200);
        let mut events = watch.into_body();
        let first = events.frame().await.unwrap().unwrap().into_data().unwrap();
        let added: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(added["type"], "ADDED");

        let got = send
            .send_request(h2_request("GET", &format!("{POD_PATH}/p"), ""))
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        let patched = send
            .send_request(h2_request(
                "PATCH",
                &format!("{POD_PATH}/p/status"),
                r#"{"metadata":{"annotations":{"a":"b"}}}"#,
            ))
            .await
            .unwrap();
        assert_eq!(patched.status(), 200);
        let next = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let data = events.frame().await.unwrap().unwrap().into_data().unwrap();
                let ev: Value = serde_json::from_slice(&data).unwrap();
                if ev["type"] == "MODIFIED" {
                    return ev;
                }
            }
        })
        .await
        .expect("the watch delivers the change");
        assert_eq!(next["object"]["metadata"]["annotations"]["a"], "b");
    });
    let reqs = api.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(
        reqs.iter()
            .all(|r| r.http_version == "HTTP/2.0" && r.connection == reqs[0].connection),
        "{reqs:?}"
    );
    let c = api.connections();
    assert_eq!((c.accepted, c.handshakes), (1, 1));
}

#[test]
fn plain_http_and_clients_without_h2_get_http1() {
    // The minimal client offers no ALPN: HTTP/1.1 over TLS, and on plain HTTP always.
    for tls in [true, false] {
        let api = FakeApiServer::start(FakeApiOptions {
            tls,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(Client::of(&api).get("/version").status, 200);
        assert_eq!(Client::of(&api).get("/version").status, 200);
        let reqs = api.requests();
        assert!(
            reqs.iter().all(|r| r.http_version == "HTTP/1.1"),
            "{reqs:?}"
        );
        // `Connection: close`: one connection per request.
        let c = api.connections();
        assert_eq!((c.accepted, c.handshakes), (2, if tls { 2 } else { 0 }));
        assert_ne!(reqs[0].connection, reqs[1].connection);
    }
}
