{{/*
The agent's config file, built from values as a dict and written with toYaml (so quoting is
never wrong), and the Secret files it names. Every template here takes
(dict "context" $ "v" $mergedValues "engine" "postgresql|clickhouse" "purpose" P) where P is
  sidecar   the agent in the database pod (`strongroom run`), over the socket / 127.0.0.1
  cronjob   one backup over TCP (`strongroom backup`)
  restore   the restore Job (`strongroom restore`)
  drill     the PostgreSQL drill CronJob (`strongroom drill`): restores into the scratch server
            of its own pod, over that pod's socket, as `postgres` without a password
  preflight the helm test (`strongroom preflight`): bucket and credentials only
The chart tests run `strongroom check-config` on every config rendered here.
*/}}

{{- define "strongroom.configDir" -}}/etc/strongroom{{- end }}
{{- define "strongroom.configPath" -}}/etc/strongroom/config.yaml{{- end }}
{{- define "strongroom.secretDir" -}}/var/run/secrets/strongroom{{- end }}

{{/* The Secret files of a purpose, as JSON: {"files": [{secret, key, path, value}]} where
value names the value that set it. */}}
{{- define "strongroom.secretFiles" -}}
{{- $v := .v }}
{{- $files := list }}
{{- if has .purpose (list "sidecar" "cronjob") }}
{{- $e := index $v.backups .engine }}
{{- $files = append $files (dict "secret" (required (printf "backups.%s.passwordSecretRef is required: the name of the Secret with the backup user's password (key backups.%s.passwordSecretKey, default \"password\")" .engine .engine) $e.passwordSecretRef) "key" $e.passwordSecretKey "path" (printf "%s-password" .engine)) }}
{{- if and (eq .engine "postgresql") (eq .purpose "cronjob") $e.sslRootCertSecretRef }}
{{- $files = append $files (dict "secret" $e.sslRootCertSecretRef "key" $e.sslRootCertSecretKey "path" "postgresql-ca.crt") }}
{{- end }}
{{- with $v.backups.signing.privateKeySecretRef }}
{{- $files = append $files (dict "secret" . "key" $v.backups.signing.privateKeySecretKey "path" "signing.key") }}
{{- end }}
{{- if and (eq .purpose "sidecar") $v.backups.daemon.triggerTokenSecretRef }}
{{- $files = append $files (dict "secret" $v.backups.daemon.triggerTokenSecretRef "key" $v.backups.daemon.triggerTokenSecretKey "path" "trigger-token") }}
{{- end }}
{{- if and (eq .purpose "sidecar") (eq .engine "clickhouse") $v.drills.enabled $v.drills.clickhouse.passwordSecretRef }}
{{- $files = append $files (dict "secret" $v.drills.clickhouse.passwordSecretRef "key" $v.drills.clickhouse.passwordSecretKey "path" "drill-clickhouse-password") }}
{{- end }}
{{- else if eq .purpose "restore" }}
{{- $r := index $v.restore .engine }}
{{- $files = append $files (dict "secret" (required (printf "restore.%s.passwordSecretRef is required: the name of the Secret with the restoring user's password (key restore.%s.passwordSecretKey, default \"password\")" .engine .engine) $r.passwordSecretRef) "key" $r.passwordSecretKey "path" "restore-password") }}
{{- if and (eq .engine "postgresql") $r.sslRootCertSecretRef }}
{{- $files = append $files (dict "secret" $r.sslRootCertSecretRef "key" $r.sslRootCertSecretKey "path" "restore-ca.crt") }}
{{- end }}
{{- with $v.restore.signing.publicKeySecretRef }}
{{- $files = append $files (dict "secret" . "key" $v.restore.signing.publicKeySecretKey "path" "signing.pub") }}
{{- end }}
{{- else if eq .purpose "drill" }}
{{- /* The scratch server trusts its socket: no password file. */}}
{{- with $v.restore.signing.publicKeySecretRef }}
{{- $files = append $files (dict "secret" . "key" $v.restore.signing.publicKeySecretKey "path" "signing.pub") }}
{{- end }}
{{- end }}
{{- toJson (dict "files" $files) }}
{{- end }}

{{- define "strongroom.agentConfig" -}}
{{- $v := .v }}
{{- $b := $v.backups }}
{{- $s3 := $b.s3 }}
{{- $dir := include "strongroom.secretDir" . }}
{{- $retention := dict "years" $s3.objectLock.retentionYears }}
{{- if $s3.objectLock.retentionDays }}
{{- $retention = dict "days" $s3.objectLock.retentionDays }}
{{- end }}
{{- $s3cfg := dict
    "bucket" (required "backups.s3.bucket is required: the Object-Lock bucket the backups go to (the runbook's backups.s3.bucket)" $s3.bucket)
    "prefix" (include "strongroom.prefix" .)
    "region" $s3.region
    "integrity" $s3.integrity
    "object_lock" (dict "required" $s3.objectLock.required "mode" $s3.objectLock.mode "retention" $retention) }}
{{- with $s3.endpoint }}
{{- $_ := set $s3cfg "endpoint" . }}
{{- end }}
{{- if not (kindIs "invalid" $s3.forcePathStyle) }}
{{- $_ := set $s3cfg "force_path_style" $s3.forcePathStyle }}
{{- end }}
{{- $cfg := dict
    "release" .context.Release.Name
    "s3" (mustMergeOverwrite $s3cfg (deepCopy $s3.extraConfig))
    "log" (dict "level" $b.log.level "format" $b.log.format) }}
{{- $purpose := .purpose }}
{{- $engine := .engine }}
{{- if has $purpose (list "sidecar" "cronjob") }}
{{- if eq $engine "postgresql" }}
{{- $e := $b.postgresql }}
{{- $pg := dict
    "port" $e.port
    "user" $e.user
    "database" (required "backups.postgresql.database is required: the database to back up" $e.database)
    "password_file" (printf "%s/postgresql-password" $dir)
    "schedule" $e.schedule
    "compression_format" $e.compression.format
    "backup_from" $e.backupFrom }}
{{- if eq $purpose "sidecar" }}
{{- $_ := set $pg "host" $e.socketDir }}
{{- else }}
{{- $_ := set $pg "host" (required "backups.postgresql.host is required in cronjob mode: the database Service's host name" $e.host) }}
{{- $_ := set $pg "sslmode" $e.sslmode }}
{{- if $e.sslRootCertSecretRef }}
{{- $_ := set $pg "sslrootcert" (printf "%s/postgresql-ca.crt" $dir) }}
{{- end }}
{{- end }}
{{- $_ := set $cfg "postgresql" (mustMergeOverwrite $pg (deepCopy $e.extraConfig)) }}
{{- else }}
{{- $e := $b.clickhouse }}
{{- $url := printf "http://127.0.0.1:%v" $e.port }}
{{- if eq $purpose "cronjob" }}
{{- $url = printf "%s://%s:%v" $e.scheme (required "backups.clickhouse.host is required in cronjob mode: the ClickHouse Service's host name" $e.host) $e.port }}
{{- end }}
{{- $ch := dict
    "url" $url
    "user" $e.user
    "password_file" (printf "%s/clickhouse-password" $dir)
    "named_collection" $e.namedCollection
    "schedule" $e.schedule }}
{{- with $e.databases }}
{{- $_ := set $ch "databases" . }}
{{- end }}
{{- $_ := set $cfg "clickhouse" (mustMergeOverwrite $ch (deepCopy $e.extraConfig)) }}
{{- end }}
{{- with $b.signing.privateKeySecretRef }}
{{- $_ := set $cfg "signing" (dict "private_key_file" (printf "%s/signing.key" $dir)) }}
{{- end }}
{{- if eq $purpose "sidecar" }}
{{- $daemon := dict
    "listen" (printf "0.0.0.0:%v" $b.daemon.port)
    "shutdown_grace_seconds" $b.daemon.shutdownGraceSeconds
    "ready_requires_s3" $b.daemon.readyRequiresS3 }}
{{- if $b.daemon.triggerTokenSecretRef }}
{{- $_ := set $daemon "trigger_token_file" (printf "%s/trigger-token" $dir) }}
{{- end }}
{{- $_ := set $cfg "daemon" (mustMergeOverwrite $daemon (deepCopy $b.daemon.extraConfig)) }}
{{- /* ClickHouse's drills run in the sidecar, into renamed databases on its own server;
PostgreSQL's in the drill CronJob (purpose drill), so its sidecar has no drill section. */}}
{{- if and (eq $engine "clickhouse") $v.drills.enabled }}
{{- $_ := set $cfg "drill" (fromJson (include "strongroom.drillSection" .)) }}
{{- $login := dict }}
{{- with $v.drills.clickhouse.user }}
{{- $_ := set $login "user" . }}
{{- end }}
{{- if $v.drills.clickhouse.passwordSecretRef }}
{{- $_ := set $login "password_file" (printf "%s/drill-clickhouse-password" $dir) }}
{{- end }}
{{- if $login }}
{{- $_ := set $cfg "restore" (dict "clickhouse" $login) }}
{{- end }}
{{- end }}
{{- end }}
{{- else if eq $purpose "restore" }}
{{- $r := $v.restore }}
{{- $restore := dict "allow_unsigned" $r.allowUnsigned }}
{{- if eq $engine "postgresql" }}
{{- $e := $b.postgresql }}
{{- $pg := dict
    "host" (required "restore.postgresql.host (or backups.postgresql.host) is required: the server to restore into" ($r.postgresql.host | default $e.host))
    "port" $r.postgresql.port
    "user" $r.postgresql.user
    "database" (required "restore.database (or backups.postgresql.database) is required: the database to restore into" ($r.database | default $e.database)) }}
{{- $_ := set $cfg "postgresql" $pg }}
{{- $_ := set $restore "user" $r.postgresql.user }}
{{- $_ := set $restore "password_file" (printf "%s/restore-password" $dir) }}
{{- $_ := set $restore "sslmode" $r.postgresql.sslmode }}
{{- if $r.postgresql.sslRootCertSecretRef }}
{{- $_ := set $restore "sslrootcert" (printf "%s/restore-ca.crt" $dir) }}
{{- end }}
{{- $_ := set $restore "validation" (dict "sql" $r.validation.sql "http" $r.validation.http "http_timeout_seconds" $r.validation.httpTimeoutSeconds "http_interval_seconds" $r.validation.httpIntervalSeconds) }}
{{- else }}
{{- $e := $b.clickhouse }}
{{- $host := required "restore.clickhouse.host (or backups.clickhouse.host) is required: the ClickHouse server to restore into" ($r.clickhouse.host | default $e.host) }}
{{- $ch := dict
    "url" (printf "%s://%s:%v" $r.clickhouse.scheme $host $r.clickhouse.port)
    "user" $r.clickhouse.user
    "named_collection" $e.namedCollection }}
{{- with $e.databases }}
{{- $_ := set $ch "databases" . }}
{{- end }}
{{- $_ := set $cfg "clickhouse" $ch }}
{{- $_ := set $restore "clickhouse" (dict "user" $r.clickhouse.user "password_file" (printf "%s/restore-password" $dir) "sql" $r.clickhouse.sql) }}
{{- $_ := set $restore "validation" (dict "http" $r.validation.http "http_timeout_seconds" $r.validation.httpTimeoutSeconds "http_interval_seconds" $r.validation.httpIntervalSeconds) }}
{{- end }}
{{- $_ := set $cfg "restore" (mustMergeOverwrite $restore (deepCopy $r.extraConfig)) }}
{{- with $r.signing.publicKeySecretRef }}
{{- $_ := set $cfg "signing" (dict "public_key_file" (printf "%s/signing.pub" $dir)) }}
{{- end }}
{{- else if eq $purpose "drill" }}
{{- $r := $v.restore }}
{{- /* The scratch server of the drill's own pod: its socket, its superuser (which creates the
backup's roles from its globals, then the scratch database), no password (local trust). */}}
{{- $_ := set $cfg "postgresql" (dict
    "host" (include "strongroom.drillSocketDir" .)
    "port" 5432
    "user" "postgres"
    "database" (required "backups.postgresql.database is required: the database whose backups the drill restores (into <database>_drill_<timestamp>)" $b.postgresql.database)) }}
{{- /* restore.validation.sql runs against the scratch database; restore.validation.http calls
the application, which serves the live database: the drill calls drills.smoke instead. */}}
{{- $_ := set $cfg "restore" (dict
    "user" "postgres"
    "allow_unsigned" $r.allowUnsigned
    "validation" (dict "sql" $r.validation.sql "http" (list) "http_timeout_seconds" $r.validation.httpTimeoutSeconds "http_interval_seconds" $r.validation.httpIntervalSeconds)) }}
{{- $_ := set $cfg "drill" (fromJson (include "strongroom.drillSection" .)) }}
{{- with $r.signing.publicKeySecretRef }}
{{- $_ := set $cfg "signing" (dict "public_key_file" (printf "%s/signing.pub" $dir)) }}
{{- end }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* A ConfigMap holding the agent's config. Same arguments, plus "name". */}}
{{- define "strongroom.configMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .name }}
  namespace: {{ .context.Release.Namespace }}
  labels:
    {{- include "strongroom.labels" (dict "context" .context "v" .v "component" (.component | default .purpose)) | nindent 4 }}
data:
  config.yaml: |
    {{- include "strongroom.agentConfig" . | nindent 4 }}
{{- end }}

{{/* Environment of an agent container: S3 keys from Secrets, or nothing (IRSA). The restore
Job and the drill CronJob use restore.s3's refs: its role reads and reports, it does not write backups. In the
sidecar they are optional: a missing Secret must not keep the database pod from starting (the
agent's S3 requests then fail, saying so). */}}
{{- define "strongroom.env" -}}
{{- $refs := .v.backups.s3 }}
{{- $scope := "backups.s3" }}
{{- if has .purpose (list "restore" "drill") }}
{{- $refs = .v.restore.s3 }}
{{- $scope = "restore.s3" }}
{{- end -}}
- name: TMPDIR
  value: /tmp
{{- if or $refs.awsAccessKeyIdSecretRef $refs.awsSecretAccessKeySecretRef }}
{{- if not (and $refs.awsAccessKeyIdSecretRef $refs.awsSecretAccessKeySecretRef) }}
{{- fail (printf "%s.awsAccessKeyIdSecretRef and %s.awsSecretAccessKeySecretRef go together: set both (static keys) or neither (IRSA on the ServiceAccount)" $scope $scope) }}
{{- end }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $refs.awsAccessKeyIdSecretRef }}
      key: {{ $refs.awsAccessKeyIdSecretKey }}
      {{- if eq .purpose "sidecar" }}
      optional: true
      {{- end }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $refs.awsSecretAccessKeySecretRef }}
      key: {{ $refs.awsSecretAccessKeySecretKey }}
      {{- if eq .purpose "sidecar" }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}

{{/* Volumes of an agent: the config directory (never subPath: the agent reloads it), the
Secret files as one projected directory (rotation reaches the files), /tmp. "configName" names
the ConfigMap; "fileMode" the Secret files' mode; "optional" lets the pod start without a
Secret (the sidecar: a missing backup Secret must not keep the database from starting; the
agent then fails its backups saying which file is missing). */}}
{{- define "strongroom.volumes" -}}
- name: strongroom-config
  configMap:
    name: {{ .configName }}
{{- $files := (fromJson (include "strongroom.secretFiles" .)).files }}
{{- if $files }}
- name: strongroom-secrets
  projected:
    defaultMode: {{ .fileMode }}
    sources:
      {{- range $files }}
      - secret:
          name: {{ .secret }}
          items:
            - key: {{ .key }}
              path: {{ .path }}
          {{- if $.optional }}
          optional: true
          {{- end }}
      {{- end }}
{{- end }}
- name: strongroom-tmp
  emptyDir:
    sizeLimit: {{ .v.backups.sidecar.tmpSizeLimit }}
{{- end }}

{{- define "strongroom.volumeMounts" -}}
- name: strongroom-config
  mountPath: {{ include "strongroom.configDir" . }}
  readOnly: true
{{- if (fromJson (include "strongroom.secretFiles" .)).files }}
- name: strongroom-secrets
  mountPath: {{ include "strongroom.secretDir" . }}
  readOnly: true
{{- end }}
- name: strongroom-tmp
  mountPath: /tmp
{{- end }}
