//! `metav1.Status` failure bodies, worded as the real API server words them, because clients
//! (kube-rs, client-go) branch on `reason`/`code` and operators read `message`.

use super::resource::Resource;
use serde_json::{Value, json};

/// An API failure: becomes an HTTP status plus a `Status` body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    fn with_details(mut self, res: Resource, name: &str) -> Self {
        let mut d = json!({"name": name});
        if !res.group().is_empty() {
            d["group"] = json!(res.group());
        }
        d["kind"] = json!(res.plural());
        self.details = d;
        self
    }

    pub fn not_found(res: Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
        )
        .with_details(res, name)
    }

    /// An unknown path or resource type.
    pub fn no_route() -> Self {
        Self {
            details: json!({}),
            ..Self::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }

    pub fn already_exists(res: Resource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
        )
        .with_details(res, name)
    }

    /// A stale `metadata.resourceVersion` in a PUT or patch.
    pub fn modified(res: Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                res.qualified()
            ),
        )
        .with_details(res, name)
    }

    /// A write whose `metadata.uid` differs from the stored object's: the storage layer's UID
    /// precondition failure, wrapped in a Conflict exactly as the real server does.
    pub fn uid_precondition(
        res: Resource,
        ns: &str,
        name: &str,
        precondition: &str,
        actual: &str,
    ) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": StorageError: invalid object, Code: 4, Key: {}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in precondition: {precondition}, UID in object meta: {actual}",
                res.qualified(),
                res.storage_key(ns, name)
            ),
        )
        .with_details(res, name)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// A semantically invalid object or patch (422).
    pub fn invalid(res: Resource, name: &str, message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message).with_details(res, name)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
            ),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 500 as the server wraps an internal failure (`apierrors.NewInternalError`).
    pub fn internal(cause: &str) -> Self {
        Self {
            details: json!({"causes": [{"message": cause}]}),
            ..Self::new(
                500,
                "InternalError",
                format!("Internal error occurred: {cause}"),
            )
        }
    }

    /// 429 from API Priority and Fairness: `Retry-After` header and `retryAfterSeconds`.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Self {
            details: json!({"retryAfterSeconds": retry_after_secs}),
            ..Self::new(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
            )
        }
    }

    /// 503 while the server is not ready (e.g. starting, or its storage is unavailable).
    pub fn service_unavailable() -> Self {
        Self::new(
            503,
            "ServiceUnavailable",
            "The server is currently unable to handle the request",
        )
    }

    /// 504 when a request outlives the server's own timeout.
    pub fn timeout() -> Self {
        Self {
            details: json!({"retryAfterSeconds": 1}),
            ..Self::new(
                504,
                "Timeout",
                "Timeout: request did not complete within the allotted timeout",
            )
        }
    }

    /// 410 for a resourceVersion older than the server's compaction window.
    pub fn expired() -> Self {
        Self::new(
            410,
            "Expired",
            "The resourceVersion for the provided watch is too old.",
        )
    }

    /// An injected fault with an arbitrary code (see `FakeApiServer::set_fail_next`).
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        Self::new(code, reason, format!("injected fault: {code} {reason}"))
    }

    /// `details.retryAfterSeconds`, which the real server also sends as the `Retry-After` header.
    pub fn retry_after(&self) -> Option<u64> {
        self.details["retryAfterSeconds"]
            .as_u64()
            .filter(|s| *s > 0)
    }

    /// Sets `details.retryAfterSeconds` (and so the `Retry-After` header).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        if !self.details.is_object() {
            self.details = json!({});
        }
        self.details["retryAfterSeconds"] = json!(secs);
        self
    }

    /// The `Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s["code"] = json!(self.code);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_bodies_match_the_real_server() {
        assert_eq!(
            ApiError::not_found(Resource::Pods, "x")
                .to_status()
                .to_string(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404}"#
        );
        let nad = ApiError::not_found(Resource::Nads, "n").to_status();
        assert_eq!(
            nad["message"],
            "network-attachment-definitions.k8s.cni.cncf.io \"n\" not found"
        );
        assert_eq!(
            nad["details"],
            json!({"name": "n", "group": "k8s.cni.cncf.io", "kind": "network-attachment-definitions"})
        );
    }
}
