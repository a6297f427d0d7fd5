{{/* Chart name, shortened to fit a DNS label. */}}
{{- define "kosmos-vc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every object name: the release name, plus the chart name unless the release
name already contains it. `helm install kosmos-vc` gives `kosmos-vc`, so the controller's
ServiceAccount is `kosmos-vc-controller`, the identity vc-webhook trusts by default.
Trimmed to 45 characters so `-webhook-tls` and friends still fit 63.
*/}}
{{- define "kosmos-vc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kosmos-vc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "kosmos-vc.labels" -}}
helm.sh/chart: {{ include "kosmos-vc.chart" . }}
app.kubernetes.io/name: {{ include "kosmos-vc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kosmos-vc
{{- end }}

{{/* Selector labels of one component; call with (dict "root" $ "component" "webhook"). */}}
{{- define "kosmos-vc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kosmos-vc.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of one component's objects; same argument as selectorLabels. */}}
{{- define "kosmos-vc.componentLabels" -}}
{{ include "kosmos-vc.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "kosmos-vc.controller.name" -}}
{{- printf "%s-controller" (include "kosmos-vc.fullname" .) }}
{{- end }}

{{/* The fixed ClusterRole every tenant's vc-clustertree is bound to in its workload
namespace; the controller may only bind it. */}}
{{- define "kosmos-vc.clustertree.clusterRoleName" -}}
{{- printf "%s-clustertree" (include "kosmos-vc.fullname" .) }}
{{- end }}

{{- define "kosmos-vc.webhook.name" -}}
{{- printf "%s-webhook" (include "kosmos-vc.fullname" .) }}
{{- end }}

{{/* Secret the webhook serves TLS from, whatever the TLS mode. */}}
{{- define "kosmos-vc.webhook.tlsSecretName" -}}
{{- if eq .Values.webhook.tls.mode "secret" }}
{{- required "webhook.tls.secret.name is required when webhook.tls.mode is \"secret\": name an existing kubernetes.io/tls Secret in the release namespace" .Values.webhook.tls.secret.name }}
{{- else }}
{{- printf "%s-webhook-tls" (include "kosmos-vc.fullname" .) }}
{{- end }}
{{- end }}

{{/* DNS names the webhook Service answers to; the serving certificate must cover them. */}}
{{- define "kosmos-vc.webhook.dnsNames" -}}
{{- $service := include "kosmos-vc.webhook.name" . }}
{{- $namespace := .Release.Namespace }}
{{- list $service (printf "%s.%s" $service $namespace) (printf "%s.%s.svc" $service $namespace) (printf "%s.%s.svc.%s" $service $namespace .Values.controller.clusterDomain) | toJson }}
{{- end }}

{{- define "kosmos-vc.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
A Kubernetes quantity from a value that is either a string ("64", "500m", "100Gi") or a
number. Whole numbers are printed as integers: Helm may read YAML numbers as floats, and
"1e+08" is not what an operator means by 100000000.
*/}}
{{- define "kosmos-vc.quantity" -}}
{{- if kindIs "string" . }}{{ . }}{{ else if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- end }}

{{/* The securityContext both containers run with. */}}
{{- define "kosmos-vc.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "kosmos-vc.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* A probe; call with (dict "path" "/healthz" "port" "probes" "scheme" "HTTP" "timing" .Values.x.livenessProbe). */}}
{{- define "kosmos-vc.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
  scheme: {{ .scheme }}
{{- toYaml .timing | nindent 0 }}
{{- end }}
