//! API errors, rendered as `meta.k8s.io/v1` `Status` objects like a real API server.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::registry::ResourceType;
use crate::validation::FieldError;

/// The `reason` field of a failed `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    AlreadyExists,
    Conflict,
    Gone,
    Invalid,
    MethodNotAllowed,
    NotAcceptable,
    UnsupportedMediaType,
    TooManyRequests,
    InternalError,
    Expired,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "BadRequest",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Gone => "Gone",
            Reason::Invalid => "Invalid",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::NotAcceptable => "NotAcceptable",
            Reason::UnsupportedMediaType => "UnsupportedMediaType",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::InternalError => "InternalError",
            Reason::Expired => "Expired",
        }
    }
}

/// An error answered to the client as a `Status` object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {}: {message}", reason.as_str())]
pub struct ApiError {
    pub code: u16,
    pub reason: Reason,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after_seconds: Option<u32>,
}

/// Identifies the object an error is about, for `Status.details`.
pub struct Target<'a> {
    pub group: &'a str,
    /// The resource (plural), as real API servers put in `details.kind`.
    pub resource: &'a str,
    pub name: &'a str,
}

impl<'a> Target<'a> {
    pub fn new(rt: &'a ResourceType, name: &'a str) -> Self {
        Target { group: &rt.group, resource: &rt.plural, name }
    }

    /// `configmaps "foo"` or `targetgroupbindings.elbv2.k8s.aws "foo"`.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            format!("{} \"{}\"", self.resource, self.name)
        } else {
            format!("{}.{} \"{}\"", self.resource, self.group, self.name)
        }
    }

    fn details(&self) -> Value {
        let mut d = json!({ "name": self.name, "kind": self.resource });
        if !self.group.is_empty() {
            d["group"] = json!(self.group);
        }
        d
    }
}

impl ApiError {
    pub fn new(code: u16, reason: Reason, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None, retry_after_seconds: None }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, Reason::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, Reason::InternalError, message)
    }

    pub fn not_found(target: Target<'_>) -> Self {
        Self::new(404, Reason::NotFound, format!("{} not found", target.qualified())).with_details(target.details())
    }

    /// A path that matches no route at all.
    pub fn path_not_found() -> Self {
        Self::new(404, Reason::NotFound, "the server could not find the requested resource").with_details(json!({}))
    }

    pub fn namespace_not_found(namespace: &str) -> Self {
        Self::not_found(Target { group: "", resource: "namespaces", name: namespace })
    }

    pub fn already_exists(target: Target<'_>) -> Self {
        Self::new(409, Reason::AlreadyExists, format!("{} already exists", target.qualified()))
            .with_details(target.details())
    }

    pub fn conflict(target: Target<'_>, why: &str) -> Self {
        Self::new(409, Reason::Conflict, format!("Operation cannot be fulfilled on {}: {why}", target.qualified()))
            .with_details(target.details())
    }

    pub fn stale_resource_version(target: Target<'_>) -> Self {
        Self::conflict(
            target,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn method_not_allowed(verb: &str, resource: &str) -> Self {
        Self::new(
            405,
            Reason::MethodNotAllowed,
            format!("the server does not allow this method on the requested resource ({verb} {resource})"),
        )
        .with_details(json!({}))
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            Reason::UnsupportedMediaType,
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?}; the double decodes protobuf only for Namespace, ConfigMap, Secret and ServiceAccount, and no CBOR)"
            ),
        )
    }

    /// 410 with reason `Expired`, as sent when a watch's resourceVersion is too old.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, Reason::Expired, message)
    }

    /// 422 listing field errors, e.g.
    /// `TargetGroupBinding.elbv2.k8s.aws "x" is invalid: spec.targetType: Unsupported value: ...`.
    pub fn invalid(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Self {
        let qualified_kind = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let rendered: Vec<String> = errors.iter().map(FieldError::to_string).collect();
        let summary = match rendered.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let causes: Vec<Value> =
            errors.iter().map(|e| json!({ "reason": e.reason(), "message": e.detail(), "field": e.field })).collect();
        let mut details = json!({ "name": name, "kind": kind, "causes": causes });
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        Self::new(422, Reason::Invalid, format!("{qualified_kind} \"{name}\" is invalid: {summary}"))
            .with_details(details)
    }

    pub fn forbidden(message: impl Into<String>, details: Value) -> Self {
        Self::new(403, Reason::Forbidden, message).with_details(details)
    }

    pub fn too_many_requests(retry_after_seconds: u32) -> Self {
        let mut e = Self::new(429, Reason::TooManyRequests, "Too many requests, please try again later.");
        e.retry_after_seconds = Some(retry_after_seconds);
        e.details = Some(json!({ "retryAfterSeconds": retry_after_seconds }));
        e
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason.as_str(),
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (code, axum::Json(self.to_status())).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A successful `Status`, as returned by a DELETE that removed the object at once.
pub fn success_status(target: Target<'_>, uid: Option<&str>) -> Value {
    let mut details = target.details();
    if let Some(uid) = uid {
        details["uid"] = json!(uid);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
