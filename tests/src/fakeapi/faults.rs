//! Scripted faults: what a sick API server or the network between it and a node does.
//!
//! A [`Fault`] matches requests by method and path substring and says what happens to them: an
//! error answer with the real server's `Status` body (500, 503, 504, 409, 410, and 429 with
//! `Retry-After` as API Priority and Fairness sends it), seconds of latency before a normal answer,
//! or a connection closed without any answer. It applies to the next N matching requests, to all
//! of them, or flaps (N failing, M served, over and over). The first fault that applies to a
//! request wins; a fault that has used up its count is dropped.

use super::resource::Route;
use super::status::ApiError;
use std::time::Duration;

/// What happens to a matched request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Answer with this HTTP status and the real server's `Status` body for it; for 429 and 503,
    /// `retry_after` is sent as `Retry-After` and `details.retryAfterSeconds`.
    Status { code: u16, retry_after: Option<u64> },
    /// Wait this long, then serve the request normally.
    Delay(Duration),
    /// Read the request, then close the connection without answering.
    Drop,
}

/// How many matching requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// The next `n` matching requests.
    Next(u32),
    /// Every matching request until cleared.
    Always,
    /// `down` matching requests faulted, then `up` served normally, and again.
    Flapping { down: u32, up: u32 },
}

/// A scripted fault; see the module docs. Built with [`Fault::on`] and the methods below, and
/// installed with `FakeApiServer::inject`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// HTTP method, case-insensitive; `None` matches any.
    pub method: Option<String>,
    /// A substring of the URL path.
    pub path_contains: String,
    pub action: Action,
    pub times: Times,
    /// Matching requests seen so far (drives `Next` and `Flapping`).
    seen: u32,
}

impl Fault {
    /// A fault on `method` (`"*"`: any) requests whose path contains `path_contains`. Until an
    /// action is chosen it answers 500 once.
    pub fn on(method: &str, path_contains: &str) -> Self {
        Self {
            method: (method != "*").then(|| method.to_ascii_uppercase()),
            path_contains: path_contains.to_owned(),
            action: Action::Status {
                code: 500,
                retry_after: None,
            },
            times: Times::Next(1),
            seen: 0,
        }
    }

    /// Answer with `code` (see [`Action::Status`]).
    pub fn status(mut self, code: u16) -> Self {
        self.action = Action::Status {
            code,
            retry_after: None,
        };
        self
    }

    /// 429 with `Retry-After: <secs>`.
    pub fn too_many_requests(mut self, retry_after_secs: u64) -> Self {
        self.action = Action::Status {
            code: 429,
            retry_after: Some(retry_after_secs),
        };
        self
    }

    /// Answer normally, but only after `d`.
    pub fn delay(mut self, d: Duration) -> Self {
        self.action = Action::Delay(d);
        self
    }

    /// Close the connection without answering.
    pub fn drop_connection(mut self) -> Self {
        self.action = Action::Drop;
        self
    }

    pub fn once(self) -> Self {
        self.times(1)
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = Times::Next(n);
        self
    }

    pub fn always(mut self) -> Self {
        self.times = Times::Always;
        self
    }

    pub fn flapping(mut self, down: u32, up: u32) -> Self {
        self.times = Times::Flapping { down, up };
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path.contains(&self.path_contains)
    }

    /// Counts a matching request; true when it is to be faulted.
    fn strike(&mut self) -> bool {
        self.seen += 1;
        match self.times {
            Times::Next(n) => self.seen <= n,
            Times::Always => true,
            Times::Flapping { down, up } => {
                let period = (down + up).max(1);
                (self.seen - 1) % period < down
            }
        }
    }

    fn used_up(&self) -> bool {
        matches!(self.times, Times::Next(n) if self.seen >= n)
    }
}

/// What the server does with one request, decided before it is routed.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Serve,
    Fail(ApiError),
    Delay(Duration),
    Drop,
}

/// Picks the fault for a request (the first that applies) and updates the counts.
pub fn decide(faults: &mut Vec<Fault>, method: &str, path: &str) -> Decision {
    let mut decision = Decision::Serve;
    for f in faults.iter_mut() {
        if !f.matches(method, path) {
            continue;
        }
        if f.strike() {
            decision = match &f.action {
                Action::Status { code, retry_after } => {
                    Decision::Fail(status_for(*code, *retry_after, path))
                }
                Action::Delay(d) => Decision::Delay(*d),
                Action::Drop => Decision::Drop,
            };
            break;
        }
    }
    faults.retain(|f| !f.used_up());
    decision
}

/// The real server's answer for `code` on `path`.
fn status_for(code: u16, retry_after: Option<u64>, path: &str) -> ApiError {
    let object = match Route::parse(path) {
        Some(Route::Object { res, name, .. }) => Some((res, name)),
        _ => None,
    };
    let e = match (code, &object) {
        (404, Some((res, name))) => ApiError::not_found(*res, name),
        (409, Some((res, name))) => ApiError::modified(*res, name),
        (410, _) => ApiError::expired(),
        (429, _) => ApiError::too_many_requests(retry_after.unwrap_or(1)),
        (500, _) => ApiError::internal("etcdserver: leader changed"),
        (503, _) => ApiError::service_unavailable(),
        (504, _) => ApiError::timeout(),
        _ => ApiError::injected(code),
    };
    match retry_after {
        Some(s) => e.with_retry_after(s),
        None => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_always_and_flapping() {
        let mut f = vec![Fault::on("get", "/pods/p").times(2)];
        assert!(
            matches!(decide(&mut f, "GET", "/api/v1/namespaces/a/pods/p"), Decision::Fail(e) if e.code == 500)
        );
        assert!(matches!(
            decide(&mut f, "POST", "/api/v1/namespaces/a/pods/p"),
            Decision::Serve
        ));
        assert!(matches!(
            decide(&mut f, "GET", "/api/v1/namespaces/a/pods/p"),
            Decision::Fail(_)
        ));
        assert!(f.is_empty(), "used up");
        assert_eq!(
            decide(&mut f, "GET", "/api/v1/namespaces/a/pods/p"),
            Decision::Serve
        );

        let mut f = vec![Fault::on("*", "/x").drop_connection().flapping(2, 1)];
        let seq: Vec<bool> = (0..6)
            .map(|_| decide(&mut f, "PATCH", "/x") == Decision::Drop)
            .collect();
        assert_eq!(seq, [true, true, false, true, true, false]);

        let mut f = vec![
            Fault::on("GET", "/y")
                .delay(Duration::from_secs(3))
                .always(),
        ];
        for _ in 0..3 {
            assert_eq!(
                decide(&mut f, "GET", "/y"),
                Decision::Delay(Duration::from_secs(3))
            );
        }
    }

    #[test]
    fn answers_carry_the_real_bodies() {
        let mut f = vec![Fault::on("GET", "").too_many_requests(7)];
        let Decision::Fail(e) = decide(&mut f, "GET", "/api/v1/namespaces/a/pods/p") else {
            panic!()
        };
        assert_eq!(
            (e.code, e.reason, e.retry_after()),
            (429, "TooManyRequests", Some(7))
        );
        assert_eq!(e.to_status()["details"]["retryAfterSeconds"], 7);

        let mut f = vec![Fault::on("PATCH", "").status(409)];
        let Decision::Fail(e) = decide(&mut f, "PATCH", "/api/v1/namespaces/a/pods/p/status")
        else {
            panic!()
        };
        assert_eq!(e.reason, "Conflict");
        assert!(e.message.contains("pods \"p\""), "{}", e.message);
    }
}
