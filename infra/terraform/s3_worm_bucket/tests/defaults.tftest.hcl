# Plan-level tests with a mock provider: no credentials, no network.
mock_provider "aws" {}

variables {
  bucket_name   = "acme-prod-backups"
  backup_prefix = "backups/llama-mapper"
}

run "object_lock_versioning_and_retention_by_default" {
  command = plan

  assert {
    condition     = aws_s3_bucket.this.object_lock_enabled == true
    error_message = "Object Lock must be enabled at creation."
  }
  assert {
    condition     = aws_s3_bucket.this.force_destroy == false
    error_message = "The bucket must never be emptied by Terraform."
  }
  assert {
    condition     = aws_s3_bucket_versioning.this.versioning_configuration[0].status == "Enabled"
    error_message = "Versioning must be Enabled."
  }
  assert {
    condition     = aws_s3_bucket_object_lock_configuration.this.rule[0].default_retention[0].mode == "GOVERNANCE"
    error_message = "Default mode must be GOVERNANCE."
  }
  assert {
    condition     = aws_s3_bucket_object_lock_configuration.this.rule[0].default_retention[0].years == 7
    error_message = "Default retention must be 7 years."
  }
  assert {
    condition     = aws_s3_bucket_object_lock_configuration.this.rule[0].default_retention[0].days == null
    error_message = "Only years are set by default."
  }
  assert {
    condition     = one(aws_s3_bucket_server_side_encryption_configuration.this.rule[*].apply_server_side_encryption_by_default[0].sse_algorithm) == "AES256"
    error_message = "SSE-S3 by default."
  }
  assert {
    condition     = one(aws_s3_bucket_server_side_encryption_configuration.this.rule[*].bucket_key_enabled) == true
    error_message = "Bucket key on."
  }
  assert {
    condition = alltrue([
      aws_s3_bucket_public_access_block.this.block_public_acls,
      aws_s3_bucket_public_access_block.this.block_public_policy,
      aws_s3_bucket_public_access_block.this.ignore_public_acls,
      aws_s3_bucket_public_access_block.this.restrict_public_buckets,
    ])
    error_message = "Public access must be fully blocked."
  }
  assert {
    condition     = aws_s3_bucket_ownership_controls.this.rule[0].object_ownership == "BucketOwnerEnforced"
    error_message = "Object ownership must be enforced."
  }
}

run "lifecycle_never_expires_before_retention" {
  command = plan

  assert {
    condition = one([
      for r in aws_s3_bucket_lifecycle_configuration.this.rule : r.abort_incomplete_multipart_upload[0].days_after_initiation
      if r.id == "backups"
    ]) == 7
    error_message = "Incomplete multipart uploads are aborted after 7 days."
  }
  assert {
    condition = one([
      for r in aws_s3_bucket_lifecycle_configuration.this.rule : r.noncurrent_version_expiration[0].noncurrent_days
      if r.id == "backups"
    ]) >= 7 * 366
    error_message = "Noncurrent versions must outlive the retention."
  }
  assert {
    condition     = length([for r in aws_s3_bucket_lifecycle_configuration.this.rule : r if r.id == "transition-current-versions"]) == 0
    error_message = "No transition unless asked."
  }
}

run "bucket_policy_denies_insecure_transport_and_removing_protection" {
  command = plan

  assert {
    condition = anytrue([
      for s in jsondecode(output.bucket_policy_json).Statement :
      s.Effect == "Deny" && try(s.Condition.Bool["aws:SecureTransport"], "") == "false"
    ])
    error_message = "Requests without TLS must be denied."
  }
  assert {
    condition = alltrue([
      for a in ["s3:DeleteObjectVersion", "s3:BypassGovernanceRetention", "s3:PutBucketObjectLockConfiguration", "s3:PutBucketVersioning", "s3:DeleteBucketPolicy"] :
      anytrue([for s in jsondecode(output.bucket_policy_json).Statement : s.Effect == "Deny" && contains(s.Action, a)])
    ])
    error_message = "The protective actions must be denied."
  }
}

run "writer_cannot_delete_bypass_or_read" {
  command = plan

  assert {
    condition = alltrue(flatten([
      for s in jsondecode(output.writer_policy_json).Statement : [
        for a in s.Action : !startswith(a, "s3:Delete") && a != "s3:BypassGovernanceRetention" && a != "s3:GetObject" && a != "s3:GetObjectVersion" && a != "s3:*"
      ]
    ]))
    error_message = "The writer must have no s3:Delete*, s3:BypassGovernanceRetention or s3:GetObject."
  }
  assert {
    condition = alltrue(flatten([
      for s in jsondecode(output.writer_policy_json).Statement : [for r in s.Resource : startswith(r, "arn:aws:s3:::acme-prod-backups")]
    ]))
    error_message = "The writer is scoped to the bucket."
  }
  assert {
    condition     = contains(flatten([for s in jsondecode(output.writer_policy_json).Statement : s.Action]), "s3:ListBucketVersions")
    error_message = "The writer verifies uploads by listing versions."
  }
  assert {
    condition = anytrue([
      for s in jsondecode(output.writer_policy_json).Statement :
      s.Effect == "Deny" && contains(s.Action, "s3:PutObject") && contains(s.Resource, "arn:aws:s3:::acme-prod-backups/backups/llama-mapper/reports/*")
    ])
    error_message = "The writer may not write restore reports or run markers."
  }
}

run "writer_may_write_drill_reports_but_not_read_them" {
  command = plan

  assert {
    condition = anytrue([
      for s in jsondecode(output.writer_policy_json).Statement :
      s.Effect == "Allow" && contains(s.Action, "s3:PutObject") && contains(s.Action, "s3:PutObjectRetention") && anytrue([
        for r in s.Resource : contains(["arn:aws:s3:::acme-prod-backups/backups/llama-mapper/*", "arn:aws:s3:::acme-prod-backups/backups/llama-mapper/drills/*"], r)
      ])
    ])
    error_message = "The writer may put drill reports, locked (s3:PutObject and s3:PutObjectRetention on <prefix>/drills/*)."
  }
  assert {
    condition = !anytrue(flatten([
      for s in jsondecode(output.writer_policy_json).Statement : [
        for r in s.Resource : s.Effect == "Deny" && (startswith(r, "arn:aws:s3:::acme-prod-backups/backups/llama-mapper/drills/") || r == "arn:aws:s3:::acme-prod-backups/backups/llama-mapper/*")
      ]
    ]))
    error_message = "No deny of the writer may cover <prefix>/drills/*."
  }
  assert {
    condition = !anytrue(flatten([
      for s in jsondecode(output.writer_policy_json).Statement : [
        for a in s.Action : s.Effect == "Allow" && contains(["s3:GetObject", "s3:GetObjectVersion", "s3:*", "s3:Get*"], a)
      ]
    ]))
    error_message = "The writer may not read drill reports (nor anything else) back."
  }
}

run "reporter_writes_reports_drills_audit_and_probe_only" {
  command = plan

  assert {
    condition = anytrue([
      for s in jsondecode(output.reporter_policy_json).Statement :
      s.Sid == "WriteDrillReports" && s.Effect == "Allow" && s.Action == ["s3:PutObject", "s3:PutObjectRetention"] && s.Resource == ["arn:aws:s3:::acme-prod-backups/backups/llama-mapper/drills/*"]
    ])
    error_message = "The reporter may put drill reports, locked, under <prefix>/drills/* only."
  }
  assert {
    condition = alltrue(flatten([
      for s in jsondecode(output.reporter_policy_json).Statement : [
        for r in s.Resource : anytrue([
          for p in ["reports/", "audit/", "drills/", ".strongroom/"] : startswith(r, "arn:aws:s3:::acme-prod-backups/backups/llama-mapper/${p}")
        ])
      ]
    ]))
    error_message = "The reporter writes only reports, drill reports, audit events and the integrity probe: nothing under the backup folders."
  }
  assert {
    condition = alltrue(flatten([
      for s in jsondecode(output.reporter_policy_json).Statement : [
        for a in s.Action : s.Effect == "Allow" && contains(["s3:PutObject", "s3:PutObjectRetention", "s3:AbortMultipartUpload"], a)
      ]
    ]))
    error_message = "The reporter may only put, lock and abort: no delete, no bypass."
  }
}

run "reader_reads_and_lists_drill_reports" {
  command = plan

  assert {
    condition = anytrue([
      for s in jsondecode(output.reader_policy_json).Statement :
      s.Effect == "Allow" && contains(s.Action, "s3:GetObject") && contains(s.Action, "s3:GetObjectRetention") && anytrue([
        for r in s.Resource : contains(["arn:aws:s3:::acme-prod-backups/backups/llama-mapper/*", "arn:aws:s3:::acme-prod-backups/backups/llama-mapper/drills/*"], r)
      ])
    ])
    error_message = "The restore role reads drill reports and their retention (strongroom drill list)."
  }
  assert {
    condition = anytrue([
      for s in jsondecode(output.reader_policy_json).Statement :
      s.Effect == "Allow" && contains(s.Action, "s3:ListBucket") && contains(try(s.Condition.StringLike["s3:prefix"], []), "backups/llama-mapper/*")
    ])
    error_message = "The restore role lists <prefix>/drills/."
  }
}

run "reader_has_no_write_action" {
  command = plan

  assert {
    condition = alltrue(flatten([
      for s in jsondecode(output.reader_policy_json).Statement : [
        for a in s.Action : contains(["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention", "s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketObjectLockConfiguration", "s3:GetBucketVersioning"], a)
      ]
    ]))
    error_message = "The reader may only read and list."
  }
}

run "clickhouse_may_delete_only_lock_files" {
  command = plan

  assert {
    condition = alltrue([
      for s in jsondecode(output.clickhouse_server_policy_json).Statement :
      !contains(s.Action, "s3:DeleteObject") || alltrue([for r in s.Resource : endswith(r, ".lock")])
    ])
    error_message = "ClickHouse may delete only its .lock files."
  }
  assert {
    condition = !anytrue(flatten([
      for s in jsondecode(output.clickhouse_server_policy_json).Statement : [for a in s.Action : a == "s3:DeleteObjectVersion" || a == "s3:BypassGovernanceRetention"]
    ]))
    error_message = "ClickHouse may not delete versions or bypass retention."
  }
}
