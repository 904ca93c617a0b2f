{{/* The chart name, shortened to a DNS label. */}}
{{- define "mlrt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The fully qualified app name: the release name, prefixed with the chart's unless it contains it. */}}
{{- define "mlrt.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mlrt.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlrt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlrt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "mlrt.labels" -}}
helm.sh/chart: {{ include "mlrt.chart" . }}
{{ include "mlrt.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mlrt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlrt.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespaces where the controller creates training Jobs: managedNamespaces, else the release's. */}}
{{- define "mlrt.managedNamespaces" -}}
{{- if .Values.managedNamespaces }}
{{- join "," (uniq .Values.managedNamespaces) }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "mlrt.advertiseUrl" -}}
{{- if .Values.advertiseUrl }}
{{- .Values.advertiseUrl }}
{{- else }}
{{- printf "http://%s.%s.svc:%v" (include "mlrt.fullname" .) .Release.Namespace .Values.service.port }}
{{- end }}
{{- end }}

{{- define "mlrt.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
