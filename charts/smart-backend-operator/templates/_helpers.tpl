{{- define "sbo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sbo.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sbo.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sbo.serviceAccount" -}}
{{- default (include "sbo.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "sbo.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) -}}true{{- end -}}
{{- end -}}

{{/* Rules the operator needs wherever it watches SmartBackendClients. */}}
{{- define "sbo.clientRules" -}}
- apiGroups: ["smartbackend.dev"]
  resources: ["smartbackendclients"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["smartbackend.dev"]
  resources: ["smartbackendclients/status"]
  verbs: ["patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* Key Secrets are created and read; token Secrets are server-side
applied. The operator's watch is label-selected, but RBAC cannot express
that. */}}
{{- define "sbo.secretRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "update"]
{{- end -}}

{{/* The ClusterRole a namespace binds to grant the operator its Secrets. */}}
{{- define "sbo.secretsClusterRole" -}}
{{- printf "%s-%s" .Release.Namespace (include "sbo.fullname" .) | trunc 55 | trimSuffix "-" -}}-secrets
{{- end -}}

{{/* Where EHRs fetch /jwks/: the value, else the Ingress host. */}}
{{- define "sbo.jwksPublicUrl" -}}
{{- if .Values.operator.jwksPublicUrl -}}
{{- .Values.operator.jwksPublicUrl -}}
{{- else if and .Values.ingress.enabled .Values.ingress.host -}}
{{- printf "https://%s" .Values.ingress.host -}}
{{- end -}}
{{- end -}}

{{- define "sbo.csiSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: csi-node
{{- end -}}
