//! The plugin's own token: requested through the TokenRequest API, bound to this Node, so that it
//! outlives the installer's pod.
//!
//! The pod's projected token is bound to the pod: the API server stops accepting it as soon as
//! the pod is deleted, which during a DaemonSet rollout (or after the DaemonSet is deleted, before
//! `uninstall` ran) would make every ADD on the node fail. A token bound to the Node object stays
//! valid until it expires or the node is deleted, and it carries the node name (the
//! `authentication.kubernetes.io/node-name` extra) that the shipped admission policy checks.
//!
//! [`TokenKeeper`] holds it, refreshes it when 80 % of its lifetime has passed (as the kubelet
//! does for projected tokens), keeps using a still-valid token while the API server cannot be
//! reached, and falls back to the pod's projected token, with a warning, where the API server
//! refuses to bind tokens to Nodes (`ServiceAccountTokenNodeBinding`: alpha in Kubernetes 1.29,
//! beta and on by default from 1.31, GA in 1.33; or with the feature gate off) or RBAC does not
//! allow the request.

use std::fmt;
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

/// What to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// Namespace of the service account.
    pub namespace: String,
    /// The service account the plugin acts as.
    pub service_account: String,
    /// The Node the token is bound to (this node).
    pub node: String,
    /// Requested lifetime (the server may grant less; its answer wins).
    pub expiration: Duration,
}

/// A token the API server issued.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: Vec<u8>,
    pub expires: SystemTime,
}

// Never print the token.
impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .field("expires", &self.expires)
            .finish()
    }
}

/// Why no token was issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The API server answered with a failure `Status` (400 when it cannot bind to Nodes, 403
    /// without RBAC for `serviceaccounts/token`, 404 for a missing node or service account).
    #[error("the API server refused the TokenRequest: {code} {reason}: {message}")]
    Refused {
        code: u16,
        reason: String,
        message: String,
    },
    /// No answer (connection, TLS, timeout) or a client-side failure.
    #[error("TokenRequest failed: {0}")]
    Failed(String),
}

/// Issues tokens: the TokenRequest API in production ([`crate::tokenrequest::KubeIssuer`]), a
/// scripted fake in tests ([`testing::FakeIssuer`]).
pub trait TokenIssuer {
    fn issue(&self, spec: &TokenSpec) -> Result<IssuedToken, TokenError>;
}

impl<T: TokenIssuer + ?Sized> TokenIssuer for Box<T> {
    fn issue(&self, spec: &TokenSpec) -> Result<IssuedToken, TokenError> {
        (**self).issue(spec)
    }
}

/// Where the token the plugin gets now comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Our Node-bound token, valid until `expires`.
    Own { expires: SystemTime },
    /// The pod's projected token (see the module docs for why this is second best).
    Pod,
}

/// Wait before asking again after a failed request: first value, and the cap of the doubling.
const RETRY_MIN: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// Refresh when this share of the lifetime has passed.
const REFRESH_AT_PERCENT: u32 = 80;

#[derive(Debug)]
struct Held {
    token: IssuedToken,
    refresh_at: SystemTime,
}

/// Holds the plugin's token; see the module docs.
#[derive(Debug)]
pub struct TokenKeeper<I> {
    issuer: I,
    spec: TokenSpec,
    held: Option<Held>,
    retry_at: Option<SystemTime>,
    backoff: Duration,
    /// The last failure logged, so that a retry loop logs each distinct failure once.
    last_error: Option<String>,
}

impl<I: TokenIssuer> TokenKeeper<I> {
    pub fn new(issuer: I, spec: TokenSpec) -> Self {
        Self {
            issuer,
            spec,
            held: None,
            retry_at: None,
            backoff: RETRY_MIN,
            last_error: None,
        }
    }

    /// The token the plugin should use at `now`: ours, requested or refreshed when due; else the
    /// pod's `pod_token`.
    pub fn token(&mut self, now: SystemTime, pod_token: &[u8]) -> (Vec<u8>, Source) {
        let due = self.held.as_ref().is_none_or(|h| now >= h.refresh_at);
        let may_ask = self.retry_at.is_none_or(|r| now >= r);
        if due && may_ask {
            self.request(now);
        }
        match &self.held {
            Some(h) if now < h.token.expires => (
                h.token.token.clone(),
                Source::Own {
                    expires: h.token.expires,
                },
            ),
            _ => (pod_token.to_vec(), Source::Pod),
        }
    }

    fn request(&mut self, now: SystemTime) {
        match self.issuer.issue(&self.spec) {
            Ok(t) => {
                let life = t.expires.duration_since(now).unwrap_or_default();
                let refresh_at = now + life * REFRESH_AT_PERCENT / 100;
                info!(
                    "obtained a token for service account {}/{} bound to Node {}, valid for {}s \
                     (refresh in {}s)",
                    self.spec.namespace,
                    self.spec.service_account,
                    self.spec.node,
                    life.as_secs(),
                    refresh_at.duration_since(now).unwrap_or_default().as_secs()
                );
                self.held = Some(Held {
                    token: t,
                    refresh_at,
                });
                self.retry_at = None;
                self.backoff = RETRY_MIN;
                self.last_error = None;
            }
            Err(e) => {
                self.retry_at = Some(now + self.backoff);
                let msg = e.to_string();
                if self.last_error.as_deref() != Some(&msg) {
                    match &self.held {
                        Some(h) if now < h.token.expires => warn!(
                            "{msg}; keeping the current Node-bound token (valid for {}s more), \
                             retrying in {}s",
                            h.token
                                .expires
                                .duration_since(now)
                                .unwrap_or_default()
                                .as_secs(),
                            self.backoff.as_secs()
                        ),
                        _ => warn!(
                            "{msg}; falling back to this pod's projected token, which the API \
                             server invalidates when this pod is deleted: pods on this node then \
                             fail to get their networks until a new installer pod has written its \
                             token (retrying in {}s)",
                            self.backoff.as_secs()
                        ),
                    }
                    self.last_error = Some(msg);
                }
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
            }
        }
    }

    /// How long until [`TokenKeeper::token`] wants to be called again (refresh or retry), if ever.
    pub fn next_due(&self, now: SystemTime) -> Option<Duration> {
        let at = match (&self.held, self.retry_at) {
            (_, Some(r)) => r,
            (Some(h), None) => h.refresh_at,
            (None, None) => return Some(Duration::ZERO),
        };
        Some(at.duration_since(now).unwrap_or_default())
    }
}

/// A scripted [`TokenIssuer`] for tests.
pub mod testing {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// Answers from a queue (an empty queue fails) and records every spec asked for.
    #[derive(Debug, Default)]
    pub struct FakeIssuer {
        pub answers: RefCell<VecDeque<Result<IssuedToken, TokenError>>>,
        pub asked: RefCell<Vec<TokenSpec>>,
    }

    impl FakeIssuer {
        pub fn push(&self, answer: Result<IssuedToken, TokenError>) {
            self.answers.borrow_mut().push_back(answer);
        }
    }

    impl TokenIssuer for &FakeIssuer {
        fn issue(&self, spec: &TokenSpec) -> Result<IssuedToken, TokenError> {
            self.asked.borrow_mut().push(spec.clone());
            self.answers
                .borrow_mut()
                .pop_front()
                .unwrap_or_else(|| Err(TokenError::Failed("no scripted answer".into())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FakeIssuer;
    use super::*;

    fn spec() -> TokenSpec {
        TokenSpec {
            namespace: "plexus-system".into(),
            service_account: "plexus".into(),
            node: "node-1".into(),
            expiration: Duration::from_secs(86400),
        }
    }

    fn tok(t: &str, expires: SystemTime) -> Result<IssuedToken, TokenError> {
        Ok(IssuedToken {
            token: t.as_bytes().to_vec(),
            expires,
        })
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn requests_once_refreshes_at_80_percent_and_keeps_a_valid_token_through_failures() {
        let t0 = SystemTime::UNIX_EPOCH + S(1_000_000);
        let fake = FakeIssuer::default();
        fake.push(tok("own-1", t0 + S(1000)));
        let mut k = TokenKeeper::new(&fake, spec());
        assert_eq!(
            k.token(t0, b"pod"),
            (
                b"own-1".to_vec(),
                Source::Own {
                    expires: t0 + S(1000)
                }
            )
        );
        assert_eq!(k.token(t0 + S(799), b"pod").0, b"own-1");
        assert_eq!(fake.asked.borrow().len(), 1, "asked again before 80 %");
        assert_eq!(k.next_due(t0 + S(700)), Some(S(100)));
        // Due at 800 s; the API server is down: keep the still-valid token, retry later.
        fake.push(Err(TokenError::Failed("connection refused".into())));
        assert_eq!(k.token(t0 + S(800), b"pod").0, b"own-1");
        assert_eq!(k.next_due(t0 + S(800)), Some(RETRY_MIN));
        assert_eq!(k.token(t0 + S(805), b"pod").0, b"own-1");
        assert_eq!(fake.asked.borrow().len(), 2, "retried before the backoff");
        fake.push(tok("own-2", t0 + S(2000)));
        assert_eq!(k.token(t0 + S(810), b"pod").0, b"own-2");
        assert_eq!(fake.asked.borrow()[0], spec());
    }

    #[test]
    fn falls_back_to_the_pod_token_when_refused_and_after_expiry() {
        let t0 = SystemTime::UNIX_EPOCH + S(1_000_000);
        let fake = FakeIssuer::default();
        fake.push(Err(TokenError::Refused {
            code: 400,
            reason: "BadRequest".into(),
            message: "cannot bind token to a Node object".into(),
        }));
        let mut k = TokenKeeper::new(&fake, spec());
        assert_eq!(k.token(t0, b"pod"), (b"pod".to_vec(), Source::Pod));
        // Backoff doubles: 10 s, then 20 s.
        fake.push(Err(TokenError::Failed("still".into())));
        assert_eq!(k.token(t0 + S(10), b"pod").1, Source::Pod);
        assert_eq!(k.next_due(t0 + S(10)), Some(S(20)));
        fake.push(tok("own", t0 + S(100)));
        assert_eq!(k.token(t0 + S(30), b"pod").0, b"own");
        // Expired and cannot refresh: the pod token, never an expired one.
        assert_eq!(k.token(t0 + S(100), b"pod"), (b"pod".to_vec(), Source::Pod));
        assert!(
            !format!("{:?}", k).contains("own\""),
            "token in Debug output"
        );
    }
}
