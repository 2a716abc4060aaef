"""Printers for apps/v1: Deployment, ReplicaSet, DaemonSet, StatefulSet, ControllerRevision.

The legacy Deployment versions served by conversion (``extensions/v1beta1``,
``apps/v1beta1``, ``apps/v1beta2``) print with the same columns.
"""

from __future__ import annotations

from datetime import datetime

from kubeling.api.printers.common import (AGE, CONTAINERS, IMAGES, NAME, Column, Printer, age,
                                          container_cells, format_labels, format_selector, g, name, replicated_cells,
                                          selector_string)

_APPS = "io.k8s.api.apps.v1."


def _doc(defn: str, prop: str) -> tuple[str, str]:
    return (_APPS + defn, prop)


def _deployment(o: dict, now: datetime) -> list:
    names, images = container_cells(g(o, "spec", "template", "spec"))
    status = o.get("status") or {}
    return [name(o), f"{status.get('readyReplicas', 0)}/{g(o, 'spec', 'replicas', default=0)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0), age(o, now),
            names, images, selector_string(g(o, "spec", "selector"))]


DEPLOYMENT = Printer((
    NAME, Column("Ready", doc="Number of the pod with ready state"),
    Column("Up-to-date", doc=_doc("DeploymentStatus", "updatedReplicas")),
    Column("Available", doc=_doc("DeploymentStatus", "availableReplicas")), AGE, CONTAINERS, IMAGES,
    Column("Selector", priority=1, doc=_doc("DeploymentSpec", "selector")),
), _deployment)


def _replica_set(o: dict, now: datetime) -> list:
    return replicated_cells(o, now, format_selector(g(o, "spec", "selector")))


REPLICA_SET = Printer((
    NAME, Column("Desired", "integer", _doc("ReplicaSetSpec", "replicas")),
    Column("Current", "integer", _doc("ReplicaSetStatus", "replicas")),
    Column("Ready", "integer", _doc("ReplicaSetStatus", "readyReplicas")), AGE, CONTAINERS, IMAGES,
    Column("Selector", priority=1, doc=_doc("ReplicaSetSpec", "selector")),
), _replica_set)


def _daemon_set(o: dict, now: datetime) -> list:
    st = o.get("status") or {}
    pod_spec = g(o, "spec", "template", "spec")
    names, images = container_cells(pod_spec)
    return [name(o), st.get("desiredNumberScheduled", 0), st.get("currentNumberScheduled", 0),
            st.get("numberReady", 0), st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0),
            format_labels(g(pod_spec, "nodeSelector")), age(o, now), names, images,
            format_selector(g(o, "spec", "selector"))]


DAEMON_SET = Printer((
    NAME, Column("Desired", "integer", _doc("DaemonSetStatus", "desiredNumberScheduled")),
    Column("Current", "integer", _doc("DaemonSetStatus", "currentNumberScheduled")),
    Column("Ready", "integer", _doc("DaemonSetStatus", "numberReady")),
    Column("Up-to-date", "integer", _doc("DaemonSetStatus", "updatedNumberScheduled")),
    Column("Available", "integer", _doc("DaemonSetStatus", "numberAvailable")),
    Column("Node Selector", doc=("io.k8s.api.core.v1.PodSpec", "nodeSelector")), AGE, CONTAINERS, IMAGES,
    Column("Selector", priority=1, doc=_doc("DaemonSetSpec", "selector")),
), _daemon_set)


def _stateful_set(o: dict, now: datetime) -> list:
    names, images = container_cells(g(o, "spec", "template", "spec"))
    return [name(o), f"{g(o, 'status', 'readyReplicas', default=0)}/{g(o, 'spec', 'replicas', default=0)}",
            age(o, now), names, images]


STATEFUL_SET = Printer(
    (NAME, Column("Ready", doc="Number of the pod with ready state"), AGE, CONTAINERS, IMAGES), _stateful_set)


def controller_name(o: dict) -> str:
    """``<kind>.<group>/<name>`` (lower-cased kind) of the controlling owner, or ``<none>``."""
    for ref in g(o, "metadata", "ownerReferences", default=[]):
        if ref.get("controller"):
            api_version = ref.get("apiVersion", "")
            group = api_version.split("/")[0] if "/" in api_version else ""
            kind = ref.get("kind", "")
            if not kind and not group:
                return ref.get("name", "")
            gk = f"{kind}.{group}" if group else kind
            return f"{gk.lower()}/{ref.get('name', '')}"
    return "<none>"


CONTROLLER_REVISION = Printer((
    NAME, Column("Controller", doc="Controller of the object"),
    Column("Revision", doc=_doc("ControllerRevision", "revision")), AGE,
), lambda o, now: [name(o), controller_name(o), o.get("revision", 0), age(o, now)])


PRINTERS: dict[tuple[str, str], Printer] = {
    ("apps", "Deployment"): DEPLOYMENT,
    ("extensions", "Deployment"): DEPLOYMENT,
    ("apps", "ReplicaSet"): REPLICA_SET,
    ("apps", "DaemonSet"): DAEMON_SET,
    ("apps", "StatefulSet"): STATEFUL_SET,
    ("apps", "ControllerRevision"): CONTROLLER_REVISION,
}
