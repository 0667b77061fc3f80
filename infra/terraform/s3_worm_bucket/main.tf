# An S3 bucket for seven years of backups: Object Lock (WORM) with a default retention,
# versioning that cannot be suspended through this module, encryption at rest, no public access,
# a bucket policy that refuses the operations that could remove protection, lifecycle rules that
# never touch a locked version, and least-privilege policies for the agent's roles.

locals {
  bucket_arn  = "arn:aws:s3:::${var.bucket_name}"
  prefix      = var.backup_prefix
  objects_arn = "${local.bucket_arn}/${local.prefix}/*"
  # Restore-drill reports: `<prefix>/drills/<engine>/<release>/<ts>.json`, written create-only and
  # locked by the restore role (drill CronJob) and by the backup writer (the sidecar's drills).
  drills_arn = "${local.bucket_arn}/${local.prefix}/drills/*"

  # The longest the default retention can last, in days (a year has at most 366).
  retention_days = var.object_lock.days != null ? var.object_lock.days : var.object_lock.years * 366
  noncurrent_days = coalesce(
    var.noncurrent_version_expiration_days,
    local.retention_days + 1,
  )

  # Everyone but the break-glass principals is denied the protective actions.
  break_glass_condition = length(var.break_glass_principals) == 0 ? {} : {
    ArnNotLike = { "aws:PrincipalArn" = var.break_glass_principals }
  }

  kms_statements = var.kms_key_arn == null ? [] : [{
    Sid      = "UseTheBucketKey"
    Effect   = "Allow"
    Action   = ["kms:GenerateDataKey", "kms:Decrypt"]
    Resource = [var.kms_key_arn]
  }]

  list_prefix_condition = {
    StringLike = { "s3:prefix" = [local.prefix, "${local.prefix}/*"] }
  }

  # Shared by the writer and the reader: list the prefix (metadata only), and check that the
  # bucket is protected.
  list_prefix_statement = {
    Sid       = "ListThePrefix"
    Effect    = "Allow"
    Action    = ["s3:ListBucket", "s3:ListBucketVersions"]
    Resource  = [local.bucket_arn]
    Condition = local.list_prefix_condition
  }
  bucket_protection_statement = {
    Sid      = "CheckBucketProtection"
    Effect   = "Allow"
    Action   = ["s3:GetBucketObjectLockConfiguration", "s3:GetBucketVersioning"]
    Resource = [local.bucket_arn]
  }
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_18:Access logging needs a log bucket the operator owns; it is optional (var.access_logging). Every backup, verify and restore is in the agent's locked audit trail.
  #checkov:skip=CKV_AWS_144:Cross-region replication of a locked bucket needs a second Object-Lock bucket and a replication role; a separate disaster-recovery decision, not part of this module.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events; backups are scheduled by the agent, not triggered by S3.
  bucket              = var.bucket_name
  object_lock_enabled = true
  # Never: a backup bucket is not emptied by Terraform.
  force_destroy = false
  tags          = var.tags

  lifecycle {
    # `terraform destroy` is refused; S3 would refuse to delete a bucket holding locked
    # versions anyway.
    prevent_destroy = true
  }
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id
  versioning_configuration {
    # Object Lock requires it; the bucket policy denies suspending it.
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    default_retention {
      mode  = var.object_lock.mode
      days  = var.object_lock.days
      years = var.object_lock.years
    }
  }
  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    # One KMS request per object instead of per request: cheaper, same protection.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    # ACLs off: the bucket's account owns every object, whoever wrote it.
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    # The writer may not delete, so S3 aborts failed multipart uploads. Old versions and the
    # delete markers left behind (e.g. ClickHouse's .lock files) go only after the retention has
    # passed; S3 never expires a version that is still locked.
    id     = "backups"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
    noncurrent_version_expiration {
      noncurrent_days = local.noncurrent_days
    }
    expiration {
      expired_object_delete_marker = true
    }
  }

  dynamic "rule" {
    for_each = var.transition == null ? [] : [var.transition]
    content {
      id     = "transition-current-versions"
      status = "Enabled"
      filter {}
      abort_incomplete_multipart_upload {
        days_after_initiation = var.abort_incomplete_multipart_days
      }
      transition {
        days          = rule.value.days
        storage_class = rule.value.storage_class
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]

  lifecycle {
    precondition {
      condition     = local.noncurrent_days > local.retention_days
      error_message = "noncurrent_version_expiration_days must exceed the retention (${local.retention_days} days, counting 366 per year): versions must not be scheduled to expire while locked."
    }
  }
}

resource "aws_s3_bucket_logging" "this" {
  count         = var.access_logging == null ? 0 : 1
  bucket        = aws_s3_bucket.this.id
  target_bucket = var.access_logging.target_bucket
  target_prefix = var.access_logging.target_prefix
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = local.bucket_policy_json
  # After the settings the policy then protects (it denies changing versioning and the lock
  # configuration), and after the public access block, or S3 may judge the policy public.
  depends_on = [
    aws_s3_bucket_public_access_block.this,
    aws_s3_bucket_versioning.this,
    aws_s3_bucket_object_lock_configuration.this,
  ]
}

locals {
  bucket_policy_json = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = ["s3:*"]
        Resource  = [local.bucket_arn, "${local.bucket_arn}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
      merge({
        Sid       = "DenyRemovingProtection"
        Effect    = "Deny"
        Principal = "*"
        Action = [
          "s3:DeleteObjectVersion",
          "s3:BypassGovernanceRetention",
          "s3:PutBucketObjectLockConfiguration",
          "s3:PutBucketVersioning",
          "s3:DeleteBucketPolicy",
        ]
        Resource = [local.bucket_arn, "${local.bucket_arn}/*"]
      }, length(local.break_glass_condition) == 0 ? {} : { Condition = local.break_glass_condition }),
    ]
  })

  # The backup writer (sidecar, CronJob): create objects under its prefix, set and read their
  # retention, list versions (metadata-only read-back), abort its multipart uploads. No delete
  # of any kind, no bypass, no reading of backup data, and no writing of restore reports and
  # run markers: those are the restore's, and a database pod must not be able to fake one.
  # Drill reports (`drills/*`) it may write, as the sidecar runs drills, under the same grant:
  # create-only and locked, never deleted, never read back beyond metadata.
  writer_policy_json = jsonencode({
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid      = "WriteAndLockBackups"
        Effect   = "Allow"
        Action   = ["s3:PutObject", "s3:PutObjectRetention", "s3:GetObjectRetention", "s3:AbortMultipartUpload"]
        Resource = [local.objects_arn]
      },
      {
        Sid      = "NoRestoreReports"
        Effect   = "Deny"
        Action   = ["s3:PutObject"]
        Resource = ["${local.bucket_arn}/${local.prefix}/reports/*"]
      },
      local.list_prefix_statement,
      local.bucket_protection_statement,
    ], local.kms_statements)
  })

  # The restore Job and verify: read and list under the prefix, nothing else.
  reader_policy_json = jsonencode({
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid      = "ReadBackups"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention"]
        Resource = [local.objects_arn]
      },
      local.list_prefix_statement,
      local.bucket_protection_statement,
    ], local.kms_statements)
  })

  # What a restore, verify or drill writes besides reading: its locked report and audit event,
  # and the integrity probe's aborted uploads. Attached next to the reader policy, which lets it
  # read and list them (`strongroom drill list`).
  reporter_policy_json = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid    = "WriteReportsAndAuditEvents"
        Effect = "Allow"
        Action = ["s3:PutObject", "s3:PutObjectRetention"]
        Resource = [
          "${local.bucket_arn}/${local.prefix}/reports/*",
          "${local.bucket_arn}/${local.prefix}/audit/*",
        ]
      },
      {
        Sid      = "WriteDrillReports"
        Effect   = "Allow"
        Action   = ["s3:PutObject", "s3:PutObjectRetention"]
        Resource = [local.drills_arn]
      },
      {
        Sid      = "IntegrityProbe"
        Effect   = "Allow"
        Action   = ["s3:PutObject", "s3:AbortMultipartUpload"]
        Resource = ["${local.bucket_arn}/${local.prefix}/.strongroom/*"]
      },
    ]
  })

  # ClickHouse's native BACKUP/RESTORE: write, read and list its folders, abort its uploads,
  # and delete only its `.lock` files (on a versioned bucket that adds a delete marker; the
  # locked version stays). `*.lock`, not `*/.lock`: Ceph RGW does not match the latter.
  clickhouse_policy_json = jsonencode({
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid      = "ClickHouseBackupObjects"
        Effect   = "Allow"
        Action   = ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
        Resource = ["${local.bucket_arn}/${local.prefix}/clickhouse/*"]
      },
      {
        Sid       = "ClickHouseList"
        Effect    = "Allow"
        Action    = ["s3:ListBucket"]
        Resource  = [local.bucket_arn]
        Condition = { StringLike = { "s3:prefix" = ["${local.prefix}/clickhouse/*"] } }
      },
      {
        Sid      = "ClickHouseLockFileOnly"
        Effect   = "Allow"
        Action   = ["s3:DeleteObject"]
        Resource = ["${local.bucket_arn}/${local.prefix}/clickhouse/*.lock"]
      },
    ], local.kms_statements)
  })
}

resource "aws_iam_role_policy" "writer" {
  for_each = toset(var.writer_role_names)
  name     = "${var.bucket_name}-backup-writer"
  role     = each.value
  policy   = local.writer_policy_json
}

resource "aws_iam_role_policy" "reader" {
  for_each = toset(var.reader_role_names)
  name     = "${var.bucket_name}-restore-reader"
  role     = each.value
  policy   = local.reader_policy_json
}

resource "aws_iam_role_policy" "reporter" {
  for_each = toset(var.reader_role_names)
  name     = "${var.bucket_name}-restore-reporter"
  role     = each.value
  policy   = local.reporter_policy_json
}

resource "aws_iam_role_policy" "clickhouse" {
  for_each = toset(var.clickhouse_role_names)
  name     = "${var.bucket_name}-clickhouse-server"
  role     = each.value
  policy   = local.clickhouse_policy_json
}
