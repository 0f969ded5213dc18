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


{{/* EDDY_S3_STORES: each store's endpoint and the variable its token is in. */}}
{{- define "eddy.s3Stores" -}}
{{- $list := list }}
{{- range $i, $store := .Values.s3.stores }}
{{- $list = append $list (dict "endpoint" $store.endpoint "tokenEnv" (printf "EDDY_S3_STORE_TOKEN_%d" $i)) }}
{{- end }}
{{- toJson $list }}
{{- end -}}

{{- define "eddy.webhookSecret" -}}
{{- if .Values.s3.webhook.token -}}
{{ .Release.Name }}-s3-webhook
{{- else -}}
{{ .Values.s3.webhook.tokenSecret | default (printf "%s-s3-webhook" .Release.Name) }}
{{- end -}}
{{- end -}}
