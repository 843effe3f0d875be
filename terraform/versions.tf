terraform {
  # optional() object attributes with defaults, preconditions and the
  # aws_vpc_security_group_*_rule resources need Terraform 1.5+ and AWS provider 5.40+.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40.0, < 7.0.0"
    }
  }
}
