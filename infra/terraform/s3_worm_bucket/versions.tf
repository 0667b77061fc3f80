terraform {
  required_version = ">= 1.7"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.x: the split S3 bucket resources (versioning, lock, lifecycle...) this module uses.
      version = ">= 5.40, < 6.0"
    }
  }
}
