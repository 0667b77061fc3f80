{{/*
Names, labels and the values every template works from.

Templates that another chart may include (the sidecar templates in _sidecar.tpl) take
(dict "context" $ "values" <the including chart's values>) and never read .Values or .Chart:
included from a parent chart, those are the parent's. They read the tree's `backups` and
`strongroom` keys over this chart's defaults (strongroom.defaults, kept equal to values.yaml by
the chart tests; see strongroom.merged) and derive names from .Release.Name.
*/}}

{{- define "strongroom.name" -}}
{{- default "strongroom" .nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The base of every resource name: <release>-strongroom, or fullnameOverride. Takes
(dict "context" $ "v" $values). Truncated to 40 so that suffixes fit the CronJob (52) and Job
(63) limits. */}}
{{- define "strongroom.base" -}}
{{- if .v.fullnameOverride }}
{{- .v.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := include "strongroom.name" .v }}
{{- if contains $name .context.Release.Name }}
{{- .context.Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .context.Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The values a sidecar template works from, as JSON, from (dict "values" $tree): this
chart's defaults, then $tree.strongroom (in an application chart that depends on this one,
the subchart's values: image, resources, security context...), then $tree.backups (the
runbook's keys at the including chart's top level). Nothing else of $tree is read, so an
application's own `image` or `resources` never reach the agent. */}}
{{- define "strongroom.merged" -}}
{{- $given := .values | default dict }}
{{- $tree := deepCopy (get $given "strongroom" | default dict) }}
{{- $defaults := fromJson (include "strongroom.defaults" .) }}
{{- if hasKey $given "backups" }}
{{- include "strongroom.checkKeys" (dict "given" $given.backups "defaults" $defaults.backups "path" "backups") }}
{{- $_ := set $tree "backups" (mustMergeOverwrite (deepCopy (get $tree "backups" | default dict)) (deepCopy $given.backups)) }}
{{- end }}
{{- /* drills.* next to backups.* (the ClickHouse sidecar's drills read them). */}}
{{- if hasKey $given "drills" }}
{{- include "strongroom.checkKeys" (dict "given" $given.drills "defaults" $defaults.drills "path" "drills" "free" (list "drills.resources" "drills.scratch.resources" "drills.scratch.securityContext" "drills.scratch.settings")) }}
{{- $_ := set $tree "drills" (mustMergeOverwrite (deepCopy (get $tree "drills" | default dict)) (deepCopy $given.drills)) }}
{{- end }}
{{- toJson (mustMergeOverwrite $defaults $tree) }}
{{- end }}

{{- define "strongroom.chartLabel" -}}
{{- printf "strongroom-%s" (include "strongroom.version" .) | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The agent's version: the image tag's default. Fixed here (not .Chart.AppVersion) so
that it is right when included from another chart; the chart tests keep it equal to
Chart.yaml's appVersion. */}}
{{- define "strongroom.version" -}}
0.1.0
{{- end }}

{{/* Standard labels. (dict "context" $ "v" $values "component" "backup") */}}
{{- define "strongroom.labels" -}}
helm.sh/chart: {{ include "strongroom.chartLabel" . }}
{{ include "strongroom.selectorLabels" . }}
app.kubernetes.io/version: {{ include "strongroom.version" . | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/part-of: strongroom
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "strongroom.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strongroom.name" .v }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
{{- end }}

{{- define "strongroom.image" -}}
{{- if .v.image.digest }}
{{- printf "%s@%s" .v.image.repository .v.image.digest }}
{{- else }}
{{- printf "%s:%s" .v.image.repository (.v.image.tag | default (include "strongroom.version" .)) }}
{{- end }}
{{- end }}

{{- define "strongroom.serviceAccountName" -}}
{{- if .v.serviceAccount.create }}
{{- default (printf "%s-backup" (include "strongroom.base" .)) .v.serviceAccount.name }}
{{- else }}
{{- default "default" .v.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "strongroom.restoreServiceAccountName" -}}
{{- if .v.restore.serviceAccount.create }}
{{- default (printf "%s-restore" (include "strongroom.base" .)) .v.restore.serviceAccount.name }}
{{- else }}
{{- default "default" .v.restore.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The key prefix: backups.s3.prefix, or backups/<release>. */}}
{{- define "strongroom.prefix" -}}
{{- .v.backups.s3.prefix | default (printf "backups/%s" .context.Release.Name) | trimSuffix "/" }}
{{- end }}

{{/* Short engine names for resource names. */}}
{{- define "strongroom.short" -}}
{{- if eq . "postgresql" }}pg{{ else }}ch{{ end }}
{{- end }}

{{/* Fails unless an engine's mode is one of the two. (dict "v" $v "engine" "postgresql") */}}
{{- define "strongroom.checkMode" -}}
{{- $mode := (index .v.backups .engine).mode }}
{{- if not (has $mode (list "cronjob" "sidecar")) }}
{{- fail (printf "backups.%s.mode is %q: use cronjob or sidecar" .engine $mode) }}
{{- end }}
{{- end }}

{{/* A Prometheus duration of one unit (90m, 26h, 2d) in seconds. */}}
{{- define "strongroom.durationSeconds" -}}
{{- $n := regexFind "^[0-9]+" . | int }}
{{- $unit := regexFind "[smhd]$" . }}
{{- if not (and $n $unit) }}
{{- fail (printf "%q is not a duration like 26h, 90m or 2d" .) }}
{{- end }}
{{- mul $n (index (dict "s" 1 "m" 60 "h" 3600 "d" 86400) $unit) }}
{{- end }}

{{/* The restore Job's arguments, as a JSON list. (dict "context" "v" ...) */}}
{{- define "strongroom.restoreArgs" -}}
{{- $r := .v.restore }}
{{- $args := list "--config" (include "strongroom.configPath" .) "restore" "--engine" $r.type "--snapshot" $r.snapshot "--run-id" $r.runId }}
{{- if $r.create }}{{ $args = append $args "--create" }}{{ end }}
{{- if $r.force }}{{ $args = append $args "--force" }}{{ end }}
{{- toJson $args }}
{{- end }}

{{/* The restore Job's name (<= 63): base, engine, and a hash of everything the Job runs
(its arguments, which hold type, snapshot and run id, and its config), so that any change of
the restore's values is a new Job, never a patch of an immutable one. */}}
{{- define "strongroom.restoreJobName" -}}
{{- $r := .v.restore }}
{{- $ctx := dict "context" .context "v" .v "engine" $r.type "purpose" "restore" }}
{{- $hash := printf "%s\n%s" (include "strongroom.restoreArgs" $ctx) (include "strongroom.agentConfig" $ctx) | sha256sum | trunc 10 }}
{{- printf "%s-restore-%s-%s" (include "strongroom.base" .) (include "strongroom.short" $r.type) $hash }}
{{- end }}

{{/* Fails on a key of "given" that "defaults" does not have: the schema checks this chart's
own values, this checks the backups.* an including chart gives the sidecar templates. Maps
that are the user's own (extraConfig, empty by default) are not descended into. */}}
{{- define "strongroom.checkKeys" -}}
{{- $defaults := .defaults }}
{{- $path := .path }}
{{- $free := .free | default list }}
{{- range $key, $value := .given }}
{{- if not (hasKey $defaults $key) }}
{{- fail (printf "%s.%s is not a strongroom value (a typo?): the sidecar templates take the keys listed in strongroom's chart/README.md" $path $key) }}
{{- end }}
{{- $default := index $defaults $key }}
{{- $child := printf "%s.%s" $path $key }}
{{- if and (kindIs "map" $default) (kindIs "map" $value) (gt (len $default) 0) (not (has $child $free)) }}
{{- include "strongroom.checkKeys" (dict "given" $value "defaults" $default "path" $child "free" $free) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Restore drills. The PostgreSQL drill CronJob renders when drills.enabled and this release
backs up PostgreSQL (either mode): "true" or "". (dict "v" $v) */}}
{{- define "strongroom.drillCronJob" -}}
{{- if and .v.drills.enabled .v.backups.enabled .v.backups.postgresql.enabled }}true{{ end }}
{{- end }}

{{/* The drill CronJob's (and its ConfigMap's) name, <= 52. (dict "context" "v") */}}
{{- define "strongroom.drillName" -}}
{{- printf "%s-pg-drill" (include "strongroom.base" .) }}
{{- end }}

{{/* Where the drill pod's scratch server keeps its socket (the official image's default). */}}
{{- define "strongroom.drillSocketDir" -}}/var/run/postgresql{{- end }}

{{/* An engine's RTO goal in seconds: drills.rtoGoalSeconds, or the agent's default (1800
PostgreSQL, 2700 ClickHouse). (dict "v" "engine") */}}
{{- define "strongroom.drillGoalSeconds" -}}
{{- if kindIs "invalid" .v.drills.rtoGoalSeconds }}
{{- if eq .engine "clickhouse" }}2700{{ else }}1800{{ end }}
{{- else }}
{{- .v.drills.rtoGoalSeconds | int64 }}
{{- end }}
{{- end }}

{{/* The drill Job's activeDeadlineSeconds: drills.cronjob.activeDeadlineSeconds, or three times
the RTO goal plus 600 s (image pulls, the scratch server's start, smoke checks), so that a drill
over its goal still finishes and reports FAIL with the RTO it measured instead of being killed
without a report. (dict "v") */}}
{{- define "strongroom.drillDeadlineSeconds" -}}
{{- if kindIs "invalid" .v.drills.cronjob.activeDeadlineSeconds }}
{{- add (mul 3 (include "strongroom.drillGoalSeconds" (dict "v" .v "engine" "postgresql") | int64)) 600 }}
{{- else }}
{{- .v.drills.cronjob.activeDeadlineSeconds | int64 }}
{{- end }}
{{- end }}

{{/* The agent's `drill:` section, as JSON. The chart never allows replace-mode drills.
(dict "v") */}}
{{- define "strongroom.drillSection" -}}
{{- $d := .v.drills }}
{{- $drill := dict "enabled" true "schedule" (trim $d.schedule) "allow_replace" false "smoke" (dict "http" (default (list) $d.smoke)) }}
{{- if not (kindIs "invalid" $d.rtoGoalSeconds) }}
{{- $_ := set $drill "rto_goal_seconds" ($d.rtoGoalSeconds | int64) }}
{{- end }}
{{- toJson $drill }}
{{- end }}

{{/* The drill Job's arguments, as a JSON list. (dict "context" "v") */}}
{{- define "strongroom.drillArgs" -}}
{{- $args := list "--config" (include "strongroom.configPath" .) "drill" "--engine" "postgresql" "--latest" "--mode" "scratch" }}
{{- if not (kindIs "invalid" .v.drills.productionSizeGiB) }}
{{- $args = concat $args (list "--production-size-gib" (.v.drills.productionSizeGiB | int64 | toString)) }}
{{- end }}
{{- toJson $args }}
{{- end }}

{{/* Fails unless a schedule is one a CronJob and the agent both read: five fields or an
alias. (dict "schedule" "value") */}}
{{- define "strongroom.checkCronSchedule" -}}
{{- if not (regexMatch "^(@(yearly|monthly|weekly|daily|hourly)|\\S+(\\s+\\S+){4})$" (trim .schedule)) }}
{{- fail (printf "%s %q: use five fields (minute hour day month weekday, UTC) or @daily, @weekly, @monthly, @yearly" .value .schedule) }}
{{- end }}
{{- end }}
