{{- define "eddy.labels" -}}
app.kubernetes.io/name: eddy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: eddy
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* The two Deployments of the one operator image, and each one's ServiceAccount. */}}
{{- define "eddy.controller" -}}
{{ .Release.Name }}-controller
{{- end -}}

{{- define "eddy.gateway" -}}
{{ .Release.Name }}-gateway
{{- end -}}

{{- define "eddy.nats" -}}
{{ .Release.Name }}-nats
{{- end -}}

{{/*
The label both operator Deployments' pods carry, and nothing else: the metrics Service selects
it, and so does each Function's NetworkPolicy (the gateway delivers to functions, the controller
invokes Kinesis batches).
*/}}
{{- define "eddy.invokerPodLabel" -}}
eddy.dev/operator: "true"
{{- end -}}

{{- define "eddy.image" -}}
{{ .Values.operator.image.repository }}:{{ .Values.operator.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Where the operator pods reach NATS: queue.nats.url, or the StatefulSet the chart installs. */}}
{{- define "eddy.natsUrl" -}}
{{- if .Values.queue.nats.url -}}
{{ .Values.queue.nats.url }}
{{- else if .Values.queue.nats.install -}}
{{- /* The Service's cluster IP from the variables Kubernetes gives every pod of the namespace: no cluster DNS needed. */ -}}
{{- $var := include "eddy.nats" . | upper | replace "-" "_" -}}
nats://$({{ $var }}_SERVICE_HOST):$({{ $var }}_SERVICE_PORT)
{{- end -}}
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

{{/* The pod's security settings, the same for both roles. */}}
{{- define "eddy.podSecurity" -}}
runAsNonRoot: true
runAsUser: 1000
seccompProfile: { type: RuntimeDefault }
{{- end -}}

{{- define "eddy.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: { drop: [ALL] }
{{- end -}}

{{/* What both roles are told: who they are, where they listen, the API deadline, the queue. */}}
{{- define "eddy.commonEnv" -}}
- name: EDDY_ROLE
  value: {{ .role | quote }}
- name: POD_NAMESPACE
  valueFrom: { fieldRef: { fieldPath: metadata.namespace } }
- name: POD_NAME
  valueFrom: { fieldRef: { fieldPath: metadata.name } }
- name: EDDY_GATEWAY_URL
  value: {{ .ctx.Values.gateway.url | default (printf "http://%s.%s.svc:8080" (include "eddy.gateway" .ctx) .ctx.Release.Namespace) | quote }}
- name: EDDY_API_TIMEOUT_SECONDS
  value: {{ .ctx.Values.operator.apiTimeoutSeconds | quote }}
# /healthz and /readyz on the gateway's port; /metrics on a port of its own, which only the
# metrics Service exposes.
- name: EDDY_GATEWAY_PORT
  value: "8080"
- name: EDDY_METRICS_PORT
  value: {{ .ctx.Values.metrics.port | quote }}
# Bodies and answers one process holds at most; past it 429 (invocations), 503 (intakes).
- name: EDDY_GATEWAY_MEMORY_BUDGET
  value: {{ .ctx.Values.gateway.memoryBudget | quote }}
# The ARN of the stores' webhook target: the controller writes it into bucket notifications.
- name: EDDY_S3_WEBHOOK_ARN
  value: {{ .ctx.Values.s3.webhook.arn | quote }}
{{- with include "eddy.natsUrl" .ctx }}
# Accepted events, schedule ticks and S3 notifications go through NATS JetStream.
- name: EDDY_NATS_URL
  value: {{ . | quote }}
{{- with $.ctx.Values.queue.nats.credentialsSecret }}
- name: EDDY_NATS_CREDS_FILE
  value: /etc/eddy/nats/nats.creds
{{- end }}
- name: EDDY_QUEUE_STREAM
  value: {{ $.ctx.Values.queue.stream | quote }}
- name: EDDY_QUEUE_REPLICAS
  value: {{ include "eddy.streamReplicas" $.ctx | quote }}
{{- with $.ctx.Values.queue.maxBytes }}
- name: EDDY_QUEUE_MAX_BYTES
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The stream's replicas: queue.replicas, or as many as the installed NATS has (at most 5). */}}
{{- define "eddy.streamReplicas" -}}
{{- if .Values.queue.replicas -}}
{{ .Values.queue.replicas }}
{{- else if and .Values.queue.nats.install (not .Values.queue.nats.url) -}}
{{ min 5 .Values.queue.nats.replicas }}
{{- else -}}
1
{{- end -}}
{{- end -}}

{{- define "eddy.natsCredsVolumeMount" -}}
{{- if and .Values.queue.nats.credentialsSecret (include "eddy.natsUrl" .) }}
volumeMounts:
  - name: nats-creds
    mountPath: /etc/eddy/nats
    readOnly: true
{{- end }}
{{- end -}}

{{- define "eddy.natsCredsVolume" -}}
{{- if and .Values.queue.nats.credentialsSecret (include "eddy.natsUrl" .) }}
volumes:
  - name: nats-creds
    secret:
      secretName: {{ .Values.queue.nats.credentialsSecret | quote }}
      items: [{ key: nats.creds, path: nats.creds }]
{{- end }}
{{- end -}}

{{/* The configuration of the NATS servers the chart installs. */}}
{{- define "eddy.natsConf" -}}
{{- $nats := include "eddy.nats" . -}}
{{- $n := int .Values.queue.nats.replicas -}}
server_name: $POD_NAME
port: 4222
http_port: 8222
jetstream {
  store_dir: /data
}
{{- if gt $n 1 }}
cluster {
  name: {{ $nats }}
  port: 6222
  routes: [
    {{- range $i, $_ := until $n }}
    nats://{{ $nats }}-{{ $i }}.{{ $nats }}-headless.{{ $.Release.Namespace }}.svc:6222
    {{- end }}
  ]
}
{{- end }}
{{- end -}}

{{/*
Where a pod of the chart runs: the shared scheduling values, and a soft spread of its component's
pods over nodes. Called with (dict "root" $ "component" "gateway").
*/}}
{{- define "eddy.scheduling" -}}
{{- $v := .root.Values -}}
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
{{- with $v.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- if $v.spreadOverNodes }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        app.kubernetes.io/instance: {{ .root.Release.Name }}
        app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}
