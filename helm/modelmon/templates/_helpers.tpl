{{/* Names, labels and the pieces every workload shape shares. */}}

{{- define "modelmon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelmon.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A name derived from the full name: "<fullname>-<suffix>", at most 63 characters. */}}
{{- define "modelmon.child" -}}
{{- $full := include "modelmon.fullname" .root -}}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len .suffix)))) .suffix | trimSuffix "-" -}}
{{- end -}}

{{- define "modelmon.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelmon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelmon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modelmon.labels" -}}
helm.sh/chart: {{ include "modelmon.chart" . }}
{{ include "modelmon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelmon
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{/* Attached to a KServe InferenceService? */}}
{{- define "modelmon.isvc" -}}
{{- if and (eq .Values.mode "attach") (eq .Values.attach.kind "InferenceService") }}true{{ end -}}
{{- end -}}

{{/* Labels of the pods the sidecar runs in: the chart's own, or those of the attached workload. */}}
{{- define "modelmon.podSelector" -}}
{{- if eq .Values.mode "attach" -}}
{{- if .Values.attach.selector -}}
{{ toYaml .Values.attach.selector }}
{{- else if include "modelmon.isvc" . -}}
serving.kserve.io/inferenceservice: {{ .Values.attach.name | quote }}
{{- end -}}
{{- else -}}
{{ include "modelmon.selectorLabels" . }}
{{- end -}}
{{- end -}}

{{/* Is the sidecar a native sidecar (an init container with restartPolicy: Always)? */}}
{{- define "modelmon.native" -}}
{{- if and .Values.sidecar.native (not (include "modelmon.isvc" .)) }}true{{ end -}}
{{- end -}}

{{- define "modelmon.containerName" -}}
{{- if include "modelmon.isvc" . }}transformer-container{{ else }}modelmon{{ end -}}
{{- end -}}

{{- define "modelmon.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "modelmon.modelImage" -}}
{{- $image := .Values.model.image -}}
{{- if not $image.repository -}}
{{- include "modelmon.image" . -}}
{{- else if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository ($image.tag | default "latest") -}}
{{- end -}}
{{- end -}}

{{/* Where the pod mounts what the sidecar reads. */}}
{{- define "modelmon.configDir" -}}/etc/modelmon/config{{- end -}}
{{- define "modelmon.profilesDir" -}}/etc/modelmon/profiles{{- end -}}
{{- define "modelmon.tokenDir" -}}/var/run/secrets/modelmon{{- end -}}
{{- define "modelmon.tokenPath" -}}{{ include "modelmon.tokenDir" . }}/token{{- end -}}

{{- define "modelmon.configMapName" -}}
{{- .Values.existingConfigMap.name | default (include "modelmon.child" (dict "root" . "suffix" "config")) -}}
{{- end -}}

{{- define "modelmon.configKey" -}}
{{- if .Values.existingConfigMap.name }}{{ .Values.existingConfigMap.key }}{{ else }}modelmon.yaml{{ end -}}
{{- end -}}

{{/* The profiles' ConfigMap, or nothing when there are no profiles. */}}
{{- define "modelmon.profilesConfigMapName" -}}
{{- if .Values.existingProfilesConfigMap -}}
{{- .Values.existingProfilesConfigMap -}}
{{- else if .Values.profiles -}}
{{- include "modelmon.child" (dict "root" . "suffix" "profiles") -}}
{{- end -}}
{{- end -}}

{{- define "modelmon.tokenSecretName" -}}
{{- .Values.auth.existingSecret | default (include "modelmon.child" (dict "root" . "suffix" "token")) -}}
{{- end -}}

{{/*
The sidecar's configuration as the pod runs it (JSON): `config`, with what the pod decides filled
in from the sidecar's own defaults (files/sidecar-defaults.json, generated from its
configuration types): the two ports and the shutdown grace, the upstream (the model's port), and
the token file.
*/}}
{{- define "modelmon.config" -}}
{{- $defaults := .Files.Get "files/sidecar-defaults.json" | fromJson -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- $server := get $cfg "server" | default dict -}}
{{- range $key := list "traffic_port" "admin_port" "shutdown_grace_seconds" -}}
{{- if not (hasKey $server $key) -}}
{{- $_ := set $server $key (index $defaults.server $key) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cfg "server" $server -}}
{{- $upstream := get $cfg "upstream" | default dict -}}
{{- if not (hasKey $upstream "url") -}}
{{- $_ := set $upstream "url" (printf "http://127.0.0.1:%d" (int .Values.model.port)) -}}
{{- end -}}
{{- $_ := set $cfg "upstream" $upstream -}}
{{- if .Values.auth.enabled -}}
{{- $auth := get $cfg "auth" | default dict -}}
{{- $_ := set $auth "token_file" (include "modelmon.tokenPath" .) -}}
{{- $_ := set $cfg "auth" $auth -}}
{{- end -}}
{{- toJson $cfg -}}
{{- end -}}

{{/* The configuration file's text, as the ConfigMap holds it. */}}
{{- define "modelmon.configText" -}}
# rendered by the modelmon Helm chart from .Values.config (check it: modelmon check-config FILE)
{{ include "modelmon.config" . | fromJson | toYaml }}
{{- end -}}

{{/* The pod's terminationGracePeriodSeconds: preStop + the sidecar's drain + 10 s. */}}
{{- define "modelmon.gracePeriod" -}}
{{- $server := (include "modelmon.config" . | fromJson).server -}}
{{- $drain := ceil $server.shutdown_grace_seconds | int -}}
{{- $preStop := int .Values.termination.preStopSeconds -}}
{{- if kindIs "invalid" .Values.termination.gracePeriodSeconds -}}
{{- add $preStop $drain 10 -}}
{{- else -}}
{{- int .Values.termination.gracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/* A preStop pause of termination.preStopSeconds: the sleep action from Kubernetes 1.30, else `sleep` in the container. */}}
{{- define "modelmon.preStop" -}}
{{- $seconds := int .Values.termination.preStopSeconds -}}
{{- if gt $seconds 0 -}}
preStop:
{{- if semverCompare ">=1.30-0" .Capabilities.KubeVersion.Version }}
  sleep:
    seconds: {{ $seconds }}
{{- else }}
  exec:
    command: [sleep, {{ $seconds | quote }}]
{{- end }}
{{- end -}}
{{- end -}}

{{/* The sidecar's container. */}}
{{- define "modelmon.sidecarContainer" -}}
{{- $cfg := include "modelmon.config" . | fromJson -}}
{{- $traffic := int $cfg.server.traffic_port -}}
{{- $admin := int $cfg.server.admin_port -}}
- name: {{ include "modelmon.containerName" . }}
  image: {{ include "modelmon.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - --config
    - {{ printf "%s/%s" (include "modelmon.configDir" .) (include "modelmon.configKey" .) | quote }}
    - --traffic-port
    - {{ $traffic | quote }}
    - --admin-port
    - {{ $admin | quote }}
    {{- if kindIs "invalid" $cfg.upstream.url }}
    - --no-upstream
    {{- else }}
    - --upstream
    - {{ $cfg.upstream.url | quote }}
    {{- end }}
    {{- if .Values.auth.enabled }}
    - --auth-token-file
    - {{ include "modelmon.tokenPath" . | quote }}
    {{- end }}
    {{- range .Values.sidecar.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: MODELMON_SERVER__SHUTDOWN_GRACE_SECONDS
      value: {{ $cfg.server.shutdown_grace_seconds | toString | quote }}
    {{- with .Values.sidecar.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    {{- if not (kindIs "invalid" $cfg.upstream.url) }}
    - name: modelmon-http
      containerPort: {{ $traffic }}
      protocol: TCP
    {{- end }}
    - name: modelmon-admin
      containerPort: {{ $admin }}
      protocol: TCP
  {{- if include "modelmon.native" . }}
  restartPolicy: Always
  {{- end }}
  startupProbe:
    httpGet:
      path: /healthz
      port: {{ $admin }}
    {{- toYaml .Values.sidecar.startupProbe | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: {{ $admin }}
    {{- toYaml .Values.sidecar.livenessProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ $admin }}
    {{- toYaml .Values.sidecar.readinessProbe | nindent 4 }}
  {{- if not (include "modelmon.native" .) }}
  {{- with include "modelmon.preStop" . }}
  lifecycle:
    {{- . | nindent 4 }}
  {{- end }}
  {{- end }}
  resources:
    {{- toYaml .Values.sidecar.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.sidecar.securityContext | nindent 4 }}
  volumeMounts:
    - name: modelmon-config
      mountPath: {{ include "modelmon.configDir" . }}
      readOnly: true
    {{- if include "modelmon.profilesConfigMapName" . }}
    - name: modelmon-profiles
      mountPath: {{ include "modelmon.profilesDir" . }}
      readOnly: true
    {{- end }}
    {{- if .Values.auth.enabled }}
    - name: modelmon-token
      mountPath: {{ include "modelmon.tokenDir" . }}
      readOnly: true
    {{- end }}
    - name: modelmon-tmp
      mountPath: /tmp
    {{- with .Values.sidecar.volumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* The sidecar's volumes. The token is mounted as a directory (not subPath) so that a rotated Secret reaches the file. */}}
{{- define "modelmon.sidecarVolumes" -}}
- name: modelmon-config
  configMap:
    name: {{ include "modelmon.configMapName" . }}
{{- with include "modelmon.profilesConfigMapName" . }}
- name: modelmon-profiles
  configMap:
    name: {{ . }}
{{- end }}
{{- if .Values.auth.enabled }}
- name: modelmon-token
  secret:
    secretName: {{ include "modelmon.tokenSecretName" . }}
    items:
      - key: {{ .Values.auth.secretKey }}
        path: token
    defaultMode: 292 # 0444: only the containers that mount it see it
{{- end }}
- name: modelmon-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- end -}}

{{/* Pod annotations the sidecar adds: the configuration's checksum (a change rolls the pods) and, if asked, scrape annotations. */}}
{{- define "modelmon.podAnnotations" -}}
{{- $cfg := include "modelmon.config" . | fromJson -}}
checksum/modelmon-config: {{ printf "%s%s" (include "modelmon.configText" .) (toJson .Values.profiles) | sha256sum }}
{{- if .Values.monitoring.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ int $cfg.server.admin_port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/*
Settings no single key's schema can refuse, refused with a message saying what to do (the
schema handles everything per key).
*/}}
{{- define "modelmon.validate" -}}
{{- $cfg := include "modelmon.config" . | fromJson -}}
{{- if and .Values.serviceMonitor.enabled .Values.podMonitor.enabled -}}
{{- fail "serviceMonitor.enabled and podMonitor.enabled: enable one of them (both would scrape every sidecar twice)" -}}
{{- end -}}
{{- if and .Values.alertmanagerConfig.enabled (not .Values.alertmanagerConfig.pagerduty.routingKeySecret.name) -}}
{{- fail "alertmanagerConfig.pagerduty.routingKeySecret.name: name the Secret (in the release's namespace) that holds the PagerDuty routing key" -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled (not .Values.service.enabled) -}}
{{- fail "serviceMonitor.enabled needs service.enabled (a ServiceMonitor scrapes a Service); or use podMonitor" -}}
{{- end -}}
{{- if and (eq .Values.mode "attach") (not .Values.attach.name) -}}
{{- fail "attach.name: name the Deployment or InferenceService the sidecar is added to (mode attach)" -}}
{{- end -}}
{{- if and (eq .Values.mode "attach") (not (include "modelmon.podSelector" .)) -}}
{{- fail "attach.selector: give the labels of the Deployment's pods (mode attach, kind Deployment)" -}}
{{- end -}}
{{- if and (include "modelmon.isvc" .) (kindIs "invalid" $cfg.upstream.url) -}}
{{- fail "config.upstream.url: null (receive-only) cannot be attached to an InferenceService: KServe sends its traffic to the sidecar's first port, the proxy" -}}
{{- end -}}
{{- if and .Values.sidecar.native (not (include "modelmon.isvc" .)) (semverCompare "<1.29-0" .Capabilities.KubeVersion.Version) -}}
{{- fail (printf "sidecar.native: native sidecars need Kubernetes >= 1.29 (this cluster: %s); set sidecar.native=false" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if eq (int $cfg.server.traffic_port) (int .Values.model.port) -}}
{{- fail (printf "config.server.traffic_port and model.port are both %d: the sidecar and the model share the pod's network, give them different ports" (int .Values.model.port)) -}}
{{- end -}}
{{- if eq (int $cfg.server.admin_port) (int .Values.model.port) -}}
{{- fail (printf "config.server.admin_port and model.port are both %d: the sidecar and the model share the pod's network, give them different ports" (int .Values.model.port)) -}}
{{- end -}}
{{- if .Values.auth.enabled -}}
{{- with (.Values.config | default dict).auth -}}
{{- if not (kindIs "invalid" .token_file) -}}
{{- fail "config.auth.token_file: the chart sets it when auth.enabled (the token Secret is mounted); set auth.enabled=false to give your own file" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if has "health" (dig "auth" "protect" list $cfg) -}}
{{- fail "config.auth.protect: health would put the kubelet's probes (/healthz, /readyz) behind the token, which they cannot send; protect writes and metrics only" -}}
{{- end -}}
{{- if .Values.existingConfigMap.name -}}
{{- $allowed := dict "server" (list "traffic_port" "admin_port" "shutdown_grace_seconds") "upstream" (list "url") -}}
{{- range $section, $keys := (.Values.config | default dict) -}}
{{- if not (hasKey $allowed $section) -}}
{{- fail (printf "config.%s: with existingConfigMap.name set, the configuration is in that ConfigMap; config may hold only server.traffic_port, server.admin_port, server.shutdown_grace_seconds and upstream.url (passed on the command line)" $section) -}}
{{- end -}}
{{- range $key, $_ := ($keys | default dict) -}}
{{- if not (has $key (get $allowed $section)) -}}
{{- fail (printf "config.%s.%s: with existingConfigMap.name set, the configuration is in that ConfigMap; config may hold only server.traffic_port, server.admin_port, server.shutdown_grace_seconds and upstream.url (passed on the command line)" $section $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not (kindIs "invalid" .Values.termination.gracePeriodSeconds) -}}
{{- $least := add (int .Values.termination.preStopSeconds) (ceil $cfg.server.shutdown_grace_seconds | int) 5 -}}
{{- if lt (int .Values.termination.gracePeriodSeconds) (int $least) -}}
{{- fail (printf "termination.gracePeriodSeconds: %d is too short for termination.preStopSeconds (%d) + the sidecar's server.shutdown_grace_seconds (%v) + 5 s for its analysis queue: give at least %d, or null to have it computed" (int .Values.termination.gracePeriodSeconds) (int .Values.termination.preStopSeconds) $cfg.server.shutdown_grace_seconds (int $least)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* What every scrape of a sidecar does: the job the rules select, the token when /metrics needs it. */}}
{{- define "modelmon.scrapeEndpoint" -}}
{{- $cfg := include "modelmon.config" . | fromJson -}}
path: /metrics
interval: {{ .monitor.interval }}
scrapeTimeout: {{ .monitor.scrapeTimeout }}
relabelings:
  # the generated rules and dashboards select job="{{ .Values.monitoring.job }}"
  - action: replace
    targetLabel: job
    replacement: {{ .Values.monitoring.job | quote }}
{{- if has "metrics" (dig "auth" "protect" list $cfg) }}
authorization:
  type: Bearer
  credentials:
    name: {{ include "modelmon.tokenSecretName" . }}
    key: {{ .Values.auth.secretKey }}
{{- end }}
{{- end -}}

{{/*
Mode attach: the patch that adds the sidecar to the workload. A Deployment takes a strategic
merge patch (containers and volumes merge by name); a KServe InferenceService, a custom
resource, a JSON merge patch, which replaces lists: it adds `containers` and `volumes` to a
predictor that has none (a `model:` predictor).
*/}}
{{- define "modelmon.attachPatch" -}}
{{- $containers := include "modelmon.sidecarContainer" . | fromYamlArray -}}
{{- $volumes := include "modelmon.sidecarVolumes" . | fromYamlArray -}}
{{- $annotations := include "modelmon.podAnnotations" . | fromYaml -}}
{{- $pod := dict "volumes" $volumes "terminationGracePeriodSeconds" (include "modelmon.gracePeriod" . | int) -}}
{{- if .Values.shareProcessNamespace -}}
{{- $_ := set $pod "shareProcessNamespace" true -}}
{{- end -}}
{{- if include "modelmon.isvc" . -}}
{{- $_ := set $pod "containers" $containers -}}
{{- $_ := set $pod "annotations" $annotations -}}
{{- toYaml (dict "spec" (dict "predictor" $pod)) -}}
{{- else -}}
{{- $_ := set $pod (ternary "initContainers" "containers" (eq (include "modelmon.native" .) "true")) $containers -}}
{{- toYaml (dict "spec" (dict "template" (dict "metadata" (dict "annotations" $annotations) "spec" $pod))) -}}
{{- end -}}
{{- end -}}

{{/* Labels as "a=1, b=2". */}}
{{- define "modelmon.labelList" -}}
{{- $out := list -}}
{{- range $k, $v := . }}{{ $out = append $out (printf "%s=%s" $k $v) }}{{ end -}}
{{- join ", " $out -}}
{{- end -}}
