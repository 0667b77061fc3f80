# Everything: SSE-KMS with a bucket key, a break-glass role, transition to Glacier Instant
# Retrieval after 90 days, and the IRSA roles of the sidecars, the restore Job and the ClickHouse
# server with their least-privilege policies attached.
terraform {
  required_version = ">= 1.7"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 6.0"
    }
  }
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "bucket_name" {
  type    = string
  default = "acme-prod-backups"
}

variable "oidc_provider_arn" {
  description = "The EKS cluster's OIDC provider, trusted by the IRSA roles."
  type        = string
  default     = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE"
}

provider "aws" {
  region = var.region
}

resource "aws_kms_key" "backups" {
  description         = "Backups of llama-mapper"
  enable_key_rotation = true
}

locals {
  # name => Kubernetes service account allowed to assume it
  roles = {
    "llama-mapper-backup"     = "system:serviceaccount:prod:llama-mapper-strongroom"
    "llama-mapper-restore"    = "system:serviceaccount:prod:llama-mapper-restore"
    "llama-mapper-clickhouse" = "system:serviceaccount:prod:llama-mapper-clickhouse"
  }
}

resource "aws_iam_role" "irsa" {
  for_each = local.roles
  name     = each.key
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRoleWithWebIdentity"
      Principal = { Federated = var.oidc_provider_arn }
      Condition = {
        StringEquals = {
          "${replace(var.oidc_provider_arn, "/^.*oidc-provider\\//", "")}:sub" = each.value
        }
      }
    }]
  })
}

resource "aws_iam_role" "break_glass" {
  name = "llama-mapper-backups-break-glass"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { AWS = "arn:aws:iam::111122223333:root" }
      Condition = { Bool = { "aws:MultiFactorAuthPresent" = "true" } }
    }]
  })
}

module "backups" {
  source        = "../.."
  bucket_name   = var.bucket_name
  backup_prefix = "backups/llama-mapper"
  object_lock = {
    mode  = "GOVERNANCE"
    years = 7
  }
  kms_key_arn                     = aws_kms_key.backups.arn
  break_glass_principals          = [aws_iam_role.break_glass.arn]
  abort_incomplete_multipart_days = 3
  transition = {
    days          = 90
    storage_class = "GLACIER_IR"
  }
  writer_role_names     = [aws_iam_role.irsa["llama-mapper-backup"].name]
  reader_role_names     = [aws_iam_role.irsa["llama-mapper-restore"].name]
  clickhouse_role_names = [aws_iam_role.irsa["llama-mapper-clickhouse"].name]
  tags = {
    app         = "llama-mapper"
    environment = "prod"
  }
}

output "bucket_name" {
  value = module.backups.bucket_name
}

output "retention" {
  value = module.backups.retention
}

output "writer_policy_json" {
  value = module.backups.writer_policy_json
}

output "reader_policy_json" {
  value = module.backups.reader_policy_json
}

output "reporter_policy_json" {
  value = module.backups.reporter_policy_json
}

output "clickhouse_server_policy_json" {
  value = module.backups.clickhouse_server_policy_json
}

output "bucket_policy_json" {
  value = module.backups.bucket_policy_json
}
