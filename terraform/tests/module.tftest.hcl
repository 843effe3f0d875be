# Offline module tests: `terraform test` with a mocked AWS provider (no credentials, no API
# calls). Run by tests/terraform/test_terraform_cli.py when a terraform binary and a local
# provider mirror are available; skipped otherwise.

mock_provider "aws" {
  mock_data "aws_vpc" {
    defaults = {
      cidr_block = "10.0.0.0/16"
    }
  }
  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }
  mock_data "aws_region" {
    defaults = {
      id   = "eu-west-1"
      name = "eu-west-1"
    }
  }
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }
  # The policy documents are rendered by the provider; the mock returns a fixed valid JSON.
  # The policy's content is checked by tests/terraform/test_iam_matches_code.py instead.
  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }
  mock_resource "aws_lb_target_group" {
    defaults = {
      arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/mock/0123456789abcdef"
    }
  }
  mock_resource "aws_lb" {
    defaults = {
      arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/demo/0123456789abcdef"
    }
  }
  mock_resource "aws_lb_listener" {
    defaults = {
      arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/demo/0123456789abcdef/0123456789abcdef"
    }
  }
  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/demo-tgb-agent"
    }
  }
  mock_resource "aws_security_group" {
    defaults = {
      id = "sg-0lb000000000000"
    }
  }
}

variables {
  name                       = "demo"
  vpc_id                     = "vpc-0123456789abcdef0"
  subnet_ids                 = ["subnet-a", "subnet-b"]
  ingress_cidr_blocks        = ["0.0.0.0/0"]
  enable_deletion_protection = false
  irsa_oidc_provider_arns    = ["arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/ABC"]
  agent_security_group_ids   = ["sg-0node00000000000"]
  target_groups = {
    web-ip = {
      port = 8080
      binding = {
        name                     = "web"
        namespace                = "demo"
        service_name             = "web"
        service_port             = "80"
        networking_ingress_ports = [8080]
      }
    }
    api = {
      port = 9090
      binding = {
        namespace     = "demo"
        service_name  = "api"
        service_port  = "http"
        multi_cluster = true
      }
    }
    unbound = {
      port        = 30080
      target_type = "instance"
    }
  }
}

run "ip_mode_alb" {
  command = apply

  assert {
    condition     = aws_lb_target_group.this["web-ip"].name == "demo-web-ip"
    error_message = "target group name is <name>-<key>"
  }
  assert {
    condition     = aws_lb_target_group.this["web-ip"].protocol == "HTTP" && aws_lb_target_group.this["web-ip"].target_type == "ip"
    error_message = "ALB target groups default to HTTP / ip"
  }
  assert {
    condition     = aws_lb_target_group.this["unbound"].target_type == "instance"
    error_message = "target_type is passed through"
  }
  assert {
    condition     = length(aws_lb_listener.https) == 0
    error_message = "no HTTPS listener without a certificate"
  }
  assert {
    condition     = aws_lb_listener.http.default_action[0].type == "forward" && aws_lb_listener.http.default_action[0].target_group_arn != null
    error_message = "HTTP forwards to the default target group without a certificate"
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.listener) == 1
    error_message = "one ingress rule per listener port and CIDR"
  }
  assert {
    condition     = aws_vpc_security_group_egress_rule.targets.cidr_ipv4 == "10.0.0.0/16"
    error_message = "egress is limited to the VPC CIDR"
  }
  assert {
    condition     = keys(output.targetgroupbinding_manifests) == ["api", "web-ip"]
    error_message = "a manifest for each target group with a binding, none for the others"
  }
  assert {
    condition     = yamldecode(output.targetgroupbinding_manifests["web-ip"]).spec.serviceRef.port == 80
    error_message = "numeric service ports render as numbers"
  }
  assert {
    condition     = yamldecode(output.targetgroupbinding_manifests["api"]).spec.serviceRef.port == "http"
    error_message = "named service ports render as strings"
  }
  assert {
    condition     = yamldecode(output.targetgroupbinding_manifests["api"]).spec.multiClusterTargetGroup == true
    error_message = "multi_cluster renders multiClusterTargetGroup"
  }
  assert {
    condition     = yamldecode(output.targetgroupbinding_manifests["web-ip"]).metadata.name == "web"
    error_message = "binding.name names the TargetGroupBinding"
  }
  assert {
    condition     = yamldecode(output.targetgroupbinding_manifests["web-ip"]).spec.networking.ingress[0].from[0].securityGroup.groupID == "sg-0lb000000000000"
    error_message = "networking ingress comes from the LB security group"
  }
  assert {
    condition     = !can(yamldecode(output.targetgroupbinding_manifests["api"]).spec.networking)
    error_message = "no networking block without networking_ingress_ports"
  }
  assert {
    condition     = length(aws_eks_pod_identity_association.agent) == 0 && length(aws_iam_role.agent) == 1
    error_message = "IRSA only: a role, no pod identity association"
  }
}

run "https_and_weighted_forward" {
  command = apply

  variables {
    certificate_arn = "arn:aws:acm:eu-west-1:123456789012:certificate/abc"
    forward_weights = { web-ip = 90, api = 10 }
  }

  assert {
    condition     = length(aws_lb_listener.https) == 1 && aws_lb_listener.https[0].protocol == "HTTPS"
    error_message = "an HTTPS listener with a certificate"
  }
  assert {
    condition     = aws_lb_listener.http.default_action[0].type == "redirect"
    error_message = "HTTP redirects to HTTPS when there is a certificate"
  }
  assert {
    condition     = length(aws_lb_listener.https[0].default_action[0].forward[0].target_group) == 2
    error_message = "weighted forward across two target groups"
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.listener) == 2
    error_message = "ingress on both listener ports"
  }
}

run "nlb_pod_identity" {
  command = apply

  variables {
    load_balancer_type         = "network"
    irsa_oidc_provider_arns    = []
    enable_pod_identity        = true
    pod_identity_cluster_names = ["blue", "green"]
    target_groups = {
      tcp = { port = 8080 }
    }
  }

  assert {
    condition     = aws_lb_target_group.this["tcp"].protocol == "TCP" && aws_lb_listener.http.protocol == "TCP"
    error_message = "NLB defaults to TCP"
  }
  assert {
    condition     = aws_lb_target_group.this["tcp"].health_check[0].protocol == "TCP"
    error_message = "TCP target groups get TCP health checks"
  }
  assert {
    condition     = length(aws_eks_pod_identity_association.agent) == 2
    error_message = "one pod identity association per cluster"
  }
}

run "weighted_forward_needs_alb" {
  command = plan

  variables {
    load_balancer_type = "network"
    target_groups      = { a = { port = 80 }, b = { port = 80 } }
    forward_weights    = { a = 50, b = 50 }
  }

  expect_failures = [aws_lb_listener.http]
}

run "role_needs_a_trust" {
  command = plan

  variables {
    irsa_oidc_provider_arns = []
    enable_pod_identity     = false
  }

  expect_failures = [aws_iam_role.agent]
}
