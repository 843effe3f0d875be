# instance mode: the ALB forwards to the nodes' NodePort; tgb-agent registers the nodes into the
# "demo-web-instance" target group and opens the node port to the ALB's security group.

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
  description = "AWS region of the cluster."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the EKS cluster."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets for the ALB, in at least two AZs."
  type        = list(string)
}

variable "oidc_provider_arn" {
  description = "IAM OIDC provider of the cluster (IRSA)."
  type        = string
}

variable "node_security_group_id" {
  description = "Security group of the worker nodes; tgb-agent adds the ALB -> NodePort rule to it."
  type        = string
}

module "lb" {
  source = "../../terraform"

  name                       = "demo"
  vpc_id                     = var.vpc_id
  subnet_ids                 = var.public_subnet_ids
  ingress_cidr_blocks        = ["0.0.0.0/0"]
  enable_deletion_protection = false

  target_groups = {
    # -> target group "demo-web-instance". In instance mode the agent registers each node with
    # the Service's NodePort, so this port is only the group's default.
    web-instance = {
      port        = 30080
      target_type = "instance"
      binding = {
        name                     = "web-instance"
        namespace                = "demo"
        service_name             = "web-nodeport"
        service_port             = "80"
        networking_ingress_ports = [30080]
      }
    }
  }

  irsa_oidc_provider_arns  = [var.oidc_provider_arn]
  agent_security_group_ids = [var.node_security_group_id]
}

output "url" {
  value = "http://${module.lb.lb_dns_name}/"
}

output "agent_role_arn" {
  value = module.lb.agent_role_arn
}

output "lb_security_group_id" {
  value = module.lb.lb_security_group_id
}

output "targetgroupbindings_yaml" {
  value = module.lb.targetgroupbindings_yaml
}
