"""Defaulting of ``PodSpec`` and everything inside it (core/v1).

Upstream generates one covering defaulter per top-level kind
(``SetObjectDefaults_Pod``, ``SetObjectDefaults_Deployment``, ...); for every pod
spec they all run the same walk, which lives here:

    SetDefaults_PodSpec  -> volumes (SetDefaults_Volume + per-source defaulters)
                         -> initContainers, containers, ephemeralContainers
                            (SetDefaults_Container, ports, env fieldRef,
                             resources, probes, lifecycle handlers)
                         -> overhead (resource list)

Only a *Pod* additionally gets ``SetDefaults_Pod`` (`pod_defaults`): requests copied
from limits, ``enableServiceLinks: true``, host ports under ``hostNetwork``. That is
why a Deployment's template never shows ``enableServiceLinks`` while its pods do.

We also reproduce the one visible effect of upstream's v1 <-> internal PodSpec
conversion: ``serviceAccount`` is an alias that always mirrors ``serviceAccountName``.
"""

from __future__ import annotations

import re

from kubeling.api.defaults._util import child, dicts, resource_list, set_ptr, set_zero

TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_SCHEDULER = "default-scheduler"
DEFAULT_TERMINATION_GRACE_PERIOD = 30
DEFAULT_MODE = 0o644  # 420: configMap/secret/downwardAPI/projected volumes
TOKEN_EXPIRATION_SECONDS = 3600

# --- image references (distribution/reference grammar), to find the tag ---------------
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^((?:{_DOMAIN}/)?{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*)"
    r"(?::([\w][\w.-]{0,127}))?"
    r"(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)
_HEX64 = re.compile(r"^[a-f0-9]{64}$")


def image_tag(image: str) -> str:
    """The tag kubelet would pull, as ``parsers.ParseImageName`` finds it.

    "latest" when the reference has neither tag nor digest; "" when it has only a
    digest or does not parse (upstream ignores the error and treats it as untagged).
    """
    if not isinstance(image, str) or _HEX64.match(image):
        return ""
    # splitDockerDomain: the first component is a registry host only if it looks like one.
    first, slash, rest = image.partition("/")
    looks_like_host = "." in first or ":" in first or first == "localhost" or first.lower() != first
    remote = rest if slash and looks_like_host else image
    if remote.split(":", 1)[0].lower() != remote.split(":", 1)[0]:
        return ""  # "repository name must be lowercase"
    m = _REFERENCE.match(image)
    if not m or len(m.group(1)) > 255:
        return ""
    tag, digest = m.group(2), m.group(3)
    if not tag and not digest:
        return "latest"
    return tag or ""


def pull_policy_for(image: str) -> str:
    return "Always" if image_tag(image) == "latest" else "IfNotPresent"


# --- containers --------------------------------------------------------------------------
def _http_get(action: dict | None) -> None:
    if action is not None:
        set_zero(action, "path", "/")
        set_zero(action, "scheme", "HTTP")


def _probe(probe: dict | None) -> None:
    if probe is None:
        return
    set_zero(probe, "timeoutSeconds", 1)
    set_zero(probe, "periodSeconds", 10)
    set_zero(probe, "successThreshold", 1)
    set_zero(probe, "failureThreshold", 3)
    _http_get(child(probe, "httpGet"))
    grpc = child(probe, "grpc")
    if grpc is not None:
        set_ptr(grpc, "service", "")  # +default="" on a *string


def _field_ref(ref: dict | None) -> None:
    """``SetDefaults_ObjectFieldSelector``."""
    if ref is not None:
        set_zero(ref, "apiVersion", "v1")


def container_defaults(c: dict) -> None:
    """``SetDefaults_Container`` plus the generated walk over a container's parts."""
    if not c.get("imagePullPolicy"):
        c["imagePullPolicy"] = pull_policy_for(c.get("image") or "")
    set_zero(c, "terminationMessagePath", TERMINATION_MESSAGE_PATH)
    set_zero(c, "terminationMessagePolicy", "File")
    for port in dicts(c, "ports"):
        set_zero(port, "protocol", "TCP")
    for env in dicts(c, "env"):
        _field_ref(child(child(env, "valueFrom"), "fieldRef"))
    # ResourceRequirements is a value-typed struct: Go always writes "resources: {}".
    resources = child(c, "resources", create=True)
    if resources is not None:
        resource_list(resources, "limits")
        resource_list(resources, "requests")
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(child(c, name))
    lifecycle = child(c, "lifecycle")
    for hook in ("postStart", "preStop"):
        _http_get(child(child(lifecycle, hook), "httpGet"))


# --- volumes -----------------------------------------------------------------------------
def _default_mode(src: dict | None) -> None:
    if src is not None:
        set_ptr(src, "defaultMode", DEFAULT_MODE)


def iscsi_defaults(src: dict | None) -> None:
    if src is not None:
        set_zero(src, "iscsiInterface", "default")


def rbd_defaults(src: dict | None) -> None:
    if src is not None:
        set_zero(src, "pool", "rbd")
        set_zero(src, "user", "admin")
        set_zero(src, "keyring", "/etc/ceph/keyring")


def azure_disk_defaults(src: dict | None) -> None:
    if src is not None:
        set_ptr(src, "cachingMode", "ReadWrite")
        set_ptr(src, "kind", "Shared")
        set_ptr(src, "fsType", "ext4")
        set_ptr(src, "readOnly", False)


def scale_io_defaults(src: dict | None) -> None:
    if src is not None:
        set_zero(src, "storageMode", "ThinProvisioned")
        set_zero(src, "fsType", "xfs")


def host_path_defaults(src: dict | None) -> None:
    if src is not None:
        set_ptr(src, "type", "")  # HostPathUnset


def pvc_spec_defaults(spec: dict | None) -> None:
    """``SetDefaults_PersistentVolumeClaimSpec`` + its resource lists."""
    if spec is None:
        return
    set_ptr(spec, "volumeMode", "Filesystem")
    # VolumeResourceRequirements is value-typed: always serialized.
    resources = child(spec, "resources", create=True)
    if resources is not None:
        resource_list(resources, "limits")
        resource_list(resources, "requests")


def volume_defaults(v: dict) -> None:
    """``SetDefaults_Volume`` and the per-source defaulters."""
    if not any(val is not None for key, val in v.items() if key != "name"):
        v["emptyDir"] = {}  # a volume with no source is an emptyDir
    host_path_defaults(child(v, "hostPath"))
    _default_mode(child(v, "secret"))
    _default_mode(child(v, "configMap"))
    iscsi_defaults(child(v, "iscsi"))
    rbd_defaults(child(v, "rbd"))
    azure_disk_defaults(child(v, "azureDisk"))
    scale_io_defaults(child(v, "scaleIO"))
    downward = child(v, "downwardAPI")
    if downward is not None:
        _default_mode(downward)
        for item in dicts(downward, "items"):
            _field_ref(child(item, "fieldRef"))
    projected = child(v, "projected")
    if projected is not None:
        _default_mode(projected)
        for source in dicts(projected, "sources"):
            for item in dicts(child(source, "downwardAPI"), "items"):
                _field_ref(child(item, "fieldRef"))
            token = child(source, "serviceAccountToken")
            if token is not None:
                set_ptr(token, "expirationSeconds", TOKEN_EXPIRATION_SECONDS)
    pvc_spec_defaults(child(child(child(v, "ephemeral"), "volumeClaimTemplate"), "spec"))


# --- the pod spec ------------------------------------------------------------------------
def _service_account_alias(spec: dict) -> None:
    """v1 ``serviceAccount`` is an alias: read it when the new name is empty, and
    always write it back as a copy of ``serviceAccountName`` (upstream conversion)."""
    if not spec.get("serviceAccountName") and spec.get("serviceAccount"):
        spec["serviceAccountName"] = spec["serviceAccount"]
    if spec.get("serviceAccountName"):
        spec["serviceAccount"] = spec["serviceAccountName"]
    else:
        spec.pop("serviceAccount", None)


def pod_spec_defaults(spec: dict | None) -> None:
    """Everything the generated defaulters do for a PodSpec, minus ``SetDefaults_Pod``."""
    if spec is None:
        return
    # SetDefaults_PodSpec. New fields go to SetDefaults_Pod upstream, never here, so
    # that templates (and the hashes controllers compute from them) stay stable.
    set_zero(spec, "dnsPolicy", "ClusterFirst")
    set_zero(spec, "restartPolicy", "Always")
    set_ptr(spec, "securityContext", {})
    set_ptr(spec, "terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_PERIOD)
    set_zero(spec, "schedulerName", DEFAULT_SCHEDULER)
    _service_account_alias(spec)
    for v in dicts(spec, "volumes"):
        volume_defaults(v)
    for c in dicts(spec, "initContainers"):
        container_defaults(c)
    for c in dicts(spec, "containers"):
        container_defaults(c)
    for c in dicts(spec, "ephemeralContainers"):
        container_defaults(c)
    resource_list(spec, "overhead")
    pod_resources = child(spec, "resources")
    if pod_resources is not None:
        resource_list(pod_resources, "limits")
        resource_list(pod_resources, "requests")


def pod_defaults(spec: dict) -> None:
    """``SetDefaults_Pod``: runs before `pod_spec_defaults`, on Pods only."""
    for name in ("containers", "initContainers"):
        for c in dicts(spec, name):
            resources = child(c, "resources")
            limits = child(resources, "limits")
            if limits:
                requests = child(resources, "requests", create=True)
                if requests is not None:
                    for key, value in limits.items():
                        requests.setdefault(key, value)
    set_ptr(spec, "enableServiceLinks", True)
    if spec.get("hostNetwork") is True:
        for name in ("containers", "initContainers"):
            for c in dicts(spec, name):
                for port in dicts(c, "ports"):
                    if not port.get("hostPort"):
                        port["hostPort"] = port.get("containerPort")


def template_defaults(template: dict | None) -> None:
    """A ``PodTemplateSpec``: its ``spec`` is a value type, so it is always defaulted."""
    if template is not None:
        pod_spec_defaults(child(template, "spec", create=True))
