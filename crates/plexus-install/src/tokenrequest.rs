//! [`KubeIssuer`]: the TokenRequest API through kube, authenticated with the installer pod's own
//! projected token (re-read by kube as the kubelet rotates it) and the cluster CA.

use crate::token::{IssuedToken, TokenError, TokenIssuer, TokenSpec};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use plexus_cni::report::chain;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::runtime::Runtime;

/// The installer's `User-Agent`: `plexus-install/<version> (<commit>)`.
pub fn user_agent() -> String {
    format!(
        "plexus-install/{} ({})",
        plexus_cni::build::VERSION,
        plexus_cni::build::COMMIT
    )
}

/// Bound on one TokenRequest (connect, send, answer): the installer must not hang on a sick API
/// server; it falls back and retries.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Requests tokens from the API server at `server`.
pub struct KubeIssuer {
    rt: Runtime,
    server: String,
    sa_dir: PathBuf,
    /// Built on first use (a client needs the runtime), rebuilt after a client-side failure.
    client: std::cell::RefCell<Option<Client>>,
}

impl std::fmt::Debug for KubeIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeIssuer")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl KubeIssuer {
    /// `sa_dir` holds the installer pod's `token` and `ca.crt`.
    pub fn new(server: &str, sa_dir: &Path) -> Result<Self, TokenError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TokenError::Failed(format!("cannot create a runtime: {e}")))?;
        Ok(Self {
            rt,
            server: server.to_owned(),
            sa_dir: sa_dir.to_path_buf(),
            client: std::cell::RefCell::new(None),
        })
    }

    async fn build(&self) -> Result<Client, TokenError> {
        let mut cluster = json!({"server": self.server});
        if self.server.starts_with("https:") {
            cluster["certificate-authority"] = json!(self.sa_dir.join("ca.crt"));
        }
        let kc: Kubeconfig = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": {"tokenFile": self.sa_dir.join("token")}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }))
        .map_err(|e| TokenError::Failed(format!("client config: {e}")))?;
        let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| TokenError::Failed(format!("client config: {e}")))?;
        // The build in the audit log, as the plugin's own requests carry it.
        if let Ok(ua) = http::HeaderValue::from_str(&user_agent()) {
            config.headers.push((http::header::USER_AGENT, ua));
        }
        config.connect_timeout = Some(TIMEOUT);
        config.read_timeout = Some(TIMEOUT);
        config.write_timeout = Some(TIMEOUT);
        Client::try_from(config).map_err(|e| TokenError::Failed(format!("client: {e}")))
    }
}

impl TokenIssuer for KubeIssuer {
    fn issue(&self, spec: &TokenSpec) -> Result<IssuedToken, TokenError> {
        let req = TokenRequest {
            spec: TokenRequestSpec {
                // Empty: the API server's own audiences, which is what the plugin talks to.
                audiences: Vec::new(),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(spec.node.clone()),
                    uid: None,
                }),
                expiration_seconds: Some(
                    i64::try_from(spec.expiration.as_secs()).unwrap_or(i64::MAX),
                ),
            },
            ..TokenRequest::default()
        };
        self.rt.block_on(async {
            let existing = self.client.borrow().clone();
            let client = match existing {
                Some(c) => c,
                None => {
                    let c = self.build().await?;
                    *self.client.borrow_mut() = Some(c.clone());
                    c
                }
            };
            let api: Api<ServiceAccount> = Api::namespaced(client, &spec.namespace);
            let pp = PostParams::default();
            let call = api.create_token_request(&spec.service_account, &pp, &req);
            let answer = match tokio::time::timeout(TIMEOUT * 2, call).await {
                Err(_) => {
                    return Err(TokenError::Failed(format!(
                        "no answer from {} within {}s",
                        self.server,
                        (TIMEOUT * 2).as_secs()
                    )));
                }
                Ok(Err(kube::Error::Api(s))) => {
                    return Err(TokenError::Refused {
                        code: s.code,
                        reason: s.reason.clone(),
                        message: s.message.clone(),
                    });
                }
                Ok(Err(e)) => {
                    return Err(TokenError::Failed(format!(
                        "{}: {}",
                        self.server,
                        chain(&e)
                    )));
                }
                Ok(Ok(tr)) => tr,
            };
            let status = answer.status.ok_or_else(|| {
                TokenError::Failed("the TokenRequest answer has no status".into())
            })?;
            if status.token.is_empty() {
                return Err(TokenError::Failed(
                    "the TokenRequest answer has an empty token".into(),
                ));
            }
            Ok(IssuedToken {
                token: status.token.into_bytes(),
                expires: SystemTime::from(status.expiration_timestamp.0),
            })
        })
    }
}
