{{/*
Names, labels (defined once here) and the promotion record.
*/}}

{{- define "model-server.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* release-qualified name; the release name alone when it already contains the chart name */}}
{{- define "model-server.fullname" -}}
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

{{- define "model-server.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: immutable in a Deployment, so they never carry a chart, app or model version
(tests/deploy/test_chart.py checks they stay the same across versions).
*/}}
{{- define "model-server.selectorLabels" -}}
app.kubernetes.io/name: {{ include "model-server.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "model-server.labels" -}}
{{ include "model-server.selectorLabels" . }}
helm.sh/chart: {{ include "model-server.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: model-server
app.kubernetes.io/part-of: mlops
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.environment }}
mlops/environment: {{ . }}
{{- end }}
{{- end }}

{{- define "model-server.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "model-server.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* an image reference from {repository, tag, digest}: the digest wins over the tag */}}
{{- define "model-server.imageRef" -}}
{{- $image := index . 0 }}{{- $appVersion := index . 1 }}{{- $key := index . 2 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- $tag := default $appVersion $image.tag }}
{{- if eq $tag "latest" }}
{{- fail (printf "%s.tag: \"latest\" is not allowed: pin a version tag or a digest" $key) }}
{{- end }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}
{{- end }}

{{/*
An image of the release: the promotion record's `images.<name>` (repository@sha256:..., the image CI
built and pushed with the promoted model version) when the record has it, else the values' image
{repository, tag, digest} (a version registered without images, e.g. by a local `make register`).
Call with (list $ "server" .Values.image "image").
*/}}
{{- define "model-server.releaseImage" -}}
{{- $root := index . 0 }}{{- $name := index . 1 }}{{- $image := index . 2 }}{{- $key := index . 3 }}
{{- $recorded := index ($root.Values.images | default dict) $name }}
{{- if $recorded }}
{{- $recorded }}
{{- else }}
{{- include "model-server.imageRef" (list $image $root.Chart.AppVersion $key) }}
{{- end }}
{{- end }}

{{/*
The promotion record (deploy/envs/<env>/model.yaml, written only by `mlops promote`), given to the chart
as a second values file: its keys are top-level values. An environment without a record (nothing
promoted there yet) fails to render with this message instead of rendering an empty or half-configured
release: Argo CD shows the Application as not renderable and prunes nothing.
*/}}
{{- define "model-server.requireRecord" -}}
{{- $env := default "<env>" .Values.environment }}
{{- $missing := list }}
{{- range $key := list "name" "version" "sha256" }}
{{- if not (index $.Values $key) }}{{- $missing = append $missing $key }}{{- end }}
{{- end }}
{{- if $missing }}
{{- fail (printf "no model promoted to environment %q: the promotion record deploy/envs/%s/model.yaml is missing or lacks %s (write it with `mlops promote --env %s --version <version>`)" $env $env (join ", " $missing) $env) }}
{{- end }}
{{- end }}

{{/* the record's fields in a fixed order: its checksum rolls the pods when the record changes */}}
{{- define "model-server.record" -}}
{{- $record := dict }}
{{- range $key := list "name" "version" "uri" "sha256" "images" "metrics" "git_sha" "promoted_at" "promoted_by" "previous" }}
{{- if hasKey $.Values $key }}{{- $_ := set $record $key (index $.Values $key) }}{{- end }}
{{- end }}
{{- toJson $record }}
{{- end }}
