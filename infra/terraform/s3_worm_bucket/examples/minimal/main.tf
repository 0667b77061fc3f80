# The smallest use: a GOVERNANCE, 7-year Object-Lock bucket for one release's backups, and the
# policies as outputs to attach wherever your roles are managed.
terraform {
  required_version = ">= 1.7"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 6.0"
    }
  }
}

provider "aws" {
  region = "eu-west-1"
}

module "backups" {
  source        = "../.."
  bucket_name   = "acme-dev-backups"
  backup_prefix = "backups/llama-mapper"
}

output "bucket" {
  value = module.backups.bucket_name
}

output "writer_policy_json" {
  value = module.backups.writer_policy_json
}
