"""ServiceAccount (upstream ``plugin/pkg/admission/serviceaccount``), on pod CREATE:

- a pod that names no service account gets ``default`` (and the deprecated ``serviceAccount``
  alias);
- with a store (the server's chain), the account must exist: ``default`` is looked for up to ten
  times ~150 ms apart, since the ServiceAccount controller makes it just after the namespace;
  another name once. A missing one refuses the pod (403, upstream's message);
- unless ``automountServiceAccountToken: false`` (the pod's, else the account's), every init
  container and container gets the ``kube-api-access-<5 chars>`` projected volume mounted
  read-only at `MOUNT_PATH` — except a container that already mounts something there. The volume
  is upstream's: a bound token (``expirationSeconds: 3607``, path ``token``), ``ca.crt`` from the
  ``kube-root-ca.crt`` ConfigMap and ``namespace`` from the downward API. A pod that already has a
  ``kube-api-access-*`` volume keeps it (and its name);
- ``imagePullSecrets`` come from the account when the pod has none.

Mirror pods (``kubernetes.io/config.mirror``) are left alone, as upstream. Ephemeral containers
are added later by an update, which this plugin does not mutate (upstream neither).
Without a store (`ServiceAccount()`), only the name is defaulted.
"""

from __future__ import annotations

import asyncio
import random

from kubeling.api import errors

DEFAULT = "default"
VOLUME_PREFIX = "kube-api-access-"
MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
TOKEN_EXPIRATION_SECONDS = 3607     # the kubelet's "warn-only" duration; the server extends it
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # upstream's generated-name alphabet: no vowels, no 0/1/3
DEFAULT_ATTEMPTS = 10


def token_volume_source() -> dict:
    """Upstream's ``TokenVolumeSource``, with the defaults it sets explicitly."""
    return {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}


def should_automount(sa: dict, spec: dict) -> bool:
    if spec.get("automountServiceAccountToken") is not None:
        return bool(spec["automountServiceAccountToken"])
    if sa.get("automountServiceAccountToken") is not None:
        return bool(sa["automountServiceAccountToken"])
    return True


def mount_token(spec: dict, rng: random.Random) -> None:
    """Add the token volume and its mounts (see the module docstring); idempotent."""
    volumes = spec.get("volumes") or []
    existing = next((v["name"] for v in volumes if str(v.get("name", "")).startswith(VOLUME_PREFIX)), None)
    name = existing or VOLUME_PREFIX + "".join(rng.choice(NAME_ALPHABET) for _ in range(5))
    mounted = False
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            mounts = c.get("volumeMounts") or []
            if any(m.get("mountPath") == MOUNT_PATH for m in mounts):
                continue
            c["volumeMounts"] = [*mounts, {"name": name, "readOnly": True, "mountPath": MOUNT_PATH}]
            mounted = True
    if mounted and existing is None:
        spec["volumes"] = [*volumes, {"name": name, "projected": token_volume_source()}]


class ServiceAccount:
    NAME = "ServiceAccount"

    def __init__(self, store=None, lookup=None, *, retry_interval: float | None = None) -> None:
        self.store = store
        self.lookup = lookup
        self.rng = random.Random()
        # Upstream waits 100-200 ms between looks for ``default``; one random pause per server.
        self.retry_interval = retry_interval if retry_interval is not None else 0.1 + self.rng.random() / 10

    def handles(self, attrs) -> bool:
        return attrs.operation == "CREATE" and attrs.is_("", "pods") and not attrs.subresource

    async def admit(self, attrs) -> None:
        pod = attrs.obj
        if MIRROR_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {}):
            return
        spec = pod.setdefault("spec", {})
        if not spec.get("serviceAccountName"):
            spec["serviceAccountName"] = spec.get("serviceAccount") or DEFAULT
        spec["serviceAccount"] = spec["serviceAccountName"]
        if self.store is None:
            return
        sa = await self._service_account(attrs.namespace, spec["serviceAccountName"])
        if sa is None:
            raise errors.forbidden_status("pods", "", attrs.name, f"error looking up service account "
                                          f"{attrs.namespace}/{spec['serviceAccountName']}: serviceaccount "
                                          f"\"{spec['serviceAccountName']}\" not found")
        if should_automount(sa, spec):
            mount_token(spec, self.rng)
        if not spec.get("imagePullSecrets") and sa.get("imagePullSecrets"):
            spec["imagePullSecrets"] = [{"name": s.get("name", "")} for s in sa["imagePullSecrets"]]

    async def _service_account(self, namespace: str, name: str) -> dict | None:
        served = self.lookup("", "v1", "serviceaccounts")
        attempts = DEFAULT_ATTEMPTS if name == DEFAULT else 1
        for i in range(attempts):
            if i:
                await asyncio.sleep(self.retry_interval)
            try:
                return await self.store.get_raw(served, namespace, name)
            except errors.StatusError as e:
                if e.code != 404:
                    raise
        return None
