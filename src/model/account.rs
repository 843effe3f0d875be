/// The AWS account a binding's target group lives in: the agent's own (its credentials), or
/// another one reached through an IAM role (`spec.iamRoleArnToAssume`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Account {
    #[default]
    Own,
    Role(AssumeRole),
}

/// One STS AssumeRole: the role and the external id its trust policy may require.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssumeRole {
    pub role_arn: String,
    /// Sent only when set (never an empty string).
    pub external_id: Option<String>,
}

impl AssumeRole {
    /// The 12-digit account of `arn:<partition>:iam::<account>:role/<path/name>`, when well formed.
    pub fn account_id(&self) -> Option<&str> {
        role_account(&self.role_arn)
    }
}

/// The account of a role ARN, `None` unless it is `arn:<partition>:iam::<12 digits>:role/<name>`.
pub fn role_account(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts.as_slice() else { return None };
    let ok = *prefix == "arn"
        && !partition.is_empty()
        && *service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && resource.strip_prefix("role/").is_some_and(|name| !name.is_empty() && !name.ends_with('/'));
    ok.then_some(*account)
}

/// The 12-digit account of an ELBv2 ARN (`arn:<partition>:elasticloadbalancing:<region>:<account>:…`).
pub fn arn_account(arn: &str) -> Option<&str> {
    let account = arn.split(':').nth(4)?;
    (account.len() == 12 && account.chars().all(|c| c.is_ascii_digit())).then_some(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_and_group_accounts() {
        assert_eq!(role_account("arn:aws:iam::222222222222:role/tgb"), Some("222222222222"));
        assert_eq!(role_account("arn:aws-cn:iam::222222222222:role/path/tgb"), Some("222222222222"));
        for bad in [
            "",
            "tgb",
            "arn:aws:iam::2222:role/tgb",
            "arn:aws:iam::222222222222:user/tgb",
            "arn:aws:iam::222222222222:role/",
            "arn:aws:sts::222222222222:role/tgb",
            "arn:aws:iam:us-east-1:222222222222:role/tgb",
        ] {
            assert_eq!(role_account(bad), None, "{bad}");
        }
        let tg = "arn:aws:elasticloadbalancing:us-east-1:222222222222:targetgroup/web/0123456789abcdef";
        assert_eq!(arn_account(tg), Some("222222222222"));
        assert_eq!(arn_account("arn:tg"), None);
    }
}
