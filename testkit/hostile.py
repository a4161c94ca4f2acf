"""Hostile LLMDeployment specs that must be refused, each with the field the refusal
must name: the same table for the operator's validation (tests/test_security_render.py,
through the CLI's models) and for the API server's admission (e2e/test_security.py), so
both layers give the same verdicts. Each edit changes the quick-start sample in place.

Also the hostile values both layers admit (environment, labels, annotations and engine
args aimed at the operator's and KubeRay's internals), whose children both suites check.
"""

from __future__ import annotations

from llm_operator.render import names
from testkit.edits import (
    Body,
    Edit,
    set_cache,
    set_checkpoints,
    set_cluster,
    set_env,
    set_name,
    set_source,
)

# A value that would add fields if it were spliced into YAML or JSON text.
INJECTION = "a\nhostNetwork: true\nprivileged: true"
JSON_INJECTION = '"}, "hostNetwork": true, "x": {"'

# Admitted: environment entries named like what the operator, KubeRay and Ray set.
INTERNAL_ENV: list[Body] = [
    {"name": "KUBERAY_GEN_RAY_START_CMD", "value": "sh -c 'cat /etc/shadow'"},
    {"name": "RAY_ADDRESS", "value": "evil.example:6379"},
    {"name": "KUBERNETES_SERVICE_HOST", "value": "evil.example"},
    {"name": "LD_PRELOAD", "value": "/tmp/x.so"},
    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    {"name": "INJECTED", "value": INJECTION},
    {"name": "JSON", "value": JSON_INJECTION},
]
BIG_ENV: Body = {"name": "BIG", "value": "ü" * 32768}
# Admitted: pod labels and annotations named like internal ones.
HOSTILE_LABELS: dict[str, str] = {
    "kubernetes.io/metadata.name": "kube-system",
    "node-role.kubernetes.io/control-plane": "",
    names.MANAGED_BY_LABEL: "Helm",
    names.DEPLOYMENT_LABEL: "victim",
    "hostNetwork": "true",
}
HOSTILE_ANNOTATIONS: dict[str, str] = {
    "kubernetes.io/psp": "privileged",
    "ray.io/overwrite-container-cmd": "true",
    "ray.io/ft-enabled": "true",
    "hostNetwork": "true",
    "injected": INJECTION,
    "json": JSON_INJECTION,
    "unicode": "🔥" * 4096,
}


def set_engine_args(body: Body) -> None:
    """Admitted: engine args that would add fields if spliced into the Serve config text."""
    body["spec"]["engine"]["args"] = {
        INJECTION: JSON_INJECTION,
        "runtime_env": {"env_vars": {"LD_PRELOAD": "/tmp/x.so"}},
    }


REFUSED: dict[str, tuple[Edit, str]] = {
    "hf-token-from-other-secret": (
        set_env({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
        "spec.rayCluster.env",
    ),
    "hf-token-literal": (set_env({"name": "HF_TOKEN", "value": "hf_x"}), "spec.rayCluster.env"),
    "hf-home": (set_env({"name": "HF_HOME", "value": "/"}), "spec.rayCluster.env"),
    "env-secret-in-other-namespace": (
        set_env(
            {
                "name": "STOLEN",
                "valueFrom": {
                    "secretKeyRef": {"name": "admin", "key": "token", "namespace": "kube-system"}
                },
            }
        ),
        "spec.rayCluster.env[0].valueFrom.secretKeyRef.namespace",
    ),
    "env-value-and-secret": (
        set_env({"name": "X", "value": "v", "valueFrom": {"fieldRef": {"fieldPath": "spec"}}}),
        "spec.rayCluster.env[0]",
    ),
    "env-two-sources": (
        set_env(
            {
                "name": "X",
                "valueFrom": {
                    "secretKeyRef": {"name": "s", "key": "k"},
                    "fieldRef": {"fieldPath": "metadata.namespace"},
                },
            }
        ),
        "spec.rayCluster.env[0].valueFrom",
    ),
    "env-name-injection": (
        set_env({"name": INJECTION, "value": "v"}),
        "spec.rayCluster.env[0].name",
    ),
    "env-name-unicode": (set_env({"name": "TÖKEN", "value": "v"}), "spec.rayCluster.env[0].name"),
    "env-value-too-long": (
        set_env({"name": "BIG", "value": "x" * 32769}),
        "spec.rayCluster.env[0].value",
    ),
    # A Secret's name or key is never a path or namespace/name: secretKeyRef has no
    # namespace to aim at, and the Pod API would refuse every pod.
    "env-secret-name-with-slash": (
        set_env(
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "kube-system/admin", "key": "k"}}}
        ),
        "spec.rayCluster.env[0].valueFrom.secretKeyRef.name",
    ),
    "env-secret-key-traversal": (
        set_env({"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "../token"}}}),
        "spec.rayCluster.env[0].valueFrom.secretKeyRef.key",
    ),
    "ray-pod-label": (
        set_cluster("podLabels", {"ray.io/cluster": "victim"}),
        "spec.rayCluster.podLabels",
    ),
    "label-value-too-long": (
        set_cluster("podLabels", {"team": "x" * 64}),
        "spec.rayCluster.podLabels.team",
    ),
    "label-value-injection": (
        set_cluster("podLabels", {"team": "a\nhostNetwork: true"}),
        "spec.rayCluster.podLabels.team",
    ),
    "label-key-injection": (
        set_cluster("podLabels", {"a\nhostNetwork": "true"}),
        "spec.rayCluster.podLabels",
    ),
    "annotation-key-injection": (
        set_cluster("podAnnotations", {"a\nhostNetwork": "true"}),
        "spec.rayCluster.podAnnotations",
    ),
    "node-selector-injection": (
        lambda body: body["spec"]["accelerator"].update(nodeSelector={"gpu": "L4\nx: y"}),
        "spec.accelerator.nodeSelector.gpu",
    ),
    "service-account-of-another-namespace": (
        set_cluster("serviceAccountName", "system:serviceaccount:kube-system:admin"),
        "spec.rayCluster.serviceAccountName",
    ),
    "existing-claim-other-namespace": (
        set_cache(existingClaim="kube-system/etcd-data"),
        "spec.storage.modelCache.existingClaim",
    ),
    "existing-claim-traversal": (
        set_checkpoints(existingClaim="../../etc"),
        "spec.storage.checkpoints.existingClaim",
    ),
    "negative-memory": (
        set_cluster("head", {"resources": {"limits": {"memory": "-1Gi"}}}),
        "spec.rayCluster.head.resources.limits.memory",
    ),
    "apparmor-unconfined": (
        set_cluster(
            "podAnnotations",
            {"container.apparmor.security.beta.kubernetes.io/ray-worker": "unconfined"},
        ),
        "spec.rayCluster.podAnnotations",
    ),
    "seccomp-unconfined-pod": (
        set_cluster("podAnnotations", {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}),
        "spec.rayCluster.podAnnotations",
    ),
    "seccomp-unconfined-container": (
        set_cluster(
            "podAnnotations",
            {"container.seccomp.security.alpha.kubernetes.io/autoscaler": "unconfined"},
        ),
        "spec.rayCluster.podAnnotations",
    ),
    "pvc-source-parent": (set_source("pvc://../etc"), "spec.model.source"),
    "pvc-source-no-claim": (set_source("pvc:///etc/shadow"), "spec.model.source"),
    "pvc-source-namespaced-claim": (set_source("pvc://kube-system:claim/x"), "spec.model.source"),
    # pvc://<claim>/<path>: a path that climbs out of the claim's mount is refused, whatever
    # the claim's name suggests.
    "pvc-source-other-namespace-traversal": (
        set_source("pvc://other-ns/../../claim"),
        "spec.model.source",
    ),
    "pvc-source-path-traversal": (set_source("pvc://models/../../etc/shadow"), "spec.model.source"),
    "pvc-source-to-service-account-token": (
        set_source("pvc://models/../../var/run/secrets/kubernetes.io/serviceaccount"),
        "spec.model.source",
    ),
    "pvc-source-parent-at-end": (set_source("pvc://models/qwen/.."), "spec.model.source"),
    "pvc-source-dot-segments": (set_source("pvc://models/./././qwen"), "spec.model.source"),
    "pvc-source-absolute-path": (set_source("pvc://models//etc/shadow"), "spec.model.source"),
    "pvc-source-backslashes": (set_source("pvc://models/..\\..\\etc"), "spec.model.source"),
    "pvc-source-percent-encoded": (
        set_source("pvc://models/%2e%2e/%2e%2e/etc"),
        "spec.model.source",
    ),
    "pvc-source-injection": (
        set_source("pvc://models/qwen\nhostNetwork: true"),
        "spec.model.source",
    ),
    "hf-source-traversal": (set_source("hf://../../"), "spec.model.source"),
    "hf-source-path-after-id": (set_source("hf://org/repo/../../etc"), "spec.model.source"),
    "hf-source-three-names": (set_source("hf://a/b/c"), "spec.model.source"),
    "s3-source-key-traversal": (set_source("s3://bucket/models/../../x"), "spec.model.source"),
    "gs-source-key-traversal": (set_source("gs://bucket/../other"), "spec.model.source"),
    "revision-traversal": (
        lambda body: body["spec"]["model"].update(revision="../../../../tmp/x"),
        "spec.model.revision",
    ),
    "file-source": (set_source("file:///etc/passwd"), "spec.model.source"),
    "hostpath-source": (set_source("hostpath:///var/lib/kubelet"), "spec.model.source"),
    "source-injection": (set_source("hf://org/model\nhostNetwork: true"), "spec.model.source"),
    "relative-mount-path": (set_cache(mountPath="../../etc"), "spec.storage.modelCache.mountPath"),
    "mount-path-with-colon": (
        set_cache(mountPath="/models:/host"),
        "spec.storage.modelCache.mountPath",
    ),
    "mount-at-root": (set_cache(mountPath="/.."), "spec.storage.modelCache.mountPath"),
    "mount-path-traversal": (
        set_cache(mountPath="/models/../var/run/secrets/kubernetes.io/serviceaccount"),
        "spec.storage.modelCache.mountPath",
    ),
    "checkpoints-mount-traversal": (
        set_checkpoints(mountPath="/ckpt/../.."),
        "spec.storage.checkpoints.mountPath",
    ),
    "host-network-field": (set_cluster("hostNetwork", True), "spec.rayCluster.hostNetwork"),
    "volumes-field": (
        set_cluster("volumes", [{"name": "host", "hostPath": {"path": "/"}}]),
        "spec.rayCluster.volumes",
    ),
    "security-context-field": (
        set_cluster("head", {"securityContext": {"privileged": True}}),
        "spec.rayCluster.head.securityContext",
    ),
    "pod-template-field": (
        set_cluster("worker", {"template": {"spec": {"hostPID": True}}}),
        "spec.rayCluster.worker.template",
    ),
    "name-unicode": (set_name("llm-ünïcode"), "metadata.name"),
    "name-with-namespace": (set_name("kube-system/llm"), "metadata.name"),
}
