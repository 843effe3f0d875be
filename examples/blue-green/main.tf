# Blue/green cluster migration: ONE target group ("shop-web") fed by two clusters at once.
# Both clusters' agents bind it with multiClusterTargetGroup: true; see README.md for the runbook.

terraform {
  required_version = ">= 1.5.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40.0, < 7.0.0"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region of both clusters."
  type        = string
}

variable "vpc_id" {
  description = "VPC shared by both clusters (pod IPs must be unique and reachable from the ALB)."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets for the ALB, in at least two AZs."
  type        = list(string)
}

variable "oidc_provider_arns" {
  description = "IAM OIDC providers of the blue and the green cluster: both agents assume the same role."
  type        = list(string)
}

variable "pod_security_group_ids" {
  description = "Pod (or cluster) security groups of both clusters; the agents open the pod port to the ALB on them."
  type        = list(string)
}

variable "certificate_arn" {
  description = "Optional ACM certificate for HTTPS."
  type        = string
  default     = null
}

module "lb" {
  source = "../../terraform"

  name                = "shop"
  vpc_id              = var.vpc_id
  subnet_ids          = var.public_subnet_ids
  ingress_cidr_blocks = ["0.0.0.0/0"]
  certificate_arn     = var.certificate_arn

  target_groups = {
    # -> target group "shop-web". Deregistration delay covers in-flight requests while a
    # cluster's pods leave.
    web = {
      port                 = 8080
      target_type          = "ip"
      deregistration_delay = 60
      binding = {
        namespace                = "demo"
        service_name             = "web"
        service_port             = "80"
        multi_cluster            = true
        networking_ingress_ports = [8080]
      }
    }
  }

  irsa_oidc_provider_arns  = var.oidc_provider_arns
  agent_security_group_ids = var.pod_security_group_ids
}

output "lb_dns_name" {
  value = module.lb.lb_dns_name
}

output "target_group_arn" {
  value = module.lb.target_group_arns["web"]
}

output "agent_role_arn" {
  value = module.lb.agent_role_arn
}

output "targetgroupbindings_yaml" {
  value = module.lb.targetgroupbindings_yaml
}
