"""Acceptance 4: a kopf operator (fixtures/kopf_operator.py), run unchanged with
``kopf run --standalone --namespace NS`` against kubeling for a bounded time.

kopf discovers the CRD's resource through ``/apis``, lists and watches Pets in the namespace,
patches them (its finalizer, its progress annotations, the handlers' results in ``status``), and
posts core/v1 Events about what it did. The test checks the create, update and delete handlers by
their effects on a ConfigMap, that deleting a Pet runs the delete handler and then lets the Pet go
(kopf removed its finalizer), and that kopf logged no warnings or errors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from harness import eventually

FIXTURES = Path(__file__).parent / "fixtures"
GROUP, VERSION, PLURAL = "kopf.e2e.kubeling.dev", "v1", "pets"
CRD_NAME = f"{PLURAL}.{GROUP}"
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
RUN_FOR = 120  # seconds: the operator is killed after this, whatever happens


@pytest.fixture(scope="module")
def api(cluster):
    c = cluster.python_client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def pets_crd(api):
    ext = client.ApiextensionsV1Api(api)
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    ext.create_custom_resource_definition({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {"group": GROUP, "scope": "Namespaced",
                 "names": {"plural": PLURAL, "singular": "pet", "kind": "Pet", "listKind": "PetList"},
                 "versions": [{"name": VERSION, "served": True, "storage": True,
                               "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                                   "status": open_object}}}}]},
    })

    def established():
        conds = {c.type: c.status for c in ext.read_custom_resource_definition(CRD_NAME).status.conditions or []}
        return conds.get("Established") == "True"

    eventually(established, timeout=30, what="pets CRD Established")
    yield CRD_NAME
    ext.delete_custom_resource_definition(CRD_NAME)


class Operator:
    """``kopf run`` as a child process; its output is collected by a reader thread."""

    def __init__(self, cluster, namespace: str, script: str = "kopf_operator.py", env: dict | None = None,
                 run_for: float = RUN_FOR):
        env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig), **(env or {}))
        for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
            env.pop(proxy, None)
        kopf = Path(sys.executable).parent / "kopf"
        self.proc = subprocess.Popen(
            [str(kopf), "run", "--standalone", "--namespace", namespace, "--verbose",
             str(FIXTURES / script)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env,
            start_new_session=True)
        self.lines: list[str] = []
        self._lock = threading.Lock()  # the timer and close() may both try to kill
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._timer = threading.Timer(run_for, self.kill)
        self._timer.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def log(self) -> str:
        return "\n".join(self.lines)

    def wait(self, fn, what: str, timeout: float = 60):
        """`eventually(fn)`; a timeout reports kopf's output so far."""
        try:
            return eventually(fn, timeout=timeout, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- kopf's output ---\n{self.log()}") from None

    def problems(self) -> list[str]:
        """Warnings and errors kopf logged: a failed request or Event post shows up here."""
        return [line for line in self.lines if any(m in line for m in ("[WARNING", "[ERROR", "[CRITICAL",
                                                                       "Traceback"))]

    def kill(self) -> None:
        """SIGTERM, then SIGKILL; only this process group, which we started, and only while the
        process is unreaped (so its group id cannot have been reused)."""
        with self._lock:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()

    def close(self) -> None:
        self._timer.cancel()
        self.kill()
        self._reader.join(10)
        self.proc.stdout.close()


def test_kopf_operator_create_update_delete(cluster, namespace, api, pets_crd):
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    op = Operator(cluster, namespace)
    try:
        op.wait(lambda: any(f"watch-stream for {PLURAL}" in line for line in op.lines)
                or op.proc.poll() is not None, "kopf watches pets")
        assert op.proc.poll() is None, "kopf exited:\n" + op.log()

        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Pet", "metadata": {"name": "rex"}, "spec": {"size": 3}})

        def pet_configmap():
            try:
                return core.read_namespaced_config_map("pet-rex", namespace)
            except ApiException as e:
                if e.status == 404:
                    return None
                raise

        cm = op.wait(pet_configmap, "the create handler made pet-rex")
        assert cm.data == {"size": "3"}
        assert [(r.kind, r.name) for r in cm.metadata.owner_references] == [("Pet", "rex")]

        def handled():
            pet = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "rex")
            return pet if (pet.get("status") or {}).get("create_pet") == {"size": 3} else None

        pet = op.wait(handled, "kopf stored the create handler's result")
        assert KOPF_FINALIZER in pet["metadata"]["finalizers"]

        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "rex", {"spec": {"size": 5}})
        op.wait(lambda: (pet_configmap().data or {}).get("size") == "5", "the update handler resized pet-rex")

        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "rex")
        op.wait(lambda: pet_configmap() is None, "the delete handler removed pet-rex")

        def pet_gone():
            try:
                custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "rex")
            except ApiException as e:
                return e.status == 404
            return False

        op.wait(pet_gone, "kopf removed its finalizer, so the Pet is gone")

        def kopf_events():
            # kopf posts its Events from a queue in the background, so they may trail the handlers.
            return [e.message for e in core.list_namespaced_event(namespace).items
                    if e.involved_object.name == "rex" and e.reporting_component == "kopf"]

        messages = op.wait(lambda: len(kopf_events()) >= 3 and kopf_events(), "kopf posted Events about rex")
        assert "Handler 'create_pet' succeeded." in messages and "removed the ConfigMap of rex" in messages
        assert op.proc.poll() is None, "kopf exited:\n" + op.log()
    finally:
        op.close()
    assert op.problems() == [], op.log()
