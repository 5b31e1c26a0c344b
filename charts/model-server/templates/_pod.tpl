{{/*
The pod template shared by the Deployment and the Argo Rollouts Rollout: an init container fetches the
promoted version into an emptyDir (verified against its registry sha256), then the server reads it.
Restricted Pod Security Standard: non-root, no privilege escalation, all capabilities dropped, seccomp
RuntimeDefault, read-only root filesystem (writes go to the emptyDirs /models and /tmp).
*/}}
{{- define "model-server.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* the pod-level half of the restricted profile (every pod of the chart: server, drift job, receiver) */}}
{{- define "model-server.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
fsGroup: {{ .Values.podSecurityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "model-server.podTemplate" -}}
{{- include "model-server.requireRecord" . }}
{{- $version := toString .Values.version -}}
metadata:
  labels:
    {{- include "model-server.selectorLabels" . | nindent 4 }}
    mlops/model-version: {{ $version | quote }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/model-record: {{ include "model-server.record" . | sha256sum }}
    mlops/model: {{ printf "%s:%s" .Values.name $version | quote }}
    mlops/model-sha256: {{ .Values.sha256 | quote }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "model-server.serviceAccountName" . }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "model-server.podSecurityContext" . | nindent 4 }}
  initContainers:
    {{- include "model-server.fetchModelContainer" (dict "root" . "mount" "/models") | nindent 4 }}
  containers:
    - name: server
      image: {{ include "model-server.releaseImage" (list . "server" .Values.image "image") }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command: ["mlops"]
      args:
        - --params
        - /app/params.yaml
        {{- if .Values.logJson }}
        - --log-json
        {{- end }}
        - serve
        - --model-dir
        - /models
        - --host
        - 0.0.0.0
        - --port
        - {{ .Values.service.targetPort | quote }}
        - --model-version
        - {{ $version | quote }}
        {{- with .Values.predictionLog.dir }}
        - --prediction-log-dir
        - {{ . | quote }}
        - --prediction-log-rate
        - {{ $.Values.predictionLog.rate | quote }}
        {{- end }}
      {{- with .Values.predictionLog.secretName }}
      envFrom:
        - secretRef:
            name: {{ . }}
      {{- end }}
      env:
        - name: HOME
          value: /tmp
      ports:
        - name: http
          containerPort: {{ .Values.service.targetPort }}
          protocol: TCP
      startupProbe:
        httpGet:
          path: /v2/health/ready
          port: http
        {{- toYaml .Values.probes.startup | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /v2/health/ready
          port: http
        {{- toYaml .Values.probes.readiness | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /v2/health/live
          port: http
        {{- toYaml .Values.probes.liveness | nindent 8 }}
      securityContext:
        {{- include "model-server.containerSecurityContext" . | nindent 8 }}
      resources:
        {{- toYaml .Values.resources.server | nindent 8 }}
      volumeMounts:
        - name: model
          mountPath: /models
          readOnly: true
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: model
      emptyDir:
        sizeLimit: {{ .Values.volumes.modelSizeLimit }}
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.volumes.tmpSizeLimit }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range . }}
    - {{ toYaml (merge (deepCopy .) (dict "labelSelector" (dict "matchLabels" (include "model-server.selectorLabels" $ | fromYaml)))) | nindent 6 | trim }}
    {{- end }}
  {{- end }}
{{- end }}

{{/*
The fetch-model init container: `mlops fetch-model` of the record's version into the emptyDir `model`
mounted at .mount (verified against its sha256). The server's pods and the drift CronJob share it, so
both hold exactly the promoted version's files (the drift job reads its reference.parquet).
Call with (dict "root" $ "mount" "/models").
*/}}
{{- define "model-server.fetchModelContainer" -}}
{{- $root := .root -}}
- name: fetch-model
  image: {{ include "model-server.releaseImage" (list $root "fetch" $root.Values.fetchImage "fetchImage") }}
  imagePullPolicy: {{ $root.Values.fetchImage.pullPolicy }}
  command: ["mlops"]
  args:
    {{- if $root.Values.logJson }}
    - --log-json
    {{- end }}
    - fetch-model
    - --name
    - {{ $root.Values.name | quote }}
    - --version
    - {{ toString $root.Values.version | quote }}
    - --dest
    - {{ .mount }}
    - --sha256
    - {{ required "sha256: the promotion record's weights sha256" $root.Values.sha256 | quote }}
    - --json
  {{- /* registry URI and credentials only from the Secret, never inline */}}
  envFrom:
    - secretRef:
        name: {{ required "registry.secretName: name the Secret holding MLFLOW_TRACKING_URI and the registry credentials" $root.Values.registry.secretName }}
  env:
    - name: HOME
      value: /tmp
  securityContext:
    {{- include "model-server.containerSecurityContext" $root | nindent 4 }}
  resources:
    {{- toYaml $root.Values.resources.fetch | nindent 4 }}
  volumeMounts:
    - name: model
      mountPath: {{ .mount }}
    - name: tmp
      mountPath: /tmp
{{- end }}
