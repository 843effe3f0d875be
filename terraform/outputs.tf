locals {
  # One TargetGroupBinding per target group that has a `binding`. The ARN is used (not the
  # name) so the binding never depends on a name lookup. serviceRef.port is int-or-string:
  # jsondecode turns "80" into the number 80 and keeps "http" a string.
  targetgroupbindings = {
    for key, tg in local.target_groups : key => {
      apiVersion = "elbv2.k8s.aws/v1beta1"
      kind       = "TargetGroupBinding"
      metadata = {
        name      = coalesce(tg.binding.name, key)
        namespace = tg.binding.namespace
      }
      spec = merge(
        {
          targetGroupARN = aws_lb_target_group.this[key].arn
          targetType     = tg.target_type
          serviceRef = {
            name = tg.binding.service_name
            port = jsondecode(can(tonumber(tg.binding.service_port)) ? tg.binding.service_port : jsonencode(tg.binding.service_port))
          }
        },
        tg.binding.multi_cluster ? { multiClusterTargetGroup = true } : {},
        length(tg.binding.networking_ingress_ports) == 0 ? {} : {
          networking = {
            ingress = [{
              from  = [{ securityGroup = { groupID = aws_security_group.lb.id } }]
              ports = [for p in tg.binding.networking_ingress_ports : { protocol = "TCP", port = p }]
            }]
          }
        },
      )
    } if tg.binding != null
  }
}

output "lb_arn" {
  description = "ARN of the load balancer (for a WAF association, alarms, ...)."
  value       = aws_lb.this.arn
}

output "lb_dns_name" {
  description = "DNS name of the load balancer."
  value       = aws_lb.this.dns_name
}

output "lb_zone_id" {
  description = "Route 53 hosted zone id of the load balancer (for alias records)."
  value       = aws_lb.this.zone_id
}

output "lb_security_group_id" {
  description = "Security group of the load balancer. Use it as spec.networking.ingress[].from[].securityGroup.groupID."
  value       = aws_security_group.lb.id
}

output "target_group_arns" {
  description = "Target group ARNs by key."
  value       = { for key, tg in aws_lb_target_group.this : key => tg.arn }
}

output "target_group_names" {
  description = "Target group names by key."
  value       = { for key, tg in aws_lb_target_group.this : key => tg.name }
}

output "http_listener_arn" {
  description = "ARN of the HTTP (ALB) or TCP (NLB) listener."
  value       = aws_lb_listener.http.arn
}

output "https_listener_arn" {
  description = "ARN of the HTTPS (ALB) or TLS (NLB) listener, null without certificate_arn."
  value       = local.has_https ? aws_lb_listener.https[0].arn : null
}

output "agent_role_arn" {
  description = "ARN of tgb-agent's IAM role: put it in the eks.amazonaws.com/role-arn annotation of the agent's ServiceAccount (IRSA)."
  value       = var.create_agent_role ? aws_iam_role.agent[0].arn : null
}

output "agent_policy_json" {
  description = "The agent role's policy document (for review, or to attach to a role made elsewhere when create_agent_role is false)."
  value       = data.aws_iam_policy_document.agent.json
}

output "targetgroupbinding_manifests" {
  description = "Rendered TargetGroupBinding YAML for each target group with a binding, by key: terraform output -raw ... | kubectl apply -f -"
  value       = { for key, tgb in local.targetgroupbindings : key => yamlencode(tgb) }
}

output "targetgroupbindings_yaml" {
  description = "All rendered TargetGroupBindings as one multi-document YAML stream: terraform output -raw targetgroupbindings_yaml | kubectl apply -f -"
  value       = join("---\n", [for key in sort(keys(local.targetgroupbindings)) : yamlencode(local.targetgroupbindings[key])])
}
