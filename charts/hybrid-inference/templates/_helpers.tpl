{{/* Names and labels shared by every template of the chart. */}}

{{- define "hybrid-inference.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hybrid-inference.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hybrid-inference.labels" -}}
{{ include "hybrid-inference.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "hybrid-inference.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hybrid-inference.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* RBAC rules for namespaced resources: mirrors kube.PERMISSIONS (tests/operator/test_rbac_least_privilege.py). */}}
{{- define "hybrid-inference.namespacedRules" -}}
- apiGroups: [hybridinference.dev]
  resources: [hybridinferences]
  verbs: [get, list, watch, patch]
- apiGroups: [hybridinference.dev]
  resources: [hybridinferences/status]
  verbs: [patch]
- apiGroups: [hybridinference.dev]
  resources: [hybridinferences/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create, patch]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [get, create, patch, delete]
- apiGroups: [cert-manager.io]
  resources: [certificates]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch, delete]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, create, patch, delete]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list]
{{- end -}}

{{/* Secret access: only ever in a namespaced Role (watchNamespace, or each of secretNamespaces). */}}
{{- define "hybrid-inference.secretRules" -}}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end -}}

{{/* RBAC rules for cluster-scoped resources. */}}
{{- define "hybrid-inference.clusterRules" -}}
- apiGroups: [""]
  resources: [nodes]
  verbs: [list]
{{- end -}}
