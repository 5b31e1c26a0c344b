{{/*
Names, labels (defined once here), the train stage from dvc.yaml, and the pieces the TrainJob and its
TrainingRuntime share (image, command, environment, security context).
*/}}

{{- define "training-job.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* release-qualified name; the release name alone when it already contains the chart name. At most 40
characters: the Trainer names the JobSet's pods <trainjob>-node-<i>-<j>-<suffix> and their headless Service
after the TrainJob (DNS labels of 63) */}}
{{- define "training-job.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "training-job.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "training-job.selectorLabels" -}}
app.kubernetes.io/name: {{ include "training-job.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "training-job.labels" -}}
{{ include "training-job.selectorLabels" . }}
helm.sh/chart: {{ include "training-job.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: training
app.kubernetes.io/part-of: mlops
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "training-job.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "training-job.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* the image reference: the digest wins over the tag; "latest" is refused */}}
{{- define "training-job.image" -}}
{{- $image := .Values.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- $tag := default .Chart.AppVersion $image.tag }}
{{- if eq $tag "latest" }}
{{- fail "image.tag: \"latest\" is not allowed: pin a version tag or a digest" }}
{{- end }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The train stage as dvc.yaml declares it: files/train-stage.json, written from dvc.yaml by
`make training-job-stage` (mlops dvc-stage train); tests/deploy/test_training_chart.py fails when stale.
*/}}
{{- define "training-job.stage" -}}
{{- $stage := .Files.Get "files/train-stage.json" | fromJson }}
{{- if or (not $stage.cmd) (not (hasPrefix "mlops " $stage.cmd)) }}
{{- fail "files/train-stage.json: no `mlops ...` cmd for the train stage: regenerate it with `make training-job-stage`" }}
{{- end }}
{{- toJson $stage }}
{{- end }}

{{/* torchrun (PyTorch's launcher) runs `mlops <the stage's cmd>` in every process; nnodes, nproc-per-node,
node rank and the rendezvous come from the PET_* variables the Trainer's torch plugin sets */}}
{{- define "training-job.command" -}}
{{- $stage := include "training-job.stage" . | fromJson }}
{{- $args := concat (list "torchrun") .Values.trainer.torchrunArgs (list "-m" "mlops" "--params" "params.yaml") }}
{{- if .Values.logJson }}{{- $args = append $args "--log-json" }}{{- end }}
{{- toJson (concat $args (rest (splitList " " $stage.cmd))) }}
{{- end }}

{{- define "training-job.trainerEnv" -}}
- name: HOME
  value: /tmp
- name: PYTHONUNBUFFERED
  value: "1"
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- with .Values.trainer.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Restricted Pod Security Standard (as charts/model-server): non-root, no privilege escalation, all
capabilities dropped, seccomp RuntimeDefault, read-only root filesystem (writes go to the emptyDirs).
*/}}
{{- define "training-job.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end }}
