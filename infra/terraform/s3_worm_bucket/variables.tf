variable "bucket_name" {
  description = "Name of the backup bucket. Object Lock can only be enabled when a bucket is created, so this module always creates it."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name)) && !can(regex("\\.\\.|^\\d+\\.\\d+\\.\\d+\\.\\d+$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name: 3-63 characters of a-z, 0-9, '.', '-', starting and ending with a letter or digit."
  }
}

variable "object_lock" {
  description = "Default retention of every object version: mode GOVERNANCE or COMPLIANCE, and exactly one of days or years. Default: GOVERNANCE for 7 years (the runbook)."
  type = object({
    mode  = optional(string, "GOVERNANCE")
    days  = optional(number)
    years = optional(number)
  })
  default = {
    mode  = "GOVERNANCE"
    years = 7
  }

  validation {
    condition     = contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock.mode)
    error_message = "object_lock.mode must be GOVERNANCE or COMPLIANCE."
  }
  validation {
    condition     = (var.object_lock.days == null) != (var.object_lock.years == null)
    error_message = "object_lock needs exactly one of days or years, not both and not neither."
  }
  validation {
    condition = alltrue([
      for n in [var.object_lock.days, var.object_lock.years] : n == null ? true : (n >= 1 && floor(n) == n)
    ])
    error_message = "object_lock.days and object_lock.years must be whole numbers of at least 1."
  }
}

variable "backup_prefix" {
  description = "Key prefix the agents write under (the agent's s3.prefix, e.g. backups/llama-mapper). The role policies are scoped to it."
  type        = string
  default     = "backups"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$", var.backup_prefix)) && !can(regex("(^|/)\\.\\.?(/|$)", var.backup_prefix))
    error_message = "backup_prefix must be a relative key prefix without leading/trailing '/', empty segments, '.' or '..'."
  }
}

variable "kms_key_arn" {
  description = "Encrypt with SSE-KMS using this key. Null (default): SSE-S3 (AES256)."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:...)."
  }
}

variable "break_glass_principals" {
  description = "IAM principal ARNs exempt from the bucket policy's protective denies (deleting versions, bypassing governance retention, changing the lock configuration or versioning, deleting the bucket policy). Include the role Terraform runs as if it must change those settings later."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.break_glass_principals : can(regex("^arn:aws[a-z-]*:(iam|sts)::", p))])
    error_message = "break_glass_principals must be IAM or STS ARNs."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which S3 aborts incomplete multipart uploads. The writer may not delete, so S3 must clean up failed uploads."
  type        = number
  default     = 7

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1
    error_message = "abort_incomplete_multipart_days must be at least 1."
  }
}

variable "transition" {
  description = "Optional move of current versions to a colder storage class after `days`. Null (default): none."
  type = object({
    days          = number
    storage_class = optional(string, "GLACIER_IR")
  })
  default = null

  validation {
    condition     = var.transition == null || try(var.transition.days >= 30, false)
    error_message = "transition.days must be at least 30 (S3's minimum for STANDARD_IA/GLACIER_IR)."
  }
  validation {
    condition     = var.transition == null || contains(["STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"], try(var.transition.storage_class, ""))
    error_message = "transition.storage_class must be one of STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, GLACIER_IR, GLACIER, DEEP_ARCHIVE."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after becoming noncurrent that old versions expire. Null (default): one day past the retention period. Must not be shorter than the retention."
  type        = number
  default     = null
}

variable "writer_role_names" {
  description = "IAM roles (e.g. the sidecars' IRSA roles) to attach the backup-writer policy to."
  type        = list(string)
  default     = []
}

variable "reader_role_names" {
  description = "IAM roles (e.g. the restore Job's) to attach the restore-reader and restore-reporter policies to."
  type        = list(string)
  default     = []
}

variable "clickhouse_role_names" {
  description = "IAM roles of ClickHouse servers (their environment credentials or a named collection's user) to attach the ClickHouse-server policy to."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for the bucket."
  type        = map(string)
  default     = {}
}

variable "access_logging" {
  description = "Optional S3 server access logging into a bucket you own: {target_bucket, target_prefix}. Null (default): off (the agent's audit trail records every backup, verify and restore)."
  type = object({
    target_bucket = string
    target_prefix = optional(string, "s3-access/")
  })
  default = null
}
