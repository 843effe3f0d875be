# ---------------------------------------------------------------------------
# Load balancer
# ---------------------------------------------------------------------------

variable "name" {
  description = "Name prefix for the load balancer, its security group, the target groups (\"<name>-<key>\") and the agent IAM role. Keep it short: target group names are limited to 32 characters."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9][a-zA-Z0-9-]{0,20}$", var.name))
    error_message = "name must be 1-21 characters of letters, digits and hyphens, starting with a letter or digit."
  }
}

variable "vpc_id" {
  description = "VPC of the load balancer, its security group and the target groups."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets for the load balancer (at least two availability zones for an ALB)."
  type        = list(string)
}

variable "load_balancer_type" {
  description = "\"application\" (ALB, default) or \"network\" (NLB)."
  type        = string
  default     = "application"

  validation {
    condition     = contains(["application", "network"], var.load_balancer_type)
    error_message = "load_balancer_type must be \"application\" or \"network\"."
  }
}

variable "internal" {
  description = "Create an internal (not internet-facing) load balancer."
  type        = bool
  default     = false
}

variable "ingress_cidr_blocks" {
  description = "IPv4 CIDR blocks allowed to reach the listener ports through the load balancer security group. No default on purpose: say [\"0.0.0.0/0\"] explicitly for a public endpoint."
  type        = list(string)
}

variable "enable_deletion_protection" {
  description = "Turn on deletion protection for the load balancer. Turn it off only for throw-away environments."
  type        = bool
  default     = true
}

variable "access_logs" {
  description = "Optional S3 access logs for the load balancer: bucket name and key prefix. The bucket policy must allow the ELB log delivery principal."
  type = object({
    bucket = string
    prefix = optional(string)
  })
  default = null
}

variable "idle_timeout" {
  description = "ALB idle timeout in seconds (ignored for NLB)."
  type        = number
  default     = 60
}

# ---------------------------------------------------------------------------
# Listeners
# ---------------------------------------------------------------------------

variable "http_port" {
  description = "Port of the plain listener (HTTP for ALB, TCP for NLB)."
  type        = number
  default     = 80
}

variable "certificate_arn" {
  description = "ACM certificate ARN. When set, an HTTPS (ALB) or TLS (NLB) listener is created on https_port, and on an ALB the HTTP listener redirects to it unless http_redirect_to_https is false."
  type        = string
  default     = null
}

variable "additional_certificate_arns" {
  description = "Extra certificates (SNI) for the HTTPS/TLS listener."
  type        = list(string)
  default     = []
}

variable "https_port" {
  description = "Port of the HTTPS (ALB) or TLS (NLB) listener."
  type        = number
  default     = 443
}

variable "ssl_policy" {
  description = "Security policy of the HTTPS/TLS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "http_redirect_to_https" {
  description = "On an ALB with certificate_arn set, make the HTTP listener redirect to HTTPS instead of forwarding."
  type        = bool
  default     = true
}

variable "default_target_group" {
  description = "Key in target_groups that the listeners forward to. Defaults to the first key in lexical order. Ignored when forward_weights is set."
  type        = string
  default     = null
}

variable "forward_weights" {
  description = "ALB only: weighted forward across target groups (blue/green), as { <target_groups key> = weight (0-999) }. Empty means a plain forward to default_target_group."
  type        = map(number)
  default     = {}

  validation {
    condition     = alltrue([for w in values(var.forward_weights) : w >= 0 && w <= 999 && floor(w) == w])
    error_message = "forward_weights values must be whole numbers from 0 to 999."
  }
}

variable "forward_stickiness_seconds" {
  description = "ALB only, with forward_weights: keep a client on the same target group for this many seconds (0 turns group stickiness off)."
  type        = number
  default     = 0
}

# ---------------------------------------------------------------------------
# Target groups (no attachments: the agent registers the targets)
# ---------------------------------------------------------------------------

variable "target_groups" {
  description = <<-EOT
    Target groups, keyed by a short key. Each is named "<name>-<key>" unless name is given.
    The module creates no attachments: tgb-agent registers the targets.
      port                 - default target port (ip mode registers pod IPs with the pod port,
                             instance mode registers instances with the Service NodePort)
      protocol             - HTTP|HTTPS for ALB, TCP|TLS|UDP|TCP_UDP for NLB (default HTTP, or TCP on an NLB)
      target_type          - "ip" (pod IPs) or "instance" (nodes); default "ip"
      deregistration_delay - seconds (default 30)
      health_check         - optional overrides
      binding              - optional: where the matching TargetGroupBinding lives; used only to
                             render the targetgroupbinding_manifests output
  EOT
  type = map(object({
    name                 = optional(string)
    port                 = number
    protocol             = optional(string)
    protocol_version     = optional(string)
    target_type          = optional(string, "ip")
    deregistration_delay = optional(number, 30)
    health_check = optional(object({
      enabled             = optional(bool, true)
      path                = optional(string, "/")
      port                = optional(string, "traffic-port")
      protocol            = optional(string)
      matcher             = optional(string, "200-399")
      interval            = optional(number, 15)
      timeout             = optional(number, 5)
      healthy_threshold   = optional(number, 3)
      unhealthy_threshold = optional(number, 3)
    }), {})
    binding = optional(object({
      name                     = optional(string)
      namespace                = string
      service_name             = string
      service_port             = string
      multi_cluster            = optional(bool, false)
      networking_ingress_ports = optional(list(number), [])
    }))
  }))

  validation {
    condition     = length(var.target_groups) > 0
    error_message = "target_groups needs at least one entry."
  }

  validation {
    condition     = alltrue([for tg in values(var.target_groups) : contains(["ip", "instance"], tg.target_type)])
    error_message = "target_type must be \"ip\" or \"instance\" (tgb-agent registers pod IPs or nodes)."
  }
}

# ---------------------------------------------------------------------------
# IAM role for tgb-agent
# ---------------------------------------------------------------------------

variable "create_agent_role" {
  description = "Create the IAM role (and its inline policy) for tgb-agent."
  type        = bool
  default     = true
}

variable "agent_service_account" {
  description = "Namespace and name of tgb-agent's Kubernetes ServiceAccount (deploy/ uses tgb-system/tgb-agent)."
  type = object({
    namespace = optional(string, "tgb-system")
    name      = optional(string, "tgb-agent")
  })
  default = {}
}

variable "irsa_oidc_provider_arns" {
  description = "IRSA: ARNs of the clusters' IAM OIDC providers allowed to assume the role for agent_service_account. Give two for a blue/green cluster migration."
  type        = list(string)
  default     = []
}

variable "enable_pod_identity" {
  description = "EKS Pod Identity: trust pods.eks.amazonaws.com. Set pod_identity_cluster_names to also create the associations."
  type        = bool
  default     = false
}

variable "pod_identity_cluster_names" {
  description = "EKS clusters in which to create a Pod Identity association for agent_service_account (needs enable_pod_identity)."
  type        = list(string)
  default     = []
}

variable "agent_security_group_ids" {
  description = "Security groups whose ingress rules tgb-agent may add and remove (spec.networking): the node or pod security groups the targets use. Empty means the agent gets no security-group write access."
  type        = list(string)
  default     = []
}

variable "cross_account_role_arns" {
  description = "IAM roles in other accounts the agent may assume for TargetGroupBindings that set spec.iamRoleArnToAssume (ip targets only). Empty means the agent gets no sts:AssumeRole at all. Each role's own policy and trust policy (trusting the agent role, with the binding's external id if set) live in its account."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.cross_account_role_arns : can(regex("^arn:[a-z-]+:iam::[0-9]{12}:role/.+$", arn))])
    error_message = "cross_account_role_arns must be IAM role ARNs (arn:<partition>:iam::<account>:role/<name>); no wildcards."
  }
}

variable "agent_role_permissions_boundary" {
  description = "Optional permissions boundary policy ARN for the agent role."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource the module creates."
  type        = map(string)
  default     = {}
}
