{{/* Chart name, overridable. */}}
{{- define "llm-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-qualified unless the release already carries the chart name. */}}
{{- define "llm-operator.fullname" -}}
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

{{- define "llm-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "llm-operator.labels" -}}
helm.sh/chart: {{ include "llm-operator.chart" . }}
{{ include "llm-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The operator pod's identity; never change it on upgrade (Deployment selectors are immutable). */}}
{{- define "llm-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "llm-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llm-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "llm-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Cluster-wide when no namespaces are listed. */}}
{{- define "llm-operator.clusterWide" -}}
{{- if not .Values.operator.watchNamespaces }}true{{ end }}
{{- end }}

{{/*
Rules on LLMDeployments and the children the operator writes; the same for a ClusterRole
and for each namespace's Role. Exactly what the operator's calls and kopf need
(tests/test_rbac.py derives them): no update (writes are patches), no Secrets, no Pods,
no Services (KubeRay makes those), delete only on HTTPRoutes.
*/}}
{{- define "llm-operator.workloadRules" -}}
# kopf lists and watches them and patches its annotations; the operator reads one on a
# child's event and lists them for the metrics.
- apiGroups: ["llmops.dev"]
  resources: ["llmdeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["llmops.dev"]
  resources: ["llmdeployments/status"]
  verbs: ["patch"]
# The operator reads, creates and patches (server-side apply) them; kopf watches them.
- apiGroups: ["ray.io"]
  resources: ["rayservices", "rayclusters", "rayjobs"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create", "patch"]
# spec.exposure.gateway: the operator reads, creates and patches its HTTPRoute and deletes
# one a spec no longer asks for; kopf watches them. It reads the Gateway the route
# attaches to, for the external URL in status.endpoint.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gateways"]
  verbs: ["get"]
# spec.storage.modelCache.prefetch: the operator reads and creates its download Job and
# deletes the ones of an earlier source (listed by label); kopf watches them.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# kopf posts core Events about the objects it handles.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* kopf's peering object: cluster-scoped for a cluster-wide operator, else one per namespace. kopf watches it and patches its keep-alives. */}}
{{- define "llm-operator.peeringRule" -}}
- apiGroups: ["kopf.dev"]
  resources: [{{ if include "llm-operator.clusterWide" . }}"clusterkopfpeerings"{{ else }}"kopfpeerings"{{ end }}]
  verbs: ["list", "watch", "patch"]
{{- end }}

{{/* Failures that the schema cannot express. */}}
{{- define "llm-operator.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.peering.enabled) }}
{{- fail "operator.replicas > 1 needs peering.enabled=true: without kopf peering, replicas would reconcile the same objects at once" }}
{{- end }}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "serviceAccount.create=false needs serviceAccount.name: the operator must not run as the namespace's default service account" }}
{{- end }}
{{- end }}

{{/* kopf's liveness endpoint inside the pod; not a value: nothing outside the pod uses it. */}}
{{- define "llm-operator.livenessPort" -}}8080{{- end }}

{{/* Where PodMonitors look for Ray pods: everywhere the operator watches. */}}
{{- define "llm-operator.monitoredNamespaces" -}}
{{- if include "llm-operator.clusterWide" . }}
any: true
{{- else }}
matchNames:
  {{- toYaml .Values.operator.watchNamespaces | nindent 2 }}
{{- end }}
{{- end }}
