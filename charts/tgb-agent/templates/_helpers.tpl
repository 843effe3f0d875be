{{/* The chart's name, or nameOverride. */}}
{{- define "tgb-agent.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Name of the release's objects: fullnameOverride, else the release name when it already holds the
chart's name (release `tgb-agent` -> `tgb-agent`, as deploy/ names them), else
<release>-<chart name>. Kubernetes names are at most 63 characters.
*/}}
{{- define "tgb-agent.fullname" -}}
{{- $name := include "tgb-agent.name" . -}}
{{- $full := printf "%s-%s" .Release.Name $name -}}
{{- if .Values.fullnameOverride -}}
{{- $full = .Values.fullnameOverride -}}
{{- else if contains $name .Release.Name -}}
{{- $full = .Release.Name -}}
{{- end -}}
{{- $full | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The pods' identity: the Deployment's selector, the PodDisruptionBudget's and the PodMonitor's. */}}
{{- define "tgb-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tgb-agent.name" . }}
app.kubernetes.io/component: agent
{{- end -}}

{{/* Labels of every object. */}}
{{- define "tgb-agent.labels" -}}
app.kubernetes.io/name: {{ include "tgb-agent.name" . }}
app.kubernetes.io/part-of: tgb-agent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- with .Values.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The ServiceAccount the pods run as. */}}
{{- define "tgb-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "tgb-agent.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* clusterName, refused when empty or `default` (the agent refuses both at start-up). */}}
{{- define "tgb-agent.clusterName" -}}
{{- $name := required "clusterName is required: set it to a name unique among the clusters that share AWS resources with this one (e.g. --set clusterName=prod-eu-1)" .Values.clusterName -}}
{{- if eq (toString $name) "default" -}}
{{- fail "clusterName must not be `default`: two clusters left at a default would own each other's targets and rules" -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* The webhook's Service and MutatingWebhookConfiguration; its Secret adds -tls. */}}
{{- define "tgb-agent.webhookName" -}}
{{- printf "%s-webhook" (include "tgb-agent.fullname" .) | trunc 59 | trimSuffix "-" -}}
{{- end -}}
