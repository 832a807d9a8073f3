{{/* Backups and restores: where they are kept, and the pod that makes or restores one (dict "root" $ "command"
   (list "create")), with the key from its Secret and the backups' claim. */}}

{{- define "groundswell.backupClaim" -}}
{{- .Values.backup.persistence.existingClaim | default (printf "%s-backups" (include "groundswell.fullname" .)) -}}
{{- end -}}

{{- define "groundswell.backupPodSpec" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
restartPolicy: Never
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $v.serviceDefaults.podSecurityContext | nindent 2 }}
containers:
  - name: backup
    image: {{ printf "%s:%s" $v.backup.image.repository ($v.backup.image.tag | default $root.Chart.AppVersion) }}
    imagePullPolicy: {{ $v.backup.image.pullPolicy }}
    command: {{ concat (list "python" "-m" "deploy.local.backup") .command | toJson }}
    env:
      - name: GROUNDSWELL_DATABASE_PASSWORD
        valueFrom:
          secretKeyRef:
            name: {{ include "groundswell.databasePasswordSecret" $root }}
            key: {{ $v.database.passwordSecret.key }}
      # Any of the databases: the backup takes each service's by replacing the name (groundswell_<service>).
      - name: DATABASE_URL
        value: {{ include "groundswell.databaseUrl" (dict "root" $root "database" "groundswell_membership") | quote }}
      {{- include "groundswell.kafkaEnv" $root | nindent 6 }}
      - name: GROUNDSWELL_STATE_DIR
        value: /tmp/groundswell
      - name: GROUNDSWELL_BACKUP_DIR
        value: /backups
      - name: BACKUP_KEY_FILE
        value: /etc/groundswell/backup-key/{{ $v.backup.keySecret.key }}
      - name: BACKUP_KEEP
        value: {{ $v.backup.keep | quote }}
      - name: PYTHONUNBUFFERED
        value: "1"
      {{- with $v.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    resources:
      {{- toYaml $v.backup.resources | nindent 6 }}
    securityContext:
      {{- toYaml $v.serviceDefaults.securityContext | nindent 6 }}
    volumeMounts:
      - name: backups
        mountPath: /backups
      - name: backup-key
        mountPath: /etc/groundswell/backup-key
        readOnly: true
      - name: tmp
        mountPath: /tmp
      {{- with $v.extraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  - name: backups
    persistentVolumeClaim:
      claimName: {{ include "groundswell.backupClaim" $root }}
  - name: backup-key
    secret:
      secretName: {{ required "backup.keySecret.name: the Secret holding the backup key (or backup.enabled=false)" $v.backup.keySecret.name }}
      defaultMode: 0440
  - name: tmp
    emptyDir: {}
  {{- with $v.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}
