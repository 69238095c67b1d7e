{{/* Helpers of the monitoring-*.yaml templates (this file renders to nothing). */}}

{{/* Labels of the chart's monitoring objects (dashboards, rules, monitors). */}}
{{- define "hybrid-inference.monitoringLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-monitoring
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: monitoring
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
Relabelings every scrape of HybridInference pods shares: the target labels the dashboard and the
alerts select on (docs/monitoring.md). Prometheus-operator adds `namespace` itself.
*/}}
{{- define "hybrid-inference.monitoringRelabelings" -}}
- sourceLabels: [__meta_kubernetes_pod_label_app_kubernetes_io_instance]
  targetLabel: hybridinference
- sourceLabels: [__meta_kubernetes_pod_label_app_kubernetes_io_component]
  targetLabel: component
{{- end -}}
