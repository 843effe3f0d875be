//! Fault injection for reliability tests, controlled through `POST /_double/faults`.

use std::time::Duration;

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

/// Hold the next `count` matching requests for `seconds` before serving them as usual, as a real
/// API server does when etcd or the network stalls: the client sees a request that hangs. Filters:
/// `path_contains`, `verb`, and `body_contains` (a substring of the request body, e.g. one
/// client's `"holderIdentity":"a"` in a Lease update, to stall one client only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldRequests {
    #[serde(default = "default_hold_count")]
    pub count: u32,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
}

fn default_hold_count() -> u32 {
    1
}

/// Longest hold accepted: a test that forgets to disarm must not keep a server busy for ever.
const MAX_HOLD_SECONDS: f64 = 600.0;

/// The body of `POST /_double/faults`; every field is optional and they combine.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
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
    #[serde(default)]
    pub hold_requests: Option<HoldRequests>,
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
    #[error("hold of {0} seconds: use a number of seconds from 0 to 600")]
    UnsupportedHold(f64),
}

/// Faults armed and not yet consumed.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Faults {
    pub fail_requests: Vec<FailRequests>,
    pub expire_next_watches: u32,
    pub hold_requests: Vec<HoldRequests>,
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
        if let Some(hold) = &request.hold_requests {
            if !(0.0..=MAX_HOLD_SECONDS).contains(&hold.seconds) {
                return Err(FaultError::UnsupportedHold(hold.seconds));
            }
            if hold.count > 0 {
                self.hold_requests.push(hold.clone());
            }
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

    /// Consumes a matching hold rule, returning how long to hold the request.
    pub fn take_hold(&mut self, path: &str, verb: &str, body: &[u8]) -> Option<Duration> {
        let index = self.hold_requests.iter().position(|rule| {
            rule.path_contains.as_deref().is_none_or(|p| path.contains(p))
                && rule.verb.as_deref().is_none_or(|v| v.eq_ignore_ascii_case(verb))
                && rule.body_contains.as_deref().is_none_or(|b| contains(body, b.as_bytes()))
        })?;
        let rule = &mut self.hold_requests[index];
        rule.count -= 1;
        let hold = Duration::from_secs_f64(rule.seconds);
        if rule.count == 0 {
            self.hold_requests.remove(index);
        }
        Some(hold)
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
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

    #[test]
    fn holds_match_path_verb_and_body() {
        let mut faults = Faults::default();
        let req: FaultRequest = serde_json::from_str(
            r#"{"holdRequests": {"count": 2, "seconds": 1.5, "pathContains": "/leases/", "verb": "update",
                "bodyContains": "\"holderIdentity\":\"a\""}}"#,
        )
        .unwrap();
        faults.arm(&req).unwrap();
        let a = br#"{"spec":{"holderIdentity":"a"}}"#;
        let b = br#"{"spec":{"holderIdentity":"b"}}"#;
        assert_eq!(faults.take_hold("/x/leases/l", "update", b), None, "another client");
        assert_eq!(faults.take_hold("/x/leases/l", "get", a), None, "another verb");
        assert_eq!(faults.take_hold("/x/leases/l", "update", a), Some(Duration::from_millis(1500)));
        assert!(faults.take_hold("/x/leases/l", "update", a).is_some());
        assert_eq!(faults.take_hold("/x/leases/l", "update", a), None, "consumed");
        let too_long: FaultRequest = serde_json::from_str(r#"{"holdRequests": {"seconds": 9999}}"#).unwrap();
        assert!(faults.arm(&too_long).is_err());
    }
}
