//! Cross-account access: one STS AssumeRole per (role, external id), and the clients built from its
//! credentials kept until shortly before those credentials expire.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_elasticloadbalancingv2::config::Credentials;

use super::AwsError;
use crate::model::AssumeRole;

/// A client is replaced this long before its credentials expire, so no call starts with
/// credentials about to lapse (STS hands out one hour by default).
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// The session name the other account sees in CloudTrail.
const SESSION_NAME: &str = "tgb-agent";

/// Clients of type `C` per (role, external id), each valid until shortly before the credentials it
/// was built from expire. One assumption at a time: concurrent reconciles of one role share it.
pub struct RoleCache<C> {
    entries: tokio::sync::Mutex<HashMap<AssumeRole, (C, SystemTime)>>,
}

impl<C> Default for RoleCache<C> {
    fn default() -> Self {
        Self { entries: tokio::sync::Mutex::default() }
    }
}

impl<C: Clone> RoleCache<C> {
    /// The client for `role` at time `now`: the cached one while its credentials stay valid for at
    /// least [`REFRESH_BEFORE_EXPIRY`], else a new one from `assume` (client and credential
    /// expiry). A failed assumption is not cached: the next call asks STS again.
    pub async fn get<F, Fut>(&self, role: &AssumeRole, now: SystemTime, assume: F) -> Result<C, AwsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(C, SystemTime), AwsError>>,
    {
        let mut entries = self.entries.lock().await;
        if let Some((client, expires)) = entries.get(role)
            && now + REFRESH_BEFORE_EXPIRY < *expires
        {
            return Ok(client.clone());
        }
        entries.remove(role);
        let (client, expires) = assume().await?;
        entries.insert(role.clone(), (client.clone(), expires));
        Ok(client)
    }
}

/// Assumes roles with the agent's own credentials (the standard chain) through STS.
pub struct Sts {
    sts: aws_sdk_sts::Client,
    own_account: tokio::sync::OnceCell<String>,
}

impl Sts {
    pub fn new(config: &SdkConfig) -> Self {
        Self { sts: aws_sdk_sts::Client::new(config), own_account: tokio::sync::OnceCell::new() }
    }

    /// The account of the agent's own credentials (GetCallerIdentity, which needs no permission),
    /// asked once.
    pub async fn own_account(&self) -> Result<&str, AwsError> {
        const OP: &str = "GetCallerIdentity";
        let account = self
            .own_account
            .get_or_try_init(|| async {
                let out = self.sts.get_caller_identity().send().await.map_err(|e| AwsError::from_sdk(OP, "", e))?;
                out.account().map(str::to_owned).ok_or_else(|| AwsError::Api {
                    op: OP,
                    code: "NoAccount".into(),
                    message: "STS named no account".into(),
                })
            })
            .await?;
        Ok(account)
    }

    /// The AssumeRole request for `role`; the external id goes out only when the binding sets one.
    pub fn request(&self, role: &AssumeRole) -> aws_sdk_sts::operation::assume_role::builders::AssumeRoleFluentBuilder {
        self.sts
            .assume_role()
            .role_arn(&role.role_arn)
            .role_session_name(SESSION_NAME)
            .set_external_id(role.external_id.clone().filter(|id| !id.is_empty()))
    }

    /// Temporary credentials of `role` and when they expire.
    pub async fn assume(&self, role: &AssumeRole) -> Result<(Credentials, SystemTime), AwsError> {
        const OP: &str = "AssumeRole";
        let out = self.request(role).send().await.map_err(|e| AwsError::from_sdk(OP, &role.role_arn, e))?;
        let missing = || AwsError::Api {
            op: OP,
            code: "NoCredentials".into(),
            message: format!("STS returned no credentials for {}", role.role_arn),
        };
        let creds = out.credentials().ok_or_else(missing)?;
        let expires = SystemTime::try_from(*creds.expiration()).map_err(|_| missing())?;
        let credentials = Credentials::new(
            creds.access_key_id(),
            creds.secret_access_key(),
            Some(creds.session_token().to_owned()),
            Some(expires),
            "tgb-agent-assume-role",
        );
        Ok((credentials, expires))
    }
}

/// `config` acting with `credentials` (region, endpoint, retries and timeouts unchanged).
pub fn config_with(config: &SdkConfig, credentials: Credentials) -> SdkConfig {
    config
        .to_builder()
        .credentials_provider(aws_sdk_elasticloadbalancingv2::config::SharedCredentialsProvider::new(credentials))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn role(external_id: Option<&str>) -> AssumeRole {
        AssumeRole {
            role_arn: "arn:aws:iam::222222222222:role/tgb".into(),
            external_id: external_id.map(str::to_owned),
        }
    }

    /// An STS double: counts assumptions and hands out `n` (the call number) as the client,
    /// valid for an hour from `now`.
    async fn assume(calls: &AtomicUsize, now: SystemTime) -> Result<(usize, SystemTime), AwsError> {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        Ok((n, now + Duration::from_secs(3600)))
    }

    #[tokio::test]
    async fn one_assumption_per_role_and_external_id_until_shortly_before_expiry() {
        let cache = RoleCache::default();
        let calls = AtomicUsize::new(0);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(cache.get(&role(None), t0, || assume(&calls, t0)).await.ok(), Some(1));
        assert_eq!(cache.get(&role(None), at(60), || assume(&calls, at(60))).await.ok(), Some(1));
        // Another external id is another assumption (and another client).
        assert_eq!(cache.get(&role(Some("abc")), at(60), || assume(&calls, at(60))).await.ok(), Some(2));
        assert_eq!(cache.get(&role(Some("abc")), at(61), || assume(&calls, at(61))).await.ok(), Some(2));
        // Still the first client one second before the refresh margin...
        let last_valid = 3600 - REFRESH_BEFORE_EXPIRY.as_secs() - 1;
        assert_eq!(cache.get(&role(None), at(last_valid), || assume(&calls, at(last_valid))).await.ok(), Some(1));
        // ...and a new assumption inside it, well before the credentials actually expire.
        let refresh = 3600 - REFRESH_BEFORE_EXPIRY.as_secs();
        assert_eq!(cache.get(&role(None), at(refresh), || assume(&calls, at(refresh))).await.ok(), Some(3));
        assert_eq!(cache.get(&role(None), at(refresh + 1), || assume(&calls, at(refresh))).await.ok(), Some(3));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_assumption_is_not_cached() {
        let cache: RoleCache<usize> = RoleCache::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let denied = || async {
            Err(AwsError::AccessDenied { op: "AssumeRole", message: "not authorized to perform sts:AssumeRole".into() })
        };
        let err = cache.get(&role(None), t0, denied).await.expect_err("denied");
        assert_eq!(err.reason(), "AWSAccessDenied");
        let calls = AtomicUsize::new(0);
        assert_eq!(cache.get(&role(None), t0, || assume(&calls, t0)).await.ok(), Some(1));
    }

    #[tokio::test]
    async fn concurrent_reconciles_of_one_role_assume_it_once() {
        let cache = Arc::new(RoleCache::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, calls) = (cache.clone(), calls.clone());
                tokio::spawn(async move {
                    cache
                        .get(&role(None), t0, || async {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            assume(&calls, t0).await
                        })
                        .await
                        .ok()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.ok().flatten(), Some(1));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_external_id_is_sent_only_when_set() {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .load()
            .await;
        let sts = Sts::new(&config);
        let request = sts.request(&role(Some("ext-123")));
        assert_eq!(request.get_external_id().as_deref(), Some("ext-123"));
        assert_eq!(request.get_role_arn().as_deref(), Some("arn:aws:iam::222222222222:role/tgb"));
        assert_eq!(request.get_role_session_name().as_deref(), Some(SESSION_NAME));
        assert_eq!(sts.request(&role(None)).get_external_id(), &None);
        assert_eq!(sts.request(&role(Some(""))).get_external_id(), &None);
    }
}
