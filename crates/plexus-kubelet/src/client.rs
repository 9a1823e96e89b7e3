//! The PodResources v1 client and the fallback order: `Get` for the pod → `List` (a kubelet too
//! old for `Get`, or with its feature gate off) → the checkpoint file (no socket, or nobody
//! listening on it). `Unavailable` and `ResourceExhausted` (the kubelet rate-limits this API) are
//! retried with backoff until the lookup's deadline; then the answer is "busy, try again later".

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::proto::pod_resources_lister_client::PodResourcesListerClient;
use crate::proto::{GetPodResourcesRequest, ListPodResourcesRequest, PodResources};
use plexus_engine::device::{DeviceError, DeviceLookup, DeviceMap};
use plexus_engine::resolve::PodRef;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

/// The kubelet caps its PodResources answers at this size (and so does the reference client):
/// `List` on a node with hundreds of pods is large.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// First pause after a busy answer; doubled each time up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The longest one lookup may take, whatever the caller asks: `kubeletTimeoutSeconds` is at most
/// ten minutes, and an unchecked huge timeout would overflow the deadline arithmetic (a panic,
/// hence no CNI answer at all).
pub const MAX_LOOKUP: Duration = Duration::from_secs(600);

/// The pod whose devices are looked up (the checkpoint is keyed by UID, the API by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodId {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// UID of the pod (the checkpoint's key); may be empty when the runtime gave none.
    pub uid: String,
}

/// Which source answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// PodResources `Get` for this pod.
    Get,
    /// PodResources `List` (every pod on the node), filtered to this pod.
    List,
    /// The device manager's checkpoint file.
    Checkpoint,
}

/// Why the devices of a pod could not be learnt.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The kubelet kept answering `Unavailable`/`ResourceExhausted` (or did not answer) until the
    /// deadline.
    #[error(
        "the kubelet PodResources API stayed busy for {waited:?} ({attempts} {method} attempts, last answer: {last}); try again later"
    )]
    Busy {
        /// `Get` or `List`.
        method: &'static str,
        /// How many calls were made.
        attempts: u32,
        /// How long it tried.
        waited: Duration,
        /// The last answer.
        last: String,
    },
    /// The kubelet answered with an error that retrying will not fix.
    #[error("the kubelet PodResources API {method} failed: {code:?}: {message}")]
    Rpc {
        /// `Get` or `List`.
        method: &'static str,
        /// The gRPC status code.
        code: Code,
        /// The kubelet's message.
        message: String,
    },
    /// Neither the PodResources socket nor the checkpoint could be used.
    #[error("no device source: PodResources socket {socket}: {api}; and {checkpoint}")]
    NoSource {
        /// The configured socket.
        socket: PathBuf,
        /// Why the socket could not be used.
        api: String,
        /// Why the checkpoint could not be used.
        checkpoint: CheckpointError,
    },
    /// The checkpoint is keyed by pod UID and the runtime gave none.
    #[error(
        "the PodResources socket {socket} cannot be used ({api}) and the checkpoint fallback needs the pod UID (K8S_POD_UID), which the runtime did not pass"
    )]
    NoUid {
        /// The configured socket.
        socket: PathBuf,
        /// Why the socket could not be used.
        api: String,
    },
    /// The async runtime could not be started.
    #[error("cannot start the kubelet client runtime: {0}")]
    Runtime(std::io::Error),
}

impl KubeletError {
    /// True when the runtime should retry later (CNI code 11).
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Busy { .. })
    }
}

/// The kubelet's device allocations: PodResources API, then the checkpoint.
#[derive(Debug, Clone)]
pub struct KubeletDevices {
    socket: PathBuf,
    checkpoint: PathBuf,
    timeout: Duration,
    /// The end of the whole CNI call's budget, when it is sooner than `timeout` from now.
    call_deadline: Option<std::time::Instant>,
}

impl KubeletDevices {
    /// A client of the PodResources socket at `socket`, falling back to the checkpoint at
    /// `checkpoint`; one lookup (retries included) takes at most `timeout`.
    pub fn new(
        socket: impl Into<PathBuf>,
        checkpoint: impl Into<PathBuf>,
        timeout: Duration,
    ) -> Self {
        Self {
            socket: socket.into(),
            checkpoint: checkpoint.into(),
            timeout,
            call_deadline: None,
        }
    }

    /// Also ends every lookup at `deadline` (what is left of the CNI call's budget).
    pub fn with_call_deadline(mut self, deadline: std::time::Instant) -> Self {
        self.call_deadline = Some(deadline);
        self
    }

    /// The devices of `pod` by resource name, and which source gave them.
    pub fn pod_devices(&self, pod: &PodId) -> Result<(DeviceMap, Source), KubeletError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(KubeletError::Runtime)?;
        let deadline = lookup_deadline(std::time::Instant::now(), self.timeout, self.call_deadline);
        let api = match rt.block_on(self.ask_api(pod, deadline)) {
            Ok(found) => return Ok(found),
            Err(Unreachable(Ok(reason))) => reason,
            Err(Unreachable(Err(e))) => return Err(e),
        };
        tracing::warn!(socket = %self.socket.display(), "kubelet PodResources API unusable ({api}); reading the checkpoint {}", self.checkpoint.display());
        if pod.uid.is_empty() {
            return Err(KubeletError::NoUid {
                socket: self.socket.clone(),
                api,
            });
        }
        let cp =
            Checkpoint::read(&self.checkpoint).map_err(|checkpoint| KubeletError::NoSource {
                socket: self.socket.clone(),
                api: api.clone(),
                checkpoint,
            })?;
        Ok((cp.pod_devices(&pod.uid), Source::Checkpoint))
    }

    /// `Err(Unreachable(Ok(reason)))`: the API cannot be used at all (fall back to the
    /// checkpoint); `Err(Unreachable(Err(e)))`: the API answered and failed.
    async fn ask_api(
        &self,
        pod: &PodId,
        deadline: Instant,
    ) -> Result<(DeviceMap, Source), Unreachable> {
        if !self.socket.exists() {
            return Err(Unreachable(Ok("does not exist".into())));
        }
        let channel = match tokio::time::timeout_at(deadline, connect(&self.socket)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(Unreachable(Ok(format!("cannot connect: {e}")))),
            Err(_) => return Err(Unreachable(Ok("connect timed out".into()))),
        };
        let client = PodResourcesListerClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let get = retrying("Get", deadline, || {
            let mut c = client.clone();
            let req = GetPodResourcesRequest {
                pod_name: pod.name.clone(),
                pod_namespace: pod.namespace.clone(),
            };
            async move { c.get(req).await.map(|r| r.into_inner()) }
        })
        .await;
        match get {
            Ok(resp) => {
                let devices = resp
                    .pod_resources
                    .map(|p| devices_of(&[p]))
                    .unwrap_or_default();
                return Ok((devices, Source::Get));
            }
            Err(Failure::Status(s)) if get_unsupported(&s) => {
                tracing::debug!(
                    "PodResources Get unsupported ({:?}: {}); using List",
                    s.code(),
                    s.message()
                );
            }
            Err(Failure::Status(s))
                if s.code() == Code::Unknown && s.message().contains("not found") =>
            {
                // The kubelet does not know the pod: it holds no device for it.
                return Ok((DeviceMap::new(), Source::Get));
            }
            Err(f) => return Err(Unreachable(Err(f.into_error("Get")))),
        }
        let list = retrying("List", deadline, || {
            let mut c = client.clone();
            async move {
                c.list(ListPodResourcesRequest {})
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .map_err(|f| Unreachable(Err(f.into_error("List"))))?;
        let mine: Vec<PodResources> = list
            .pod_resources
            .into_iter()
            .filter(|p| p.name == pod.name && p.namespace == pod.namespace)
            .collect();
        Ok((devices_of(&mine), Source::List))
    }
}

impl DeviceLookup for KubeletDevices {
    fn devices(&self, pod: &PodRef, _wanted: &[String]) -> Result<DeviceMap, DeviceError> {
        let id = PodId {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        };
        match self.pod_devices(&id) {
            Ok((devices, source)) => {
                tracing::debug!(pod = %pod, ?source, "kubelet device allocation read");
                Ok(devices)
            }
            Err(e) if e.is_busy() => Err(DeviceError::Busy(e.to_string())),
            Err(e) => Err(DeviceError::Unavailable(e.to_string())),
        }
    }
}

/// The API path failed: `Ok(reason)` means it is not usable (fall back to the checkpoint),
/// `Err(e)` that it answered with a failure (no fallback: the kubelet is there and said no).
struct Unreachable(Result<String, KubeletError>);

enum Failure {
    Status(tonic::Status),
    Busy {
        attempts: u32,
        waited: Duration,
        last: String,
    },
}

impl Failure {
    fn into_error(self, method: &'static str) -> KubeletError {
        match self {
            Failure::Status(s) => KubeletError::Rpc {
                method,
                code: s.code(),
                message: s.message().to_owned(),
            },
            Failure::Busy {
                attempts,
                waited,
                last,
            } => KubeletError::Busy {
                method,
                attempts,
                waited,
                last,
            },
        }
    }
}

/// The end of one lookup started at `now`: `timeout` from now (clamped to [`MAX_LOOKUP`], so
/// that no caller's value can overflow the clock), or the call's deadline when that is sooner.
fn lookup_deadline(
    now: std::time::Instant,
    timeout: Duration,
    call_deadline: Option<std::time::Instant>,
) -> Instant {
    let own = now + timeout.min(MAX_LOOKUP);
    Instant::from_std(call_deadline.map_or(own, |call| own.min(call)))
}

/// `Get` on a kubelet that lacks it: UNIMPLEMENTED (older than 1.27) or UNKNOWN "... Get method
/// disabled" (the `KubeletPodResourcesGet` feature gate off).
fn get_unsupported(s: &tonic::Status) -> bool {
    s.code() == Code::Unimplemented
        || (s.code() == Code::Unknown && s.message().to_ascii_lowercase().contains("disabled"))
}

/// Calls `call` until it succeeds, fails for good, or the deadline leaves no room for another
/// attempt after the next pause. Each attempt is bounded by the deadline too.
async fn retrying<T, F, Fut>(method: &str, deadline: Instant, mut call: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last = match tokio::time::timeout_at(deadline, call()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(s)) if matches!(s.code(), Code::Unavailable | Code::ResourceExhausted) => {
                format!("{:?}: {}", s.code(), s.message())
            }
            Ok(Err(s)) => return Err(Failure::Status(s)),
            Err(_) => "no answer before the deadline".to_owned(),
        };
        if Instant::now() + pause >= deadline {
            return Err(Failure::Busy {
                attempts,
                waited: start.elapsed(),
                last,
            });
        }
        tracing::debug!(
            method,
            attempts,
            "kubelet busy ({last}); retrying in {pause:?}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Resource → device IDs over every container of `pods`.
fn devices_of(pods: &[PodResources]) -> DeviceMap {
    let mut out = DeviceMap::new();
    for c in pods.iter().flat_map(|p| &p.containers) {
        for d in &c.devices {
            out.entry(d.resource_name.clone())
                .or_default()
                .extend(d.device_ids.iter().cloned());
        }
    }
    out
}

/// A channel over the unix socket at `path` (gRPC needs an http URI; the host is never used).
/// A gRPC channel over the unix socket at `path` (the kubelet's sockets; also used by the device
/// plugin for the kubelet's `Registration` service).
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    Endpoint::from_static("http://kubelet.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ContainerDevices, ContainerResources};

    #[test]
    fn get_is_unsupported_only_for_the_kubelets_two_answers() {
        assert!(get_unsupported(&tonic::Status::unimplemented(
            "unknown method Get for service v1.PodResourcesLister"
        )));
        assert!(get_unsupported(&tonic::Status::unknown(
            "PodResources API Get method disabled"
        )));
        assert!(!get_unsupported(&tonic::Status::unknown(
            "pod web in namespace blue not found"
        )));
        assert!(!get_unsupported(&tonic::Status::resource_exhausted(
            "rejected by rate limit"
        )));
    }

    #[test]
    fn devices_of_merges_every_container() {
        let dev = |r: &str, ids: &[&str]| ContainerDevices {
            resource_name: r.into(),
            device_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            topology: None,
        };
        let pod = PodResources {
            name: "web".into(),
            namespace: "blue".into(),
            containers: vec![
                ContainerResources {
                    name: "app".into(),
                    devices: vec![dev("r/a", &["1"]), dev("r/b", &["9"])],
                    ..Default::default()
                },
                ContainerResources {
                    name: "side".into(),
                    devices: vec![dev("r/a", &["2"])],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let m = devices_of(&[pod]);
        assert_eq!(m["r/a"], ["1", "2"]);
        assert_eq!(m["r/b"], ["9"]);
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Both of the kubelet's "busy" codes are retried until an answer comes; any other code ends
    /// the lookup at once.
    #[test]
    fn unavailable_and_resource_exhausted_are_retried_others_are_not() {
        for busy in [Code::Unavailable, Code::ResourceExhausted] {
            let mut calls = 0;
            let got = run(retrying(
                "Get",
                Instant::now() + Duration::from_secs(60),
                || {
                    calls += 1;
                    let n = calls;
                    async move {
                        if n < 3 {
                            Err(tonic::Status::new(busy, "rate limited"))
                        } else {
                            Ok(n)
                        }
                    }
                },
            ));
            assert!(matches!(got, Ok(3)), "{busy:?}");
        }
        let mut calls = 0;
        let got = run(retrying(
            "Get",
            Instant::now() + Duration::from_secs(60),
            || {
                calls += 1;
                async { Err::<(), _>(tonic::Status::permission_denied("no")) }
            },
        ));
        assert!(matches!(got, Err(Failure::Status(s)) if s.code() == Code::PermissionDenied));
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_kubelet_busy_past_the_deadline_is_busy_naming_the_last_answer() {
        for busy in [Code::Unavailable, Code::ResourceExhausted] {
            let got = run(retrying(
                "List",
                Instant::now() + Duration::from_millis(300),
                || async { Err::<(), _>(tonic::Status::new(busy, "try later")) },
            ));
            let Err(Failure::Busy { attempts, last, .. }) = got else {
                panic!("{busy:?}: not busy");
            };
            assert!(attempts >= 2, "{busy:?}: {attempts}");
            assert!(last.contains(&format!("{busy:?}")), "{last}");
            let e = Failure::Busy {
                attempts,
                waited: Duration::ZERO,
                last,
            }
            .into_error("List");
            assert!(e.is_busy());
        }
    }

    #[test]
    fn a_huge_timeout_is_clamped_not_an_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodId {
            namespace: "blue".into(),
            name: "web".into(),
            uid: "u1".into(),
        };
        for timeout in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
            let k = KubeletDevices::new(
                dir.path().join("kubelet.sock"),
                dir.path().join("checkpoint"),
                timeout,
            );
            let e = k.pod_devices(&pod).unwrap_err();
            assert!(e.to_string().contains("does not exist"), "{e}");
        }
        let now = std::time::Instant::now();
        assert_eq!(
            lookup_deadline(now, Duration::MAX, None),
            Instant::from_std(now + MAX_LOOKUP)
        );
        let sooner = now + Duration::from_secs(3);
        assert_eq!(
            lookup_deadline(now, Duration::MAX, Some(sooner)),
            Instant::from_std(sooner)
        );
        assert_eq!(
            lookup_deadline(now, Duration::from_secs(1), Some(sooner)),
            Instant::from_std(now + Duration::from_secs(1))
        );
    }

    #[test]
    fn no_socket_and_no_checkpoint_names_both_and_no_uid_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let k = KubeletDevices::new(
            dir.path().join("kubelet.sock"),
            dir.path().join("checkpoint"),
            Duration::from_secs(1),
        );
        let pod = PodId {
            namespace: "blue".into(),
            name: "web".into(),
            uid: "u1".into(),
        };
        let e = k.pod_devices(&pod).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("kubelet.sock")
                && msg.contains("does not exist")
                && msg.contains("checkpoint"),
            "{msg}"
        );
        assert!(!e.is_busy());
        let e = k
            .pod_devices(&PodId {
                uid: String::new(),
                ..pod
            })
            .unwrap_err();
        assert!(e.to_string().contains("K8S_POD_UID"), "{e}");
    }
}
