output "bucket_name" {
  description = "The backup bucket (the agent's s3.bucket)."
  value       = aws_s3_bucket.this.bucket
}

output "bucket_arn" {
  description = "ARN of the backup bucket."
  value       = local.bucket_arn
}

output "retention" {
  description = "The default retention every new object version gets."
  value = {
    mode  = var.object_lock.mode
    days  = var.object_lock.days
    years = var.object_lock.years
  }
}

output "bucket_policy_json" {
  description = "The bucket policy applied (TLS only; protective denies)."
  value       = local.bucket_policy_json
}

output "writer_policy_json" {
  description = "Backup writer (sidecar/CronJob): put (backups, audit events, drill reports), retention, list, abort; no delete, no bypass, no read of backup data or drill reports, no restore reports."
  value       = local.writer_policy_json
}

output "reader_policy_json" {
  description = "Restore reader (restore Job, verify, drill CronJob): read and list under the prefix only (backups, reports, drill reports)."
  value       = local.reader_policy_json
}

output "reporter_policy_json" {
  description = "What a restore/verify/drill writes: its report (reports/*, drills/*) and audit event under the prefix, and the integrity probe. Attach with the reader policy."
  value       = local.reporter_policy_json
}

output "clickhouse_server_policy_json" {
  description = "ClickHouse server's role for native BACKUP/RESTORE: write/read/list its folders, delete only its .lock files."
  value       = local.clickhouse_policy_json
}
