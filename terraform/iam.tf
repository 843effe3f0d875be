# IAM role for tgb-agent (IRSA and/or EKS Pod Identity) with a least-privilege inline policy.
#
# The action list below is checked by tests/terraform/test_iam_matches_code.py against the AWS
# calls found in src/aws/: add or remove an action here only together with the code that calls it.

locals {
  sa_namespace = var.agent_service_account.namespace
  sa_name      = var.agent_service_account.name
  sa_subject   = "system:serviceaccount:${local.sa_namespace}:${local.sa_name}"

  arn_prefix_ec2 = "arn:${data.aws_partition.current.partition}:ec2:${data.aws_region.current.id}:${data.aws_caller_identity.current.account_id}"

  agent_security_group_arns = [for id in var.agent_security_group_ids : "${local.arn_prefix_ec2}:security-group/${id}"]
  # Rules get their own ARN (security-group-rule/sgr-...). IAM also evaluates Authorize/Revoke
  # against the rule resource (and tagging a new rule needs it); the security-group ARN above is
  # what limits which groups can change.
  security_group_rule_arns = ["${local.arn_prefix_ec2}:security-group-rule/*"]

  manage_security_groups = var.create_agent_role && length(var.agent_security_group_ids) > 0
}

data "aws_iam_policy_document" "agent_trust" {
  dynamic "statement" {
    for_each = var.irsa_oidc_provider_arns
    content {
      sid     = "Irsa${statement.key}"
      effect  = "Allow"
      actions = ["sts:AssumeRoleWithWebIdentity"]

      principals {
        type        = "Federated"
        identifiers = [statement.value]
      }

      condition {
        test     = "StringEquals"
        variable = "${element(split("oidc-provider/", statement.value), 1)}:sub"
        values   = [local.sa_subject]
      }

      condition {
        test     = "StringEquals"
        variable = "${element(split("oidc-provider/", statement.value), 1)}:aud"
        values   = ["sts.amazonaws.com"]
      }
    }
  }

  dynamic "statement" {
    for_each = var.enable_pod_identity ? [1] : []
    content {
      sid     = "EksPodIdentity"
      effect  = "Allow"
      actions = ["sts:AssumeRole", "sts:TagSession"]

      principals {
        type        = "Service"
        identifiers = ["pods.eks.amazonaws.com"]
      }
    }
  }
}

data "aws_iam_policy_document" "agent" {
  # Read target groups (name -> ARN, target type, VPC) and their current targets.
  # Describe* actions support no resource-level permissions: Resource must be "*".
  statement {
    sid    = "DescribeTargetGroups"
    effect = "Allow"
    actions = [
      "elasticloadbalancing:DescribeTargetGroups",
      "elasticloadbalancing:DescribeTargetHealth",
    ]
    resources = ["*"]
  }

  # Register and deregister targets, only in this module's target groups.
  statement {
    sid    = "RegisterTargets"
    effect = "Allow"
    actions = [
      "elasticloadbalancing:RegisterTargets",
      "elasticloadbalancing:DeregisterTargets",
    ]
    resources = [for tg in aws_lb_target_group.this : tg.arn]
  }

  # VPC CIDRs (targets outside the VPC need AvailabilityZone=all), security groups and their
  # rules, pod ENIs and node instances. No resource-level permissions exist for these.
  statement {
    sid    = "DescribeEc2"
    effect = "Allow"
    actions = [
      "ec2:DescribeVpcs",
      "ec2:DescribeSecurityGroups",
      "ec2:DescribeSecurityGroupRules",
      "ec2:DescribeNetworkInterfaces",
      "ec2:DescribeInstances",
    ]
    resources = ["*"]
  }

  # spec.networking: add and remove ingress rules, only on the listed security groups.
  dynamic "statement" {
    for_each = length(var.agent_security_group_ids) > 0 ? [1] : []
    content {
      sid    = "SecurityGroupIngress"
      effect = "Allow"
      actions = [
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupIngress",
      ]
      resources = concat(local.agent_security_group_arns, local.security_group_rule_arns)
    }
  }

  # spec.iamRoleArnToAssume: target groups in other accounts, only through the listed roles.
  # (GetCallerIdentity, which the agent also calls, needs no permission.)
  dynamic "statement" {
    for_each = length(var.cross_account_role_arns) > 0 ? [1] : []
    content {
      sid       = "AssumeCrossAccountRoles"
      effect    = "Allow"
      actions   = ["sts:AssumeRole"]
      resources = var.cross_account_role_arns
    }
  }

  # Claim and release rules another cluster's agent created (blue/green sharing one security group):
  # only the agent's own claim and creator tag keys.
  dynamic "statement" {
    for_each = length(var.agent_security_group_ids) > 0 ? [1] : []
    content {
      sid       = "ClaimSecurityGroupRules"
      effect    = "Allow"
      actions   = ["ec2:CreateTags", "ec2:DeleteTags"]
      resources = local.security_group_rule_arns

      condition {
        test     = "ForAllValues:StringLike"
        variable = "aws:TagKeys"
        values   = ["tgb-agent.elbv2.k8s.aws/claim/*", "tgb-agent.elbv2.k8s.aws/cluster"]
      }
    }
  }

  # Tag the rules the agent creates, only as part of creating them.
  dynamic "statement" {
    for_each = length(var.agent_security_group_ids) > 0 ? [1] : []
    content {
      sid       = "TagNewSecurityGroupRules"
      effect    = "Allow"
      actions   = ["ec2:CreateTags"]
      resources = local.security_group_rule_arns

      condition {
        test     = "StringEquals"
        variable = "ec2:CreateAction"
        values   = ["AuthorizeSecurityGroupIngress"]
      }
    }
  }
}

resource "aws_iam_role" "agent" {
  count = var.create_agent_role ? 1 : 0

  name                 = "${var.name}-tgb-agent"
  description          = "tgb-agent for load balancer ${var.name}: registers targets and manages ingress rules"
  assume_role_policy   = data.aws_iam_policy_document.agent_trust.json
  permissions_boundary = var.agent_role_permissions_boundary
  tags                 = var.tags

  lifecycle {
    precondition {
      condition     = length(var.irsa_oidc_provider_arns) > 0 || var.enable_pod_identity
      error_message = "The agent role needs a way in: set irsa_oidc_provider_arns and/or enable_pod_identity."
    }
  }
}

resource "aws_iam_role_policy" "agent" {
  count = var.create_agent_role ? 1 : 0

  name   = "tgb-agent"
  role   = aws_iam_role.agent[0].id
  policy = data.aws_iam_policy_document.agent.json
}

resource "aws_eks_pod_identity_association" "agent" {
  for_each = var.create_agent_role && var.enable_pod_identity ? toset(var.pod_identity_cluster_names) : toset([])

  cluster_name    = each.value
  namespace       = local.sa_namespace
  service_account = local.sa_name
  role_arn        = aws_iam_role.agent[0].arn
  tags            = var.tags
}
