//! Retrying idempotent API requests inside the call's deadline.
//!
//! A pod GET, a NAD GET and the network-status merge patch can all be sent again without harm, so
//! a transient failure — HTTP 5xx, 429, a refused, reset or dropped connection, no answer in
//! time — is retried with jittered exponential backoff (or after the server's `Retry-After`),
//! as long as the attempt limit and the call's deadline allow. Anything else (404, 409, 401/403,
//! 422, a TLS or credentials problem) is answered at once: retrying cannot change it, and the
//! engine has its own logic for a pod that is not there yet.
//!
//! Retries cost requests only on the failure path; the success path keeps the request budget of
//! DESIGN.md §3.

use plexus_engine::api::ApiError;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The backoff before the first retry; it doubles with each retry, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts, 200 ms doubling to at most 2 s (about 3 s of backoff in all): enough to ride
    /// out an API server restart's first seconds or a load balancer's failover, short enough that
    /// a server that stays sick answers "try again later" and the runtime's own retry takes over.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The backoff before retry `n` (1 = the first retry): the exponential step, jittered
    /// uniformly into its upper half so that clients that failed together do not retry together.
    pub fn backoff(&self, n: u32) -> Duration {
        let step = self
            .base_delay
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(16))
            .min(self.max_delay);
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// What a failed attempt tells the retry loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Retry {
    No,
    /// After the policy's backoff.
    Backoff,
    /// After what the server asked for (`Retry-After`).
    After(Duration),
}

/// A failed attempt.
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: ApiError,
    pub retry: Retry,
}

/// Where the retry loop is allowed to go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub policy: RetryPolicy,
    /// Each attempt's bound (`apiTimeoutSeconds`).
    pub attempt_timeout: Duration,
    /// The call's deadline for API work.
    pub deadline: Option<Instant>,
}

/// Runs `attempt` until it succeeds, fails for good, or the limits are reached. Each retry is
/// logged and counted in `retries`.
pub(crate) async fn with_retries<T, F, Fut>(
    limits: Limits,
    what: &str,
    retries: &AtomicU32,
    mut attempt: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let max = limits.policy.max_attempts.max(1);
    let mut n = 0;
    loop {
        n += 1;
        let left = limits
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Err(ApiError::Unreachable(format!(
                "{what}: the call's time budget (callTimeoutSeconds) is spent{}",
                attempts_note(n - 1)
            )));
        }
        let timeout = left.map_or(limits.attempt_timeout, |l| l.min(limits.attempt_timeout));
        let failure = match tokio::time::timeout(timeout, attempt()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(f)) => f,
            Err(_) => Failure {
                error: ApiError::Unreachable(format!("{what}: no answer within {timeout:?}")),
                retry: Retry::Backoff,
            },
        };
        let delay = match failure.retry {
            Retry::No => return Err(failure.error),
            _ if n >= max => return Err(noted(failure.error, &attempts_note(n))),
            Retry::Backoff => limits.policy.backoff(n),
            Retry::After(d) => d,
        };
        // `Retry-After` is the server's number: checked, so that a huge one cannot overflow.
        if let Some(deadline) = limits.deadline
            && Instant::now()
                .checked_add(delay)
                .is_none_or(|resume| resume >= deadline)
        {
            return Err(noted(
                failure.error,
                &format!(
                    "{}; not retried: waiting {delay:?} would pass the call's deadline",
                    attempts_note(n)
                ),
            ));
        }
        retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            request = what,
            attempt = n,
            delay_ms = delay.as_millis() as u64,
            "API request failed, retrying: {}",
            failure.error
        );
        tokio::time::sleep(delay).await;
    }
}

fn attempts_note(n: u32) -> String {
    match n {
        0 | 1 => String::new(),
        n => format!(" (after {n} attempts)"),
    }
}

/// Appends `note` to the message of an error that allows one.
fn noted(error: ApiError, note: &str) -> ApiError {
    match error {
        ApiError::Unreachable(m) => ApiError::Unreachable(format!("{m}{note}")),
        ApiError::Other { status, message } => ApiError::Other {
            status,
            message: format!("{message}{note}"),
        },
        other => other,
    }
}

/// `Retry-After` in seconds (the API server's form); an HTTP date or garbage is ignored.
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Whether a transport error (no HTTP status came back) is worth another attempt: the
/// connection was refused, reset, dropped before the answer, or timed out. TLS and credential
/// failures are not: they will fail the same way again.
pub(crate) fn transient(err: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        if matches!(
            io.kind(),
            K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::BrokenPipe
                | K::TimedOut
                | K::UnexpectedEof
                | K::NotConnected
        ) {
            return true;
        }
        // `io::Error::source` skips a wrapped error and goes to *its* source.
        if let Some(inner) = io.get_ref()
            && transient(inner)
        {
            return true;
        }
    }
    if let Some(h) = err.downcast_ref::<hyper::Error>()
        && (h.is_incomplete_message() || h.is_closed() || h.is_canceled() || h.is_timeout())
    {
        return true;
    }
    if let Some(h2) = err.downcast_ref::<h2::Error>()
        && h2_transient(h2)
    {
        return true;
    }
    err.source().is_some_and(transient)
}

/// The HTTP/2 counterparts of a dropped connection: the server went away (GOAWAY, sent by a
/// restarting API server) or reset this one stream because it failed or refused it (Go's HTTP/2
/// server resets a stream whose handler panicked with INTERNAL_ERROR), or the connection broke
/// under the stream. A PROTOCOL_ERROR or the like would fail the same way again.
fn h2_transient(e: &h2::Error) -> bool {
    use h2::Reason;
    if e.is_go_away() || e.get_io().is_some_and(|io| transient(io)) {
        return true;
    }
    e.reason().is_some_and(|r| {
        [
            Reason::INTERNAL_ERROR,
            Reason::REFUSED_STREAM,
            Reason::CANCEL,
            Reason::ENHANCE_YOUR_CALM,
        ]
        .contains(&r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_attempts: u32, deadline: Option<Instant>) -> Limits {
        Limits {
            policy: RetryPolicy {
                max_attempts,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(4),
            },
            attempt_timeout: Duration::from_secs(5),
            deadline,
        }
    }

    fn unreachable(retry: Retry) -> Failure {
        Failure {
            error: ApiError::Unreachable("HTTP 500: boom".into()),
            retry,
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn transient_failures_are_retried_until_success_and_counted() {
        let retries = AtomicU32::new(0);
        let mut calls = 0;
        let r = rt().block_on(with_retries(limits(5, None), "GET x", &retries, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(unreachable(Retry::Backoff))
                } else {
                    Ok(n)
                }
            }
        }));
        assert_eq!(r, Ok(3));
        assert_eq!(retries.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        let retries = AtomicU32::new(0);
        let mut calls = 0;
        let r: Result<(), _> =
            rt().block_on(with_retries(limits(5, None), "GET x", &retries, || {
                calls += 1;
                async {
                    Err(Failure {
                        error: ApiError::Conflict("uid".into()),
                        retry: Retry::No,
                    })
                }
            }));
        assert_eq!(r, Err(ApiError::Conflict("uid".into())));
        assert_eq!(calls, 1);
    }

    #[test]
    fn attempts_are_bounded_and_the_error_says_how_many() {
        let retries = AtomicU32::new(0);
        let mut calls = 0;
        let r: Result<(), _> =
            rt().block_on(with_retries(limits(3, None), "GET x", &retries, || {
                calls += 1;
                async { Err(unreachable(Retry::Backoff)) }
            }));
        assert_eq!(calls, 3);
        assert!(
            matches!(&r, Err(ApiError::Unreachable(m)) if m.contains("after 3 attempts")),
            "{r:?}"
        );
    }

    #[test]
    fn a_retry_after_beyond_the_deadline_is_not_waited_for() {
        // The last one is `Retry-After: 18446744073709551615`: past any clock, not a panic.
        for after in [Duration::from_secs(3600), Duration::from_secs(u64::MAX)] {
            let retries = AtomicU32::new(0);
            let mut calls = 0;
            let deadline = Instant::now() + Duration::from_secs(2);
            let r: Result<(), _> = rt().block_on(with_retries(
                limits(5, Some(deadline)),
                "GET x",
                &retries,
                || {
                    calls += 1;
                    async move { Err(unreachable(Retry::After(after))) }
                },
            ));
            assert_eq!(calls, 1);
            assert!(
                matches!(&r, Err(ApiError::Unreachable(m)) if m.contains("deadline")),
                "{r:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let p = RetryPolicy::default();
        for _ in 0..100 {
            let b1 = p.backoff(1);
            assert!(b1 >= Duration::from_millis(100) && b1 <= Duration::from_millis(200));
            let b3 = p.backoff(3);
            assert!(b3 >= Duration::from_millis(400) && b3 <= Duration::from_millis(800));
            assert!(p.backoff(30) <= p.max_delay);
        }
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn transport_errors_are_classified() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(transient(&refused));
        let wrapped =
            std::io::Error::other(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(transient(&wrapped));
        let tls = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad certificate");
        assert!(!transient(&tls));
    }

    #[test]
    fn http2_resets_and_goaway_are_transient_protocol_errors_are_not() {
        use h2::Reason;
        for r in [
            Reason::INTERNAL_ERROR,
            Reason::REFUSED_STREAM,
            Reason::CANCEL,
        ] {
            assert!(transient(&h2::Error::from(r)), "{r:?}");
        }
        for r in [Reason::PROTOCOL_ERROR, Reason::FRAME_SIZE_ERROR] {
            assert!(!transient(&h2::Error::from(r)), "{r:?}");
        }
    }
}
