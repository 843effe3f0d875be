//! Fault injection for reliability tests, controlled through `POST /_double/faults`.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Fail the next `count` requests (optionally only those whose path contains `path_contains`
/// and whose verb is `verb`) with `status` (500 or 429).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailRequests {
    pub count: u32,
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
}

fn default_status() -> u16 {
    500
}

/// The body of `POST /_double/faults`; every field is optional and they combine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRequest {
    /// Close every open watch connection now.
    #[serde(default)]
    pub drop_watches: bool,
    #[serde(default)]
    pub fail_requests: Option<FailRequests>,
    /// Answer the next N watch requests with a `410 Gone` (Expired) ERROR event; `true` means 1.
    #[serde(default)]
    pub expire_next_watch: Option<ExpireCount>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ExpireCount {
    Flag(bool),
    Count(u32),
}

impl ExpireCount {
    fn count(self) -> u32 {
        match self {
            ExpireCount::Flag(b) => u32::from(b),
            ExpireCount::Count(n) => n,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("unsupported injected status {0}: use 500 or 429")]
    UnsupportedStatus(u16),
}

/// Faults armed and not yet consumed.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Faults {
    pub fail_requests: Vec<FailRequests>,
    pub expire_next_watches: u32,
}

impl Faults {
    /// Arms the faults of a request (watch dropping is done by the caller).
    pub fn arm(&mut self, request: &FaultRequest) -> Result<(), FaultError> {
        if let Some(fail) = &request.fail_requests {
            if !matches!(fail.status, 500 | 429) {
                return Err(FaultError::UnsupportedStatus(fail.status));
            }
            if fail.count > 0 {
                self.fail_requests.push(fail.clone());
            }
        }
        if let Some(expire) = request.expire_next_watch {
            self.expire_next_watches += expire.count();
        }
        Ok(())
    }

    pub fn clear(&mut self) {
        *self = Faults::default();
    }

    /// Consumes a matching failure rule, returning the error to answer with.
    pub fn take_failure(&mut self, path: &str, verb: &str) -> Option<ApiError> {
        let index = self.fail_requests.iter().position(|rule| {
            rule.path_contains.as_deref().is_none_or(|p| path.contains(p))
                && rule.verb.as_deref().is_none_or(|v| v.eq_ignore_ascii_case(verb))
        })?;
        let rule = &mut self.fail_requests[index];
        rule.count -= 1;
        let status = rule.status;
        if rule.count == 0 {
            self.fail_requests.remove(index);
        }
        Some(match status {
            429 => ApiError::too_many_requests(1),
            _ => ApiError::internal("injected fault: internal error"),
        })
    }

    /// Consumes one forced expiry of a watch.
    pub fn take_watch_expiry(&mut self) -> bool {
        if self.expire_next_watches > 0 {
            self.expire_next_watches -= 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_consumed() {
        let mut faults = Faults::default();
        let req: FaultRequest = serde_json::from_str(
            r#"{"failRequests": {"count": 2, "status": 429, "pathContains": "leases"}, "expireNextWatch": true}"#,
        )
        .unwrap();
        faults.arm(&req).unwrap();
        assert!(faults.take_failure("/api/v1/pods", "list").is_none());
        assert_eq!(faults.take_failure("/apis/coordination.k8s.io/v1/leases", "get").map(|e| e.code), Some(429));
        assert!(faults.take_failure("/x/leases", "get").is_some());
        assert!(faults.take_failure("/x/leases", "get").is_none());
        assert!(faults.take_watch_expiry());
        assert!(!faults.take_watch_expiry());
    }
}
