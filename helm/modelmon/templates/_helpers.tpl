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
app.kubernetes.io/name: {{ include "modelmon.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end -}}

{{/*
Labels from several sources as one mapping (a key written twice is a YAML error for kustomize,
Flux's post-renderers and other strict readers, and Helm itself keeps the last one silently):
the chart's own, then each of `extra` (a list of [value name, labels]) over them in order. The
selector labels and managed-by are the chart's: a source giving them another value is refused,
as the Deployment's selector, the ServiceMonitor and Helm's ownership depend on them.
*/}}
{{- define "modelmon.labelsFrom" -}}
{{- $root := .root -}}
{{- $fixed := include "modelmon.selectorLabels" $root | fromYaml -}}
{{- $_ := set $fixed "app.kubernetes.io/managed-by" $root.Release.Service -}}
{{- $out := dict -}}
{{- if not .podOnly -}}
{{- $out = dict "helm.sh/chart" (include "modelmon.chart" $root) "app.kubernetes.io/version" (toString $root.Chart.AppVersion) "app.kubernetes.io/part-of" "modelmon" -}}
{{- end -}}
{{- range $source := .extra -}}
{{- $from := index $source 0 -}}
{{- range $key, $value := (index $source 1 | default dict) -}}
{{- if and (hasKey $fixed $key) (ne (toString $value) (get $fixed $key)) -}}
{{- fail (printf "%s.%s: the chart sets this label to %q (the Deployment's selector, the ServiceMonitor and Helm depend on it); remove it" $from $key (get $fixed $key)) -}}
{{- end -}}
{{- $_ := set $out $key (toString $value) -}}
{{- end -}}
{{- end -}}
{{- if .podOnly -}}
{{- $_ := unset $fixed "app.kubernetes.io/managed-by" -}}
{{- end -}}
{{- toYaml (merge $fixed $out) -}}
{{- end -}}

{{/* The labels of every resource the chart creates: its own and commonLabels. */}}
{{- define "modelmon.labels" -}}
{{- include "modelmon.labelsFrom" (dict "root" . "extra" (list (list "commonLabels" .Values.commonLabels))) -}}
{{- end -}}

{{/* The same with more sources over them: (dict "root" . "extra" (list (list "NAME" MAP) ...)). */}}
{{- define "modelmon.labelsWith" -}}
{{- include "modelmon.labelsFrom" (dict "root" .root "extra" (prepend .extra (list "commonLabels" .root.Values.commonLabels))) -}}
{{- end -}}

{{/* The pod template's labels: the selector labels and podLabels. */}}
{{- define "modelmon.podLabels" -}}
{{- include "modelmon.labelsFrom" (dict "root" . "podOnly" true "extra" (list (list "podLabels" .Values.podLabels))) -}}
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

{{/*
The model container's resources and readiness probe: the values, or, for the demo model in the
sidecar's image (model.image.repository empty) when they are empty, the demo's own. They are not
defaults in values.yaml because Helm merges given maps into default ones: a default memory limit
would stay under a larger request, a default httpGet beside a tcpSocket probe.
*/}}
{{- define "modelmon.modelResources" -}}
{{- if or .Values.model.resources .Values.model.image.repository -}}
{{- toJson (.Values.model.resources | default dict) -}}
{{- else -}}
{{- toJson (dict "requests" (dict "cpu" "100m" "memory" "128Mi") "limits" (dict "memory" "256Mi")) -}}
{{- end -}}
{{- end -}}

{{- define "modelmon.modelReadinessProbe" -}}
{{- if or .Values.model.readinessProbe .Values.model.image.repository -}}
{{- toJson (.Values.model.readinessProbe | default dict) -}}
{{- else -}}
{{- toJson (dict "httpGet" (dict "path" "/v2/health/ready" "port" "model") "periodSeconds" 5) -}}
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

{{/*
A number as the sidecar reads it (YAML 1.1, PyYAML): Go writes floats in the shortest form, which
has no decimal point in exponent notation (1e-05, 1e+21); YAML 1.1 reads that as a string, and
the sidecar refuses it. A point is added (1.0e-05), which every YAML reads as the same float.
*/}}
{{- define "modelmon.number" -}}
{{- $text := printf "%v" . -}}
{{- if include "modelmon.wholeNumber" . -}}
{{- $text = printf "%d" (int64 .) -}}
{{- else if and (kindIs "float64" .) (regexMatch "^[-+]?[0-9]+e[-+][0-9]+$" $text) -}}
{{- $text = regexReplaceAll "^([-+]?[0-9]+)e" $text "${1}.0e" -}}
{{- end -}}
{{- $text -}}
{{- end -}}

{{/* "true" for a float with no fraction that an int64 holds: written as an integer (JSON and toYaml do). */}}
{{- define "modelmon.wholeNumber" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) (lt . 1e18) (gt . -1e18) }}true{{ end -}}
{{- end -}}

{{/*
A value (dict "v" X) with every float that Go would write without a decimal point replaced by a
marker string that modelmon.configText turns back into the number as modelmon.number writes it
(as JSON: {"v": ...}).
*/}}
{{- define "modelmon.markFloats" -}}
{{- $v := .v -}}
{{- if kindIs "map" $v -}}
{{- $out := dict -}}
{{- range $key, $item := $v -}}
{{- $_ := set $out $key (include "modelmon.markFloats" (dict "v" $item) | fromJson).v -}}
{{- end -}}
{{- toJson (dict "v" $out) -}}
{{- else if kindIs "slice" $v -}}
{{- $out := list -}}
{{- range $item := $v -}}
{{- $out = append $out (include "modelmon.markFloats" (dict "v" $item) | fromJson).v -}}
{{- end -}}
{{- toJson (dict "v" $out) -}}
{{- else if and (kindIs "float64" $v) (regexMatch "^[-+]?[0-9]+e" (printf "%v" $v)) (not (include "modelmon.wholeNumber" $v)) -}}
{{- toJson (dict "v" (printf "__modelmon_float__%s__" (include "modelmon.number" $v))) -}}
{{- else -}}
{{- toJson (dict "v" $v) -}}
{{- end -}}
{{- end -}}

{{/* The configuration file's text, as the ConfigMap holds it. */}}
{{- define "modelmon.configText" -}}
{{- $marked := (include "modelmon.markFloats" (dict "v" (include "modelmon.config" . | fromJson)) | fromJson).v -}}
# rendered by the modelmon Helm chart from .Values.config (check it: modelmon check-config FILE)
{{ regexReplaceAll "__modelmon_float__([-+.0-9e]+)__" (toYaml $marked) "${1}" }}
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
- name: {{ include "modelmon.containerName" . | quote }}
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
      value: {{ include "modelmon.number" $cfg.server.shutdown_grace_seconds | quote }}
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
    name: {{ include "modelmon.configMapName" . | quote }}
{{- with include "modelmon.profilesConfigMapName" . }}
- name: modelmon-profiles
  configMap:
    name: {{ . | quote }}
{{- end }}
{{- if .Values.auth.enabled }}
- name: modelmon-token
  secret:
    secretName: {{ include "modelmon.tokenSecretName" . | quote }}
    items:
      - key: {{ .Values.auth.secretKey | quote }}
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

{{/* A Kubernetes quantity (2, 500m, 1.5Gi, 1e3) as a plain number, or "" when it is not one. */}}
{{- define "modelmon.quantity" -}}
{{- $text := toString . -}}
{{- $number := regexFind "^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)" $text -}}
{{- $suffix := trimPrefix $number $text -}}
{{- $factors := dict "" 1 "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624 "Ei" 1152921504606846976 -}}
{{- if and $number (hasKey $factors $suffix) -}}
{{- mulf (float64 $number) (get $factors $suffix) -}}
{{- else if and $number (regexMatch "^[eE][-+]?[0-9]+$" $suffix) -}}
{{- mulf (float64 $number) (float64 (printf "1%s" $suffix)) -}}
{{- end -}}
{{- end -}}

{{/* Refuses a container's request above its limit (Helm merges given requests into default limits). */}}
{{- define "modelmon.checkResources" -}}
{{- $requests := .resources.requests | default dict -}}
{{- $limits := .resources.limits | default dict -}}
{{- range $name, $request := $requests -}}
{{- if hasKey $limits $name -}}
{{- $want := include "modelmon.quantity" $request -}}
{{- $most := include "modelmon.quantity" (get $limits $name) -}}
{{- if and $want $most (gt (float64 $want) (float64 $most)) -}}
{{- fail (printf "%s.resources: requests.%s (%v) is above limits.%s (%v), which Kubernetes refuses; raise the limit too (or set limits.%s: null to drop it)" $.what $name $request $name (get $limits $name) $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Settings no single key's schema can refuse, refused with a message saying what to do (the
schema handles everything per key).
*/}}
{{- define "modelmon.validate" -}}
{{- $cfg := include "modelmon.config" . | fromJson -}}
{{- include "modelmon.checkResources" (dict "what" "sidecar" "resources" .Values.sidecar.resources) -}}
{{- if eq .Values.mode "deployment" -}}
{{- include "modelmon.checkResources" (dict "what" "model" "resources" (include "modelmon.modelResources" . | fromJson)) -}}
{{- end -}}
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
{{- /* what the pod is built around is decided by the chart, from config: not by extra flags or variables */ -}}
{{- $managed := dict "--config" "existingConfigMap" "--upstream" "config.upstream.url" "--no-upstream" "config.upstream.url: null" "--host" "config.server.host" "--traffic-port" "config.server.traffic_port" "--admin-port" "config.server.admin_port" "--auth-token-file" "auth.enabled or config.auth.token_file" "--model" "config.models" -}}
{{- range $arg := .Values.sidecar.extraArgs -}}
{{- $flag := regexReplaceAll "=.*$" $arg "" -}}
{{- if regexMatch "^-c" $arg -}}
{{- fail (printf "sidecar.extraArgs: %s sets the configuration file, which the chart passes (existingConfigMap for a file of your own)" $arg) -}}
{{- end -}}
{{- if and (hasPrefix "--" $flag) (gt (len $flag) 2) -}}
{{- range $name, $instead := $managed -}}
{{- if hasPrefix $flag $name -}}
{{- fail (printf "sidecar.extraArgs: %s (modelmon serve's %s) sets what the chart builds the pod around (probes, ports, Service, token, drain); set %s instead" $arg $name $instead) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $chartKeys := list "server.traffic_port" "server.admin_port" "server.shutdown_grace_seconds" "server.host" "upstream.url" "auth.token_file" "auth.protect" -}}
{{- range $env := .Values.sidecar.env -}}
{{- if hasPrefix "MODELMON_" $env.name -}}
{{- $path := trimPrefix "MODELMON_" $env.name | lower | replace "__" "." -}}
{{- if eq $path "config" -}}
{{- fail "sidecar.env: MODELMON_CONFIG names the configuration file, which the chart passes (existingConfigMap for a file of your own)" -}}
{{- end -}}
{{- range $key := $chartKeys -}}
{{- if or (eq $path $key) (hasPrefix (printf "%s." $path) $key) -}}
{{- fail (printf "sidecar.env: %s overrides %s, which the chart builds the pod around (probes, ports, token, drain, the grace period); set config.%s instead" $env.name $key $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (not (kindIs "invalid" (dig "drift" "effect_threshold" nil $cfg))) (ne (toString (dig "drift" "numeric_method" "auto" $cfg)) "auto") -}}
{{- fail "config.drift.effect_threshold: is a rule of the auto verdict, and the sidecar refuses to start with another numeric_method; set config.drift.numeric_method: auto, or remove effect_threshold" -}}
{{- end -}}
{{- if eq (int $cfg.server.traffic_port) (int $cfg.server.admin_port) -}}
{{- fail (printf "config.server.traffic_port and config.server.admin_port are both %d: the sidecar refuses to start; give them different ports" (int $cfg.server.admin_port)) -}}
{{- end -}}
{{- with (dig "server" "host" "" $cfg) -}}
{{- if regexMatch `^(127[.]|localhost$|\[?(0*:)+0*1\]?$)` (lower (toString .)) -}}
{{- fail (printf "config.server.host: %s is the loopback interface, which the kubelet's probes, Prometheus and the Service cannot reach (they use the pod's IP); leave it unset (0.0.0.0) or use :: for IPv6" (toString .)) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.service.enabled (not (include "modelmon.isvc" .)) (eq (int .Values.service.port) (int .Values.service.adminPort)) -}}
{{- fail (printf "service.port and service.adminPort are both %d: a Service's ports must differ" (int .Values.service.port)) -}}
{{- end -}}
{{- with (dig "auth" "protect" list $cfg) -}}
{{- if not (has "writes" .) -}}
{{- fail "config.auth.protect: must include writes (the push API is what the token is for); the sidecar refuses to start otherwise" -}}
{{- end -}}
{{- end -}}
{{- if and (has "metrics" (dig "auth" "protect" list $cfg)) (not $.Values.auth.enabled) -}}
{{- fail "config.auth.protect: metrics with auth.enabled=false: the ServiceMonitor or PodMonitor sends the token from the chart's Secret (or auth.existingSecret), mounted only with auth.enabled; enable auth, or leave /metrics open" -}}
{{- end -}}
{{- $process := dig "resources" "process_name" "" $cfg | default (dig "resources" "pid_file" "" $cfg) -}}
{{- if and $process (not .Values.shareProcessNamespace) -}}
{{- fail "config.resources.process_name or pid_file: the sidecar sees the model's process only in a shared process namespace; set shareProcessNamespace=true" -}}
{{- end -}}
{{- if and .Values.profiles .Values.existingProfilesConfigMap -}}
{{- fail "profiles and existingProfilesConfigMap: give the reference profiles one way (profiles would be ignored)" -}}
{{- end -}}
{{- if gt (float64 $cfg.server.shutdown_grace_seconds) 1e9 -}}
{{- fail "config.server.shutdown_grace_seconds: longer than a pod's grace period can be (at most 1e9 s here)" -}}
{{- end -}}
{{- if or .Values.prometheusRule.enabled .Values.dashboards.enabled -}}
{{- $selects := printf "job=%q" .Values.monitoring.job -}}
{{- if not (contains $selects (.Files.Get "files/rules/modelmon.rules.yml")) -}}
{{- fail (printf "monitoring.job: %q is not the job the rules and dashboards the chart ships select, so they would never see these sidecars; keep the default, or load rules and dashboards generated for it (modelmon mixin --config) with prometheusRule.enabled=false and dashboards.enabled=false" .Values.monitoring.job) -}}
{{- end -}}
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
interval: {{ .monitor.interval | quote }}
scrapeTimeout: {{ .monitor.scrapeTimeout | quote }}
relabelings:
  # the generated rules and dashboards select job="{{ .Values.monitoring.job }}"
  - action: replace
    targetLabel: job
    replacement: {{ .Values.monitoring.job | quote }}
{{- if has "metrics" (dig "auth" "protect" list $cfg) }}
authorization:
  type: Bearer
  credentials:
    name: {{ include "modelmon.tokenSecretName" . | quote }}
    key: {{ .Values.auth.secretKey | quote }}
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

{{/* An integer (printed as one: Helm reads numbers as floats, written 1e+06 from a million) or a string such as 25%. */}}
{{- define "modelmon.intOrString" -}}
{{- if kindIs "string" . }}{{ . | quote }}{{ else }}{{ . | int64 }}{{ end -}}
{{- end -}}

{{/* Labels as "a=1, b=2". */}}
{{- define "modelmon.labelList" -}}
{{- $out := list -}}
{{- range $k, $v := . }}{{ $out = append $out (printf "%s=%s" $k $v) }}{{ end -}}
{{- join ", " $out -}}
{{- end -}}
