{{/*
The sidecar, for a database chart to include into its pod. Every template here takes
  (dict "context" $ "values" <values> "engine" "postgresql")
where <values> is the including chart's own .Values (the runbook's backups.* at its top level,
the agent's image and resources under `strongroom:`), or .Values.global when included through
another chart's `tpl` (bitnami's primary.sidecars: global.backups and global.strongroom).
Missing keys take this chart's defaults. All of them render nothing when
backups.enabled or backups.<engine>.enabled is false, and fail unless backups.<engine>.mode is
sidecar: one engine never runs both ways.

  strongroom.sidecar.container          a container list item (under containers:)
  strongroom.sidecar.initContainer      the native-sidecar variant (under initContainers:, k8s >= 1.29)
  strongroom.sidecar.volumes            volume list items (under volumes:)
  strongroom.sidecar.socketVolumeMount  the socket mount for the PostgreSQL container
  strongroom.sidecar.podAnnotations     annotations for the pod (IRSA skip-containers)
  strongroom.sidecar.configMap          the agent's ConfigMap (a whole document)
  strongroom.sidecar.terminationGracePeriodSeconds
                                        the pod's grace period: "requested" (optional) checked
                                        against backups.daemon.shutdownGraceSeconds
  strongroom.sidecar.testPod            a helm test Pod running `strongroom preflight` as the
                                        database pod's ServiceAccount ("serviceAccountName"),
                                        with its ConfigMap
*/}}

{{/* (dict ...) -> the merged values as JSON, or "" when the sidecar is off. */}}
{{- define "strongroom.sidecar.values" -}}
{{- $v := fromJson (include "strongroom.merged" (dict "values" (.values | default dict))) }}
{{- if not (has .engine (list "postgresql" "clickhouse")) }}
{{- fail (printf "strongroom sidecar templates: engine %q must be postgresql or clickhouse" .engine) }}
{{- end }}
{{- $e := index $v.backups .engine }}
{{- /* The subchart's own values (strongroom.backups.*) must not run this engine as a CronJob
while the including chart's backups.* runs it as a sidecar. */}}
{{- $sub := get (get (.values | default dict) "strongroom" | default dict) "backups" | default dict }}
{{- $subEngine := get $sub .engine | default dict }}
{{- if and (get $sub "enabled") (get $subEngine "enabled") (ne (get $subEngine "mode" | default "cronjob") "sidecar") }}
{{- fail (printf "strongroom.backups.%s enables %s backups as a CronJob in the strongroom subchart while the sidecar templates are included for it: back up one way only (set strongroom.backups.%s.enabled: false, or do not include the sidecar)" .engine .engine .engine) }}
{{- end }}
{{- if and $v.backups.enabled $e.enabled }}
{{- if ne $e.mode "sidecar" }}
{{- fail (printf "the strongroom sidecar template was included for %s, but backups.%s.mode is %q: set backups.%s.mode: sidecar (or do not include the sidecar) so that %s is not backed up both by a sidecar and a CronJob" .engine .engine $e.mode .engine .engine) }}
{{- end }}
{{- toJson $v }}
{{- end }}
{{- end }}

{{/* The sidecar's ConfigMap name: <base>-<engine>-sidecar. (dict "context" "v" "engine") */}}
{{- define "strongroom.sidecar.configName" -}}
{{- printf "%s-%s-sidecar" (include "strongroom.base" .) (include "strongroom.short" .engine) }}
{{- end }}

{{- define "strongroom.sidecar.containerSpec" -}}
{{- $ctx := dict "context" .context "v" .v "engine" .engine "purpose" "sidecar" }}
{{- $b := .v.backups }}
name: strongroom
image: {{ include "strongroom.image" $ctx }}
imagePullPolicy: {{ .v.image.pullPolicy }}
args: ["--config", {{ include "strongroom.configPath" . | quote }}, "run"]
env:
  {{- include "strongroom.env" $ctx | nindent 2 }}
ports:
  - name: strongroom
    containerPort: {{ $b.daemon.port }}
    protocol: TCP
{{- if $b.sidecar.probes.startup }}
startupProbe:
  httpGet:
    path: /healthz
    port: strongroom
  periodSeconds: 5
  failureThreshold: 24
{{- end }}
{{- if $b.sidecar.probes.liveness }}
livenessProbe:
  httpGet:
    path: /healthz
    port: strongroom
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
{{- end }}
{{- if $b.sidecar.probes.readiness }}
readinessProbe:
  httpGet:
    path: /readyz
    port: strongroom
  periodSeconds: {{ $b.sidecar.probes.readinessPeriodSeconds }}
  timeoutSeconds: 5
  failureThreshold: {{ $b.sidecar.probes.readinessFailureThreshold }}
{{- end }}
resources:
  {{- toYaml .v.resources | nindent 2 }}
securityContext:
  {{- toYaml .v.securityContext | nindent 2 }}
volumeMounts:
  {{- include "strongroom.volumeMounts" $ctx | nindent 2 }}
  {{- if eq .engine "postgresql" }}
  - name: {{ $b.postgresql.sidecar.socketVolumeName }}
    mountPath: {{ $b.postgresql.socketDir }}
    {{- with $b.postgresql.sidecar.socketVolumeSubPath }}
    subPath: {{ . }}
    {{- end }}
  {{- end }}
{{- end }}

{{- define "strongroom.sidecar.container" -}}
{{- with include "strongroom.sidecar.values" . }}
{{- $ctx := dict "context" $.context "v" (fromJson .) "engine" $.engine -}}
- {{ include "strongroom.sidecar.containerSpec" $ctx | nindent 2 | trim }}
{{- end }}
{{- end }}

{{- define "strongroom.sidecar.initContainer" -}}
{{- with include "strongroom.sidecar.values" . }}
{{- $ctx := dict "context" $.context "v" (fromJson .) "engine" $.engine -}}
- {{ include "strongroom.sidecar.containerSpec" $ctx | nindent 2 | trim }}
  restartPolicy: Always
{{- end }}
{{- end }}

{{- define "strongroom.sidecar.volumes" -}}
{{- with include "strongroom.sidecar.values" . }}
{{- $v := fromJson . }}
{{- $ctx := dict "context" $.context "v" $v "engine" $.engine "purpose" "sidecar" }}
{{- include "strongroom.volumes" (merge (dict "configName" (include "strongroom.sidecar.configName" $ctx) "fileMode" 292 "optional" true) $ctx) }}
{{- if and (eq $.engine "postgresql") $v.backups.postgresql.sidecar.createSocketVolume }}
- name: {{ $v.backups.postgresql.sidecar.socketVolumeName }}
  emptyDir: {}
{{- end }}
{{- end }}
{{- end }}

{{- define "strongroom.sidecar.socketVolumeMount" -}}
{{- with include "strongroom.sidecar.values" . }}
{{- $v := fromJson . }}
{{- if eq $.engine "postgresql" -}}
- name: {{ $v.backups.postgresql.sidecar.socketVolumeName }}
  mountPath: {{ $v.backups.postgresql.socketDir }}
  {{- with $v.backups.postgresql.sidecar.socketVolumeSubPath }}
  subPath: {{ . }}
  {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "strongroom.sidecar.podAnnotations" -}}
{{- with include "strongroom.sidecar.values" . }}
{{- $v := fromJson . }}
{{- with (index $v.backups $.engine).sidecar.irsaSkipContainers -}}
eks.amazonaws.com/skip-containers: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "strongroom.sidecar.configMap" -}}
{{- with include "strongroom.sidecar.values" . }}
{{- $v := fromJson . }}
{{- $ctx := dict "context" $.context "v" $v "engine" $.engine "purpose" "sidecar" }}
{{- include "strongroom.configMap" (merge (dict "name" (include "strongroom.sidecar.configName" $ctx)) $ctx) }}
{{- end }}
{{- end }}

{{/* The pod's terminationGracePeriodSeconds: "requested" if given and larger than the agent's
shutdown grace, else a failure naming both; without "requested", the grace plus 30 s. */}}
{{- define "strongroom.sidecar.terminationGracePeriodSeconds" -}}
{{- $v := fromJson (include "strongroom.merged" (dict "values" (.values | default dict))) }}
{{- $grace := int $v.backups.daemon.shutdownGraceSeconds }}
{{- if hasKey . "requested" }}
{{- if le (int .requested) $grace }}
{{- fail (printf "terminationGracePeriodSeconds %v must exceed backups.daemon.shutdownGraceSeconds (%v): Kubernetes kills the agent at the end of the grace period, cutting off the backup it is finishing" .requested $grace) }}
{{- end }}
{{- int .requested }}
{{- else }}
{{- add $grace 30 }}
{{- end }}
{{- end }}

{{/* helm test: `strongroom preflight` with the role the sidecar really has (the database pod's
ServiceAccount, "serviceAccountName"), so the test checks that role, not another one. */}}
{{- define "strongroom.sidecar.testPod" -}}
{{- with include "strongroom.sidecar.values" . }}
{{- $v := fromJson . }}
{{- $ctx := dict "context" $.context "v" $v "engine" $.engine "purpose" "preflight" "component" "test" }}
{{- $name := printf "%s-%s-preflight" (include "strongroom.base" $ctx) (include "strongroom.short" $.engine) }}
{{- include "strongroom.configMap" (merge (dict "name" $name) $ctx) }}
---
apiVersion: v1
kind: Pod
metadata:
  name: {{ $name }}
  namespace: {{ $.context.Release.Namespace }}
  labels:
    {{- include "strongroom.labels" $ctx | nindent 4 }}
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  {{- include "strongroom.podSpec" (merge (dict "configName" $name "serviceAccountName" (required "strongroom.sidecar.testPod needs \"serviceAccountName\": the database pod's ServiceAccount, whose role the sidecar uses" $.serviceAccountName) "args" (list "--config" (include "strongroom.configPath" $ctx) "preflight")) $ctx) | nindent 2 }}
{{- end }}
{{- end }}
