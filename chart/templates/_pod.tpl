{{/*
The pod spec of the chart's own pods (backup CronJobs, the restore Job, the helm test): one
agent container, run once (restartPolicy Never), hardened, with the config directory, the
Secret files and /tmp. Takes (dict "context" $ "v" $v "engine" E "purpose" P "configName" N
"serviceAccountName" S "args" (list ...)) and optionally "initContainers", "extraVolumeMounts",
"extraVolumes" (YAML list items, as text) and "resources" (instead of the values' resources):
the drill CronJob's pod adds its scratch server that way.
*/}}
{{- define "strongroom.podSpec" -}}
{{- $v := .v -}}
restartPolicy: Never
serviceAccountName: {{ .serviceAccountName }}
# The agent never calls the Kubernetes API (IRSA's web-identity token is projected by EKS
# independently of this).
automountServiceAccountToken: false
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .initContainers }}
initContainers:
  {{- . | nindent 2 }}
{{- end }}
containers:
  - name: strongroom
    image: {{ include "strongroom.image" . }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    args:
      {{- toYaml .args | nindent 6 }}
    env:
      {{- include "strongroom.env" . | nindent 6 }}
    resources:
      {{- toYaml (.resources | default $v.resources) | nindent 6 }}
    securityContext:
      {{- toYaml $v.securityContext | nindent 6 }}
    volumeMounts:
      {{- include "strongroom.volumeMounts" . | nindent 6 }}
      {{- with .extraVolumeMounts }}
      {{- . | nindent 6 }}
      {{- end }}
volumes:
  {{- include "strongroom.volumes" (merge (dict "fileMode" 288) .) | nindent 2 }}
  {{- with .extraVolumes }}
  {{- . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* Pod metadata of the chart's own pods. (dict "context" "v" "component"), and optionally
"annotations" (the chart's own, under podAnnotations). */}}
{{- define "strongroom.podMetadata" -}}
labels:
  {{- include "strongroom.labels" . | nindent 2 }}
  {{- with .v.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with mustMergeOverwrite (deepCopy (.annotations | default dict)) (deepCopy .v.podAnnotations) }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
