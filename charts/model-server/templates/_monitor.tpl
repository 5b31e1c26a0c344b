{{/*
Names and labels of the monitoring workloads (the drift CronJob, the retrain webhook receiver). Their pods
get their own app.kubernetes.io/name (<name>-<component>): the server's Service, PodDisruptionBudget and
NetworkPolicy select the server's pods by name + instance and must never pick these up.
Call with (list $ "drift").
*/}}
{{- define "model-server.componentName" -}}
{{- $root := index . 0 }}{{- $component := index . 1 }}
{{- printf "%s-%s" (include "model-server.fullname" $root | trunc 40 | trimSuffix "-") $component }}
{{- end }}

{{- define "model-server.componentSelectorLabels" -}}
{{- $root := index . 0 }}{{- $component := index . 1 }}
app.kubernetes.io/name: {{ printf "%s-%s" (include "model-server.name" $root | trunc 40 | trimSuffix "-") $component }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- end }}

{{- define "model-server.componentLabels" -}}
{{- $root := index . 0 }}{{- $component := index . 1 }}
{{ include "model-server.componentSelectorLabels" . }}
helm.sh/chart: {{ include "model-server.chart" $root }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ $component }}
app.kubernetes.io/part-of: mlops
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- with $root.Values.environment }}
mlops/environment: {{ . }}
{{- end }}
{{- end }}

{{/* the trigger's environment: the Secret with the token variables, then the plain settings */}}
{{- define "model-server.retrainTriggerEnvFrom" -}}
- secretRef:
    name: {{ required "retrainTrigger.secretName: name the Secret holding the retrain token variables (params.yaml retrain.*.token_env)" .Values.retrainTrigger.secretName }}
{{- end }}

{{- define "model-server.retrainTriggerEnv" -}}
{{- range $key, $value := .Values.retrainTrigger.env }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
