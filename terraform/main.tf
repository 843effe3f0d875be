# Load balancer, its security group, listeners and target groups.
# The target groups get no attachments: tgb-agent registers pod IPs or nodes into them.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

data "aws_vpc" "this" {
  id = var.vpc_id
}

locals {
  is_alb    = var.load_balancer_type == "application"
  has_https = var.certificate_arn != null

  plain_protocol  = local.is_alb ? "HTTP" : "TCP"
  secure_protocol = local.is_alb ? "HTTPS" : "TLS"

  listener_ports = local.has_https ? [var.http_port, var.https_port] : [var.http_port]

  target_groups = {
    for key, tg in var.target_groups : key => merge(tg, {
      name     = coalesce(tg.name, "${var.name}-${key}")
      protocol = coalesce(tg.protocol, local.plain_protocol)
    })
  }

  default_target_group = coalesce(var.default_target_group, sort(keys(var.target_groups))[0])
  weighted             = length(var.forward_weights) > 0

  # The HTTP listener of an ALB redirects when there is an HTTPS listener (unless told not to).
  http_redirects = local.is_alb && local.has_https && var.http_redirect_to_https

  ingress_rules = {
    for pair in setproduct(local.listener_ports, var.ingress_cidr_blocks) :
    "${pair[0]}-${pair[1]}" => { port = pair[0], cidr = pair[1] }
  }
}

# ---------------------------------------------------------------------------
# Security group of the load balancer
# ---------------------------------------------------------------------------

resource "aws_security_group" "lb" {
  name_prefix = "${var.name}-lb-"
  description = "Load balancer ${var.name}: listener ingress, egress to targets in the VPC"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-lb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "listener" {
  for_each = local.ingress_rules

  security_group_id = aws_security_group.lb.id
  description       = "Listener port ${each.value.port} from ${each.value.cidr}"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
  tags              = var.tags
}

# Targets are pod IPs (any port) or nodes (NodePorts) inside the VPC; health checks use the
# same paths. Egress is limited to the VPC's primary CIDR over TCP.
resource "aws_vpc_security_group_egress_rule" "targets" {
  security_group_id = aws_security_group.lb.id
  description       = "Traffic and health checks to targets in the VPC"
  ip_protocol       = "tcp"
  from_port         = 1
  to_port           = 65535
  cidr_ipv4         = data.aws_vpc.this.cidr_block
  tags              = var.tags
}

# ---------------------------------------------------------------------------
# Load balancer
# ---------------------------------------------------------------------------

resource "aws_lb" "this" {
  #checkov:skip=CKV2_AWS_28:WAF is the caller's choice; attach an aws_wafv2_web_acl_association to the lb_arn output. An NLB cannot have one at all.
  #checkov:skip=CKV2_AWS_20:HTTPS is optional (var.certificate_arn); when a certificate is given the HTTP listener redirects to HTTPS (see aws_lb_listener.http).
  #checkov:skip=CKV_AWS_91:Access logs need a caller-owned S3 bucket with an ELB delivery policy; they are on when var.access_logs is set.
  name                       = var.name
  load_balancer_type         = var.load_balancer_type
  internal                   = var.internal
  subnets                    = var.subnet_ids
  security_groups            = [aws_security_group.lb.id]
  enable_deletion_protection = var.enable_deletion_protection
  drop_invalid_header_fields = local.is_alb ? true : null
  idle_timeout               = local.is_alb ? var.idle_timeout : null
  tags                       = var.tags

  dynamic "access_logs" {
    for_each = var.access_logs == null ? [] : [var.access_logs]
    content {
      enabled = true
      bucket  = access_logs.value.bucket
      prefix  = access_logs.value.prefix
    }
  }
}

# ---------------------------------------------------------------------------
# Target groups
# ---------------------------------------------------------------------------

resource "aws_lb_target_group" "this" {
  #checkov:skip=CKV_AWS_378:TLS ends at the listener; targets are pod IPs or nodes inside the VPC. protocol = "HTTPS" per target group is supported when end-to-end TLS is wanted.
  for_each = local.target_groups

  name                 = each.value.name
  vpc_id               = var.vpc_id
  port                 = each.value.port
  protocol             = each.value.protocol
  protocol_version     = local.is_alb ? each.value.protocol_version : null
  target_type          = each.value.target_type
  deregistration_delay = each.value.deregistration_delay
  tags                 = merge(var.tags, { Name = each.value.name })

  health_check {
    enabled  = each.value.health_check.enabled
    port     = each.value.health_check.port
    protocol = coalesce(each.value.health_check.protocol, contains(["HTTP", "HTTPS"], each.value.protocol) ? each.value.protocol : "TCP")
    # path and matcher only apply to HTTP(S) health checks.
    path                = contains(["HTTP", "HTTPS"], coalesce(each.value.health_check.protocol, each.value.protocol)) ? each.value.health_check.path : null
    matcher             = contains(["HTTP", "HTTPS"], coalesce(each.value.health_check.protocol, each.value.protocol)) ? each.value.health_check.matcher : null
    interval            = each.value.health_check.interval
    timeout             = each.value.health_check.timeout
    healthy_threshold   = each.value.health_check.healthy_threshold
    unhealthy_threshold = each.value.health_check.unhealthy_threshold
  }

  lifecycle {
    precondition {
      condition     = length(each.value.name) <= 32
      error_message = "Target group name \"${each.value.name}\" is longer than 32 characters; shorten var.name or the key, or set name."
    }
    precondition {
      condition     = local.is_alb ? contains(["HTTP", "HTTPS"], each.value.protocol) : contains(["TCP", "TLS", "UDP", "TCP_UDP"], each.value.protocol)
      error_message = "Target group protocol ${each.value.protocol} does not fit a ${var.load_balancer_type} load balancer."
    }
  }
}

# ---------------------------------------------------------------------------
# Listeners
# ---------------------------------------------------------------------------

resource "aws_lb_listener" "http" {
  #checkov:skip=CKV_AWS_2:The HTTPS listener is optional (var.certificate_arn). With a certificate an ALB's plain listener redirects to HTTPS; without one, plain HTTP forwarding is the point (demo, internal LBs). On an NLB it is TCP.
  load_balancer_arn = aws_lb.this.arn
  port              = var.http_port
  protocol          = local.plain_protocol
  tags              = var.tags

  dynamic "default_action" {
    for_each = local.http_redirects ? [1] : []
    content {
      type = "redirect"
      redirect {
        port        = tostring(var.https_port)
        protocol    = "HTTPS"
        status_code = "HTTP_301"
      }
    }
  }

  dynamic "default_action" {
    for_each = !local.http_redirects && !local.weighted ? [1] : []
    content {
      type             = "forward"
      target_group_arn = aws_lb_target_group.this[local.default_target_group].arn
    }
  }

  dynamic "default_action" {
    for_each = !local.http_redirects && local.weighted ? [1] : []
    content {
      type = "forward"
      forward {
        dynamic "target_group" {
          for_each = var.forward_weights
          content {
            arn    = aws_lb_target_group.this[target_group.key].arn
            weight = target_group.value
          }
        }
        stickiness {
          enabled  = var.forward_stickiness_seconds > 0
          duration = max(var.forward_stickiness_seconds, 1)
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = contains(keys(var.target_groups), local.default_target_group)
      error_message = "default_target_group must be a key of target_groups."
    }
    precondition {
      condition     = alltrue([for k in keys(var.forward_weights) : contains(keys(var.target_groups), k)])
      error_message = "Every forward_weights key must be a key of target_groups."
    }
    precondition {
      condition     = local.is_alb || !local.weighted
      error_message = "Weighted forwarding (forward_weights) needs an application load balancer."
    }
  }
}

resource "aws_lb_listener" "https" {
  count = local.has_https ? 1 : 0

  load_balancer_arn = aws_lb.this.arn
  port              = var.https_port
  protocol          = local.secure_protocol
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn
  tags              = var.tags

  dynamic "default_action" {
    for_each = local.weighted ? [] : [1]
    content {
      type             = "forward"
      target_group_arn = aws_lb_target_group.this[local.default_target_group].arn
    }
  }

  dynamic "default_action" {
    for_each = local.weighted ? [1] : []
    content {
      type = "forward"
      forward {
        dynamic "target_group" {
          for_each = var.forward_weights
          content {
            arn    = aws_lb_target_group.this[target_group.key].arn
            weight = target_group.value
          }
        }
        stickiness {
          enabled  = var.forward_stickiness_seconds > 0
          duration = max(var.forward_stickiness_seconds, 1)
        }
      }
    }
  }
}

resource "aws_lb_listener_certificate" "extra" {
  for_each = local.has_https ? toset(var.additional_certificate_arns) : toset([])

  listener_arn    = aws_lb_listener.https[0].arn
  certificate_arn = each.value
}
