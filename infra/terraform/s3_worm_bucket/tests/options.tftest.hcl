# Options and validation, plan-level with a mock provider.
mock_provider "aws" {}

variables {
  bucket_name = "acme-prod-backups"
}

run "compliance_mode_in_days" {
  command = plan
  variables {
    object_lock = { mode = "COMPLIANCE", days = 400 }
  }
  assert {
    condition     = aws_s3_bucket_object_lock_configuration.this.rule[0].default_retention[0].mode == "COMPLIANCE"
    error_message = "Mode from the variable."
  }
  assert {
    condition     = aws_s3_bucket_object_lock_configuration.this.rule[0].default_retention[0].days == 400
    error_message = "Days from the variable."
  }
  assert {
    condition = one([
      for r in aws_s3_bucket_lifecycle_configuration.this.rule : r.noncurrent_version_expiration[0].noncurrent_days
      if r.id == "backups"
    ]) == 401
    error_message = "Noncurrent versions expire one day after the retention."
  }
}

run "sse_kms_with_a_key" {
  command = plan
  variables {
    kms_key_arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
  }
  assert {
    condition     = one(aws_s3_bucket_server_side_encryption_configuration.this.rule[*].apply_server_side_encryption_by_default[0].sse_algorithm) == "aws:kms"
    error_message = "SSE-KMS when a key is given."
  }
  assert {
    condition     = strcontains(output.writer_policy_json, "kms:GenerateDataKey")
    error_message = "The writer may use the key."
  }
}

run "transition_and_break_glass" {
  command = plan
  variables {
    transition             = { days = 90 }
    break_glass_principals = ["arn:aws:iam::111122223333:role/backup-break-glass"]
    writer_role_names      = ["llama-mapper-backup"]
  }
  assert {
    condition = one([
      for r in aws_s3_bucket_lifecycle_configuration.this.rule : one(r.transition[*].storage_class)
      if r.id == "transition-current-versions"
    ]) == "GLACIER_IR"
    error_message = "Transition to GLACIER_IR by default."
  }
  assert {
    condition     = strcontains(output.bucket_policy_json, "backup-break-glass")
    error_message = "Break-glass principals are exempt from the denies."
  }
  assert {
    condition     = aws_iam_role_policy.writer["llama-mapper-backup"].role == "llama-mapper-backup"
    error_message = "The writer policy is attached to the given role."
  }
}

run "both_days_and_years_rejected" {
  command = plan
  variables {
    object_lock = { mode = "GOVERNANCE", days = 30, years = 7 }
  }
  expect_failures = [var.object_lock]
}

run "neither_days_nor_years_rejected" {
  command = plan
  variables {
    object_lock = { mode = "GOVERNANCE" }
  }
  expect_failures = [var.object_lock]
}

run "unknown_mode_rejected" {
  command = plan
  variables {
    object_lock = { mode = "WORM", years = 7 }
  }
  expect_failures = [var.object_lock]
}

run "bad_bucket_name_rejected" {
  command = plan
  variables {
    bucket_name = "Bad_Bucket"
  }
  expect_failures = [var.bucket_name]
}

run "short_transition_rejected" {
  command = plan
  variables {
    transition = { days = 5 }
  }
  expect_failures = [var.transition]
}

run "bad_prefix_rejected" {
  command = plan
  variables {
    backup_prefix = "/backups/../x"
  }
  expect_failures = [var.backup_prefix]
}

run "expiry_inside_retention_rejected" {
  command = plan
  variables {
    noncurrent_version_expiration_days = 30
  }
  expect_failures = [aws_s3_bucket_lifecycle_configuration.this]
}
