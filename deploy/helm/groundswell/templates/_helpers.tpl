{{/* Names, labels and the environment every Groundswell container gets. */}}

{{- define "groundswell.fullname" -}}
{{- if contains "groundswell" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-groundswell" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "groundswell.labels" -}}
app.kubernetes.io/name: groundswell
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The labels that select one component's pods: (dict "root" $ "component" "membership"). */}}
{{- define "groundswell.selector" -}}
app.kubernetes.io/name: groundswell
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "groundswell.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "groundswell.databaseHost" -}}
{{- if .Values.database.host -}}{{ .Values.database.host }}
{{- else if .Values.cnpg.enabled -}}{{ include "groundswell.fullname" . }}-pg-rw
{{- else -}}{{ fail "set database.host (a PostgreSQL server) or cnpg.enabled" }}
{{- end -}}
{{- end -}}

{{- define "groundswell.databasePasswordSecret" -}}
{{- if .Values.database.passwordSecret.name -}}{{ .Values.database.passwordSecret.name }}
{{- else if .Values.cnpg.enabled -}}{{ include "groundswell.fullname" . }}-pg-app
{{- else -}}{{ fail "set database.passwordSecret.name (a Secret holding the database password) or cnpg.enabled" }}
{{- end -}}
{{- end -}}

{{- define "groundswell.kafkaBootstrap" -}}
{{- if .Values.kafka.bootstrapServers -}}{{ .Values.kafka.bootstrapServers }}
{{- else if .Values.strimzi.enabled -}}{{ include "groundswell.fullname" . }}-kafka-kafka-bootstrap:9092
{{- else -}}{{ fail "set kafka.bootstrapServers or strimzi.enabled" }}
{{- end -}}
{{- end -}}

{{/* DATABASE_URL of one database (dict "root" $ "database" "groundswell_membership"); the password comes from
     GROUNDSWELL_DATABASE_PASSWORD, defined before it (Kubernetes expands $(NAME) in a value). */}}
{{- define "groundswell.databaseUrl" -}}
{{- $v := .root.Values.database -}}
{{- printf "postgresql+asyncpg://%s:$(GROUNDSWELL_DATABASE_PASSWORD)@%s:%v/%s" $v.user (include "groundswell.databaseHost" .root) $v.port .database -}}
{{- if $v.query }}?{{ $v.query }}{{ end -}}
{{- end -}}

{{/* Kafka and the secret key: what topics, services and backups share. */}}
{{- define "groundswell.kafkaEnv" -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ include "groundswell.kafkaBootstrap" . | quote }}
- name: KAFKA_REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | quote }}
- name: KAFKA_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
{{- if .Values.kafka.minInsyncReplicas }}
- name: KAFKA_MIN_INSYNC_REPLICAS
  value: {{ .Values.kafka.minInsyncReplicas | quote }}
{{- end }}
- name: SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ required "secretKey.existingSecret: the Secret holding SECRET_KEY" .Values.secretKey.existingSecret }}
      key: {{ .Values.secretKey.key }}
{{- end -}}

{{/* The environment of one service (dict "root" $ "name" "membership" "port" 8001): the launcher's service_env. */}}
{{- define "groundswell.serviceEnv" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
- name: SERVICE_NAME
  value: {{ .name }}
- name: INSTANCE
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: HTTP_HOST
  value: 0.0.0.0
- name: HTTP_PORT
  value: {{ .port | quote }}
- name: GROUNDSWELL_DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "groundswell.databasePasswordSecret" $root }}
      key: {{ $v.database.passwordSecret.key }}
- name: DATABASE_URL
  value: {{ include "groundswell.databaseUrl" (dict "root" $root "database" (printf "groundswell_%s" .name)) | quote }}
{{ include "groundswell.kafkaEnv" $root }}
- name: KAFKA_SESSION_TIMEOUT_MS
  value: {{ $v.kafka.sessionTimeoutMs | quote }}
- name: KAFKA_HEARTBEAT_INTERVAL_MS
  value: {{ $v.kafka.heartbeatIntervalMs | quote }}
- name: SMTP_HOST
  value: {{ required "smtp.host: your mail relay" $v.smtp.host | quote }}
- name: SMTP_PORT
  value: {{ $v.smtp.port | quote }}
- name: SMTP_USERNAME
  value: {{ $v.smtp.username | quote }}
- name: SMTP_PASSWORD
{{- if $v.smtp.passwordSecret.name }}
  valueFrom:
    secretKeyRef:
      name: {{ $v.smtp.passwordSecret.name }}
      key: {{ $v.smtp.passwordSecret.key }}
{{- else }}
  value: ""
{{- end }}
- name: SMTP_STARTTLS
  value: {{ $v.smtp.starttls | quote }}
- name: MAIL_FROM
  value: {{ $v.smtp.mailFrom | quote }}
- name: BOUNCE_SMTP_HOST
  value: 0.0.0.0
- name: BOUNCE_SMTP_PORT
  value: {{ if eq .name "notifications" }}{{ $v.bounces.port | quote }}{{ else }}"0"{{ end }}
- name: BOUNCE_SUPPRESS_AFTER
  value: {{ $v.bounces.suppressAfter | quote }}
- name: PUBLIC_BASE_URL
  value: {{ $v.publicBaseUrl | quote }}
- name: TRUSTED_PROXIES
  value: {{ $v.trustedProxies | quote }}
- name: GATEWAY_INTERNAL_URL
  value: {{ printf "http://%s-gateway:%v" (include "groundswell.fullname" $root) $v.gateway.service.port | quote }}
{{- if $v.networkName }}
- name: NETWORK_NAME
  value: {{ $v.networkName | quote }}
{{- end }}
- name: PYTHONUNBUFFERED
  value: "1"
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* One service's settings: services.<name> over serviceDefaults. */}}
{{- define "groundswell.serviceValues" -}}
{{- $merged := mergeOverwrite (deepCopy .root.Values.serviceDefaults) (deepCopy .service) -}}
{{- toYaml $merged -}}
{{- end -}}
