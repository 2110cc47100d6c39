{{/* Full name of the release's objects. */}}
{{- define "asya.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "asya.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "asya.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "asya.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "asya.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* `ns=ttl,ns=ttl` from results.ttlByNamespace, sorted by namespace. */}}
{{- define "asya.resultsTtlFor" -}}
{{- $pairs := list -}}
{{- range $namespace, $ttl := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $namespace $ttl) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
