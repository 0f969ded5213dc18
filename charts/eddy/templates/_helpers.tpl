{{- define "eddy.labels" -}}
app.kubernetes.io/name: eddy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: eddy
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "eddy.operator" -}}
{{ .Release.Name }}-operator
{{- end -}}


{{- define "eddy.webhookSecret" -}}
{{- if .Values.s3.webhook.token -}}
{{ .Release.Name }}-s3-webhook
{{- else -}}
{{ .Values.s3.webhook.tokenSecret | default (printf "%s-s3-webhook" .Release.Name) }}
{{- end -}}
{{- end -}}
