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
