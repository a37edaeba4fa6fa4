{{- define "stemkube.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "stemkube.labels" -}}
app.kubernetes.io/name: stemkube
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "stemkube.selector" -}}
app.kubernetes.io/name: stemkube
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* image: (dict "root" $ "image" .Values.api.image) */}}
{{- define "stemkube.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if $registry -}}{{ printf "%s/%s:%s" $registry .image.repository $tag }}{{- else -}}{{ printf "%s:%s" .image.repository $tag }}{{- end -}}
{{- end -}}

{{- define "stemkube.webhookSecret" -}}
{{- .Values.webhooks.secretName | default (printf "%s-webhooks" (include "stemkube.fullname" .)) -}}
{{- end -}}

{{/* The components that hold storage credentials, each its own: the API and the operator. The
separator pods hold none (presigned URLs through the operator's job link). */}}
{{- define "stemkube.storageComponents" -}}api operator{{- end -}}

{{/* The storage credentials' Secret of one component (dict "root" . "component" "api" or
"operator"): with the bundled MinIO a user of its own with the least rights
(files/s3-policies/<component>.json); else storage.external.<component>Secret, or the shared
existingSecret. No component reads another's, and none but MinIO and its hook MinIO's root. */}}
{{- define "stemkube.storageSecret" -}}
{{- $values := .root.Values -}}
{{- if $values.minio.enabled -}}{{ include "stemkube.fullname" .root }}-storage-{{ .component }}
{{- else -}}
{{- $own := index $values.storage.external (printf "%sSecret" .component) -}}
{{- $own | default $values.storage.external.existingSecret | required (printf "storage.external.%sSecret (or existingSecret) is required when minio.enabled is false" .component) -}}
{{- end -}}
{{- end -}}

{{/* The bundled MinIO's root credentials: MinIO and its set-up hook only. */}}
{{- define "stemkube.minioRootSecret" -}}
{{- include "stemkube.fullname" . }}-minio-root
{{- end -}}

{{/* storageScopes as stemkube_contract.scopes reads it (STEMKUBE_STORAGE_SCOPES): JSON, the
default's empty bucket resolved to storage.bucket. */}}
{{- define "stemkube.storageScopes" -}}
{{- $default := .Values.storageScopes.default -}}
{{- dict "default" (dict "bucket" ($default.bucket | default .Values.storage.bucket) "prefix" $default.prefix) "namespaces" .Values.storageScopes.namespaces | toJson -}}
{{- end -}}

{{- define "stemkube.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}http://{{ include "stemkube.fullname" . }}-minio.{{ .Release.Namespace }}.svc:9000{{- else -}}{{ .Values.storage.external.endpoint }}{{- end -}}
{{- end -}}

{{/* The object store's address and one component's credentials (dict "root" . "component" ...). */}}
{{- define "stemkube.s3Env" -}}
- name: AWS_ENDPOINT_URL
  value: {{ include "stemkube.s3Endpoint" .root | quote }}
{{- with .root.Values.storage.external.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ include "stemkube.storageSecret" . }}, key: AWS_ACCESS_KEY_ID}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ include "stemkube.storageSecret" . }}, key: AWS_SECRET_ACCESS_KEY}}
{{- end -}}

{{- define "stemkube.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "stemkube.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{- define "stemkube.watchAll" -}}
{{- if has "*" .Values.operator.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/* An admission policy binding's matchResources: the namespaces the operator watches
(SeparationJobs elsewhere never run here, and may be another release's); none: all of them. */}}
{{- define "stemkube.watchedNamespacesMatch" -}}
{{- if not (include "stemkube.watchAll" .) -}}
matchResources:
  namespaceSelector:
    matchExpressions:
      - key: kubernetes.io/metadata.name
        operator: In
        values: {{ .Values.operator.watchNamespaces | default (list .Release.Namespace) | toJson }}
{{- end -}}
{{- end -}}

{{/* The models served and the option limits: one declaration, given to the API and the operator. */}}
{{- define "stemkube.catalogEnv" -}}
{{- if .Values.models }}
- name: STEMKUBE_MODELS
  value: {{ dict "default" (.Values.defaultModel | default (first .Values.models).name) "models" .Values.models | toJson | quote }}
{{- end }}
{{- with .Values.defaultModel }}
- name: STEMKUBE_MODEL
  value: {{ . | quote }}
{{- end }}
- name: STEMKUBE_LIMITS
  value: {{ .Values.limits | default dict | toJson | quote }}
{{- end -}}

{{/* A CPU quantity (2, 1.5, "500m") in millicores, to compare a limit with a request. */}}
{{- define "stemkube.millicores" -}}
{{- $q := toString . -}}
{{- if hasSuffix "m" $q -}}{{ trimSuffix "m" $q | atoi }}{{- else -}}{{ round (mulf (float64 $q) 1000) 0 | int }}{{- end -}}
{{- end -}}
